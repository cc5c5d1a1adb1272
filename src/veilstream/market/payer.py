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

from collections import deque
from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from veilstream.chain.cheque import Cheque, ChequeDomain, SignedCheque
from veilstream.market.credit import DIRECT_CONTENT_ID
from veilstream.market.errors import MarketError


class BudgetExceeded(MarketError):
    """Paying for another slice would pass the budget the viewer set."""


class Payer:
    def __init__(self, account: LocalAccount, domain: ChequeDomain, content_id: bytes, price_wei: int, budget_wei: int,
                 signed_before: Callable[[bytes, str], int] | None = None, *, sign_ahead: int = 0) -> None:
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
        self._resigned: dict[str, SignedCheque] = {}  # seeder → a cheque for what earlier sessions signed it
        # Signing right after signing is ~3× cheaper: libsecp256k1's tables are still in
        # the cache, while between slices a streaming viewer pushes megabytes through it.
        # So with `sign_ahead` = k, a cold signature brings the next k cheques of the same
        # increment to that payee along; they are used only if the next payments are
        # exactly those (else dropped) and never leave this object otherwise; what is
        # spent plus what the unused ones stand for stays within the budget.
        self.sign_ahead = sign_ahead
        self._ahead: dict[tuple[bytes, str], deque[SignedCheque]] = {}

    @property
    def content_spent_wei(self) -> int:
        """Signed this session in cheques for the content."""
        return self._signed_this_session(self.content_id, self.owed)

    @property
    def spent_wei(self) -> int:
        """Signed this session, both kinds: what the budget bounds."""
        return self.content_spent_wei + self._signed_this_session(DIRECT_CONTENT_ID, self.direct_owed)

    def _signed_this_session(self, content_id: bytes, owed: dict[str, int]) -> int:
        # Only payees paid this session count: what was signed before is read for others
        # too (a lane is held to cover it) and is no spending of this session's.
        return sum(amount - self._before[(content_id, seeder)] for seeder, amount in owed.items())

    def _previous(self, content_id: bytes, seeder: str) -> int:
        key = (content_id, seeder)
        if key not in self._before:
            self._before[key] = self.signed_before(content_id, seeder) if self.signed_before else 0
        return self._before[key]

    def signed_before_for(self, content_id: bytes, seeder: str) -> int:
        """What earlier sessions signed `seeder` on this counter (read once, then kept)."""
        return self._previous(content_id, seeder)

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
        cheque = Cheque(self.account.address, content_id, seeder, amount)
        signed = self._signed_ahead(cheque)
        if signed is None:
            signed = self.domain.sign(self.account, cheque)
            self._sign_ahead(cheque, amount_wei)
        owed[seeder] = amount
        latest[seeder] = signed
        return signed

    @property
    def signed_ahead_wei(self) -> int:
        """What the cheques signed ahead and not yet used stand for, beyond what is spent."""
        total = 0
        for (content_id, seeder), ahead in self._ahead.items():
            if ahead:
                owed = self.direct_owed if content_id == DIRECT_CONTENT_ID else self.owed
                total += ahead[-1].cheque.cumulative_amount - owed[seeder]
        return total

    def _signed_ahead(self, cheque: Cheque) -> SignedCheque | None:
        ahead = self._ahead.get((cheque.content_id, cheque.seeder))
        if not ahead:
            return None
        if ahead[0].cheque != cheque:
            ahead.clear()  # the payments took another course
            return None
        return ahead.popleft()

    def _sign_ahead(self, cheque: Cheque, step_wei: int) -> None:
        if not self.sign_ahead or step_wei <= 0:
            return
        key = (cheque.content_id, cheque.seeder)
        self._ahead.pop(key, None)
        # What is spent and what the unused cheques signed ahead stand for stay within the
        # budget: this cheque (signed on demand, so within it) may crowd the others out.
        spent = self.spent_wei + step_wei
        if spent + self.signed_ahead_wei > self.budget_wei:
            self._ahead.clear()
        room = self.budget_wei - spent - self.signed_ahead_wei
        count = max(0, min(self.sign_ahead, room // step_wei))
        self._ahead[key] = deque(
            self.domain.sign(self.account, Cheque(cheque.viewer, cheque.content_id, cheque.seeder,
                                                  cheque.cumulative_amount + k * step_wei))
            for k in range(1, count + 1))

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

    def standing_cheque(self, seeder: str) -> SignedCheque | None:
        """The cheque for all this viewer signed `seeder` on the content: this session's
        latest, else one for what earlier sessions signed it, signed again (the same
        amount is no new spending); None if it was never paid."""
        latest = self._latest.get(seeder)
        if latest is not None:
            return latest
        before = self._previous(self.content_id, seeder)
        if not before:
            return None
        if seeder not in self._resigned:
            self._resigned[seeder] = self.domain.sign(self.account, Cheque(self.account.address, self.content_id,
                                                                           seeder, before))
        return self._resigned[seeder]

    def latest(self, seeder: str, *, direct: bool = False) -> SignedCheque | None:
        return (self._latest_direct if direct else self._latest).get(seeder)

    def all_signed(self) -> list[SignedCheque]:
        """The newest cheque of every counter: what the viewer keeps in its ledger."""
        return [*self._latest.values(), *self._latest_direct.values()]
