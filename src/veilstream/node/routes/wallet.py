"""The wallet and earnings, as `veil wallet ...` has them, through the running node: balance
and deposit, withdrawals (request, execute, cancel), the cheques held uncashed, cashing and
claiming, the history with each transaction's gas, and earnings per content.

Chain calls block, so reads run on a thread and sends on the Cashier's worker: one at a
time and in order with the node's own cashing (the vault's wallet lock orders them with
other processes of the vault), while the event loop goes on serving. The ledger is read on
the loop, which writes it. Amounts come in as the CLI takes them ("0.01" ether, "5000gwei",
"1000wei") and go out as {"wei": "<integer>", "ether": "0.01 ETH"}.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from veilstream.chain import CashResult, Direction, PendingWithdrawal, Receipt
from veilstream.errors import VeilError
from veilstream.market.cashier import HeldBack
from veilstream.node import wallet as account
from veilstream.node.units import format_ether, parse_amount
from veilstream.node.wallet import WalletError, utc

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

AMOUNT_HELP = 'How much: "0.01" (ether), "0.5eth", "5000gwei" or "1000wei", as a string.'


class NodeStopping(VeilError):
    http_status = 503


class Amount(BaseModel):
    amount: Any = Field(None, description=AMOUNT_HELP, examples=["0.01", "5000gwei"])


class WithdrawalAmount(BaseModel):
    amount: Any = Field(None, description=AMOUNT_HELP + ' "all": the whole free deposit.', examples=["0.01", "all"])


class GasChoice(BaseModel):
    ignore_gas: bool = Field(False, description="Send even where the gas costs more than it brings in (the CLI's --all).")


def money(wei: int) -> dict[str, str]:
    return {"wei": str(wei), "ether": format_ether(wei)}


def amount_text(value: Any) -> str:
    """The amount a request gave, refused unless it is written as the CLI takes it: a JSON
    number would leave open whether 1000 means ether or wei."""
    if not isinstance(value, str) or not value.strip():
        raise WalletError(f"amount: {AMOUNT_HELP}")
    return value


# A wallet view is not reused once read: another node's cashing or a deposit from another
# process of the vault must show in the next GET. Callers while a read runs share it.
WALLET_FRESH_S = 0.0


class _SharedRead:
    """A chain read many clients ask for at once (a page open in several tabs, a dashboard
    polling): callers while one runs share its answer, and an answer is reused for
    `fresh_s`; `changed()` (a send of this node's) drops it. A failure is never reused."""

    def __init__(self, fresh_s: float) -> None:
        self.fresh_s = fresh_s
        self._running: asyncio.Future | None = None
        self._value: Any = None
        self._at = float("-inf")
        self._generation = 0

    async def get(self, work) -> Any:
        loop = asyncio.get_running_loop()
        if self._value is not None and loop.time() - self._at < self.fresh_s:
            return self._value
        if self._running is None:
            generation = self._generation
            running = self._running = loop.run_in_executor(None, work)

            def settle(done: asyncio.Future) -> None:
                if self._running is done:
                    self._running = None
                if not done.cancelled() and done.exception() is None and generation == self._generation:
                    self._value, self._at = done.result(), loop.time()

            running.add_done_callback(settle)
        return await asyncio.shield(self._running)  # a client that goes away leaves the others their answer

    def changed(self) -> None:
        self._generation += 1
        self._value, self._running = None, None


def router(node: Node) -> APIRouter:
    api = APIRouter()
    client = node.client
    wallet_view = _SharedRead(WALLET_FRESH_S)

    async def read(work, *args):
        return await asyncio.to_thread(work, *args)

    async def send(work, *args):
        wallet_view.changed()
        try:
            future = node.seller.cashier.send(work, *args)
        except RuntimeError:  # its worker is shut: the node is stopping
            raise NodeStopping("the node is stopping: it sends nothing more") from None
        try:
            return await asyncio.wrap_future(future)
        finally:
            wallet_view.changed()  # what it changed shows in the next view

    def latest(direction: Direction):
        return node.ledger.latest(client.cheque_domain, direction)

    @api.get("/wallet")
    async def wallet() -> dict[str, Any]:
        """Address, ether, the free deposit, what lanes hold, what cheques commit, a
        withdrawal under way (its unlock time and the seconds left), unclaimed earnings."""
        issued = latest(Direction.ISSUED)
        state, lanes = await wallet_view.get(lambda: (account.wallet_state(client, issued), account.lanes(client)))
        return {
            "address": state.address,
            "balance": money(state.balance_wei),
            "deposit": money(state.deposit_wei),
            "held_in_lanes": money(state.held_wei),
            "lanes": [{"content_id": held.content_id.hex(), "payee": held.payee, "holds": money(held.lane.amount),
                       "until": held.lane.until, "seconds_left": max(0, held.lane.until - state.now)}
                      for held in lanes],
            "committed": {"total": money(sum(state.committed.values())),
                          "contents": [{"content_id": cid.hex(), "amount": money(wei)}
                                       for cid, wei in sorted(state.committed.items())]},
            "withdrawal": withdrawal(state.withdrawal, state.now),
            "earnings": money(state.earnings_wei),
            "chain_time": state.now,
        }

    @api.post("/wallet/deposit")
    async def deposit(body: Amount) -> dict[str, Any]:
        """Deposit ether behind this account's cheques."""
        wei = parse_amount(amount_text(body.amount))
        receipt = await send(account.deposit, client, wei)
        return {"deposited": money(wei), "deposit": money(await read(client.deposit_of)), **receipt_shown(receipt)}

    @api.post("/wallet/withdrawals", status_code=201)
    async def request_withdrawal(body: WithdrawalAmount) -> dict[str, Any]:
        """Ask for (part of) the free deposit back: executable once its time-lock ends, so
        payees can cash what the deposit owes them first."""
        text = amount_text(body.amount)
        if text.strip().lower() != "all":
            parse_amount(text)  # a malformed amount is refused before it queues behind the chain work

        def request():
            receipt, pending = account.request_withdrawal(client, text)
            return receipt, pending, client.timestamp()

        receipt, pending, now = await send(request)
        return {"withdrawal": withdrawal(pending, now), **receipt_shown(receipt)}

    @api.post("/wallet/withdrawals/execute")
    async def execute_withdrawal() -> dict[str, Any]:
        """Take the requested withdrawal once unlocked (less what cheques cashed meanwhile)."""
        amount, receipt = await send(account.execute_withdrawal, client)
        return {"withdrew": money(amount), **receipt_shown(receipt)}

    @api.delete("/wallet/withdrawals")
    async def cancel_withdrawal() -> dict[str, Any]:
        receipt = await send(account.cancel_withdrawal, client)
        return {"cancelled": True, **receipt_shown(receipt)}

    @api.get("/wallet/pending")
    async def pending() -> dict[str, Any]:
        """Cheques held and not cashed: per viewer, content and payee, and when each is due."""
        received = latest(Direction.RECEIVED)
        items, now = await read(lambda: (account.uncashed(client, received, node.seller.settings), client.timestamp()))
        return {
            "cheques": [{"viewer": item.signed.cheque.viewer, "content_id": item.signed.cheque.content_id.hex(),
                         "payee": item.signed.cheque.seeder, "signed": money(item.signed.cheque.cumulative_amount),
                         "uncashed": money(item.uncashed_wei), **due(item.due_by, now)} for item in items],
            "total": money(sum(item.uncashed_wei for item in items)),
            "chain_time": now,
        }

    @api.post("/wallet/cash")
    async def cash(body: GasChoice | None = None) -> dict[str, Any]:
        """Cash the cheques held now, in batches: those worth their gas (all of them with
        `ignore_gas`), and whatever the gas those a deadline made due."""
        cashier = node.seller.cashier
        batches = cashier.cash_now(ignore_gas=body is not None and body.ignore_gas)  # on the loop, with its books
        outcomes = await asyncio.gather(*(asyncio.wrap_future(batch) for batch in batches), return_exceptions=True)
        results = [o for o in outcomes if isinstance(o, CashResult)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures and not results:
            raise failures[0]
        cashed = [e for result in results for e in result.cashed]
        return {
            "cheques_cashed": len(cashed),
            "cashed": [{"viewer": e.args["viewer"], "content_id": bytes(e.args["content_id"]).hex(),
                        "payee": e.args["seeder"], "paid": money(int(e.args["paid"]))} for e in cashed],
            "paid": money(sum(result.paid for result in results)),
            "gas": money(sum(result.receipt.fee_wei for result in results)),
            "tx_hashes": ["0x" + result.receipt.tx_hash.hex() for result in results],
            "rejected": [{"viewer": key[0], "content_id": bytes(key[1]).hex(), "payee": key[2], "reason": reason.name.lower()}
                         for result in results for key, reason in result.rejected],
            "shortfalls": sum(len(result.shortfalls) for result in results),
            "held_back": held_back(cashier.held_back),
            "failures": [str(failure) for failure in failures],
        }

    @api.post("/wallet/claim")
    async def claim(body: GasChoice | None = None) -> dict[str, Any]:
        """Move the earnings (cashed cheques, key sales) to the account, if worth the gas."""
        ignore_gas = body is not None and body.ignore_gas
        done = await send(partial(account.claim, client, node.seller.settings, ignore_gas=ignore_gas))
        return {"claimed": money(done.claimed_wei), "gas": money(done.gas_paid_wei), "held_back": held_back(done.held_back)}

    @api.get("/wallet/history")
    async def history() -> dict[str, Any]:
        """Newest first: what this account paid and earned in cheques and grants, and the
        transactions it sent, with the gas each cost."""
        recorded = node.ledger.history(client.cheque_domain)
        entries, transactions = await read(lambda: (account.history(client, recorded), account.transactions(client)))
        return {"entries": [amounts_shown(row) for row in entries],
                "transactions": [amounts_shown(row) for row in transactions]}

    @api.get("/earnings")
    async def earnings() -> dict[str, Any]:
        """Per content: what the cheques held give this account, as seeder and as creator,
        what of it the chain has paid, and what is still to cash."""
        received = latest(Direction.RECEIVED)
        per_content, unclaimed = await read(lambda: (account.earnings(client, received), client.earnings()))
        total = sum((item.total for item in per_content), account.Earned())
        return {
            "contents": [{"content_id": item.content_id.hex(), "role": node.roles.get(item.content_id.hex()),
                          **earned(item.total), "as_seeder": earned(item.as_seeder),
                          "as_creator": earned(item.as_creator)} for item in per_content],
            "total": earned(total),
            "unclaimed": money(unclaimed),
        }

    return api


def withdrawal(pending: PendingWithdrawal | None, now: int) -> dict[str, Any] | None:
    if pending is None:
        return None
    return {"amount": money(pending.amount), "unlock_at": pending.unlock_at, "unlock_at_utc": utc(pending.unlock_at),
            "seconds_left": max(0, pending.unlock_at - now), "executable": pending.unlock_at <= now}


def due(due_by: int | None, now: int) -> dict[str, Any]:
    if due_by is None:
        return {"due_by": None, "due_by_utc": None, "seconds_left": None}
    return {"due_by": due_by, "due_by_utc": utc(due_by), "seconds_left": max(0, due_by - now)}


def receipt_shown(receipt: Receipt) -> dict[str, Any]:
    return {"gas": money(receipt.fee_wei), "tx_hash": "0x" + receipt.tx_hash.hex()}


def held_back(held: HeldBack | None) -> dict[str, Any] | None:
    if held is None:
        return None
    return {"amount": money(held.amount_wei), "gas": money(held.gas_wei), "cheques": held.cheques,
            "due_by": held.due_by}


def earned(item: account.Earned) -> dict[str, Any]:
    return {"earned": money(item.earned_wei), "cashed": money(item.cashed_wei), "pending": money(item.pending_wei)}


def amounts_shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row of wei amounts (`*_wei`) as the API shows amounts."""
    return {(key[:-4] if key.endswith("_wei") else key): (money(value) if key.endswith("_wei") and value is not None
                                                          else value)
            for key, value in row.items()}
