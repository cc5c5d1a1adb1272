"""The viewer's lanes: part of its deposit held in the Wallet for each payee it pays.

A payee extends credit only against its own lane (the chain's `guarantee`: what is
cashed plus what the lane still holds), so before a seeder serves a slice or a key agent
releases a key, the viewer holds a lane for it. One transaction opens lanes for every
payee met so far; opening again tops a lane up and extends its time, so a later session
reuses what an earlier one held. Each lane holds up to what the viewer means to spend
(any one payee may end up serving everything) on top of what its earlier cheques to that
payee still owe (they draw on the same lane), bounded by the free deposit shared among
the payees of the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from veilstream.chain.client import ChainClient
from veilstream.chain.errors import ChainError
from veilstream.market.errors import MarketError
from veilstream.market.settings import MarketSettings

log = logging.getLogger("veilstream.market")


class NoCover(MarketError):
    """The viewer's free deposit cannot hold a lane for a payee."""


class LaneOpener:
    def __init__(self, client: ChainClient, settings: MarketSettings = MarketSettings()) -> None:
        self.client = client
        self.settings = settings
        self.transactions = 0
        self._clock_offset: float | None = None  # chain time − wall time, read once

    def _chain_now(self) -> int:
        if self._clock_offset is None:
            self._clock_offset = self.client.timestamp() - time.time()
        return int(time.time() + self._clock_offset)

    def open(self, content_id: bytes, payees: Sequence[str], want_wei: int,
             signed_before: Callable[[str], int] | None = None) -> list[str]:
        """Hold up to `want_wei` for each of `payees`, beyond what the cheques signed them
        before (`signed_before(payee)`) still owe; returns the payees that now hold a lane.
        Raises `NoCover` when the free deposit holds none."""
        client, me = self.client, self.client.address
        now = self._chain_now()
        margin = self.settings.lane_cash_margin_s
        until = now + max(self.settings.lane_duration_s, client.deployment.settings.lane_min_duration_s + 2 * margin)
        targets: dict[int, list[str]] = {}
        held: dict[str, int] = {}
        for payee, lane in zip(payees, client.lanes_of(me, content_id, payees)):  # one call for all
            before = signed_before(payee) if signed_before else 0
            # What earlier cheques still owe draws on the same lane (read only if there were any).
            owed = max(0, before - client.cashed(me, content_id, payee)) if before else 0
            target = want_wei + owed
            amount, held_until = (lane.amount, lane.until) if lane else (0, 0)
            if amount >= target and held_until >= now + self.settings.lane_duration_s // 2:
                continue  # held well enough already
            targets.setdefault(target, []).append(payee)
            held[payee] = amount
        free = client.deposit_of(me)  # a withdrawal under way takes from it only when executed
        for target, group in sorted(targets.items()):
            # Each lane is topped up to `amount`; one holding h costs amount - h, so this
            # keeps the whole top-up within the free deposit.
            amount = min(target, free // len(group) + min(held[p] for p in group))
            if amount <= 0:
                raise NoCover(f"your free deposit ({free} wei) cannot hold a lane for {len(group)} payee(s): "
                              "run `veil wallet deposit AMOUNT` first")
            try:
                client.open_lanes(content_id, group, amount, until)
            except ChainError as exc:
                raise NoCover(f"lanes for {len(group)} payee(s) could not be opened: {exc}") from None
            free -= sum(max(0, amount - held[p]) for p in group)
            self.transactions += 1
            log.info("holding up to %s wei for each of %s until %s", amount, ", ".join(group), until)
        return list(payees)
