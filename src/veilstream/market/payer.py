"""The viewer's side of payment: one cumulative cheque per (content, seeder).

Each verified slice raises the cheque to the peer that delivered it by one price; a slice
from a peer that takes no cheques (a plain BitTorrent client) is paid to the creator in
full, with a cheque naming the creator as seeder. The payer never signs beyond a budget.
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from veilstream.chain.cheque import Cheque, ChequeDomain, SignedCheque
from veilstream.market.errors import MarketError


class BudgetExceeded(MarketError):
    """Paying for another slice would pass the budget the viewer set."""


class Payer:
    def __init__(self, account: LocalAccount, domain: ChequeDomain, content_id: bytes, price_wei: int, budget_wei: int) -> None:
        self.account = account
        self.domain = domain
        self.content_id = content_id
        self.price_wei = price_wei
        self.budget_wei = budget_wei
        self.owed: dict[str, int] = {}  # seeder → cumulative amount signed
        self._latest: dict[str, SignedCheque] = {}  # seeder → the cheque for that amount

    @property
    def spent_wei(self) -> int:
        return sum(self.owed.values())

    def pay_for_slice(self, seeder: str) -> SignedCheque:
        """The next cheque to `seeder`: what was signed before plus one slice."""
        return self.pay(seeder, self.price_wei)

    def pay(self, seeder: str, amount_wei: int) -> SignedCheque:
        """Raise the cumulative cheque to `seeder` by `amount_wei`."""
        if self.spent_wei + amount_wei > self.budget_wei:
            raise BudgetExceeded(f"paying {amount_wei} wei more would pass the budget of {self.budget_wei} wei")
        amount = self.owed.get(seeder, 0) + amount_wei
        signed = self.domain.sign(self.account, Cheque(self.account.address, self.content_id, seeder, amount))
        self.owed[seeder] = amount
        self._latest[seeder] = signed
        return signed

    def split_slice_price(self, shares: list[tuple[str, int]]) -> dict[str, int]:
        """One slice's price divided among payees in proportion to the bytes each sent;
        rounding goes to the first (the main sender), so the parts sum to the price."""
        total = sum(size for _, size in shares)
        parts: dict[str, int] = {}
        for payee, size in shares[1:]:
            parts[payee] = parts.get(payee, 0) + self.price_wei * size // total
        main = shares[0][0]
        parts[main] = parts.get(main, 0) + self.price_wei - sum(parts.values())
        return parts

    def latest(self, seeder: str) -> SignedCheque | None:
        return self._latest.get(seeder)
