"""`veil serve`, `veil play`, `veil earnings`: the market from the command line.

Nodes in separate processes share a chain through an RPC endpoint (`veil devnet` starts
one and writes the deployment file); every command takes `--chain-rpc` and
`--chain-deployment` (or VEIL_CHAIN_RPC / VEIL_CHAIN_DEPLOYMENT).
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from veilstream.chain import ContentRecord
from veilstream.chain.ledger import Direction
from veilstream.content import ContentKeys, Torrent, parse_content_id
from veilstream.errors import VeilError
from veilstream.market import messages
from veilstream.market.access import BadDelivery, GrantResponder, OneTimeKey, dispute_delivery, held_grants, issued_keys
from veilstream.market.audit import AuditLog
from veilstream.market.cashier import Cashier, audit_anchor_kind
from veilstream.market.credit import seeder_part_wei
from veilstream.market.key_agent import KeyAgent
from veilstream.market.lanes import LaneOpener
from veilstream.market.onchain import ChainWatch, ShareChange, WithdrawalRequested, cashed_floor, registered_record
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.market.stream import PaidStream, viewer_swarm_settings
from veilstream.node.cli.chain_cmds import ChainDeployment, ChainRpc, _client, _ledger, format_ether, parse_amount
from veilstream.node.cli.common import console, err_console, hold_content
from veilstream.node.cli.swarm_cmds import _settings, magnet_hints, parse_host_port
from veilstream.swarm.extensions import UT_METADATA, ExtensionRegistry
from veilstream.swarm.node import SwarmNode, run
from veilstream.swarm.storage import PieceStore
from veilstream.vault import atomic_writer, user_file_mode

GRANT_POLL_INTERVAL_S = 2.0  # how often a key agent looks for new on-chain purchases
WATCH_INTERVAL_S = 2.0  # how often a payee looks for withdrawals and share changes on chain
BUY_WAIT_S = 120.0  # how long `veil buy` waits for the key agent's answer


class MarketCommandError(VeilError):
    pass


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


@dataclass
class _Offer:
    """One content this node serves: what it is, where its ciphertext is, its record on
    chain and (with --keys) the key agent that sells its keys."""

    torrent: Torrent
    store: PieceStore
    record: ContentRecord | None
    agent: KeyAgent | None
    service: MarketService | None = None


def _offer(cid: str, vault, identity, client, keys: bool, settings: MarketSettings, project: tuple) -> _Offer:
    torrent = vault.torrent(cid)
    store = PieceStore.for_seeding(torrent, vault.ciphertext_path(cid))
    terms = torrent.manifest.terms
    record = registered_record(client, torrent, required=False)
    agent = None
    if keys:
        ring = vault.keyring(cid)
        root = next((n for n in ring.nodes if n.first_leaf == 0 and n.end_leaf >= torrent.piece_count), None)
        if root is None or ring.metadata_key is None:
            raise MarketCommandError(f"this vault holds only part of the keys of {cid[:16]}…: only the creator's "
                                     "node can sell them")
        if record is None:
            client.register(torrent.info_bytes, price_per_slice=terms.price_per_slice_wei,
                            seeder_share_bps=terms.seeder_share_bps, slice_count=torrent.piece_count)
            record = registered_record(client, torrent)
        elif record.price_per_slice != terms.price_per_slice_wei:
            raise MarketCommandError(f"{cid[:16]}… is registered on chain with other terms than its manifest's")
        if record.key_agent != identity.wallet_address:
            # One set of books per content: a second agent would sell the same cheques' worth again.
            raise MarketCommandError(f"the registry names {record.key_agent} as the key agent of {cid[:16]}…, not "
                                     "this node: only that agent sells its keys (`set_key_agent` moves it)")
        anchored, _ = client.latest_anchor(identity.wallet_address, audit_anchor_kind(torrent.info_hash))
        audit = AuditLog(Path(vault.home) / "audit" / f"{cid}.log", anchored_head=anchored)
        floor, price = cashed_floor(client, torrent.info_hash), terms.price_per_slice_wei
        agent = KeyAgent(client.cheque_domain, audit, settings, signing_key=identity.wallet_key, unpayable=project,
                         released_floor=lambda viewer, _cid: floor.get(viewer, 0) // price if price else 0)
        agent.offer(torrent, ContentKeys(root, ring.metadata_key))
    elif terms.price_per_slice_wei:
        record = registered_record(client, torrent)  # refuses an unregistered or squatted content
    return _Offer(torrent, store, record, agent)


def _serve(cids: list[str], vault, identity, client, keys: bool, listen_at, tracker: list[str],
           serve_plain: bool = False) -> None:
    ledger = _ledger(vault)
    settings = MarketSettings()
    project = tuple(client.deployment.addresses.values())
    offers = {}
    for cid in cids:
        offer = _offer(cid, vault, identity, client, keys, settings, project)
        offers[offer.torrent.info_hash] = offer
    agents = [offer for offer in offers.values() if offer.agent is not None]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        def keep_cheque(signed) -> None:
            try:
                cashier.on_cheque(signed)
            except VeilError as exc:  # the ledger cannot keep it (a full disk): stop rather than serve unpaid
                fatal.append(exc)
                stop.set()

        def on_loop_error(loop_, context) -> None:  # a write that failed in a callback (the audit log's, say)
            error = context.get("exception")
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                fatal.append(MarketCommandError(f"no space left on the disk of the vault at {vault.home}"))
                stop.set()
            else:
                loop_.default_exception_handler(context)

        loop.set_exception_handler(on_loop_error)

        async with SwarmNode(listen_at, registry=_registry()) as node:
            host, port = node.listen_address
            for offer in offers.values():
                _start_offer(node, offer, identity, client, ledger, cashier, keep_cheque, settings, project,
                             serve_plain, tracker)
                console.print(f"serving {offer.torrent.content_id} on {host}:{port}"
                              f"{' and selling keys' if offer.agent else ''}")
                console.print(f"magnet {offer.torrent.magnet}&x.pe={host}:{port}", soft_wrap=True)
            if not all(offer.service.serve_plain_peers for offer in offers.values()):
                err_console.print("plain BitTorrent peers get nothing from this node (--serve-plain seeds them free)")
            sys.stdout.flush()
            responders = [GrantResponder(client, offer.agent) for offer in agents]
            watch = ChainWatch(client, set(offers))

            def act_on(changes, records) -> None:  # on the loop: what the watch saw
                for change in changes:
                    if isinstance(change, WithdrawalRequested):
                        cashier.on_withdrawal_requested(change.viewer)
                for content_id, record in records.items():
                    if record is not None:
                        _terms_now(offers[content_id], record, cashier)

            def watch_chain() -> None:  # on the chain thread
                changes = watch.poll()
                if changes:
                    shares = {change.content_id for change in changes if isinstance(change, ShareChange)}
                    records = {content_id: client.content(content_id) for content_id in shares & set(offers)}
                    loop.call_soon_threadsafe(act_on, changes, records)

            def answer_grants() -> None:  # on the chain thread
                for responder in responders:
                    responder.poll()

            polled_at = watched_at = 0.0
            with Live(console=err_console, refresh_per_second=4, transient=True) as live:
                while not stop.is_set():
                    now = loop.time()
                    if responders and now - polled_at >= GRANT_POLL_INTERVAL_S and cashier.idle:
                        polled_at = now
                        cashier.run_later(answer_grants)  # on-chain purchases get their keys
                    if now - watched_at >= WATCH_INTERVAL_S:
                        watched_at = now
                        cashier.run_later(watch_chain)
                    cashier.tick()
                    live.update(_serve_status(offers.values(), responders))
                    try:
                        async with asyncio.timeout(0.25):
                            await stop.wait()
                    except TimeoutError:
                        pass

    cashier = Cashier(client, ledger, settings)  # also cashes what an earlier run left uncashed
    fatal: list[VeilError] = []
    run(main())
    for offer in agents:
        if offer.agent.audit.count:
            cashier.anchor_audit_head(offer.agent.audit.head, offer.torrent.info_hash)
    claimed = cashier.close()
    if fatal:
        raise MarketCommandError(f"stopped serving: {fatal[0]}; what was kept before it was cashed "
                                 f"({format_ether(claimed)} claimed)")
    console.print(f"stopped; cashed and claimed {format_ether(claimed)} "
                  f"({cashier.batches_cashed} cash batches, {cashier.anchors_posted} audit anchors)")
    if cashier.uncashed_wei:
        raise MarketCommandError(f"{format_ether(cashier.uncashed_wei)} in cheques could not be cashed "
                                 f"({cashier.failures[-1] if cashier.failures else 'the chain refused'}); they are "
                                 "kept in the vault: `veil wallet cash` tries again")


def _start_offer(node: SwarmNode, offer: _Offer, identity, client, ledger, cashier: Cashier, keep_cheque,
                 settings: MarketSettings, project: tuple, serve_plain: bool, tracker: list[str]) -> None:
    """Seed one content on the node, behind its market service, wired to the one cashier."""
    content = node.seed(offer.store)
    service = offer.service = MarketService(
        content, payee=identity.wallet_address, domain=client.cheque_domain, settings=settings,
        key_agent=offer.agent, grant_lookup=client.grant, cover_lookup=client.guarantee, unpayable=project,
        serve_plain_peers=True if serve_plain else None,
        paid_before=_paid_before(ledger, client, identity.wallet_address))
    service.on_cheque_accepted = keep_cheque
    service.on_cover = cashier.note_cover
    if offer.record is not None:
        _terms_now(offer, offer.record, cashier)
    if offer.agent is not None:
        agent, info_hash = offer.agent, offer.torrent.info_hash
        agent.on_release = lambda head: cashier.on_audit_head(head, agent.audit.count, info_hash)
    for url in tracker:
        node.announce_to(content, url)


def _terms_now(offer: _Offer, record, cashier: Cashier) -> None:
    """The registry's share in force and any cut ahead: a cut is cashed before it applies."""
    offer.service.terms_changed(record.seeder_share_bps, record.scheduled_seeder_share_bps, record.share_effective_at)
    cut = record.scheduled_seeder_share_bps
    if cut is not None and cut < offer.torrent.manifest.terms.seeder_share_bps:
        cashier.cash_content_by(offer.torrent.info_hash, record.share_effective_at)


def _serve_status(offers, responders) -> str:
    services = [offer.service for offer in offers]
    served = sum(s.stats.bytes_served for s in services)
    line = (f"{sum(s.content.peers for s in services)} peers · {served / 2**20:.1f} MiB served · "
            f"{sum(s.stats.cheques_accepted for s in services)} cheques · "
            f"earned {format_ether(sum(s.earned_wei for s in services))}")
    if any(offer.agent for offer in offers):
        line += f" · {sum(s.stats.keys_released for s in services)} keys released"
    if responders:
        line += f" · {sum(len(r.issued) for r in responders)} grants answered"
    return line


def play(
    content_id: str = typer.Argument(..., help="Content id or magnet link."),
    out: Path = typer.Option(..., "--out", help="Where to write the plaintext (- for stdout)."),
    peer: list[str] = typer.Option([], "--peer", help="A peer to fetch from, HOST:PORT (repeatable)."),
    tracker: list[str] = typer.Option([], "--tracker", help="An HTTP tracker to find peers (repeatable)."),
    budget: str = typer.Option(None, "--budget", help="Most to spend, e.g. 0.01 (ETH); default: what the content costs."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Stream a content: fetch verified ciphertext, pay per slice, buy keys, decrypt in order."""
    cid = parse_content_id(content_id)
    magnet_trackers, magnet_peers = magnet_hints(content_id)  # a magnet's own `tr` and `x.pe`, as `fetch` uses them
    peers = [parse_host_port(p, what="--peer") for p in peer] + magnet_peers
    tracker = [*tracker, *magnet_trackers]
    if not peers and not tracker:
        raise MarketCommandError("give at least one --peer HOST:PORT or --tracker URL to find the content")
    with _client(rpc, deployment) as (vault, client), hold_content(vault, cid):
        _play(cid, vault, vault.identity(), client, out, peers, tracker, budget)


def _play(cid: str, vault, identity, client, out: Path, peers, tracker: list[str], budget: str | None) -> None:
    ledger = _ledger(vault)

    async def main() -> int:
        torrent = _known_torrent(vault, cid)
        if torrent is None:
            scratch = Path(vault.home) / "partial" / f"{cid}.metadata"
            try:
                async with SwarmNode(_settings(None, False), registry=_registry()) as probe_node:
                    torrent = await _fetch_metadata(probe_node, cid, peers, tracker, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        terms = torrent.manifest.terms
        record = registered_record(client, torrent, required=bool(terms.price_per_slice_wei))
        grants = held_grants(client, _grant_secrets(vault, client), identity.wallet_address, torrent)
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
        async with SwarmNode(viewer_swarm_settings(torrent.piece_length), registry=_registry()) as node:
            work = Path(vault.home) / "partial" / torrent.content_id
            content = node.fetch(torrent, work)
            stream = PaidStream(content, torrent, wallet=identity.wallet, domain=client.cheque_domain, budget_wei=limit,
                                grants=grants, signed_before=_signed_before(ledger, client, identity.wallet_address),
                                lanes=LaneOpener(client), key_agent=record.key_agent if record else None,
                                held_keys=_held_keys(vault, cid),
                                paid_before_wei=_paid_for(ledger, client, identity.wallet_address, torrent.info_hash))
            # every cheque is kept before it goes out: the next session's counters go on from it
            stream.on_cheque_signed = lambda signed: ledger.record(client.cheque_domain, signed, Direction.ISSUED)
            for host, port in peers:
                content.add_peer(host, port)
            for url in tracker:
                node.announce_to(content, url)
            written = 0
            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err_console, transient=True)
            sink = sys.stdout.buffer if str(out) == "-" else None
            try:
                with progress, (atomic_writer(out, user_file_mode()) if sink is None else nullcontext(sink)) as handle:
                    task = progress.add_task("streaming", total=torrent.piece_count, status="")
                    async for index, plaintext in stream.slices(0, reuse=True):
                        handle.write(plaintext)
                        written += len(plaintext)
                        ahead = sum(content.store.have[index + 1 :]) if content.store else 0
                        progress.update(task, advance=1, status=(
                            f"{ahead} ahead · paid {format_ether(stream.payer.spent_wei)} · "
                            f"{content.peers} sources"))
            finally:
                for signed in stream.payer.all_signed():
                    ledger.record(client.cheque_domain, signed, Direction.ISSUED)
                bought = stream.bought_keys()
                if bought.nodes:  # watching again costs nothing: the keys stay, sealed, in the vault
                    vault.store_keyring(cid, bought)
                await node.drain()
                stream.close()
            meta = stream.metadata()
        table = Table(show_header=False, box=None)
        table.add_row("played", f"{meta.name if meta else torrent.content_id} ({meta.mime_type if meta else '?'}), "
                                f"{written:,} bytes, {torrent.piece_count} slices verified and decrypted")
        table.add_row("paid", f"{format_ether(stream.payer.spent_wei)} in cheques to {len(stream.payer.owed)} payees")
        for source, count in stream.stats.slices_by_source.most_common():
            table.add_row("", f"{count} slices from {source}")
        err_console.print(table)
        return 0

    run(main())


def earnings(rpc: ChainRpc = None, deployment: ChainDeployment = None) -> None:
    """What this node is owed in cheques, what was cashed on chain, and what waits to be claimed."""
    with _client(rpc, deployment) as (vault, client):
        ledger = _ledger(vault)
        table = Table("content", "viewer", "payee", "signed", "cashed on chain", title="cheques received", title_justify="left")
        for signed in ledger.latest(client.cheque_domain, Direction.RECEIVED):
            c = signed.cheque
            cashed = client.cashed(c.viewer, c.content_id, c.seeder)
            table.add_row(c.content_id.hex()[:16] + "…", c.viewer[:10] + "…", c.seeder[:10] + "…",
                          format_ether(c.cumulative_amount), format_ether(cashed))
        console.print(table)
        console.print(f"credited, waiting to be claimed: {format_ether(client.earnings())} "
                      f"(`veil wallet claim`); wallet balance {format_ether(client.balance())}")


def buy(
    content_id: str = typer.Argument(..., help="Content id held in the vault (fetch its torrent first)."),
    first: int = typer.Option(0, "--first", min=0, help="First slice to buy."),
    count: int = typer.Option(None, "--count", min=1, help="How many slices (default: to the end)."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Buy slices on chain in one transaction; wait for the key agent's sealed keys; keep them."""
    cid = parse_content_id(content_id)
    with _client(rpc, deployment) as (vault, client), hold_content(vault, cid):
        torrent = vault.torrent(cid)
        registered_record(client, torrent)  # never pay for a content registered to someone else
        count = count or torrent.piece_count - first
        if first + count > torrent.piece_count:
            raise MarketCommandError(f"the content has {torrent.piece_count} slices; [{first}, {first + count}) is past its end")
        price = client.quote(torrent.info_hash, first, count)
        one_time = OneTimeKey.generate()  # the keys are sealed to it: it opens this purchase only
        grant_id = client.buy(torrent.info_hash, first, count, one_time.public, value=price)
        vault.store_secret(_grant_secret_name(client, grant_id), one_time.secret.to_bytes(32, "big"))
        console.print(f"bought slices [{first}, {first + count}) for {format_ether(price)}: grant {grant_id}")
        with err_console.status("waiting for the key agent to post the keys on chain"):
            ring = None
            deadline = time.monotonic() + BUY_WAIT_S
            while ring is None and time.monotonic() < deadline:
                try:
                    ring = issued_keys(client, one_time.secret, grant_id, torrent)
                except BadDelivery as bad:
                    refunded = dispute_delivery(client, one_time.secret, bad)
                    raise MarketCommandError(f"the key agent posted bad keys for grant {grant_id}: proven on chain, "
                                             f"{format_ether(refunded)} refunded") from None
                if ring is None:
                    time.sleep(1.0)
        if ring is None:
            raise MarketCommandError(f"no keys for grant {grant_id} yet; after its deadline `veil wallet` can refund it")
        vault.store_keyring(cid, _merged(vault, cid, ring))
        client.confirm(grant_id)  # the keys are good: the creator is paid now, not after the dispute window
        console.print(f"[green]✓[/] keys for {count} slices checked against the commitments and kept in the vault; "
                      "the creator is paid")


def _held_keys(vault, cid: str):
    """The keys this vault already holds for the content (bought, or its creator's), if any."""
    try:
        return vault.keyring(cid)
    except VeilError:
        return None


def _paid_for(ledger, client, viewer: str, content_id: bytes) -> int:
    """What this viewer's cheques for the content add up to, over every payee (its ledger)."""
    return sum(c.cheque.cumulative_amount for c in ledger.latest(client.cheque_domain, Direction.ISSUED)
               if c.cheque.viewer == viewer and c.cheque.content_id == content_id)


def _grant_secret_name(client, grant_id: int) -> str:
    return f"grant-{client.deployment.access_sales[2:].lower()}-{grant_id}"


def _grant_secrets(vault, client):
    """grant id → its one-time secret, for the purchases this vault made."""
    def secret_for(grant_id: int) -> int | None:
        raw = vault.secret(_grant_secret_name(client, grant_id))
        return int.from_bytes(raw, "big") if raw else None
    return secret_for


def _merged(vault, cid: str, ring):
    """The keys bought now beside those the vault already holds for the content."""
    from veilstream.content import KeyRing

    try:
        held = vault.keyring(cid)
    except VeilError:
        return ring
    return KeyRing(held.nodes + ring.nodes, held.metadata_key or ring.metadata_key)


def _signed_before(ledger, client, viewer: str):
    """(content id, seeder) → what this viewer signed that seeder in earlier sessions: its
    ledger, or what is cashed on chain if more (a ledger lost with an old machine)."""
    issued = {(c.cheque.content_id, c.cheque.seeder): c.cheque.cumulative_amount
              for c in ledger.latest(client.cheque_domain, Direction.ISSUED) if c.cheque.viewer == viewer}
    return lambda content_id, seeder: max(issued.get((content_id, seeder), 0), client.cashed(viewer, content_id, seeder))


def _paid_before(ledger, client, payee: str):
    """(viewer, content id) → what that viewer paid this payee in earlier sessions."""
    received = {(c.cheque.viewer, c.cheque.content_id): c.cheque.cumulative_amount
                for c in ledger.latest(client.cheque_domain, Direction.RECEIVED) if c.cheque.seeder == payee}
    return lambda viewer, content_id: max(received.get((viewer, content_id), 0), client.cashed(viewer, content_id, payee))


def _known_torrent(vault, cid: str) -> Torrent | None:
    try:
        return vault.torrent(cid)
    except VeilError:
        return None


async def _fetch_metadata(node: SwarmNode, cid: str, peers, trackers, scratch: Path) -> Torrent:
    """The torrent of `cid` from peers (BEP 9 + piece layers); `scratch` is removed after."""
    content = node.fetch(bytes.fromhex(cid), scratch)
    for host, port in peers:
        content.add_peer(host, port)
    for url in trackers:
        node.announce_to(content, url)
    try:
        async with asyncio.timeout(30):
            return await content.metadata()
    except TimeoutError:
        raise MarketCommandError("no peer sent the content's metadata within 30 s") from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("play")(play)
    app.command("earnings")(earnings)
    app.command("buy")(buy)
