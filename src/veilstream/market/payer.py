"""The viewer's side of payment: one cumulative cheque per (content, seeder).

Each verified slice raises the cheque to the peer that delivered it by one price; a slice
from a peer that takes no cheques (a plain BitTorrent client) is paid to the creator in
full, with a cheque naming the creator as seeder. A grant holder pays seeders only their
share of granted slices, with direct cheques (content id zero, one counter per seeder
across contents). The payer never signs beyond a budget, counting both kinds. Counters run across
sessions: the first cheque to a payee continues from what earlier sessions signed it
(`signed_before`), or the Wallet would see a lower amount as already cashed.
"""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from veilstream.chain.cheque import Cheque, ChequeDomain, SignedCheque
from veilstream.market.credit import DIRECT_CONTENT_ID
from veilstream.market.errors import MarketError


class BudgetExceeded(MarketError):
    """Paying for another slice would pass the budget the viewer set."""


class Payer:
    def __init__(self, account: LocalAccount, domain: ChequeDomain, content_id: bytes, price_wei: int, budget_wei: int,
                 signed_before: Callable[[bytes, str], int] | None = None) -> None:
        self.account = account
        self.domain = domain
        self.content_id = content_id
        self.price_wei = price_wei
        self.budget_wei = budget_wei
        self.owed: dict[str, int] = {}  # seeder → cumulative amount signed for the content
        self._latest: dict[str, SignedCheque] = {}  # seeder → the cheque for that amount
        self.direct_owed: dict[str, int] = {}  # seeder → cumulative amount of direct cheques
        self._latest_direct: dict[str, SignedCheque] = {}
        self.signed_before = signed_before  # (content id, seeder) → amount signed in earlier sessions
        self._before: dict[tuple[bytes, str], int] = {}

    @property
    def content_spent_wei(self) -> int:
        """Signed this session in cheques for the content."""
        return sum(self.owed.values()) - sum(b for (c, _), b in self._before.items() if c == self.content_id)

    @property
    def spent_wei(self) -> int:
        """Signed this session, both kinds: what the budget bounds."""
        return sum(self.owed.values()) + sum(self.direct_owed.values()) - sum(self._before.values())

    def _previous(self, content_id: bytes, seeder: str) -> int:
        key = (content_id, seeder)
        if key not in self._before:
            self._before[key] = self.signed_before(content_id, seeder) if self.signed_before else 0
        return self._before[key]

    def pay_for_slice(self, seeder: str) -> SignedCheque:
        """The next cheque to `seeder`: what was signed before plus one slice."""
        return self.pay(seeder, self.price_wei)

    def pay(self, seeder: str, amount_wei: int, *, direct: bool = False) -> SignedCheque:
        """Raise the cumulative cheque to `seeder` by `amount_wei` (a direct cheque if
        `direct`: a grant holder paying a seeder its share)."""
        if self.spent_wei + amount_wei > self.budget_wei:
            raise BudgetExceeded(f"paying {amount_wei} wei more would pass the budget of {self.budget_wei} wei")
        owed, latest = (self.direct_owed, self._latest_direct) if direct else (self.owed, self._latest)
        content_id = DIRECT_CONTENT_ID if direct else self.content_id
        amount = owed.get(seeder, self._previous(content_id, seeder)) + amount_wei
        signed = self.domain.sign(self.account, Cheque(self.account.address, content_id, seeder, amount))
        owed[seeder] = amount
        latest[seeder] = signed
        return signed

    def split_slice_price(self, shares: list[tuple[str, int]], price_wei: int | None = None) -> dict[str, int]:
        """One slice's price (or `price_wei`) divided among payees in proportion to the
        bytes each sent; rounding goes to the first (the main sender), so the parts sum
        to the price."""
        price = self.price_wei if price_wei is None else price_wei
        total = sum(size for _, size in shares)
        parts: dict[str, int] = {}
        for payee, size in shares[1:]:
            parts[payee] = parts.get(payee, 0) + price * size // total
        main = shares[0][0]
        parts[main] = parts.get(main, 0) + price - sum(parts.values())
        return parts

    def latest(self, seeder: str, *, direct: bool = False) -> SignedCheque | None:
        return (self._latest_direct if direct else self._latest).get(seeder)

    def all_signed(self) -> list[SignedCheque]:
        """The newest cheque of every counter: what the viewer keeps in its ledger."""
        return [*self._latest.values(), *self._latest_direct.values()]
