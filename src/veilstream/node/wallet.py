"""The wallet as its user sees it, for `veil wallet ...` and the node's API alike: what the
account holds, what its lanes hold and its cheques commit, a withdrawal under way, the
cheques it holds uncashed and when each is due, what it earned per content, and what it
did on chain with the gas each transaction cost.

Every function here blocks on the chain: the CLI calls them directly; the node calls them
off its event loop (reads on a thread, sends on its Cashier's worker, in order with the
cashing). Cheques come from the caller's ledger, read where the ledger lives; a request
the chain would refuse is refused here first, in words, before any gas is spent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from veilstream.chain import (ChainClient, ChainError, ChainEvent, Lane, PendingWithdrawal, Receipt, RecordedCheque,
                              SignedCheque)
from veilstream.chain.ledger import Direction
from veilstream.market.cashier import Claim, HeldBack, claim_if_worth_it
from veilstream.market.settings import MarketSettings
from veilstream.node.units import format_ether, format_gas, parse_amount

BPS = 10_000


class WalletError(ChainError):
    """A wallet request that cannot be done as asked (an amount above the deposit, say)."""

    http_status = 400


class WalletConflict(WalletError):
    """A request the wallet's state refuses now (the withdrawal is still time-locked, say)."""

    http_status = 409


# -- as a person reads it ---------------------------------------------------------------------

def cheques(count: int) -> str:
    return f"{count} cheque" + ("" if count == 1 else "s")


def utc(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(unix_s)) + " UTC"


def short(content_id: bytes) -> str:
    return content_id.hex()[:16] + "…" if any(content_id) else "(direct)"


def when(at: int, now: int) -> str:
    """'now', 'in 23h 59m' or 'in 4m 05s': how long until chain time `at`."""
    if at <= now:
        return "now"
    left = at - now
    hours, rest = divmod(left, 3600)
    return f"in {hours}h {rest // 60:02d}m" if hours else f"in {rest // 60}m {rest % 60:02d}s"


def held_back_lines(cheques_held: HeldBack | None, earnings: HeldBack | None,
                    settings: MarketSettings = MarketSettings()) -> list[str]:
    """What the gas rule left for later, and how to get it anyway."""
    share = f"1/{settings.min_cash_gain_ratio:g}"
    lines = []
    if cheques_held is not None:
        why = ("more than they are worth" if cheques_held.gas_wei >= cheques_held.amount_wei
               else f"more than {share} of what they bring in")
        line = (f"left uncashed: {format_ether(cheques_held.amount_wei)} in {cheques(cheques_held.cheques)} "
                f"(gas {format_gas(cheques_held.gas_wei)} would cost {why}); they stay in the ledger and are cashed "
                "by a later run or `veil wallet cash` (`--all`: whatever the gas)")
        if cheques_held.due_by is not None:
            line += f"; cash them before {utc(cheques_held.due_by)}, when a lane they count on ends"
        lines.append(line)
    if earnings is not None:
        why = "more than they are worth" if earnings.gas_wei >= earnings.amount_wei else f"more than {share} of them"
        lines.append(f"left unclaimed: {format_ether(earnings.amount_wei)} of earnings "
                     f"(gas {format_gas(earnings.gas_wei)} would cost {why}); `veil wallet claim --all` claims them anyway")
    return lines


# -- what the account holds -------------------------------------------------------------------

@dataclass(frozen=True)
class WalletState:
    address: str
    balance_wei: int  # ether in the account itself
    deposit_wei: int  # the free deposit: what cheques fall back on and withdrawals take
    held_wei: int  # what the lanes hold apart from it, for their payees
    committed: dict[bytes, int]  # content id → what this account's cheques commit, not yet cashed
    withdrawal: PendingWithdrawal | None
    earnings_wei: int  # credited to this account, not yet claimed
    now: int  # chain time


@dataclass(frozen=True)
class HeldLane:
    content_id: bytes
    payee: str
    lane: Lane


def wallet_state(client: ChainClient, issued: Iterable[SignedCheque]) -> WalletState:
    """The account as `veil wallet balance` shows it; `issued`: the ledger's latest cheques signed."""
    return WalletState(client.address, client.balance(), client.deposit_of(), client.held_of(),
                       committed(client, issued), client.pending_withdrawal(), client.earnings(), client.timestamp())


def committed(client: ChainClient, issued: Iterable[SignedCheque]) -> dict[bytes, int]:
    """content id → what the cheques this account signed for it commit and the chain has
    not cashed yet (the latest cheques less what is cashed)."""
    out: dict[bytes, int] = {}
    for c in (signed.cheque for signed in issued):
        if c.viewer == client.address:
            left = c.cumulative_amount - client.cashed(c.viewer, c.content_id, c.seeder)
            if left > 0:
                out[c.content_id] = out.get(c.content_id, 0) + left
    return out


def lanes(client: ChainClient) -> list[HeldLane]:
    """The lanes this account holds for payees, by content and payee."""
    me = client.address
    keys = {(bytes(e.args["content_id"]), e.args["payee"])
            for e in client.events(names=["LaneOpened"]).events if e.args["viewer"] == me}
    found = [HeldLane(cid, payee, client.lane(me, cid, payee)) for cid, payee in sorted(keys)]
    return [held for held in found if held.lane is not None]


# -- what it sends ----------------------------------------------------------------------------

def deposit(client: ChainClient, wei: int) -> Receipt:
    if wei <= 0:
        raise WalletError("a deposit must be more than 0")
    balance = client.balance()
    if wei > balance:
        raise WalletError(f"not enough ether in the account: it holds {format_ether(balance)}, and a deposit of "
                          f"{format_ether(wei)} needs that much plus gas")
    return client.deposit(wei)


def request_withdrawal(client: ChainClient, amount: str) -> tuple[Receipt, PendingWithdrawal]:
    """Ask for `amount` ('all': the whole free deposit) back; executable after the delay."""
    already = client.pending_withdrawal()
    if already is not None:  # before any gas is spent on a request the Wallet would replace
        raise WalletConflict(f"a withdrawal of {format_ether(already.amount)} is already requested (executable "
                             f"{when(already.unlock_at, client.timestamp())}): execute it "
                             "(`veil wallet withdraw execute`) or cancel it (`veil wallet withdraw cancel`) first")
    free = client.deposit_of()  # lanes hold the rest apart from it
    wei = free if amount.strip().lower() == "all" else parse_amount(amount)
    if wei > free or wei == 0:
        raise WalletError(f"your free deposit is {format_ether(free)} ({format_ether(client.held_of())} more is held "
                          "in lanes: `veil wallet lanes`): a withdrawal takes more than 0 and at most that")
    receipt = client.request_withdrawal(wei)
    return receipt, client.pending_withdrawal()


def execute_withdrawal(client: ChainClient) -> tuple[int, Receipt]:
    """Take the requested withdrawal (less any cheques cashed meanwhile); returns what came back."""
    pending = client.pending_withdrawal()
    if pending is None:
        raise WalletConflict("no withdrawal requested: request one first (`veil wallet withdraw request AMOUNT`)")
    now = client.timestamp()
    if pending.unlock_at > now:
        raise WalletConflict(f"the withdrawal is time-locked: it can be executed "
                             f"{when(pending.unlock_at, now)} ({utc(pending.unlock_at)})")
    receipt = client.execute_withdrawal()
    return receipt.named("Withdrawn")[0].args["amount"], receipt


def cancel_withdrawal(client: ChainClient) -> Receipt:
    if client.pending_withdrawal() is None:
        raise WalletConflict("no withdrawal requested: there is nothing to cancel")
    return client.cancel_withdrawal()


def claim(client: ChainClient, settings: MarketSettings, *, ignore_gas: bool = False) -> Claim:
    """Move the earnings to the account if worth the gas (whatever it is with `ignore_gas`)."""
    if client.earnings() == 0:
        raise WalletConflict("nothing to claim: cash cheques first (`veil wallet cash`)")
    return claim_if_worth_it(client, settings, ignore_gas=ignore_gas)


# -- what it is owed --------------------------------------------------------------------------

@dataclass(frozen=True)
class Uncashed:
    """A cheque held and not (wholly) cashed, and by when it must be."""

    signed: SignedCheque
    uncashed_wei: int
    # Chain time to cash it by: its lane's time less the margin (the payee stops counting on
    # the lane then), or sooner the unlock of a withdrawal its viewer asked for. None: neither.
    due_by: int | None


def uncashed(client: ChainClient, received: Iterable[SignedCheque],
             settings: MarketSettings = MarketSettings()) -> list[Uncashed]:
    """The cheques of `received` (the ledger's latest) worth more than what the chain cashed of them."""
    withdrawals: dict[str, PendingWithdrawal | None] = {}
    out = []
    for signed in received:
        c = signed.cheque
        cover = client.guarantee(c.viewer, c.content_id, c.seeder)
        left = c.cumulative_amount - cover.cashed_wei
        if left <= 0:
            continue
        if c.viewer not in withdrawals:
            withdrawals[c.viewer] = client.pending_withdrawal(c.viewer)
        deadlines = [cover.until - settings.lane_cash_margin_s] if cover.until else []
        if withdrawals[c.viewer] is not None:
            deadlines.append(withdrawals[c.viewer].unlock_at)
        out.append(Uncashed(signed, left, min(deadlines) if deadlines else None))
    return out


@dataclass(frozen=True)
class Earned:
    earned_wei: int = 0  # what the cheques held give this account, cashed or not
    cashed_wei: int = 0  # of that, what the chain has paid

    @property
    def pending_wei(self) -> int:
        return self.earned_wei - self.cashed_wei

    def __add__(self, other: Earned) -> Earned:
        return Earned(self.earned_wei + other.earned_wei, self.cashed_wei + other.cashed_wei)


@dataclass(frozen=True)
class ContentEarnings:
    content_id: bytes  # zero: direct payments, which name no content
    as_seeder: Earned  # the seeder share of cheques naming this account as seeder
    as_creator: Earned  # the creator's part of cheques for this account's own contents

    @property
    def total(self) -> Earned:
        return self.as_seeder + self.as_creator


def earnings(client: ChainClient, received: Iterable[SignedCheque]) -> list[ContentEarnings]:
    """Per content, what the cheques this account received give it, split as Wallet.cash
    splits them (the seeder share in force now to the seeder, the rest to the creator)."""
    me = client.address
    terms: dict[bytes, tuple[str, int]] = {}
    seeder: dict[bytes, Earned] = {}
    creator: dict[bytes, Earned] = {}
    for c in (signed.cheque for signed in received):
        cid = c.content_id
        if cid not in terms:
            terms[cid] = client.payout_terms(cid) if any(cid) else (c.seeder, BPS)
        owner, share_bps = terms[cid]
        amounts = (c.cumulative_amount, client.cashed(c.viewer, cid, c.seeder))
        if c.seeder == me:
            seeder[cid] = seeder.get(cid, Earned()) + Earned(*(a * share_bps // BPS for a in amounts))
        if owner == me:
            creator[cid] = creator.get(cid, Earned()) + Earned(*(a - a * share_bps // BPS for a in amounts))
    return [ContentEarnings(cid, seeder.get(cid, Earned()), creator.get(cid, Earned()))
            for cid in sorted(seeder.keys() | creator.keys())]


# -- what it did -------------------------------------------------------------------------------

HISTORY_KINDS = {Direction.ISSUED: "paid in cheques", Direction.RECEIVED: "earned in cheques"}


def history(client: ChainClient, recorded: Iterable[RecordedCheque]) -> list[dict]:
    """What this account spent and earned in cheques (`recorded`: the ledger's history) and
    grants (see `veil wallet history`), newest first; amounts in wei."""
    me = client.address
    rows = []
    for entry in recorded:
        c = entry.signed.cheque
        if me not in (c.viewer, c.seeder):
            continue
        rows.append({"when": entry.recorded_at, "kind": HISTORY_KINDS[entry.direction], "content_id": c.content_id.hex(),
                     "counterparty": c.seeder if entry.direction is Direction.ISSUED else c.viewer,
                     "amount_wei": c.cumulative_amount, "cashed_wei": client.cashed(c.viewer, c.content_id, c.seeder)})
    for event in client.events(names=["GrantOpened"]).events:
        if event.args["buyer"] != me:
            continue
        grant = client.grant(event.args["grant_id"])
        content_id = bytes(event.args["content_id"])
        rows.append({"when": client.block_timestamp(event.block_number), "kind": "bought a grant",
                     "content_id": content_id.hex(), "counterparty": client.payout_terms(content_id)[0],
                     "amount_wei": int(event.args["amount"]), "grant_id": int(event.args["grant_id"]),
                     "state": grant.state.name.lower() if grant else "unknown"})
    rows.sort(key=lambda row: row["when"] or 0, reverse=True)
    return rows


# What a transaction did, named by the first of its events found in this order.
TRANSACTION_KINDS = {
    "Deposited": "deposit",
    "WithdrawalRequested": "withdrawal requested",
    "WithdrawalCancelled": "withdrawal cancelled",
    "Withdrawn": "withdrawal executed",
    "ChequeCashed": "cheques cashed",
    "ChequeShortfall": "cheques cashed",
    "ChequeRejected": "cheques cashed",
    "Claimed": "earnings claimed",
    "LaneOpened": "lanes opened",
    "LaneClosed": "lane closed",
    "GrantOpened": "grant bought",
    "KeyIssued": "grant key posted",
    "Settled": "grant settled",
    "Refunded": "grant refunded",
    "Disputed": "grant disputed",
    "ContentRegistered": "content registered",
    "PriceChanged": "terms changed",
    "SeederShareScheduled": "terms changed",
    "SeederShareCancelled": "terms changed",
    "KeyAgentChanged": "key agent changed",
    "CardChanged": "card set",
    "Anchored": "anchored",
}
# The argument of an event that says how much it moved (summed over the transaction's events of its kind).
AMOUNT_ARGS = {"Deposited": "amount", "WithdrawalRequested": "amount", "Withdrawn": "amount", "ChequeCashed": "paid",
               "Claimed": "amount", "LaneOpened": "amount", "LaneClosed": "amount", "GrantOpened": "amount",
               "Settled": "amount", "Refunded": "amount", "Disputed": "amount"}


def transactions(client: ChainClient) -> list[dict]:
    """The transactions this account sent to the Veilstream contracts, newest first: what
    each did, what it moved and what its gas cost (amounts in wei)."""
    me = client.address
    creators: dict[bytes, str] = {}

    def concerns_me(event: ChainEvent) -> bool:
        if me in event.args.values():
            return True
        if event.name == "ChequeCashed" and any(event.args["content_id"]):  # a creator cashing its seeders' cheques
            cid = bytes(event.args["content_id"])
            if cid not in creators:
                creators[cid] = client.payout_terms(cid)[0]
            return creators[cid] == me
        return False

    by_tx: dict[bytes, list[ChainEvent]] = {}
    for event in client.events().events:
        by_tx.setdefault(event.tx_hash, []).append(event)
    rows = []
    for tx_hash, events in by_tx.items():
        if not any(concerns_me(e) for e in events):
            continue
        sent = client.transaction(tx_hash)
        if sent.sender != me:
            continue
        names = {e.name for e in events}
        first = next(name for name in TRANSACTION_KINDS if name in names) if names & TRANSACTION_KINDS.keys() else None
        amount_arg = AMOUNT_ARGS.get(first)
        rows.append({"when": client.block_timestamp(sent.block_number), "block": sent.block_number,
                     "tx_hash": "0x" + tx_hash.hex(), "kind": TRANSACTION_KINDS.get(first, events[0].name),
                     "amount_wei": (sum(int(e.args[amount_arg]) for e in events if e.name == first)
                                    if amount_arg else None),
                     "gas_wei": sent.fee_wei})
    rows.sort(key=lambda row: row["block"], reverse=True)
    return rows
