"""Credit windows: how much a payee lets a payer owe, as pure bookkeeping (no IO).

One cheque gates both sides. A seeder serves the next slice only while the viewer's
cheques naming it cover every slice it delivered but `window` of them; a key agent
releases keys only while the viewer's cheques for the content, summed over every seeder
they name, cover every key released but `window`. Amounts are cumulative per (viewer,
content, seeder), so the newest valid cheque replaces the older ones and a replayed or
stale cheque adds nothing. A payer that stops paying gains at most `window` slices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from dataclasses import dataclass, field

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.errors import ChainError
from veilstream.market.errors import PaymentRefused

ChequeCheck = Callable[[SignedCheque], None]  # raises if the signature is not the viewer's


@dataclass
class _Relationship:
    viewer: str
    content_id: bytes
    price_wei: int
    window_slices: int
    check_signature: ChequeCheck

    def _validate(self, signed: SignedCheque) -> None:
        cheque = signed.cheque
        if cheque.viewer != self.viewer:
            raise PaymentRefused(f"cheque is from {cheque.viewer}, not the viewer {self.viewer}")
        if cheque.content_id != self.content_id:
            raise PaymentRefused("cheque is for another content")
        try:
            self.check_signature(signed)
        except ChainError as exc:
            raise PaymentRefused(f"cheque refused: {exc}") from None

    def _covered(self, slices: int, paid: int) -> bool:
        """Would `slices` delivered leave at most `window` of them unpaid?"""
        return slices * self.price_wei <= paid + self.window_slices * self.price_wei


@dataclass
class SeederAccount(_Relationship):
    """A seeder's book on one viewer for one content. Value is counted per block served
    (a block is worth its share of its slice's price), so a slice whose blocks came from
    several seeders is owed to each in proportion to what each sent. Values are integers
    in 1/`units_per_wei` wei, so those shares add up exactly (and cheaply: a seeder asks
    this book before every block it sends)."""

    seeder: str = ""
    units_per_wei: int = 1
    served_units: int = 0
    latest: SignedCheque | None = None
    _limit_units: int = -1  # (paid + window) in units; -1: not computed yet

    @property
    def paid_wei(self) -> int:
        return self.latest.cheque.cumulative_amount if self.latest else 0

    @property
    def served_wei(self) -> Fraction:
        return Fraction(self.served_units, self.units_per_wei)

    @property
    def owed_wei(self) -> int:
        return max(0, math.ceil(self.served_wei - self.paid_wei))

    @property
    def served_slices(self) -> Fraction:
        return self.served_wei / self.price_wei if self.price_wei else Fraction(0)

    def _limit(self) -> int:
        if self._limit_units < 0:
            self._limit_units = (self.paid_wei + self.window_slices * self.price_wei) * self.units_per_wei
        return self._limit_units

    def may_serve(self, value_wei: Fraction | int) -> bool:
        return self.served_units + value_wei * self.units_per_wei <= self._limit()

    def may_serve_next(self) -> bool:
        """May a whole slice more go out?"""
        return self.may_serve(self.price_wei)

    def record_served(self, value_wei: Fraction | int | None = None) -> None:
        value = self.price_wei if value_wei is None else value_wei
        units = value * self.units_per_wei
        if units != int(units) or not self.serve_units(int(units)):
            raise PaymentRefused("serving more would exceed the viewer's credit window")

    def serve_units(self, units: int) -> bool:
        """Charge `units` if the window allows it; False (and nothing charged) if not."""
        served = self.served_units + units
        if served > self._limit():
            return False
        self.served_units = served
        return True

    def accept(self, signed: SignedCheque) -> bool:
        """Take a cheque; True if it raised what is paid, False for a harmless duplicate."""
        self._validate(signed)
        if signed.cheque.seeder != self.seeder:
            raise PaymentRefused("cheque names another seeder")
        amount = signed.cheque.cumulative_amount
        if amount < self.paid_wei:
            raise PaymentRefused(f"stale cheque: {amount} wei is below the {self.paid_wei} already signed")
        if amount == self.paid_wei:
            return False
        self.latest = signed
        self._limit_units = -1
        return True


@dataclass
class KeyAgentAccount(_Relationship):
    """A key agent's book on one viewer for one content: cheques to every seeder count."""

    released: set[int] = field(default_factory=set)
    latest_by_seeder: dict[str, SignedCheque] = field(default_factory=dict)

    @property
    def paid_wei(self) -> int:
        return sum(s.cheque.cumulative_amount for s in self.latest_by_seeder.values())

    def accept(self, signed: SignedCheque) -> bool:
        self._validate(signed)
        seeder = signed.cheque.seeder
        previous = self.latest_by_seeder.get(seeder)
        before = previous.cheque.cumulative_amount if previous else 0
        if signed.cheque.cumulative_amount < before:
            raise PaymentRefused("stale cheque: lower than one already shown for that seeder")
        if signed.cheque.cumulative_amount == before:
            return False
        self.latest_by_seeder[seeder] = signed
        return True

    def unreleased(self, slices: range) -> list[int]:
        return [i for i in slices if i not in self.released]

    def may_release(self, slices: range) -> bool:
        return self._covered(len(self.released) + len(self.unreleased(slices)), self.paid_wei)

    def record_release(self, slices: range) -> None:
        if not self.may_release(slices):
            raise PaymentRefused(
                f"keys for slices [{slices.start}, {slices.stop}) need more payment: "
                f"{self.paid_wei} wei paid for {len(self.released)} keys released"
            )
        self.released.update(slices)
