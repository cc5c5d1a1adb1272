"""A payee's side of the chain while it serves: keep every cheque, cash in batches once
enough is owed and a batch is worth its gas, anchor the key agent's audit-log head, and
settle on close.

The gas rule: a batch (or a claim) is sent only if what it brings this account is at least
`min_cash_gain_ratio` times its gas at the current gas price (eth_estimateGas × the gas
price). What it holds back stays in the ledger and is reported (`held_back`, `unclaimed`):
a later run or `veil wallet cash` cashes it. Deadlines come before the rule: three things
make it cash at once if it brings in at least its gas (a cheque worth less is cheaper lost): a lane a cheque counts on is about to reach its time
(`note_cover`, or the lane read at start for what an earlier run kept: cashed a margin
before it), the viewer asked to withdraw its deposit (`on_withdrawal_requested`), and a cut
of the seeder share is scheduled (`cash_content_by`). A batch that fails is handed over
again next time, and what a deadline made due stays due until it is cashed.

Chain calls block (a transaction waits for its receipt), so they run one at a time on a
worker thread the Cashier owns and joins on close; the event loop only hands them over, and
a node runs `supervise()` in its task group to see each one end. What was handed over is remembered,
so a cheque is never submitted twice for the same amount.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import AnchorKind, CashResult, ChainClient, Guarantee
from veilstream.chain.errors import ChainError, ChainUnavailable
from veilstream.chain.ledger import ChequeLedger, Direction
from veilstream.market.settings import MarketSettings

log = logging.getLogger("veilstream.market")

MAX_CHEQUES_PER_BATCH = 256  # Wallet.vy's batch limit
BPS = 10_000


@dataclass(frozen=True)
class HeldBack:
    """What the gas rule left for later: not worth its gas at the gas price of the time."""

    amount_wei: int  # the cheques' uncashed face value, or the earnings left unclaimed
    gas_wei: int  # what sending it would have cost
    cheques: int = 0
    due_by: float | None = None  # cashed by then whatever the gas (a lane's time less the margin), if known


@dataclass(frozen=True)
class Claim:
    claimed_wei: int
    gas_paid_wei: int
    held_back: HeldBack | None = None


# Cheques that must be cashed now (a lane ending, a withdrawal, a share cut) are cashed even
# at a thin margin, but never at a loss: a cheque worth less than its gas is cheaper lost.
DUE_RATIO = 1.0


def worth_its_gas(brings_in_wei: int, gas_wei: int, settings: MarketSettings) -> bool:
    return brings_in_wei >= settings.min_cash_gain_ratio * gas_wei


def claim_if_worth_it(client: ChainClient, settings: MarketSettings = MarketSettings(), *,
                      ignore_gas: bool = False) -> Claim:
    """Claim this account's earnings if they are worth the gas (whatever it is with `ignore_gas`)."""
    earnings = client.earnings()
    if not earnings:
        return Claim(0, 0)
    if not ignore_gas:
        gas_wei = client.estimate_claim_gas() * client.gas_price()
        if not worth_its_gas(earnings, gas_wei, settings):
            return Claim(0, 0, HeldBack(earnings, gas_wei))
    result = client.claim_earnings()
    return Claim(result.amount, result.fee_wei)


def audit_anchor_kind(content_id: bytes) -> int:
    """The anchor kind of one content's audit log: each log has its own latest head."""
    return int.from_bytes(sha256(b"veilstream audit log" + int(AnchorKind.AUDIT_LOG).to_bytes(32, "big")
                                 + content_id).digest(), "big")


def _seen(view: asyncio.Future) -> None:
    if not view.cancelled():
        view.exception()


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
        self._must_cash: set[tuple] = set()  # a deadline made these due whatever the gas, until cashed
        self._held_back: dict[tuple, int] = {}  # cheque key → its part of the gas of the batch held back
        self._retry_at_wei = 0  # after a batch held back: what the uncashed cheques must reach to be tried again
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="veil-chain")
        self._pending: list[Future] = []
        self._new_work: asyncio.Event | None = None  # set while `supervise` runs
        self.batches_cashed = 0
        self.cheques_cashed = 0  # sent in cash transactions (the contract may refuse some)
        self.paid_wei = 0
        self.rejected = 0
        self.shortfalls = 0
        self.anchors_posted = 0
        self.gas_paid_wei = 0  # for the cash, anchor and claim transactions sent here
        self.unclaimed: HeldBack | None = None  # what close() left unclaimed for its gas
        self.failures: list[str] = []
        self.chain_down_since: float | None = None  # the chain stopped answering then (None: it answers)
        for signed in ledger.latest(client.cheque_domain, Direction.RECEIVED):  # what an earlier run kept
            c = signed.cheque
            cover = client.guarantee(c.viewer, c.content_id, c.seeder)
            if c.cumulative_amount > cover.cashed_wei:
                self._latest[c.key] = signed
                self._submitted[c.key] = cover.cashed_wei
                if cover.until:
                    self._deadlines[c.key] = cover.until - settings.lane_cash_margin_s

    @property
    def uncashed_wei(self) -> int:
        return sum(s.cheque.cumulative_amount - self._submitted.get(k, 0) for k, s in self._latest.items())

    def uncashed_wei_of(self, content_id: bytes) -> int:
        """What the cheques for one content are owed and not yet handed to a cash transaction."""
        return sum(s.cheque.cumulative_amount - self._submitted.get(k, 0) for k, s in list(self._latest.items())
                   if k[1] == content_id and self._uncashed(k))

    @property
    def uncashed_cheques(self) -> int:
        return sum(1 for k in self._latest if self._uncashed(k))

    @property
    def held_back(self) -> HeldBack | None:
        """What the gas rule left uncashed, or None."""
        held = {k: gas for k, gas in list(self._held_back.items()) if self._uncashed(k)}  # the worker adds to it
        if not held:
            return None
        due = [self._deadlines[k] for k in held if k in self._deadlines]
        return HeldBack(sum(self._latest[k].cheque.cumulative_amount - self._submitted.get(k, 0) for k in held),
                        sum(held.values()), len(held), min(due) if due else None)

    def on_cheque(self, signed: SignedCheque) -> None:
        """A cheque this node accepted: keep it durably, cash when the threshold is passed (and,
        once a batch was held back for its gas, when enough more is owed to be worth it)."""
        self.ledger.record(self.client.cheque_domain, signed, Direction.RECEIVED)
        self._latest[signed.cheque.key] = signed
        self._reap()
        if self.uncashed_wei >= max(self.settings.cash_threshold_wei, self._retry_at_wei) and not self._pending:
            self._submit_batch()
        else:
            self.tick()

    def note_cover(self, viewer: str, content_id: bytes, payee: str, cover: Guarantee) -> None:
        """Cheques of (viewer, content, payee) count on a lane held until `cover.until`:
        they are cashed a margin before it."""
        key = (viewer, content_id, payee)
        self._submitted[key] = max(self._submitted.get(key, 0), cover.cashed_wei)  # cashed by an earlier run
        if cover.until:
            self._deadlines[key] = cover.until - self.settings.lane_cash_margin_s

    def tick(self) -> None:
        """Cash what is due (if worth at least its gas): cheques whose lane's time is near."""
        now = self._clock()
        due = [k for k, at in self._deadlines.items() if at <= now and self._uncashed(k)]
        if due:
            self._must_cash.update(due)
            self._submit_batch(due, ratio=self._due_ratio)
            for key in due:
                self._deadlines.pop(key, None)

    def on_withdrawal_requested(self, viewer: str) -> None:
        """The viewer means to take its free deposit: cash its cheques now, while it holds."""
        keys = [k for k in self._latest if k[0] == viewer and self._uncashed(k)]
        if keys:
            log.info("viewer %s asked to withdraw: cashing its %d cheques now", viewer, len(keys))
            self._must_cash.update(keys)
            self._submit_batch(keys, ratio=self._due_ratio)

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
        self._hand_over(self._worker.submit(self._anchor, head, kind))

    def run_later(self, work) -> None:
        """Any other chain work of this account (answering grants, say), in order with the
        rest: one thread sends this account's transactions, so nonces never race."""
        self._reap()
        self._hand_over(self._worker.submit(work))

    async def supervise(self) -> None:
        """Run beside the node, in its task group: each piece of chain work handed to the
        worker thread is awaited here as it ends, so a bug in it (anything but a ChainError)
        stops the node at once rather than at the next hand-over; an expected failure (the
        chain away, a refusal) is logged and the cheques are handed over again later."""
        self._new_work = asyncio.Event()
        try:
            while True:
                self._reap()
                if not self._pending:
                    await self._new_work.wait()
                    self._new_work.clear()
                    continue
                watched = [asyncio.wrap_future(f) for f in self._pending]
                for view in watched:  # the work's own future carries its error to `_reap`
                    view.add_done_callback(_seen)
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._new_work = None

    def _hand_over(self, future: Future) -> None:
        self._pending.append(future)
        if self._new_work is not None:
            self._new_work.set()

    @property
    def idle(self) -> bool:
        self._reap()
        return not self._pending

    def cash_now(self, *, ignore_gas: bool = False) -> list[Future]:
        """Hand every uncashed cheque to the worker: what is due whatever the gas, the rest if
        it is worth its gas (all of it with `ignore_gas`). Returns the batches' futures: each
        gives its `CashResult`, or None if the gas rule held the batch back."""
        self._reap()
        now = self._clock()
        due = [k for k in self._latest if self._uncashed(k)
               and (ignore_gas or k in self._must_cash or self._deadlines.get(k, math.inf) <= now)]
        return self._submit_batch(due, ratio=0.0 if ignore_gas else self._due_ratio) + self._submit_batch()

    def send(self, work, *args) -> Future:
        """Chain work of this account whose caller waits for it and takes its error (a deposit
        asked through the API, say), in order with the cashing: one thread sends this
        account's transactions."""
        return self._worker.submit(work, *args)

    def cash_pending(self, *, ignore_gas: bool = False) -> None:
        """Cash what is held and wait for it: what is due whatever the gas, the rest if it is
        worth its gas (all of it with `ignore_gas`). A batch that fails is tried once more."""
        for _attempt in range(2):
            self.cash_now(ignore_gas=ignore_gas)
            self._worker.submit(lambda: None).result()
            self._reap()
            if not any(self._uncashed(k) and k not in self._held_back for k in self._latest):
                return

    def close(self, final_audit_head: bytes | None = None, content_id: bytes | None = None) -> int:
        """Wait for work in flight, cash what is left (by the gas rule, what is due whatever
        the gas), anchor the last head, claim if worth the gas; returns what was claimed."""
        self.cash_pending()
        if final_audit_head is not None:
            self.anchor_audit_head(final_audit_head, content_id)
        self.shutdown()
        claim = claim_if_worth_it(self.client, self.settings)
        self.gas_paid_wei += claim.gas_paid_wei
        self.unclaimed = claim.held_back
        return claim.claimed_wei

    def shutdown(self) -> None:
        """Wait for the chain work in flight; no more is taken."""
        self._worker.shutdown(wait=True)
        self._reap()

    # -- on the worker thread ----------------------------------------------------------------
    @property
    def _due_ratio(self) -> float:
        return min(DUE_RATIO, self.settings.min_cash_gain_ratio)

    def _uncashed(self, key: tuple) -> bool:
        signed = self._latest.get(key)
        return signed is not None and signed.cheque.cumulative_amount > self._submitted.get(key, 0)

    def _submit_batch(self, keys: list[tuple] | None = None, ratio: float | None = None) -> list[Future]:
        """Hand the uncashed cheques of `keys` (default: all) to the worker, in batches,
        cashed if they bring in `ratio` × their gas (default: the setting; 0: whatever the gas)."""
        chosen = self._latest if keys is None else {k: self._latest[k] for k in keys if k in self._latest}
        batch = [s for k, s in chosen.items() if s.cheque.cumulative_amount > self._submitted.get(k, 0)]
        handed: list[Future] = []
        for start in range(0, len(batch), MAX_CHEQUES_PER_BATCH):
            part = batch[start : start + MAX_CHEQUES_PER_BATCH]
            before = {s.cheque.key: self._submitted.get(s.cheque.key, 0) for s in part}
            for signed in part:
                self._submitted[signed.cheque.key] = signed.cheque.cumulative_amount
                self._held_back.pop(signed.cheque.key, None)
            handed.append(self._worker.submit(self._cash, part, before, ratio))
            self._hand_over(handed[-1])
        return handed

    def _cash(self, batch: list[SignedCheque], before: dict[tuple, int], ratio: float | None) -> CashResult | None:
        try:
            if ratio != 0.0 and self._hold_back(batch, before, ratio):
                self._hand_back(batch, before)
                return None
            result = self.client.cash(batch)
        except ChainError:
            self._hand_back(batch, before)  # not cashed: hand it over again next time
            raise
        self.batches_cashed += 1
        self.cheques_cashed += len(batch)
        self.paid_wei += result.paid
        self.gas_paid_wei += result.receipt.fee_wei
        self.rejected += len(result.rejected)
        self.shortfalls += len(result.shortfalls)
        self._retry_at_wei = 0
        for signed in batch:
            if self._latest[signed.cheque.key].cheque.cumulative_amount == signed.cheque.cumulative_amount:
                self._must_cash.discard(signed.cheque.key)
        for key, reason in result.rejected:
            log.warning("cheque %s rejected on chain: %s", key, reason.name)
        return result

    def _hold_back(self, batch: list[SignedCheque], before: dict[tuple, int], ratio: float | None = None) -> bool:
        """The gas rule: whether `batch` brings in too little for its gas at today's price
        (then it is noted as held back)."""
        gas_wei = self.client.estimate_cash_gas(batch) * self.client.gas_price()
        brings_in = self._brings_in(batch, before)
        wanted = self.settings.min_cash_gain_ratio if ratio is None else ratio
        if brings_in >= wanted * gas_wei:
            return False
        face = sum(s.cheque.cumulative_amount - before[s.cheque.key] for s in batch)
        for n, signed in enumerate(batch):  # the batch's gas in parts that add up to it
            self._held_back[signed.cheque.key] = gas_wei * (n + 1) // len(batch) - gas_wei * n // len(batch)
        # As more is owed the batch grows and its gas barely does: worth trying again at about this.
        self._retry_at_wei = (math.ceil(face * self.settings.min_cash_gain_ratio * gas_wei / brings_in)
                              if brings_in else math.inf)
        log.info("held back %d cheques worth %d wei: %d wei of gas would take more than 1/%g of the %d wei "
                 "they bring in", len(batch), face, gas_wei, self.settings.min_cash_gain_ratio, brings_in)
        return True

    def _brings_in(self, batch: list[SignedCheque], before: dict[tuple, int]) -> int:
        """What cashing `batch` credits this account, split as Wallet.cash splits it: the
        payee gets the seeder share, the content's creator the rest (a cheque naming no
        content pays its payee in full)."""
        me, terms, total = self.client.address, {}, 0
        for signed in batch:
            c = signed.cheque
            if any(c.content_id):
                if c.content_id not in terms:
                    terms[c.content_id] = self.client.payout_terms(c.content_id)
                creator, share_bps = terms[c.content_id]
            else:
                creator, share_bps = c.seeder, BPS
            mine = (share_bps if c.seeder == me else 0) + (BPS - share_bps if creator == me else 0)
            total += (c.cumulative_amount - before[c.key]) * mine // BPS
        return total

    def _hand_back(self, batch: list[SignedCheque], before: dict[tuple, int]) -> None:
        for signed in batch:  # unless a later batch took the cheque over
            if self._submitted.get(signed.cheque.key) == signed.cheque.cumulative_amount:
                self._submitted[signed.cheque.key] = before[signed.cheque.key]

    def _anchor(self, head: bytes, kind: int) -> None:
        self.gas_paid_wei += self.client.post_anchor(kind, head).fee_wei
        self.anchors_posted += 1

    def _reap(self) -> None:
        still = []
        done, self._pending = self._pending, []
        for n, future in enumerate(done):
            if not future.done():
                still.append(future)
            elif future.exception() is not None:
                error = future.exception()
                self.failures.append(str(error))
                if not isinstance(error, ChainError):
                    self._pending = still + done[n + 1:]  # a bug is raised once
                    raise error
                if not isinstance(error, ChainUnavailable):
                    log.warning("chain work failed: %s", error)
                elif self.chain_down_since is None:  # one line per outage, not one per attempt
                    self.chain_down_since = self._clock()
                    log.warning("%s; cheques stay in the ledger and are cashed once it answers", error)
            elif self.chain_down_since is not None:
                log.warning("the chain answers again after %.0f s", self._clock() - self.chain_down_since)
                self.chain_down_since = None
        self._pending = still
