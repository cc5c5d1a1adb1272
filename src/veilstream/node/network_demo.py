"""The whole network on one machine: embedded chain and tracker, a creator with its key
agent, two seeders holding only ciphertext, a plain libtorrent seeder, and a viewer that
streams, seeks, pays per slice and decrypts; then everyone cashes on chain.

Everything runs on loopback in one process; each role has its own identity, wallet and
folder, and talks to the others only through sockets and the chain.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import libtorrent as lt
from eth_account import Account

from veilstream.chain.client import ChainClient
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.errors import VeilError
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market import messages
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.lanes import LaneOpener
from veilstream.market.onchain import registered_record
from veilstream.market.service import MarketService
from veilstream.market.stream import PaidStream, viewer_swarm_settings
from veilstream.node.sample import make_sample_video
from veilstream.swarm import ExtensionRegistry, PieceStore, SwarmNode, SwarmSettings, TrackerServer, UT_METADATA

ETHER = 10**18
DEMO_SLICE_SIZE = 64 * 1024  # a 30 s clip spans ~90 slices: enough to see payments spread
DEMO_PRICE_WEI = 10**13  # per slice
DEMO_SEEDER_SHARE_BPS = 2_000
DEMO_DEPOSIT_WEI = ETHER // 10
SETTLE_TIMEOUT_S = 30.0  # cheques in flight reach their payees well within this
PEERS_READY_TIMEOUT_S = 15.0  # libtorrent answers ~1 s after a connect


class DemoFailed(VeilError):
    pass


@dataclass
class SourceRow:
    name: str
    kind: str
    slices: int = 0
    signed_wei: int = 0
    seeder_part_wei: int = 0
    creator_part_wei: int = 0


@dataclass
class DemoReport:
    content_id: str
    slice_count: int
    sources: list[SourceRow] = field(default_factory=list)
    creator_received_wei: int = 0
    split_matches_terms: bool = False
    gas_used: int = 0
    transactions: int = 0
    first_byte_ms: float = 0.0
    throughput_mib_s: float = 0.0
    identical: bool = False
    plaintext_on_seeders: bool = True
    keys_on_seeders: bool = True
    key_deliveries: int = 0
    audit_entries: int = 0
    steps: list[tuple[str, str]] = field(default_factory=list)


def _market_node(settings: SwarmSettings = SwarmSettings()) -> SwarmNode:
    return SwarmNode(settings, registry=ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION)))


def _lt_seeder(torrent_path: Path, folder: Path, tracker_url: str) -> tuple[lt.session, lt.torrent_handle]:
    session = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error,
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent_path))
    params.save_path = str(folder)
    params.trackers = [tracker_url]
    return session, session.add_torrent(params)


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise DemoFailed(f"timed out waiting for {what}") from None


def _holds_plaintext(folder: Path, plaintext: bytes) -> bool:
    """Any 64-byte window of the plaintext (sampled every 4 KiB) in any file of `folder`?"""
    probes = [plaintext[i : i + 64] for i in range(0, max(1, len(plaintext) - 64), 4096)]
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            if any(p in blob for p in probes):
                return True
    return False


def _holds_keys(folder: Path, secrets: list[bytes]) -> bool:
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            if any(s in blob or s.hex().encode() in blob for s in secrets):
                return True
    return False


async def run_network_demo(root: Path, seconds: float = 30.0, log: Callable[[str, str], None] | None = None) -> DemoReport:
    def step(name: str, detail: str) -> None:
        report.steps.append((name, detail))
        if log:
            log(name, detail)

    report = DemoReport(content_id="", slice_count=0)
    video = make_sample_video(root / "sample.mp4", seconds)
    plaintext = video.read_bytes()
    step("sample video", f"{len(plaintext):,} bytes, {seconds:g} s H.264 (PyAV)")

    chain = ChainClient.embedded(None)
    creator = Identity.from_mnemonic(generate_mnemonic())
    seeder_wallets = [Account.create(), Account.create()]
    viewer = Identity.from_mnemonic(generate_mnemonic())
    for address in [creator.wallet_address, viewer.wallet_address] + [w.address for w in seeder_wallets]:
        chain.dev.fund(address, ETHER)
    first_block = chain.block_number() + 1
    step("embedded chain", f"chain id {chain.chain_id}, contracts deployed, 4 accounts funded")

    creator_dir = root / "creator"
    creator_dir.mkdir()
    done = publish_file(video, creator_dir, creator, PublishOptions(
        DEMO_SLICE_SIZE, terms=Terms(DEMO_PRICE_WEI, DEMO_SEEDER_SHARE_BPS)))
    torrent = done.torrent
    report.content_id, report.slice_count = torrent.content_id, torrent.piece_count
    creator_chain = chain.with_account(creator.wallet)
    creator_chain.register(torrent.info_bytes, price_per_slice=DEMO_PRICE_WEI, seeder_share_bps=DEMO_SEEDER_SHARE_BPS,
                           slice_count=torrent.piece_count)
    step("publish + register", f"{torrent.content_id[:16]}…, {torrent.piece_count} slices of 64 KiB, "
                               f"{DEMO_PRICE_WEI} wei/slice, seeder share {DEMO_SEEDER_SHARE_BPS / 100:g}%")

    seeder_dirs = []
    for name in ("seeder-1", "seeder-2", "libtorrent"):
        folder = root / name
        folder.mkdir()
        shutil.copy(done.ciphertext_path, folder / torrent.name)  # ciphertext only: no keys, no metadata key
        seeder_dirs.append(folder)
    viewer_chain = chain.with_account(viewer.wallet)
    viewer_chain.deposit(DEMO_DEPOSIT_WEI)

    async with AsyncExitStack() as stack:  # unwound in reverse: the nodes, the tracker, the chain
        stack.callback(chain.close)
        tracker = TrackerServer()
        await tracker.start()
        stack.push_async_callback(tracker.close)
        lt_session, lt_handle = _lt_seeder(done.torrent_path, seeder_dirs[2], tracker.url)
        nodes = [await stack.enter_async_context(node) for node in
                 [_market_node() for _ in range(3)] + [_market_node(viewer_swarm_settings(DEMO_SLICE_SIZE))]]
        creator_node, seeder_nodes, viewer_node = nodes[0], nodes[1:3], nodes[3]
        project = tuple(chain.deployment.addresses.values())
        agent = KeyAgent(chain.cheque_domain, AuditLog(root / "creator-audit.log"), signing_key=creator.wallet_key,
                         unpayable=project)
        agent.offer(torrent, done.keys)
        creator_content = creator_node.seed(PieceStore.for_seeding(torrent, done.ciphertext_path))
        creator_service = MarketService(creator_content, payee=creator.wallet_address, domain=chain.cheque_domain,
                                        key_agent=agent, cover_lookup=chain.guarantee, unpayable=project)
        seeder_services = []
        for node, wallet, folder in zip(seeder_nodes, seeder_wallets, seeder_dirs):
            content = node.seed(PieceStore.for_seeding(torrent, folder / torrent.name))
            seeder_services.append(MarketService(content, payee=wallet.address, domain=chain.cheque_domain,
                                                 cover_lookup=chain.guarantee, unpayable=project))
        for node, service in zip([creator_node, *seeder_nodes], [creator_service, *seeder_services]):
            node.announce_to(service.content, tracker.url)
        await _until(lambda: lt_handle.status().is_seeding, PEERS_READY_TIMEOUT_S, "libtorrent to check its copy")
        step("seeders up", f"creator + key agent, 2 Veilstream seeders, libtorrent {lt.__version__}, tracker {tracker.url}")

        requested = time.monotonic()  # the viewer asks for the content: it starts fetching (and paying) here
        viewer_content = viewer_node.fetch(torrent, root / "viewer")
        record = registered_record(chain, torrent)  # the viewer checks who the registry pays
        stream = PaidStream(viewer_content, torrent, wallet=viewer.wallet, domain=chain.cheque_domain,
                            budget_wei=DEMO_DEPOSIT_WEI, lanes=LaneOpener(viewer_chain),
                            key_agent=record.key_agent)
        viewer_node.announce_to(viewer_content, tracker.url)
        await _until(lambda: viewer_content.peers >= 4, PEERS_READY_TIMEOUT_S, "the viewer to reach all four sources")
        source_names = {("127.0.0.1", creator_node.listen_port): "creator (key agent)",
                        ("127.0.0.1", seeder_nodes[0].listen_port): "seeder-1",
                        ("127.0.0.1", seeder_nodes[1].listen_port): "seeder-2",
                        ("127.0.0.1", lt_session.listen_port()): "libtorrent (plain)"}

        n = torrent.piece_count
        seek_from, seek_to = n // 2, (3 * n) // 4
        got: dict[int, bytes] = {}
        started = time.monotonic()
        async with asyncio.timeout(120):
            async for index, chunk in stream.slices(0):
                got[index] = chunk
                if index + 1 == seek_from:
                    break
            async for index, chunk in stream.slices(seek_to):  # the seek
                got[index] = chunk
            async for index, chunk in stream.slices(seek_from):  # fill the part skipped
                got[index] = chunk
                if index + 1 == seek_to:
                    break
        elapsed = time.monotonic() - started
        report.first_byte_ms = (stream.stats.first_plaintext_at - requested) * 1000
        report.throughput_mib_s = len(plaintext) / 2**20 / elapsed
        report.identical = b"".join(got[i] for i in range(n)) == plaintext
        report.key_deliveries = stream.stats.key_deliveries
        meta = stream.metadata()
        step("stream", f"{n} slices, seek {seek_from}→{seek_to} and back; {meta.name if meta else '?'}, "
                       f"{meta.mime_type if meta else '?'}; byte-identical: {report.identical}")

        # every cheque signed has reached its payee's books before anyone cashes
        payees = {s.payee: s for s in [creator_service, *seeder_services]}

        def settled() -> bool:
            return all(payees[p].account(viewer.wallet_address).paid_wei == owed
                       for p, owed in stream.payer.owed.items() if p in payees)

        await _until(settled, SETTLE_TIMEOUT_S, "cheques to reach their payees")
        await stream.aclose()

        cash_results = []
        for service, wallet in zip(seeder_services, seeder_wallets):
            if service.cheques_owed():
                cash_results.append(chain.with_account(wallet).cash(service.cheques_owed()))
                chain.with_account(wallet).claim()
        if creator_service.cheques_owed():
            cash_results.append(creator_chain.cash(creator_service.cheques_owed()))
        report.creator_received_wei = creator_chain.claim()
        step("cash + claim", f"{len(cash_results)} batch cash transactions, then claims")

        by_payee: dict[str, tuple[int, int, int]] = {}
        for result in cash_results:
            for event in result.cashed:
                seeder = event.args["seeder"]
                paid, sp, cp = by_payee.get(seeder, (0, 0, 0))
                by_payee[seeder] = (paid + event.args["paid"], sp + event.args["seeder_part"], cp + event.args["creator_part"])
        slices_by_address = {name: stream.stats.slices_by_source.get(f"{host}:{port}", 0)
                             for (host, port), name in source_names.items()}
        payee_of = {"creator (key agent)": creator.wallet_address, "seeder-1": seeder_wallets[0].address,
                    "seeder-2": seeder_wallets[1].address, "libtorrent (plain)": None}
        split_ok = True
        for name, address in payee_of.items():
            row = SourceRow(name, "plain BitTorrent" if address is None else "Veilstream", slices_by_address[name])
            if address is not None:
                row.signed_wei = stream.payer.owed.get(address, 0)
                paid, row.seeder_part_wei, row.creator_part_wei = by_payee.get(address, (0, 0, 0))
                expected_seeder_part = paid * DEMO_SEEDER_SHARE_BPS // 10_000
                split_ok &= paid == row.signed_wei  # everything signed was cashed
                split_ok &= row.seeder_part_wei == expected_seeder_part and row.creator_part_wei == paid - expected_seeder_part
            report.sources.append(row)
        total_creator_parts = sum(cp for _, _, cp in by_payee.values()) + by_payee.get(creator.wallet_address, (0, 0, 0))[1]
        split_ok &= report.creator_received_wei == total_creator_parts
        report.split_matches_terms = split_ok

        last_block = chain.block_number()
        for number in range(first_block, last_block + 1):
            block = chain.w3.eth.get_block(number)
            report.gas_used += block["gasUsed"]
            report.transactions += len(block["transactions"])
        report.audit_entries = agent.audit.count

        secrets = [done.keys.tree_root.key, done.keys.metadata_key]
        report.plaintext_on_seeders = any(_holds_plaintext(folder, plaintext) for folder in seeder_dirs)
        report.keys_on_seeders = any(_holds_keys(folder, secrets) for folder in seeder_dirs) or any(
            s.key_agent is not None for s in seeder_services)
    return report


def report_ok(report: DemoReport) -> bool:
    return (report.identical and report.split_matches_terms and not report.plaintext_on_seeders
            and not report.keys_on_seeders and report.transactions > 0)

