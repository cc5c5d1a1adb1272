"""Credit windows: how much a payee lets a payer owe, as pure bookkeeping (no IO).

One cheque gates both sides. A seeder serves the next slice only while the viewer's
cheques naming it cover every slice it delivered but `window` of them; a key agent
releases keys only while the viewer's cheques for the content, summed over every seeder
they name, cover every key released but `window`. Amounts are cumulative per (viewer,
content, seeder), so the newest valid cheque replaces the older ones and a replayed or
stale cheque adds nothing. Counters run across sessions: a book starts from what earlier
sessions were paid (the payee's ledger, or what is cashed on chain), taken as served,
so a returning viewer's old payments are not credit for new slices or keys.

Credit exists only against on-chain cover. A cheque counts only up to its payee's
`Guarantee` (the lane the viewer holds for that payee in the Wallet: nobody else's
cheque can draw on it), and only while the lane is held for long enough to cash against
(`margin_s` before its time). A book with no cover known serves nothing; the window is
extended only while that much cover is still unused. So whatever a viewer signs to
anyone else, a payee loses at most `window` slices to it.

A grant holder (who bought slices on chain, paying the creator's part there) pays a
seeder only the seeder's share of those slices, with cheques for content id zero, which
the Wallet pays to the named seeder in full. Such a cheque's counter runs across every
content the seeder serves that viewer, so its book is kept per node (`DirectBooks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import Guarantee
from veilstream.chain.errors import ChainError
from veilstream.content.manifest import Terms
from veilstream.market.errors import PaymentRefused

ChequeCheck = Callable[[SignedCheque], None]  # raises if the signature is not the viewer's
ZERO_ADDRESS = "0x" + "00" * 20
# A viewer's cheques for one content may name this many payees for a key agent to count
# them: each costs the agent a chain lookup of that payee's lane.
MAX_PAYEES_PER_ACCOUNT = 16


def cover_usable_until(cover: Guarantee, margin_s: int) -> float:
    """Until when a payee may count on `cover`: long enough before the lane's time to cash
    against it (no lane: never)."""
    return cover.until - margin_s if cover.until else 0.0


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


@dataclass
class _PayeeBook(_Relationship):
    """One payee's book on one viewer: the newest cheque naming it, on top of what earlier
    sessions paid (taken as served)."""

    seeder: str = ""
    paid_before_wei: int = 0
    latest: SignedCheque | None = None
    cover: Guarantee | None = None  # None: not looked up yet (nothing is served meanwhile)
    margin_s: int = 0
    usable_until: float = 0.0

    @property
    def paid_wei(self) -> int:
        return max(self.latest.cheque.cumulative_amount if self.latest else 0, self.paid_before_wei)

    @property
    def ceiling_wei(self) -> int:
        return self.cover.ceiling_wei if self.cover is not None else 0

    @property
    def counted_wei(self) -> int:
        """What is paid and sure to be paid: the cheques up to the cover."""
        return min(self.paid_wei, self.ceiling_wei)

    def set_cover(self, cover: Guarantee) -> None:
        self.cover = cover
        self.usable_until = cover_usable_until(cover, self.margin_s)
        self._paid_changed()

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
        self._paid_changed()
        return True

    def _paid_changed(self) -> None:
        pass


@dataclass
class SeederAccount(_PayeeBook):
    """A seeder's book on one viewer for one content. Value is counted per block served
    (a block is worth its share of its slice's price), so a slice whose blocks came from
    several seeders is owed to each in proportion to what each sent. Values are integers
    in 1/`units_per_wei` wei, so those shares add up exactly (and cheaply: a seeder asks
    this book before every block it sends)."""

    units_per_wei: int = 1
    served_units: int = -1  # -1: start from what was paid before
    _limit_units: int = -1  # (paid + window) in units; -1: not computed yet
    # Bytes of each slice charged so far. A slice is charged once, up to its size: a viewer
    # that lost one it was sent (it died before keeping it) and asks again gets it again
    # free, or its window would stay spent on bytes it never had, and its stream stall.
    charged_bytes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.served_units < 0:
            self.served_units = self.paid_before_wei * self.units_per_wei

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
            window = self.counted_wei + self.window_slices * self.price_wei
            self._limit_units = min(window, self.ceiling_wei) * self.units_per_wei
        return self._limit_units

    def may_serve(self, value_wei: Fraction | int, now: float) -> bool:
        return now < self.usable_until and self.served_units + value_wei * self.units_per_wei <= self._limit()

    def may_serve_next(self, now: float) -> bool:
        """May a whole slice more go out?"""
        return self.may_serve(self.price_wei, now)

    def record_served(self, now: float, value_wei: Fraction | int | None = None) -> None:
        value = self.price_wei if value_wei is None else value_wei
        units = value * self.units_per_wei
        if units != int(units) or not self.serve_units(int(units), now):
            raise PaymentRefused("serving more would exceed the viewer's credit window or its cover")

    def serve_units(self, units: int, now: float) -> bool:
        """Charge `units` if the window and the cover allow it; False (and nothing charged) if not."""
        served = self.served_units + units
        if served > self._limit() or now >= self.usable_until:
            return False
        self.served_units = served
        return True

    def _paid_changed(self) -> None:
        self._limit_units = -1


@dataclass
class KeyAgentAccount(_Relationship):
    """A key agent's book on one viewer for one content: cheques to every seeder count,
    each up to its payee's cover. `released_floor` is a count of keys taken as released
    whatever the log says (from what is cashed on chain: an older log restored must not
    sell the same keys twice)."""

    released: set[int] = field(default_factory=set)
    latest_by_seeder: dict[str, SignedCheque] = field(default_factory=dict)
    covers: dict[str, Guarantee] = field(default_factory=dict)
    margin_s: int = 0
    released_floor: int = 0
    unpayable: frozenset[str] = frozenset({ZERO_ADDRESS})
    _unlogged: int = 0  # keys the chain says were paid for that the log does not hold

    @property
    def paid_wei(self) -> int:
        """Signed to every payee (counted or not)."""
        return sum(s.cheque.cumulative_amount for s in self.latest_by_seeder.values())

    def _usable(self, now: float) -> list[tuple[str, Guarantee]]:
        return [(payee, cover) for payee, cover in self.covers.items() if now < cover_usable_until(cover, self.margin_s)]

    def counted_wei(self, now: float) -> int:
        """What is paid and sure to be paid: each payee's cheque up to its cover."""
        total = 0
        for payee, cover in self._usable(now):
            latest = self.latest_by_seeder.get(payee)
            total += min(latest.cheque.cumulative_amount if latest else 0, cover.ceiling_wei)
        return total

    def spare_cover_wei(self, now: float) -> int:
        """Cover not yet used by cheques: what the window may rest on."""
        total = 0
        for payee, cover in self._usable(now):
            latest = self.latest_by_seeder.get(payee)
            total += max(0, cover.ceiling_wei - (latest.cheque.cumulative_amount if latest else 0))
        return total

    def accept(self, signed: SignedCheque) -> bool:
        self._validate(signed)
        seeder = signed.cheque.seeder
        if seeder in self.unpayable:
            raise PaymentRefused(f"cheque names {seeder}, which the chain would never pay")
        previous = self.latest_by_seeder.get(seeder)
        if previous is None and len(self.latest_by_seeder) >= MAX_PAYEES_PER_ACCOUNT:
            raise PaymentRefused(f"cheques for one content may name at most {MAX_PAYEES_PER_ACCOUNT} payees")
        before = previous.cheque.cumulative_amount if previous else 0
        if signed.cheque.cumulative_amount < before:
            raise PaymentRefused("stale cheque: lower than one already shown for that seeder")
        if signed.cheque.cumulative_amount == before:
            return False
        self.latest_by_seeder[seeder] = signed
        return True

    def set_cover(self, payee: str, cover: Guarantee) -> None:
        self.covers[payee] = cover

    def payees_without_cover(self) -> list[str]:
        return [payee for payee in self.latest_by_seeder if payee not in self.covers]

    def unreleased(self, slices: range) -> list[int]:
        return [i for i in slices if i not in self.released]

    def take_floor(self) -> None:
        """Once the log's releases are in: count `released_floor` keys as released at least."""
        self._unlogged = max(0, self.released_floor - len(self.released))

    @property
    def released_count(self) -> int:
        """Keys counted as released: the log's, and the ones the chain says were paid for beyond them."""
        return len(self.released) + self._unlogged

    def may_release(self, slices: range, now: float) -> bool:
        keys = self.released_count + len(self.unreleased(slices))
        window = min(self.window_slices * self.price_wei, self.spare_cover_wei(now))
        return keys * self.price_wei <= self.counted_wei(now) + window

    def record_release(self, slices: range, now: float) -> None:
        if not self.may_release(slices, now):
            raise PaymentRefused(
                f"keys for slices [{slices.start}, {slices.stop}) need more payment against cover: "
                f"{self.counted_wei(now)} wei paid against lanes for {self.released_count} keys released")
        self.released.update(slices)


DIRECT_CONTENT_ID = bytes(32)  # a cheque for "no content": the Wallet pays the seeder in full


def seeder_part_wei(terms: Terms) -> int:
    """What a grant holder pays a seeder per slice: the seeder's share of the price."""
    return terms.price_per_slice_wei * terms.seeder_share_bps // 10_000


@dataclass
class DirectAccount(_PayeeBook):
    """A seeder's book on one grant holder, across every content it serves that viewer:
    direct cheques (content id zero) naming this seeder pay for the blocks of granted
    slices, each worth its share of the seeder's part of its slice."""

    served_wei: Fraction = Fraction(-1)  # -1: start from what was paid before

    def __post_init__(self) -> None:
        if self.served_wei < 0:
            self.served_wei = Fraction(self.paid_before_wei)

    def serve(self, value_wei: Fraction, window_wei: int, now: float) -> bool:
        """Charge `value_wei` if what is unpaid stays within `window_wei` and the cover;
        False (and nothing charged) if not."""
        served = self.served_wei + value_wei
        if served > min(self.counted_wei + window_wei, self.ceiling_wei) or now >= self.usable_until:
            return False
        self.served_wei = served
        return True


class DirectBooks:
    """One node's direct books, by viewer: shared by every content the node serves."""

    def __init__(self, seeder: str, check_signature: ChequeCheck,
                 paid_before: Callable[[str, bytes], int] | None = None, margin_s: int = 0) -> None:
        self.seeder = seeder
        self.check_signature = check_signature
        self.paid_before = paid_before  # (viewer, content id) → what earlier sessions were paid
        self.margin_s = margin_s
        self.accounts: dict[str, DirectAccount] = {}

    def account(self, viewer: str) -> DirectAccount:
        account = self.accounts.get(viewer)
        if account is None:
            before = self.paid_before(viewer, DIRECT_CONTENT_ID) if self.paid_before else 0
            account = self.accounts[viewer] = DirectAccount(
                viewer, DIRECT_CONTENT_ID, 0, 0, self.check_signature, seeder=self.seeder, paid_before_wei=before,
                margin_s=self.margin_s)
        return account
