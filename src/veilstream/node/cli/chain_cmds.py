"""`veil wallet`, `veil chain info` and `veil devnet`: the chain as a person sees it.

Every command uses the embedded chain under the vault (`<home>/chain/embedded`) unless
`--chain-rpc URL` (and the deployment file `veil devnet` writes) names another one.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from veilstream.chain import ChainError, ChequeLedger, Devnet, open_chain
from veilstream.chain.devnet import DEFAULT_PORT
from veilstream.node.cli.common import console, err_console, open_vault, this_command, unlock_identity, veil_home

WEI_PER_ETHER = 10**18
UNITS = {"wei": 1, "gwei": 10**9, "eth": WEI_PER_ETHER, "ether": WEI_PER_ETHER}
MAX_CHEQUES_PER_BATCH = 256  # Wallet.vy's MAX_CHEQUES_PER_BATCH
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


def parse_amount(text: str) -> int:
    """'0.5' (ether), '0.5eth', '20gwei', '1000wei' -> wei."""
    raw = text.strip().lower().replace("_", "")
    unit = "eth"
    for name in sorted(UNITS, key=len, reverse=True):
        if raw.endswith(name):
            raw, unit = raw[: -len(name)].strip(), name
            break
    try:
        value = Decimal(raw) * UNITS[unit]
    except InvalidOperation:
        raise ChainError(f"{text!r} is not an amount: write e.g. 0.5, 0.5eth, 20gwei or 1000wei") from None
    if value < 0 or value != value.to_integral_value():
        raise ChainError(f"{text!r} is not a whole number of wei")
    return int(value)


def format_ether(wei: int) -> str:
    text = f"{Decimal(wei) / WEI_PER_ETHER:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def _when(unlock_at: int, now: int) -> str:
    if unlock_at <= now:
        return "now"
    left = unlock_at - now
    hours, rest = divmod(left, 3600)
    return f"in {hours}h {rest // 60:02d}m" if hours else f"in {rest // 60}m {rest % 60:02d}s"


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


def _ledger(vault) -> ChequeLedger:
    return ChequeLedger(Path(vault.home) / "chain" / "cheques.sqlite")


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
        """Your ether, your deposit for cheques, any withdrawal under way, and earnings."""
        with _client(rpc, deployment) as (_vault, client):
            me = client.address
            table = Table(show_header=False, box=None)
            table.add_row("address", me)
            table.add_row("account", format_ether(client.balance()))
            table.add_row("deposit", format_ether(client.deposit_of()))
            table.add_row("held in lanes", f"{format_ether(client.held_of())} (`veil wallet lanes`)")
            pending = client.pending_withdrawal()
            if pending:
                table.add_row(
                    "withdrawal",
                    f"{format_ether(pending.amount)} executable {_when(pending.unlock_at, client.timestamp())}",
                )
            table.add_row("earnings", f"{format_ether(client.earnings())} (claim with `veil wallet claim`)")
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
            client.deposit(wei)
            console.print(f"deposited {format_ether(wei)}; deposit is now {format_ether(client.deposit_of())}")

    @withdraw.command("request")
    def withdraw_request(
        amount: Annotated[str, typer.Argument(help="How much, or 'all'.")],
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """Ask for your deposit back; it can be executed after the withdrawal delay."""
        with _client(rpc, deployment) as (_vault, client):
            wei = client.deposit_of() if amount.strip().lower() == "all" else parse_amount(amount)
            client.request_withdrawal(wei)
            pending = client.pending_withdrawal()
            console.print(
                f"withdrawal of {format_ether(wei)} requested; execute it "
                f"{_when(pending.unlock_at, client.timestamp())} with `veil wallet withdraw execute`"
            )

    @withdraw.command("execute")
    def withdraw_execute(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Receive the requested withdrawal (less any cheques cashed meanwhile)."""
        with _client(rpc, deployment) as (_vault, client):
            pending = client.pending_withdrawal()
            if pending is None:
                raise ChainError("no withdrawal requested: run `veil wallet withdraw request AMOUNT` first")
            now = client.timestamp()
            if pending.unlock_at > now:
                raise ChainError(
                    f"the withdrawal is time-locked: it can be executed {_when(pending.unlock_at, now)}"
                )
            receipt = client.execute_withdrawal()
            amount = receipt.named("Withdrawn")[0].args["amount"]
            console.print(f"withdrew {format_ether(amount)}")

    @withdraw.command("cancel")
    def withdraw_cancel(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Cancel a requested withdrawal."""
        with _client(rpc, deployment) as (_vault, client):
            client.cancel_withdrawal()
            console.print("withdrawal cancelled")

    @wallet.command("pending")
    def wallet_pending(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Cheques you received and have not cashed yet."""
        with _client(rpc, deployment) as (vault, client):
            ledger = _ledger(vault)
            try:
                pending = ledger.pending(client)
            finally:
                ledger.close()
            if not pending:
                console.print("no uncashed cheques")
                return
            table = Table("viewer", "content", "payee", "uncashed")
            for item in pending:
                c = item.signed.cheque
                content = c.content_id.hex()[:16] + "…" if any(c.content_id) else "(direct)"
                table.add_row(c.viewer, content, c.seeder, format_ether(item.uncashed))
            console.print(table)
            console.print(f"total {format_ether(sum(p.uncashed for p in pending))}; cash with `veil wallet cash`")

    @wallet.command("cash")
    def wallet_cash(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Cash every uncashed cheque you hold, in batches."""
        with _client(rpc, deployment) as (vault, client):
            ledger = _ledger(vault)
            try:
                pending = [p.signed for p in ledger.pending(client)]
            finally:
                ledger.close()
            if not pending:
                console.print("no uncashed cheques")
                return
            paid = rejected = short = 0
            for start in range(0, len(pending), MAX_CHEQUES_PER_BATCH):
                result = client.cash(pending[start : start + MAX_CHEQUES_PER_BATCH])
                paid += result.paid
                rejected += len(result.rejected)
                short += len(result.shortfalls)
            console.print(f"cashed {len(pending)} cheques for {format_ether(paid)}")
            if short:
                err_console.print(f"[yellow]{short} cheques bounced in part: their viewers' deposits ran short")
            if rejected:
                err_console.print(f"[yellow]{rejected} cheques were refused by the contract")

    @wallet.command("lanes")
    def wallet_lanes(
        close: Annotated[bool, typer.Option("--close", help="Return what lanes past their time hold to the deposit.")] = False,
        rpc: ChainRpc = None,
        deployment: ChainDeployment = None,
    ) -> None:
        """The parts of your deposit held for payees (lanes), and until when."""
        with _client(rpc, deployment) as (_vault, client):
            me, now = client.address, client.timestamp()
            keys = {(bytes(e.args["content_id"]), e.args["payee"])
                    for e in client.events(names=["LaneOpened"]).events if e.args["viewer"] == me}
            lanes = [(cid, payee, client.lane(me, cid, payee)) for cid, payee in sorted(keys)]
            lanes = [(cid, payee, lane) for cid, payee, lane in lanes if lane is not None]
            if not lanes:
                console.print("no lanes held")
                return
            table = Table("content", "payee", "holds", "until")
            closed = 0
            for cid, payee, lane in lanes:
                due = lane.until <= now
                if close and due:
                    closed += client.close_lane(cid, payee).named("LaneClosed")[0].args["amount"]
                    continue
                table.add_row(cid.hex()[:16] + "…" if any(cid) else "(direct)", payee, format_ether(lane.amount),
                              "its time is past (--close)" if due else _when(lane.until, now))
            console.print(table)
            if close:
                console.print(f"returned {format_ether(closed)} to your deposit")

    @wallet.command("claim")
    def wallet_claim(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
        """Move your earnings (cashed cheques, key sales) to your account."""
        with _client(rpc, deployment) as (_vault, client):
            if client.earnings() == 0:
                raise ChainError("nothing to claim: cash cheques first (`veil wallet cash`)")
            console.print(f"claimed {format_ether(client.claim())}")

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
