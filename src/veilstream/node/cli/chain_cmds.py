"""`veil wallet`, `veil chain info` and `veil devnet`: the chain as a person sees it.

Every command uses the embedded chain under the vault (`<home>/chain/embedded`) unless
`--chain-rpc URL` (and the deployment file `veil devnet` writes) names another one.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from veilstream.chain import ChainError, ChequeLedger, Devnet, Direction, open_chain
from veilstream.chain.devnet import DEFAULT_PORT
from veilstream.market.cashier import Cashier
from veilstream.market.settings import MarketSettings
from veilstream.node import wallet as account
from veilstream.node.cli.common import console, err_console, open_vault, this_command, unlock_identity, veil_home
from veilstream.node.units import format_ether, format_gas, parse_amount
from veilstream.node.wallet import cheques, held_back_lines, short, utc, when

DEFAULT_FAUCET = "10"
WALLET_LOCK_WAIT_S = 60.0  # another process of this vault is sending: each send holds the lock for one RPC round

ChainRpc = Annotated[
    str | None,
    typer.Option("--chain-rpc", envvar="VEIL_CHAIN_RPC", help="EVM JSON-RPC endpoint (default: the embedded chain)."),
]
ChainDeployment = Annotated[
    Path | None,
    typer.Option(
        "--chain-deployment",
        envvar="VEIL_CHAIN_DEPLOYMENT",
        help="Deployment file naming the contracts on that chain (`veil devnet` writes one).",
    ),
]


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '30m', '24h', '2d' or plain seconds -> seconds."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in DURATION_UNITS else "s"
    number = raw[:-1] if raw[-1:] in DURATION_UNITS else raw
    if not number.isdigit():
        raise ChainError(f"{text!r} is not a duration: write e.g. 90s, 30m, 24h or 2d")
    return int(number) * DURATION_UNITS[unit]


def _ledger(vault) -> ChequeLedger:
    return ChequeLedger(Path(vault.home) / "chain" / "cheques.sqlite")


@contextmanager
def _client(rpc: str | None, deployment: Path | None):
    vault, identity = unlock_identity()
    client = open_chain(Path(vault.home) / "chain", identity.wallet, rpc_url=rpc, deployment_path=deployment)
    client.sender_lock = _wallet_lock(vault)
    try:
        yield vault, client
    finally:
        client.close()


def _wallet_lock(vault):
    """Processes of one vault send from one wallet: each picks its nonce and sends under
    the vault's `wallet-<address>` lock, so no two pick the same nonce."""
    purpose = this_command()
    return lambda address: vault.hold(f"wallet-{address.lower()}", purpose, wait_s=WALLET_LOCK_WAIT_S)


def _signed(vault, client) -> list:
    """The latest cheque this account signed to each payee, from the vault's ledger."""
    return _latest(vault, client, Direction.ISSUED)


def _received(vault, client) -> list:
    return _latest(vault, client, Direction.RECEIVED)


def _latest(vault, client, direction: Direction) -> list:
    ledger = _ledger(vault)
    try:
        return ledger.latest(client.cheque_domain, direction)
    finally:
        ledger.close()


def _describe(client) -> str:
    if client.dev is not None and client.dev.embedded is not None:
        return f"embedded EVM in {client.dev.embedded.directory}"
    return str(getattr(client.w3.provider, "endpoint_uri", "RPC endpoint"))


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    wallet = typer.Typer(help="Your chain wallet: deposit for cheques, withdraw, see what you are owed.", no_args_is_help=True)
    withdraw = typer.Typer(help="Withdraw your deposit (time-locked, so payees can cash first).", no_args_is_help=True)
    chain = typer.Typer(help="The chain this node pays on.", no_args_is_help=True)
    wallet.add_typer(withdraw, name="withdraw")
    app.add_typer(wallet, name="wallet")
    app.add_typer(chain, name="chain")

    @wallet.command("address")
    def wallet_address() -> None:
        """Print your wallet address (fund it to pay on a public chain)."""
        console.print(open_vault().public_identity()["wallet_address"])

    @wallet.command("balance")
    def wallet_balance(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Your ether, your deposit for cheques, what your cheques commit, any withdrawal under way, and earnings."""
        with _client(rpc, deployment) as (vault, client):
            state = account.wallet_state(client, _signed(vault, client))
        table = Table(show_header=False, box=None)
        table.add_row("address", state.address)
        table.add_row("account", format_ether(state.balance_wei))
        table.add_row("deposit", format_ether(state.deposit_wei))
        table.add_row("held in lanes", f"{format_ether(state.held_wei)} (`veil wallet lanes`)")
        table.add_row("committed in cheques", f"{format_ether(sum(state.committed.values()))} signed, not yet cashed "
                                              "(`veil wallet history`)")
        for content_id, wei in sorted(state.committed.items()):
            table.add_row("", f"{format_ether(wei)} for {short(content_id)}")
        if state.withdrawal:
            table.add_row("withdrawal", f"{format_ether(state.withdrawal.amount)} executable "
                                        f"{when(state.withdrawal.unlock_at, state.now)}")
        table.add_row("earnings", f"{format_ether(state.earnings_wei)} (claim with `veil wallet claim`)")
        console.print(table)

    @wallet.command("deposit")
    def wallet_deposit(
        amount: Annotated[str, typer.Argument(help="How much, e.g. 0.5 (ether), 20gwei.")],
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Deposit ether behind your cheques."""
        wei = parse_amount(amount)
        with _client(rpc, deployment) as (_vault, client):
            account.deposit(client, wei)
            console.print(f"deposited {format_ether(wei)}; deposit is now {format_ether(client.deposit_of())}")

    @withdraw.command("request")
    def withdraw_request(
        amount: Annotated[str, typer.Argument(help="How much, or 'all'.")],
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Ask for your deposit back; it can be executed after the withdrawal delay."""
        with _client(rpc, deployment) as (_vault, client):
            _receipt, pending = account.request_withdrawal(client, amount)
            console.print(
                f"withdrawal of {format_ether(pending.amount)} requested; execute it "
                f"{when(pending.unlock_at, client.timestamp())} with `veil wallet withdraw execute`"
            )

    @withdraw.command("execute")
    def withdraw_execute(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Receive the requested withdrawal (less any cheques cashed meanwhile)."""
        with _client(rpc, deployment) as (_vault, client):
            amount, _receipt = account.execute_withdrawal(client)
            console.print(f"withdrew {format_ether(amount)}")

    @withdraw.command("cancel")
    def withdraw_cancel(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Cancel a requested withdrawal."""
        with _client(rpc, deployment) as (_vault, client):
            account.cancel_withdrawal(client)
            console.print("withdrawal cancelled")

    @wallet.command("pending")
    def wallet_pending(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Cheques you received and have not cashed yet."""
        with _client(rpc, deployment) as (vault, client):
            pending = account.uncashed(client, _received(vault, client))
            now = client.timestamp() if pending else 0
        if not pending:
            console.print("no uncashed cheques")
            return
        table = Table("viewer", "content", "payee", "uncashed", "cash by")
        for item in pending:
            c = item.signed.cheque
            due = f"{utc(item.due_by)} ({when(item.due_by, now)})" if item.due_by is not None else "-"
            table.add_row(c.viewer, short(c.content_id), c.seeder, format_ether(item.uncashed_wei), due)
        console.print(table)
        console.print(f"total {format_ether(sum(p.uncashed_wei for p in pending))}; cash with `veil wallet cash`")

    @wallet.command("cash")
    def wallet_cash(
        everything: Annotated[bool, typer.Option("--all", help="Cash every cheque, even where gas costs more than it brings.")] = False,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Cash the uncashed cheques you hold, in batches, where they are worth their gas."""
        settings = MarketSettings()
        with _client(rpc, deployment) as (vault, client):
            ledger = _ledger(vault)
            try:
                cashier = Cashier(client, ledger, settings)
                if cashier.uncashed_wei:
                    cashier.cash_pending(ignore_gas=everything)
                cashier.shutdown()
            finally:
                ledger.close()
            if not cashier.uncashed_wei and not cashier.cheques_cashed:
                console.print("no uncashed cheques")
                return
            if cashier.failures and not cashier.cheques_cashed:
                raise ChainError(f"cashing failed: {cashier.failures[-1]}")
            console.print(f"cashed {cheques(cashier.cheques_cashed)} for {format_ether(cashier.paid_wei)}; "
                          f"gas paid {format_gas(cashier.gas_paid_wei)}")
            for line in held_back_lines(cashier.held_back, None, settings):
                console.print(line)
            if cashier.failures:
                err_console.print(f"[yellow]some cheques were not cashed: {cashier.failures[-1]}; run it again")
            if cashier.shortfalls:
                err_console.print(f"[yellow]{cashier.shortfalls} cheques bounced in part: their viewers' deposits ran short")
            if cashier.rejected:
                err_console.print(f"[yellow]{cashier.rejected} cheques were refused by the contract")

    @wallet.command("lanes")
    def wallet_lanes(
        close: Annotated[bool, typer.Option("--close", help="Return what lanes past their time hold to the deposit.")] = False,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """The parts of your deposit held for payees (lanes), and until when."""
        with _client(rpc, deployment) as (_vault, client):
            now = client.timestamp()
            lanes = account.lanes(client)
            if not lanes:
                console.print("no lanes held")
                return
            table = Table("content", "payee", "holds", "until")
            closed = 0
            for held in lanes:
                cid, payee, lane = held.content_id, held.payee, held.lane
                due = lane.until <= now
                if close and due:
                    closed += client.close_lane(cid, payee).named("LaneClosed")[0].args["amount"]
                    continue
                table.add_row(short(cid), payee, format_ether(lane.amount),
                              "its time is past (--close)" if due else when(lane.until, now))
            console.print(table)
            if close:
                console.print(f"returned {format_ether(closed)} to your deposit")

    @wallet.command("claim")
    def wallet_claim(
        everything: Annotated[bool, typer.Option("--all", "--force", help="Claim even where gas costs more than it brings.")] = False,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Move your earnings (cashed cheques, key sales) to your account, if worth the gas."""
        settings = MarketSettings()
        with _client(rpc, deployment) as (_vault, client):
            claim = account.claim(client, settings, ignore_gas=everything)
            if claim.held_back is not None:
                for line in held_back_lines(None, claim.held_back, settings):
                    console.print(line)
                return
            console.print(f"claimed {format_ether(claim.claimed_wei)}; gas paid {format_gas(claim.gas_paid_wei)}")

    @wallet.command("history")
    def wallet_history(
        as_json: Annotated[bool, typer.Option("--json", help="One JSON list, amounts in wei.")] = False,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """What you spent and earned per content and payee (cheques, what is cashed of them, grants), newest first."""
        with _client(rpc, deployment) as (vault, client):
            ledger = _ledger(vault)
            try:
                recorded = ledger.history(client.cheque_domain)
            finally:
                ledger.close()
            rows = account.history(client, recorded)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            console.print("nothing spent or earned yet")
            return
        table = Table("when", "what", "content", "with", "amount", "on chain")
        for row in rows:
            settled = (format_ether(row["cashed_wei"]) + " cashed") if "cashed_wei" in row else row["state"]
            table.add_row(utc(row["when"]) if row["when"] else "?", row["kind"], short(bytes.fromhex(row["content_id"])),
                          row["counterparty"], format_ether(row["amount_wei"]), settled)
        console.print(table)

    @wallet.command("faucet")
    def wallet_faucet(
        amount: Annotated[str, typer.Argument(help="How much ether to mint.")] = DEFAULT_FAUCET,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Get test ether (embedded chain and devnet only)."""
        wei = parse_amount(amount)
        with _client(rpc, deployment) as (_vault, client):
            if client.dev is None:
                raise ChainError("this chain has no faucet: fund your address from another wallet")
            client.dev.fund(client.address, wei)
            console.print(f"{format_ether(wei)} sent to {client.address}")

    @chain.command("info")
    def chain_info(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Which chain this node uses, and where the contracts are."""
        with _client(rpc, deployment) as (_vault, client):
            d = client.deployment
            table = Table(show_header=False, box=None)
            table.add_row("chain", _describe(client))
            table.add_row("chain id", str(client.chain_id))
            table.add_row("block", f"{client.block_number()} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(client.timestamp()))} UTC")
            for name, address in d.addresses.items():
                table.add_row(name, address)
            table.add_row("withdrawal delay", f"{d.settings.withdrawal_delay_s}s")
            table.add_row("key deadline", f"{d.settings.key_deadline_s}s")
            table.add_row("terms delay", f"{d.settings.terms_delay_s}s")
            console.print(table)

    @chain.command("advance")
    def chain_advance(
        duration: Annotated[str, typer.Argument(help="How far to move the clock, e.g. 90s, 30m, 24h, 2d.")],
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Move a development chain's clock forward (time locks, deadlines, lanes' time)."""
        seconds = parse_duration(duration)
        with _client(rpc, deployment) as (_vault, client):
            if client.dev is None:
                raise ChainError("only a development chain (embedded or `veil devnet`) can move its clock")
            now = client.dev.advance_time(seconds)
            console.print(f"chain time is now {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC")

    @app.command("devnet")
    def devnet(
        port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = DEFAULT_PORT,
        directory: Annotated[
            Path | None, typer.Option("--dir", help="State directory (default: <home>/chain/devnet).")
        ] = None,
    ) -> None:
        """Run a local chain (anvil) that nodes in other processes share; Ctrl-C stops it."""
        net = Devnet(directory or veil_home() / "chain" / "devnet", port=port)
        # A plain `kill` must stop anvil too (it runs in its own session and keeps the port).
        signal.signal(signal.SIGTERM, _interrupt)
        deployment = net.start()
        try:
            console.print(f"devnet at [bold]{deployment.rpc_url}[/] (chain id {deployment.chain_id})")
            console.print("contracts " + ("deployed" if net.deployed_now else "already deployed, reused"))
            for name, address in deployment.addresses.items():
                console.print(f"  {name:<16} {address}")
            console.print(
                f"deployment file: {net.deployment_path}\n"
                f"nodes use it with: --chain-rpc {deployment.rpc_url} --chain-deployment {net.deployment_path}"
            )
            net.wait()
        except KeyboardInterrupt:
            pass
        finally:
            net.stop()
            console.print(f"devnet stopped; state kept in {net.state_path}")
