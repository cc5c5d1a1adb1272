"""Paid, encrypted streaming against the same swarm unpaid and undecrypted, same run.

    .venv/bin/python bench/stream.py [--size-mib 512] [--runs 3] [--credit-window 2] [--breakdown]

Three seeders on loopback, each in its own process as in a real deployment, hold the
ciphertext of one content. A plain viewer reads every slice in order straight from the
swarm (verified ciphertext, no payment, no keys) and hands it to its player (a copy into
one reused buffer; the paid viewer's decryption writes the same buffer), under three swarm
settings: the default
(bulk download), the paid viewer's, and the paid viewer's with a queue of two pieces per
peer; the reference is the fastest of the three (medians), so the ratio is the market's
cost against the best plain streaming measured. The paid viewer streams the same slices in
order through the market: it pays each slice with a cheque, buys keys ahead of the
playhead from the creator's key agent, checks them against the commitments and decrypts.
Payees extend credit only against the lanes the viewer holds for them on chain, so the
chain is anvil (the seeders, in their processes, look the lanes up over JSON-RPC) and the
paid run includes opening them. Time ratio = paid ÷ reference. First byte is from the
start of the request to the first decrypted byte. On-chain transactions are those of the
session: deposit, lanes, the seeders' and creator's cashes and claims. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from eth_account import Account

from veilstream.chain.anvil import ANVIL_DEV_KEY, Anvil
from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import ChainClient, connect_rpc
from veilstream.chain.deployment import Deployment
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.identity import Identity
from veilstream.market import messages
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.lanes import LaneOpener
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.market import stream as stream_module
from veilstream.market.stream import PaidStream, viewer_swarm_settings
from veilstream.market.viewer import ViewerCore
from veilstream.swarm.extensions import UT_METADATA, ExtensionRegistry
from veilstream.swarm.node import SwarmNode, run
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStore
from veilstream.swarm.swarm import Swarm

SLICE = 1 << 20
PRICE = 10**12
ETHER = 10**18
CREATOR = Identity.from_mnemonic("leader monkey parrot ring guide accident before fence cannon height naive bean")


def market_node(settings=None) -> SwarmNode:
    registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
    return SwarmNode(settings, registry=registry) if settings else SwarmNode(registry=registry)


def prepare(folder: Path, size: int):
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "movie.bin"
    if not source.exists() or source.stat().st_size != size:
        chunk = os.urandom(SLICE)
        with open(source, "wb") as f:
            for i in range(size // SLICE):
                f.write(chunk[i % 11 :] + chunk[: i % 11])
    out = Path(tempfile.mkdtemp(dir=folder))
    return publish_file(source, out, CREATOR, PublishOptions(SLICE, terms=Terms(PRICE, 2_000)))


def seeder_process(conn, torrent_path: str, ciphertext: str, market_args: dict | None) -> None:
    """One seeder in its own process, as in any real deployment: seeds, reports its port,
    serves until told to stop, then hands back the cheques it was paid with."""
    from veilstream.content import ContentKeys, Torrent
    from veilstream.content.keytree import TreeNode

    async def serve() -> None:
        torrent = Torrent.load(Path(torrent_path))
        node = market_node() if market_args else SwarmNode()
        async with node:
            content = node.seed(PieceStore.for_seeding(torrent, Path(ciphertext)))
            service = None
            if market_args:
                chain = ChainClient.connect(market_args["rpc"], Deployment.from_json(market_args["deployment"]))
                domain = chain.cheque_domain
                agent = None
                if market_args.get("tree_root"):
                    agent = KeyAgent(domain, AuditLog(Path(market_args["audit"])), market_args["settings"],
                                     signing_key=market_args["signing_key"])
                    depth, root, meta = market_args["tree_root"]
                    agent.offer(torrent, ContentKeys(TreeNode(depth, 0, root), meta))
                service = MarketService(content, payee=market_args["payee"], domain=domain,
                                        settings=market_args["settings"], key_agent=agent,
                                        cover_lookup=chain.guarantee)
            conn.send(node.listen_port)
            loop = asyncio.get_running_loop()
            while not await loop.run_in_executor(None, conn.poll, 0.05):
                pass
            _, viewer, signed = conn.recv()  # stop: once the books show what the viewer signed us
            if service is not None and viewer is not None:
                async with asyncio.timeout(30):
                    while service.account(viewer).paid_wei < signed:
                        await asyncio.sleep(0.01)
            owed = [c.to_bytes() for c in service.cheques_owed()] if service else []
            conn.send((owed, {a: s.paid_wei for a, s in service.accounts.items()} if service else {}))

    run(serve())


class Seeders:
    """Three seeder processes; `market` None for the plain reference swarm."""

    def __init__(self, done, markets: list[dict] | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for index in range(3):
            ours, theirs = context.Pipe()
            args = (theirs, str(done.torrent_path), str(done.ciphertext_path), markets[index] if markets else None)
            process = context.Process(target=seeder_process, args=args, daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        self.ports = [pipe.recv() for pipe in self.pipes]

    def stop(self, viewer: str | None = None, signed: list[int] | None = None) -> list[tuple[list[bytes], dict]]:
        for index, pipe in enumerate(self.pipes):
            pipe.send(("stop", viewer, signed[index] if signed else 0))
        results = [pipe.recv() for pipe in self.pipes]
        for process in self.processes:
            process.join(timeout=30)
        return results


async def reference_run(done, work: Path, settings: SwarmSettings = SwarmSettings()) -> float:
    """Three seeder processes → one viewer reading every slice in order; no market at all."""
    torrent = done.torrent
    seeders = Seeders(done, None)
    try:
        async with SwarmNode(settings) as node:
            content = node.fetch(torrent, work)
            for port in seeders.ports:
                content.add_peer("127.0.0.1", port)
            player = bytearray(torrent.piece_length)  # what the player is handed each slice in
            started = time.perf_counter()
            for index in range(torrent.piece_count):  # each piece as soon as it is in
                await content.wait_for_piece(index)
                view = content.piece_view(index)
                player[: len(view)] = view  # handed over, as the paid viewer's decryption hands it over
            return time.perf_counter() - started
    finally:
        seeders.stop()


async def paid_run(done, work: Path, chain: ChainClient, market: MarketSettings = MarketSettings()) -> tuple[float, float, int, int]:
    torrent = done.torrent
    seeder_wallets = [Account.create() for _ in range(2)]
    viewer = Account.create()
    for address in [CREATOR.wallet_address, viewer.address] + [w.address for w in seeder_wallets]:
        chain.dev.fund(address, ETHER)
    creator_chain = chain.with_account(CREATOR.wallet)
    if chain.content(torrent.info_hash) is None:
        creator_chain.register(torrent.info_bytes, price_per_slice=PRICE, seeder_share_bps=2_000, slice_count=torrent.piece_count)
    first_block = chain.block_number() + 1
    viewer_chain = chain.with_account(viewer)
    viewer_chain.deposit(ETHER // 10)
    base = {"rpc": chain.w3.provider.endpoint_uri, "deployment": chain.deployment.to_json(), "settings": market}
    payees = [CREATOR.wallet_address] + [w.address for w in seeder_wallets]
    markets = [dict(base, payee=payees[0], signing_key=CREATOR.wallet_key, audit=str(work / "audit.log"),
                    tree_root=(done.keys.tree_root.height, done.keys.tree_root.key, done.keys.metadata_key))]
    markets += [dict(base, payee=p) for p in payees[1:]]
    seeders = Seeders(done, markets)
    results = None
    try:
        async with market_node(viewer_swarm_settings(SLICE, market)) as node:
            content = node.fetch(torrent, work / "viewer")
            stream = PaidStream(content, torrent, wallet=viewer, domain=chain.cheque_domain, budget_wei=ETHER // 30,
                                settings=market, lanes=LaneOpener(viewer_chain, market),
                                key_agent=CREATOR.wallet_address)
            for port in seeders.ports:
                content.add_peer("127.0.0.1", port)
            started = time.perf_counter()
            first_byte = None
            async for _index, _plaintext in stream.slices(0, reuse=True):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
            elapsed = time.perf_counter() - started
            await node.drain()
            owed = dict(stream.payer.owed)
            stream.close()
            results = seeders.stop(viewer.address, [owed.get(p, 0) for p in payees])
    finally:
        if results is None:
            results = seeders.stop()
    for (cheques, paid_by_viewer), payee, wallet in zip(results, payees, [CREATOR.wallet, *seeder_wallets]):
        signed = owed.get(payee, 0)
        if paid_by_viewer.get(viewer.address, 0) != signed:
            raise SystemExit(f"payee {payee} holds {paid_by_viewer} but was signed {signed}")
        if cheques:
            chain.with_account(wallet).cash([SignedCheque.from_bytes(c) for c in cheques])
            chain.with_account(wallet).claim()
    txs = sum(len(chain.w3.eth.get_block(n)["transactions"]) for n in range(first_block, chain.block_number() + 1))
    return elapsed, first_byte * 1000, txs, len(owed)


class Breakdown:
    """With --breakdown: the viewer's time in each part of the paid path, per paid run
    (wall time of the calls, on the viewer's event loop)."""

    PARTS = {"decrypt": (stream_module, "open_slice_into"), "pay (sign)": (ViewerCore, "_on_piece_verified"),
             "key deliveries": (ViewerCore, "_on_keys"), "swarm data path": (Swarm, "data_received")}

    def __init__(self) -> None:
        self.spent: dict[str, float] = {name: 0.0 for name in self.PARTS}
        self.calls: dict[str, int] = {name: 0 for name in self.PARTS}
        for name, (owner, attribute) in self.PARTS.items():
            setattr(owner, attribute, self._timed(name, getattr(owner, attribute)))

    def _timed(self, name, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - started
                self.calls[name] += 1
        return timed

    def reset(self) -> None:
        for name in self.PARTS:
            self.spent[name], self.calls[name] = 0.0, 0

    def line(self) -> str:
        return ", ".join(f"{name} {self.spent[name] * 1000:.0f} ms ({self.calls[name]} calls)" for name in self.PARTS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--credit-window", type=int, default=MarketSettings().credit_window_slices,
                        help="slices a seeder or key agent lets a viewer owe (the risk per relationship)")
    parser.add_argument("--breakdown", action="store_true", help="time the parts of the paid viewer's work")
    args = parser.parse_args()
    market = replace(MarketSettings(), credit_window_slices=args.credit_window)
    breakdown = Breakdown() if args.breakdown else None
    folder = Path(__file__).resolve().parent / "out" / "stream"
    done = prepare(folder, args.size_mib << 20)
    anvil = Anvil()
    anvil.__enter__()
    chain = ChainClient.connect(anvil.url, ChainClient.deploy(connect_rpc(anvil.url), Account.from_key(ANVIL_DEV_KEY)))
    # The plain viewer under three settings; the reference is the fastest of them, so the
    # ratio is the market's cost against the best plain streaming measured, not against a
    # setting that happens to suit the plain swarm badly.
    same = viewer_swarm_settings(SLICE, market)
    plain_settings = {"default": SwarmSettings(), "as_paid": same,
                      "shallow": replace(same, request_queue_depth_blocks=2 * (SLICE // (16 * 1024)))}
    plain: dict[str, list[float]] = {name: [] for name in plain_settings}
    paid, first_bytes, txs = [], [], []
    try:
        for number in range(args.runs):  # interleaved: load drift hits all alike
            for name, settings in plain_settings.items():
                with tempfile.TemporaryDirectory(dir=folder) as work:
                    plain[name].append(run(reference_run(done, Path(work), settings)))
            if breakdown:
                breakdown.reset()
            with tempfile.TemporaryDirectory(dir=folder) as work:
                elapsed, first_ms, session_txs, payees = run(paid_run(done, Path(work), chain, market))
            if breakdown:
                print(f"  paid run {number + 1}: {breakdown.line()}", file=sys.stderr)
            paid.append(elapsed)
            first_bytes.append(first_ms)
            txs.append(session_txs)
            print(f"run {number + 1}: plain " + ", ".join(f"{name} {times[-1]:.2f} s" for name, times in plain.items())
                  + f"; paid {elapsed:.2f} s, first byte {first_ms:.0f} ms, "
                  f"{session_txs} on-chain txs for {done.torrent.piece_count} slices from {payees} payees", file=sys.stderr)
    finally:
        chain.close()
        anvil.__exit__(None, None, None)
        for path in done.torrent_path.parent.iterdir():
            path.unlink()
        done.torrent_path.parent.rmdir()
    medians = {name: statistics.median(times) for name, times in plain.items()}
    ref, pay = min(medians.values()), statistics.median(paid)
    print(json.dumps({"bench": "stream", "size_mib": args.size_mib, "slices": done.torrent.piece_count,
                      "credit_window_slices": args.credit_window,
                      "reference_s": round(ref, 3), "reference_settings": min(medians, key=medians.get),
                      **{f"plain_{name}_s": round(m, 3) for name, m in medians.items()},
                      "paid_s": round(pay, 3), "time_ratio": round(pay / ref, 3),
                      "first_byte_ms": round(statistics.median(first_bytes), 1), "onchain_txs": max(txs)}))


if __name__ == "__main__":
    main()
