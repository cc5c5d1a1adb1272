"""A payee's side of the chain while it serves: keep every cheque, cash in batches once
enough is owed, anchor the key agent's audit-log head, and settle everything on close.

Besides the threshold, three things make it cash at once: a lane a cheque counts on is
about to reach its time (`note_cover`: cashed a margin before it), the viewer asked to
withdraw its deposit (`on_withdrawal_requested`), and a cut of the seeder share is
scheduled (`cash_content_by`). A batch that fails is handed over again next time.

Chain calls block (a transaction waits for its receipt), so they run one at a time on a
worker thread; the event loop only hands them over. What was handed over is remembered,
so a cheque is never submitted twice for the same amount.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from hashlib import sha256

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import AnchorKind, ChainClient, Guarantee
from veilstream.chain.errors import ChainError
from veilstream.chain.ledger import ChequeLedger, Direction
from veilstream.market.settings import MarketSettings

log = logging.getLogger("veilstream.market")

MAX_CHEQUES_PER_BATCH = 256  # Wallet.vy's batch limit


def audit_anchor_kind(content_id: bytes) -> int:
    """The anchor kind of one content's audit log: each log has its own latest head."""
    return int.from_bytes(sha256(b"veilstream audit log" + int(AnchorKind.AUDIT_LOG).to_bytes(32, "big")
                                 + content_id).digest(), "big")


class Cashier:
    def __init__(self, client: ChainClient, ledger: ChequeLedger, settings: MarketSettings = MarketSettings(),
                 clock=time.time) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings
        self._clock = clock
        self._latest: dict[tuple, SignedCheque] = {}
        self._submitted: dict[tuple, int] = {}  # amount already handed to a cash transaction
        self._deadlines: dict[tuple, float] = {}  # cheque key → cash by then (a lane's time, less a margin)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="veil-chain")
        self._pending: list[Future] = []
        self.batches_cashed = 0
        self.anchors_posted = 0
        self.failures: list[str] = []
        for held in ledger.pending(client):  # what an earlier run kept but never cashed
            key = held.signed.cheque.key
            self._latest[key] = held.signed
            self._submitted[key] = held.signed.cheque.cumulative_amount - held.uncashed

    @property
    def uncashed_wei(self) -> int:
        return sum(s.cheque.cumulative_amount - self._submitted.get(k, 0) for k, s in self._latest.items())

    def on_cheque(self, signed: SignedCheque) -> None:
        """A cheque this node accepted: keep it durably, cash when the threshold is passed."""
        self.ledger.record(self.client.cheque_domain, signed, Direction.RECEIVED)
        self._latest[signed.cheque.key] = signed
        self._reap()
        if self.uncashed_wei >= self.settings.cash_threshold_wei and not self._pending:
            self._submit_batch()
        else:
            self.tick()

    def note_cover(self, viewer: str, content_id: bytes, payee: str, cover: Guarantee) -> None:
        """Cheques of (viewer, content, payee) count on a lane held until `cover.until`:
        they are cashed a margin before it."""
        if cover.until:
            self._deadlines[(viewer, content_id, payee)] = cover.until - self.settings.lane_cash_margin_s

    def tick(self) -> None:
        """Cash what is due: cheques whose lane's time is near."""
        now = self._clock()
        due = [k for k, at in self._deadlines.items() if at <= now and self._uncashed(k)]
        if due:
            self._submit_batch(due)
            for key in due:
                self._deadlines.pop(key, None)

    def on_withdrawal_requested(self, viewer: str) -> None:
        """The viewer means to take its free deposit: cash its cheques now, while it holds."""
        keys = [k for k in self._latest if k[0] == viewer and self._uncashed(k)]
        if keys:
            log.info("viewer %s asked to withdraw: cashing its %d cheques now", viewer, len(keys))
            self._submit_batch(keys)

    def cash_content_by(self, content_id: bytes, when: float) -> None:
        """Everything owed for this content must be cashed before `when` (a share cut)."""
        for key in self._latest:
            if key[1] == content_id:
                self._deadlines[key] = min(self._deadlines.get(key, when), when - self.settings.lane_cash_margin_s)
        self.tick()

    def on_audit_head(self, head: bytes, entries: int, content_id: bytes | None = None) -> None:
        """The key agent released keys: anchor its audit head every so many entries."""
        if entries % self.settings.audit_anchor_every_entries == 0:
            self.anchor_audit_head(head, content_id)

    def anchor_audit_head(self, head: bytes, content_id: bytes | None = None) -> None:
        kind = audit_anchor_kind(content_id) if content_id is not None else AnchorKind.AUDIT_LOG
        self._pending.append(self._worker.submit(self._anchor, head, kind))

    def run_later(self, work) -> None:
        """Any other chain work of this account (answering grants, say), in order with the
        rest: one thread sends this account's transactions, so nonces never race."""
        self._reap()
        self._pending.append(self._worker.submit(work))

    @property
    def idle(self) -> bool:
        self._reap()
        return not self._pending

    def close(self, final_audit_head: bytes | None = None, content_id: bytes | None = None) -> int:
        """Wait for work in flight, cash what is left, anchor the last head, claim."""
        self._reap()
        self._submit_batch()
        if final_audit_head is not None:
            self.anchor_audit_head(final_audit_head, content_id)
        self._worker.shutdown(wait=True)
        self._reap()
        if any(self._uncashed(k) for k in self._latest):  # a batch failed: one more try before leaving
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="veil-chain")
            self._submit_batch()
            self._worker.shutdown(wait=True)
            self._reap()
        return self.client.claim() if self.client.earnings() else 0

    # -- on the worker thread ----------------------------------------------------------------
    def _uncashed(self, key: tuple) -> bool:
        signed = self._latest.get(key)
        return signed is not None and signed.cheque.cumulative_amount > self._submitted.get(key, 0)

    def _submit_batch(self, keys: list[tuple] | None = None) -> None:
        chosen = self._latest if keys is None else {k: self._latest[k] for k in keys if k in self._latest}
        batch = [s for k, s in chosen.items() if s.cheque.cumulative_amount > self._submitted.get(k, 0)]
        for start in range(0, len(batch), MAX_CHEQUES_PER_BATCH):
            part = batch[start : start + MAX_CHEQUES_PER_BATCH]
            before = {s.cheque.key: self._submitted.get(s.cheque.key, 0) for s in part}
            for signed in part:
                self._submitted[signed.cheque.key] = signed.cheque.cumulative_amount
            self._pending.append(self._worker.submit(self._cash, part, before))

    def _cash(self, batch: list[SignedCheque], before: dict[tuple, int]) -> None:
        try:
            result = self.client.cash(batch)
        except ChainError:
            for key, amount in before.items():  # not cashed: hand it over again next time
                if self._submitted.get(key) == self._latest[key].cheque.cumulative_amount:
                    self._submitted[key] = amount
            raise
        self.batches_cashed += 1
        for key, reason in result.rejected:
            log.warning("cheque %s rejected on chain: %s", key, reason.name)

    def _anchor(self, head: bytes, kind: int) -> None:
        self.client.anchor(kind, head)
        self.anchors_posted += 1

    def _reap(self) -> None:
        still = []
        for future in self._pending:
            if not future.done():
                still.append(future)
            elif future.exception() is not None:
                error = future.exception()
                self.failures.append(str(error))
                if not isinstance(error, ChainError):
                    raise error
                log.warning("chain work failed: %s", error)
        self._pending = still
