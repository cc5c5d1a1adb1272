"""`veil serve`, `veil play`, `veil earnings`: the market from the command line.

Nodes in separate processes share a chain through an RPC endpoint (`veil devnet` starts
one and writes the deployment file); every command takes `--chain-rpc` and
`--chain-deployment` (or VEIL_CHAIN_RPC / VEIL_CHAIN_DEPLOYMENT).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from veilstream.chain.errors import ChainUnavailable
from veilstream.chain.ledger import Direction
from veilstream.content import Torrent, parse_content_id
from veilstream.errors import VeilError
from veilstream.market import messages
from veilstream.chain.client import GrantState
from veilstream.market.access import AccessError, OneTimeKey, collect_grant, grants_bought, held_grants
from veilstream.market.credit import seeder_part_wei
from veilstream.market.onchain import registered_record
from veilstream.market.settings import MarketSettings
from veilstream.market.stream import BudgetSpent, viewer_swarm_settings
from veilstream.node.cli.chain_cmds import (ChainDeployment, ChainRpc, _client, _ledger, format_ether, format_gas,
                                          parse_amount)
from veilstream.node.selling import Seller
from veilstream.node.watching import (KeysKeeper, fetch_metadata, grant_secret_name, grant_secrets, known_torrent,
                                      open_paid_stream)
from veilstream.node.wallet import held_back_lines
from veilstream.node.cards import open_index, publish_view, resolve_card
from veilstream.node.cli.common import console, err_console, hold_content, veil_home
from veilstream.node.cli.swarm_cmds import _settings, magnet_hints, parse_host_port
from veilstream.swarm import ExtensionRegistry, run, SwarmNode, UT_METADATA
from veilstream.vault import ResumableOutput, StorageError

BUY_WAIT_S = 120.0  # how long `veil buy` waits for the key agent's answer


class MarketCommandError(VeilError):
    pass


class Interrupted(MarketCommandError):
    exit_code = 130


def _registry() -> ExtensionRegistry:
    return ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))


def serve(
    content_ids: list[str] = typer.Argument(..., metavar="CONTENT", help="Content ids (or magnets) held in the vault: "
                                            "one process serves them all on one port."),
    keys: bool = typer.Option(False, "--keys", help="Also sell the slice keys (the creator's node: the vault holds them)."),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="Where to accept peers, HOST:PORT."),
    tracker: list[str] = typer.Option([], "--tracker", help="Announce to this HTTP tracker (repeatable)."),
    serve_plain: bool = typer.Option(False, "--serve-plain", help="Also seed the ciphertext, free, to plain BitTorrent "
                                     "peers (they pay nothing; off by default for paid content)."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Serve contents for cheques (and, with --keys, sell their keys) until interrupted; cash on exit."""
    cids = list(dict.fromkeys(parse_content_id(c) for c in content_ids))
    listen_at = _settings(listen, False)  # a bad --listen is refused before the passphrase
    with _client(rpc, deployment) as (vault, client), ExitStack() as held:
        for cid in cids:
            held.enter_context(hold_content(vault, cid))
        _serve(cids, vault, vault.identity(), client, keys, listen_at, tracker, serve_plain)


def _serve(cids: list[str], vault, identity, client, keys: bool, listen_at, tracker: list[str],
           serve_plain: bool = False) -> None:
    settings = MarketSettings()
    stop = asyncio.Event()
    seller = Seller(vault, identity, client, _ledger(vault), settings, serve_plain=serve_plain, trackers=tuple(tracker),
                    on_fatal=stop.set)
    for cid in cids:
        seller.offer(cid, keys=keys)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.set_exception_handler(seller.on_loop_error)
        async with SwarmNode(listen_at, registry=_registry()) as node:
            host, port = node.listen_address
            seller.start(node, loop)
            for offer in seller.offers.values():
                console.print(f"serving {offer.torrent.content_id} on {host}:{port}"
                              f"{' and selling keys' if offer.agent else ''}")
                console.print(f"magnet {offer.torrent.magnet}&x.pe={host}:{port}", soft_wrap=True)
            if not seller.plain_peers_served:
                err_console.print("plain BitTorrent peers get nothing from this node (--serve-plain seeds them free)")
            sys.stdout.flush()
            async with asyncio.TaskGroup() as group:
                cashier_watch = group.create_task(seller.cashier.supervise())
                with Live(console=err_console, refresh_per_second=4, transient=True) as live:
                    while not stop.is_set():
                        seller.poll(loop.time())
                        live.update(seller.status_line())
                        try:
                            async with asyncio.timeout(0.25):
                                await stop.wait()
                        except TimeoutError:
                            pass
                cashier_watch.cancel()  # what is left is cashed after the loop, in `finish`
                await seller.stop()

    run(main())
    cashier = seller.cashier
    try:
        claimed = seller.finish()
    except ChainUnavailable as down:  # cheques are kept: nothing is lost while the chain is away
        count = cashier.uncashed_cheques
        raise MarketCommandError(f"stopped; {down}: {format_ether(cashier.uncashed_wei)} in {count} "
                                 f"cheque{'' if count == 1 else 's'} stay in the ledger, and `veil wallet cash` cashes "
                                 "them once it answers (before the viewers' lanes end, a day after they played)"
                                 ) from None
    if seller.fatal:
        raise MarketCommandError(f"stopped serving: {seller.fatal[0]}; what was kept before it was cashed "
                                 f"({format_ether(claimed)} claimed)")
    console.print(f"stopped; cashed and claimed {format_ether(claimed)} "
                  f"({cashier.batches_cashed} cash batches, {cashier.anchors_posted} audit anchors; "
                  f"gas paid {format_gas(cashier.gas_paid_wei)})")
    held_back = cashier.held_back
    for line in held_back_lines(held_back, cashier.unclaimed, settings):
        console.print(line)
    failed = cashier.uncashed_wei - (held_back.amount_wei if held_back is not None else 0)  # held back: by choice
    if failed > 0:
        raise MarketCommandError(f"{format_ether(failed)} in cheques could not be cashed "
                                 f"({cashier.failures[-1] if cashier.failures else 'the chain refused'}); they are "
                                 "kept in the vault: `veil wallet cash` tries again")


def play(
    content_id: str = typer.Argument(..., help="Content id, magnet link, or a card id (or its 8+ digit prefix) "
                                     "from `veil feed`."),
    out: Path = typer.Option(..., "--out", help="Where to write the plaintext, in order as it arrives (- for stdout); "
                             "an unfinished output of the same content is resumed."),
    peer: list[str] = typer.Option([], "--peer", help="A peer to fetch from, HOST:PORT (repeatable)."),
    tracker: list[str] = typer.Option([], "--tracker", help="An HTTP tracker to find peers (repeatable)."),
    budget: str = typer.Option(None, "--budget", help="Most to spend, e.g. 0.01 (ETH); default: what the content costs."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is some other existing file."),
    view: bool = typer.Option(True, "--view/--no-view", help="After a whole play, leave a view (kind 1065, public, "
                              "signed by you) on the content's card, if the feed has one."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Stream a content: fetch verified ciphertext, pay per slice, buy keys, decrypt in order.

    Example: veil play 3f2a9c1e --tracker http://127.0.0.1:6969/announce --out movie.mp4 --chain-rpc URL …
    """
    card_id, content_id = _card_or_content(content_id)
    cid = parse_content_id(content_id)
    magnet_trackers, magnet_peers = magnet_hints(content_id)  # a magnet's own `tr` and `x.pe`, as `fetch` uses them
    peers = [parse_host_port(p, what="--peer") for p in peer] + magnet_peers
    tracker = [*tracker, *magnet_trackers]
    if not peers and not tracker:
        raise MarketCommandError("give at least one --peer HOST:PORT or --tracker URL to find the content")
    with _client(rpc, deployment) as (vault, client), hold_content(vault, cid):
        identity = vault.identity()
        _play(cid, vault, identity, client, out, peers, tracker, budget, force)
        if view and (card_id or _has_card(vault.home, cid)):
            publish_view(Path(vault.home), identity, cid, [], card_id=card_id)  # best effort, a few seconds at most


def _card_or_content(text: str) -> tuple[str | None, str]:
    """(card id, what it points at) for a card id or prefix; (None, text) for a content id or
    magnet. A 64-digit id is a card's if the local feed knows such a card, else a content's."""
    ref = text.strip().lower()
    if ref.startswith("magnet:") or not re.fullmatch(r"[0-9a-f]{8,64}", ref):
        return None, text
    home = veil_home()
    if len(ref) == 64:
        with open_index(home) as index:
            row = index.card(ref)
        return (row.id, row.card.magnet or row.card.content_id) if row is not None else (None, text)
    return ref, resolve_card(home, ref, [])


def _has_card(home, cid: str) -> bool:
    with open_index(Path(home)) as index:
        return bool(index.cards_of_content(cid))


@dataclass
class _PlayReport:
    """How far a play got: what an interruption or a failure tells the user."""
    slices: int = 0
    played: int = 0
    paid_wei: int = 0
    output: ResumableOutput | None = None

    def kept(self) -> str:
        if self.output is None or not self.output.resumable:
            return ""
        return (f"; {self.output.target} keeps the first {self.output.bytes_written:,} bytes and the same command "
                "goes on from there")


def _play(cid: str, vault, identity, client, out: Path, peers, tracker: list[str], budget: str | None,
          force: bool = False) -> None:
    ledger = _ledger(vault)
    report = _PlayReport()

    async def main() -> int:
        torrent = known_torrent(vault, cid)
        if torrent is None:
            scratch = Path(vault.home) / "partial" / f"{cid}.metadata"
            err_console.print(f"asking {len(peers)} peers and {len(tracker)} trackers for {cid[:16]}…'s metadata")
            try:
                async with SwarmNode(_settings(None, False), registry=_registry()) as probe_node:
                    torrent = await fetch_metadata(probe_node, cid, peers, tracker, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        report.slices = torrent.piece_count
        terms = torrent.manifest.terms
        record = registered_record(client, torrent, required=bool(terms.price_per_slice_wei))
        grants = held_grants(client, grant_secrets(vault, client), identity.wallet_address, torrent)
        granted = set()
        if grants is not None:
            granted = {i for first, end in grants.ranges for i in range(first, min(end, torrent.piece_count))}
            err_console.print(f"holding grants {', '.join(map(str, grants.grant_ids))} for {len(granted)} slices: "
                              "seeders get only their share of those")
        cost = terms.price_per_slice_wei * (torrent.piece_count - len(granted)) + seeder_part_wei(terms) * len(granted)
        limit = parse_amount(budget) if budget else cost
        cover = client.cheque_cover(identity.wallet_address) + client.held_of(identity.wallet_address)
        if limit > cover:
            raise MarketCommandError(f"your deposit covers {format_ether(cover)}; this needs {format_ether(limit)}: "
                                     "run `veil wallet deposit AMOUNT` first")
        sink = None if str(out) == "-" else out
        output = report.output = (ResumableOutput.open(out, _output_record(vault, cid, out), cid, replace=force)
                                  if sink is not None else None)
        start = output.start_slice if output is not None else 0
        err_console.print(f"playing {torrent.content_id[:16]}… ({torrent.piece_count} slices at "
                          f"{format_ether(terms.price_per_slice_wei)} each) into {out}", soft_wrap=True)
        if start:
            err_console.print(f"resuming {out} after slice {start} ({output.bytes_written:,} bytes already written)")
        async with SwarmNode(viewer_swarm_settings(torrent.piece_length), registry=_registry()) as node:
            work = Path(vault.home) / "partial" / torrent.content_id
            content = node.fetch(torrent, work)
            stream = open_paid_stream(node, content, torrent, vault, identity, client, ledger, record, grants, limit,
                                      peers=peers, trackers=tracker)
            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err_console, transient=True)
            keys_kept = KeysKeeper(vault, cid, stream)
            try:
                with progress:
                    task = progress.add_task("streaming", total=torrent.piece_count, completed=start, status="")
                    async for index, plaintext in stream.slices(start, reuse=True):
                        if output is not None:
                            output.write(index, plaintext)
                        else:
                            sys.stdout.buffer.write(plaintext)
                        report.played = index + 1
                        report.paid_wei = stream.payer.spent_wei
                        ahead = sum(content.store.have[index + 1 :]) if content.store else 0
                        progress.update(task, advance=1, status=(
                            f"{ahead} ahead · paid {format_ether(stream.payer.spent_wei)} · "
                            f"{content.peers} sources"))
                if output is not None:
                    output.finish()
            except BudgetSpent:
                raise MarketCommandError(
                    f"the budget of {format_ether(limit)} is spent at slice {report.played}/{torrent.piece_count}"
                    f"{report.kept()}; give a larger --budget (the whole content costs {format_ether(cost)})") from None
            finally:
                for signed in stream.payer.all_signed():
                    ledger.record(client.cheque_domain, signed, Direction.ISSUED)
                keys_kept.now()  # watching again costs nothing: the keys stay, sealed, in the vault
                report.paid_wei = stream.payer.spent_wei
                if output is not None:
                    output.close()
                await node.drain()
                await stream.aclose()
            meta = stream.metadata()
        written = output.bytes_written if output is not None else None
        table = Table(show_header=False, box=None)
        table.add_row("played", f"{meta.name if meta else torrent.content_id} ({meta.mime_type if meta else '?'}), "
                                + (f"{written:,} bytes, " if written is not None else "")
                                + f"{torrent.piece_count} slices verified and decrypted")
        table.add_row("paid", f"{format_ether(stream.payer.spent_wei)} in cheques to {_payees(len(stream.payer.owed))}")
        for source, count in stream.stats.slices_by_source.most_common():
            table.add_row("", f"{count} slices from {source}")
        err_console.print(table)
        return 0

    try:
        run(main())
    except KeyboardInterrupt:
        if not report.slices:
            raise Interrupted("interrupted before the content's metadata arrived; nothing was paid") from None
        raise Interrupted(f"interrupted at slice {report.played}/{report.slices} after paying "
                          f"{format_ether(report.paid_wei)}{report.kept()}") from None
    except StorageError as exc:
        if not report.paid_wei:
            raise
        raise MarketCommandError(f"{exc} (paid {format_ether(report.paid_wei)} so far, kept in the ledger: "
                                 "playing again pays nothing twice)") from None


def _payees(count: int) -> str:
    return f"{count} payee" + ("" if count == 1 else "s")


def _output_record(vault, cid: str, out: Path) -> Path:
    """Where the vault notes how much of `out` holds `cid`'s plaintext (one record per target)."""
    tag = hashlib.sha256(str(Path(out).absolute()).encode()).hexdigest()[:16]
    return Path(vault.home) / "partial" / f"{cid}.out-{tag}.json"


def earnings(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
    """What this node is owed in cheques, what was cashed on chain, and what waits to be claimed."""
    with _client(rpc, deployment) as (vault, client):
        ledger = _ledger(vault)
        table = Table("content", "viewer", "payee", "signed", "cashed on chain", title="cheques received", title_justify="left")
        for signed in ledger.latest(client.cheque_domain, Direction.RECEIVED):
            c = signed.cheque
            cashed = client.cashed(c.viewer, c.content_id, c.seeder)
            table.add_row(c.content_id.hex()[:16] + "…" if any(c.content_id) else "(direct)", c.viewer[:10] + "…",
                          c.seeder[:10] + "…",
                          format_ether(c.cumulative_amount), format_ether(cashed))
        console.print(table)
        console.print(f"credited, waiting to be claimed: {format_ether(client.earnings())} "
                      f"(`veil wallet claim`); wallet balance {format_ether(client.balance())}")


def buy(
    content_id: str = typer.Argument(..., help="Content id held in the vault (fetch its torrent first)."),
    first: int = typer.Option(0, "--first", min=0, help="First slice to buy."),
    count: int = typer.Option(None, "--count", min=1, help="How many slices (default: to the end)."),
    wait: float = typer.Option(BUY_WAIT_S, "--wait", min=0, help="Seconds to wait for the keys (then `veil grants`)."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Buy slices on chain in one transaction; wait for the key agent's sealed keys; keep them."""
    cid = parse_content_id(content_id)
    with _client(rpc, deployment) as (vault, client), hold_content(vault, cid):
        torrent = _torrent_to_buy(vault, cid)
        registered_record(client, torrent)  # never pay for a content registered to someone else
        count = count or torrent.piece_count - first
        if first + count > torrent.piece_count:
            raise MarketCommandError(f"the content has {torrent.piece_count} slices; [{first}, {first + count}) is past "
                                     f"its end (--first and --count take slice numbers 0 to {torrent.piece_count - 1})")
        price = client.quote(torrent.info_hash, first, count)
        one_time = OneTimeKey.generate()  # the keys are sealed to it: it opens this purchase only
        grant_id = client.buy(torrent.info_hash, first, count, one_time.public, value=price)
        vault.store_secret(grant_secret_name(client, grant_id), one_time.secret.to_bytes(32, "big"))
        console.print(f"bought slices [{first}, {first + count}) for {format_ether(price)}: grant {grant_id}")
        with err_console.status("waiting for the key agent to post the keys on chain"):
            deadline = time.monotonic() + wait
            while True:
                outcome = _collect(vault, client, cid, torrent, grant_id, one_time.secret)
                if not outcome.waiting or time.monotonic() >= deadline:
                    break
                time.sleep(1.0)
        if outcome.waiting:
            raise MarketCommandError(
                f"no keys for grant {grant_id} yet (the key agent may be offline): `veil grants` collects them once "
                f"posted, until {_utc(outcome.grant.deadline)}; after that it refunds the {format_ether(price)}")
        _say(outcome, count)


def grants(
    content_id: str = typer.Argument(None, help="Only this content's purchases (default: all)."),
    wait: float = typer.Option(0, "--wait", min=0, help="Seconds to wait for keys still to come."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Your on-chain purchases: collect keys posted since (checked, kept, confirmed), prove
    bad ones, and refund those left without keys past their deadline."""
    cid = parse_content_id(content_id) if content_id else None
    with _client(rpc, deployment) as (vault, client):
        me = vault.identity().wallet_address
        ids = grants_bought(client, me, bytes.fromhex(cid) if cid else None)
        if not ids:
            console.print(f"no purchases on chain by {me}")
            return
        deadline = time.monotonic() + wait
        rows = _grant_rows(vault, client, ids)
        with err_console.status("waiting for the key agent to post the keys on chain"):
            while any(waiting for *_, waiting in rows) and time.monotonic() < deadline:
                time.sleep(1.0)
                rows = _grant_rows(vault, client, ids)
        table = Table("grant", "content", "slices", "paid", "state", title="your purchases", title_justify="left")
        for *row, _ in rows:
            table.add_row(*row)
        console.print(table)


def _grant_rows(vault, client, ids: list[int]) -> list[tuple[str, str, str, str, str, bool]]:
    """(grant, content, slices, paid, state, still waiting) for each purchase, acted on."""
    secrets = grant_secrets(vault, client)
    rows = []
    for grant_id in ids:
        grant = client.grant(grant_id)
        content = grant.content_id.hex()
        row = (str(grant_id), content[:16] + "…", f"[{grant.first_slice}, {grant.first_slice + grant.slice_count})",
               format_ether(grant.amount))
        secret = secrets(grant_id)
        torrent = known_torrent(vault, content)
        waiting = False
        if secret is None:
            state = "bought from another vault (its one-time key is not here)"
        elif torrent is None and grant.state in (GrantState.ISSUED, GrantState.SETTLED):
            state = "keys posted: `veil fetch` the content to check and keep them"
        else:
            try:
                outcome = (_collect(vault, client, content, torrent, grant_id, secret) if torrent is not None
                           else collect_grant(client, secret, grant_id, None, client.timestamp()))
                state, waiting = _state(outcome), outcome.waiting
            except AccessError as exc:
                state = str(exc)
        rows.append((*row, state, waiting))
    return rows


def _torrent_to_buy(vault, cid: str) -> Torrent:
    torrent = known_torrent(vault, cid)
    if torrent is None:
        raise MarketCommandError(f"content {cid[:16]}… is not in this vault: `veil fetch <magnet>` it first "
                                 "(the purchase's keys are checked against its torrent)")
    return torrent


def _collect(vault, client, cid: str, torrent: Torrent, grant_id: int, secret: int):
    """Act on one purchase (see `collect_grant`); keys that came are kept in the vault."""
    outcome = collect_grant(client, secret, grant_id, torrent, client.timestamp())
    if outcome.keys is not None:
        vault.store_keyring(cid, _merged(vault, cid, outcome.keys))
    return outcome


def _state(outcome) -> str:
    grant = outcome.grant
    if outcome.disputed:
        return f"bad keys proven on chain: {format_ether(outcome.refunded_wei)} refunded"
    if outcome.refunded_wei:
        return f"no keys by the deadline: {format_ether(outcome.refunded_wei)} refunded now"
    if outcome.keys is not None:
        return "keys checked and kept in the vault; the creator is paid"
    if grant.state == GrantState.OPEN:
        return f"waiting for the key agent until {_utc(grant.deadline)}, then refundable"
    if grant.state == GrantState.REFUNDED:
        return "refunded"
    return grant.state.name.lower()


def _say(outcome, count: int) -> None:
    if outcome.disputed:
        raise MarketCommandError(f"the key agent posted bad keys for grant {outcome.grant.grant_id}: proven on chain, "
                                 f"{format_ether(outcome.refunded_wei)} refunded")
    if outcome.keys is None:
        raise MarketCommandError(f"grant {outcome.grant.grant_id}: {_state(outcome)}")
    console.print(f"[green]✓[/] keys for {count} slices checked against the commitments and kept in the vault; "
                  "the creator is paid")


def _utc(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _merged(vault, cid: str, ring):
    """The keys bought now beside those the vault already holds for the content."""
    from veilstream.content import KeyRing

    try:
        held = vault.keyring(cid)
    except VeilError:
        return ring
    nodes = tuple(dict.fromkeys(held.nodes + ring.nodes))  # a grant collected twice is kept once
    return KeyRing(nodes, held.metadata_key or ring.metadata_key)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("play")(play)
    app.command("earnings")(earnings)
    app.command("buy")(buy)
    app.command("grants")(grants)
