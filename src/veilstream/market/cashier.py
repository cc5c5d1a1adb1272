"""A payee's side of the chain while it serves: keep every cheque, cash in batches once
enough is owed, anchor the key agent's audit-log head, and settle everything on close.

Chain calls block (a transaction waits for its receipt), so they run one at a time on a
worker thread; the event loop only hands them over. What was handed over is remembered,
so a cheque is never submitted twice for the same amount.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import AnchorKind, ChainClient
from veilstream.chain.errors import ChainError
from veilstream.chain.ledger import ChequeLedger, Direction
from veilstream.market.settings import MarketSettings

log = logging.getLogger("veilstream.market")

MAX_CHEQUES_PER_BATCH = 256  # Wallet.vy's batch limit


class Cashier:
    def __init__(self, client: ChainClient, ledger: ChequeLedger, settings: MarketSettings = MarketSettings()) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings
        self._latest: dict[tuple, SignedCheque] = {}
        self._submitted: dict[tuple, int] = {}  # amount already handed to a cash transaction
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

    def on_audit_head(self, head: bytes, entries: int) -> None:
        """The key agent released keys: anchor its audit head every so many entries."""
        if entries % self.settings.audit_anchor_every_entries == 0:
            self._pending.append(self._worker.submit(self._anchor, head))

    def run_later(self, work) -> None:
        """Any other chain work of this account (answering grants, say), in order with the
        rest: one thread sends this account's transactions, so nonces never race."""
        self._reap()
        self._pending.append(self._worker.submit(work))

    @property
    def idle(self) -> bool:
        self._reap()
        return not self._pending

    def close(self, final_audit_head: bytes | None = None) -> int:
        """Wait for work in flight, cash what is left, anchor the last head, claim."""
        self._submit_batch()
        if final_audit_head is not None:
            self._pending.append(self._worker.submit(self._anchor, final_audit_head))
        self._worker.shutdown(wait=True)
        self._reap()
        return self.client.claim() if self.client.earnings() else 0

    # -- on the worker thread ----------------------------------------------------------------
    def _submit_batch(self) -> None:
        batch = [s for k, s in self._latest.items() if s.cheque.cumulative_amount > self._submitted.get(k, 0)]
        for signed in batch:
            self._submitted[signed.cheque.key] = signed.cheque.cumulative_amount
        for start in range(0, len(batch), MAX_CHEQUES_PER_BATCH):
            self._pending.append(self._worker.submit(self._cash, batch[start : start + MAX_CHEQUES_PER_BATCH]))

    def _cash(self, batch: list[SignedCheque]) -> None:
        result = self.client.cash(batch)
        self.batches_cashed += 1
        for key, reason in result.rejected:
            log.warning("cheque %s rejected on chain: %s", key, reason.name)

    def _anchor(self, head: bytes) -> None:
        self.client.anchor(AnchorKind.AUDIT_LOG, head)
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
