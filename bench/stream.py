"""Paid, encrypted streaming against the same swarm unpaid and undecrypted, same run.

    .venv/bin/python bench/stream.py [--size-mib 512] [--runs 3]

Three seeders on loopback hold the ciphertext of one content. The reference viewer reads
every slice in order straight from the swarm (verified ciphertext, no payment, no keys).
The paid viewer streams the same slices in order through the market: it pays each slice
with a cheque, buys keys ahead of the playhead from the creator's key agent, checks them
against the commitments and decrypts. Time ratio = paid ÷ reference (medians). First byte
is from the start of the request to the first decrypted byte. On-chain transactions are
those of the session: deposit, the seeders' and creator's cashes and claims. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from eth_account import Account

from veilstream.chain.client import ChainClient
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.identity import Identity
from veilstream.market import messages
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.market.stream import PaidStream, viewer_swarm_settings
from veilstream.swarm.extensions import UT_METADATA, ExtensionRegistry
from veilstream.swarm.node import SwarmNode, run
from veilstream.swarm.storage import PieceStore

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


async def reference_run(done, work: Path) -> float:
    """Three seeders → one viewer reading every slice in order; no market at all."""
    torrent = done.torrent
    nodes = [SwarmNode() for _ in range(4)]
    for node in nodes:
        await node.__aenter__()
    try:
        for node in nodes[:3]:
            node.seed(PieceStore.for_seeding(torrent, done.ciphertext_path))
        content = nodes[3].fetch(torrent, work)
        for node in nodes[:3]:
            content.add_peer("127.0.0.1", node.listen_port)
        started = time.perf_counter()
        for index in range(torrent.piece_count):
            offset, length = torrent.manifest.slice_range(index)
            await content.read(offset, length)
        return time.perf_counter() - started
    finally:
        for node in reversed(nodes):
            await node.__aexit__(None, None, None)


async def paid_run(done, work: Path, chain: ChainClient, market: MarketSettings = MarketSettings()) -> tuple[float, float, int, int]:
    torrent = done.torrent
    seeder_wallets = [Account.create() for _ in range(2)]
    viewer = Account.create()
    for address in [CREATOR.wallet_address, viewer.address] + [w.address for w in seeder_wallets]:
        chain.dev.fund(address, ETHER)
    creator_chain = chain.with_account(CREATOR.wallet)
    if chain.content(torrent.info_hash) is None:
        creator_chain.register(torrent.info_hash, price_per_slice=PRICE, seeder_share_bps=2_000, slice_count=torrent.piece_count)
    first_block = chain.block_number() + 1
    chain.with_account(viewer).deposit(ETHER // 10)
    nodes = [market_node() for _ in range(3)] + [market_node(viewer_swarm_settings(SLICE, market))]
    for node in nodes:
        await node.__aenter__()
    try:
        agent = KeyAgent(chain.cheque_domain, AuditLog(work / "audit.log"), market, signing_key=CREATOR.wallet_key)
        agent.offer(torrent, done.keys)
        services = [MarketService(nodes[0].seed(PieceStore.for_seeding(torrent, done.ciphertext_path)),
                                  payee=CREATOR.wallet_address, domain=chain.cheque_domain, settings=market,
                                  key_agent=agent)]
        for node, wallet in zip(nodes[1:3], seeder_wallets):
            services.append(MarketService(node.seed(PieceStore.for_seeding(torrent, done.ciphertext_path)),
                                          payee=wallet.address, domain=chain.cheque_domain, settings=market))
        content = nodes[3].fetch(torrent, work / "viewer")
        stream = PaidStream(content, torrent, wallet=viewer, domain=chain.cheque_domain, budget_wei=ETHER // 10,
                            settings=market)
        for node in nodes[:3]:
            content.add_peer("127.0.0.1", node.listen_port)
        started = time.perf_counter()
        first_byte = None
        async for _index, plaintext in stream.slices(0):
            if first_byte is None:
                first_byte = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        async with asyncio.timeout(30):  # cheques in flight reach their payees
            while any(s.account(viewer.address).paid_wei != stream.payer.owed.get(s.payee, 0) for s in services):
                await asyncio.sleep(0.01)
        stream.close()
        for service, wallet in zip(services, [CREATOR.wallet, *seeder_wallets]):
            if service.cheques_owed():
                chain.with_account(wallet).cash(service.cheques_owed())
                chain.with_account(wallet).claim()
        txs = sum(len(chain.w3.eth.get_block(n)["transactions"]) for n in range(first_block, chain.block_number() + 1))
        return elapsed, first_byte * 1000, txs, len(stream.payer.owed)
    finally:
        for node in reversed(nodes):
            await node.__aexit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--credit-window", type=int, default=MarketSettings().credit_window_slices,
                        help="slices a seeder or key agent lets a viewer owe (the risk per relationship)")
    args = parser.parse_args()
    market = replace(MarketSettings(), credit_window_slices=args.credit_window)
    folder = Path(__file__).resolve().parent / "out" / "stream"
    done = prepare(folder, args.size_mib << 20)
    chain = ChainClient.embedded(None)
    reference, paid, first_bytes, txs = [], [], [], []
    try:
        for number in range(args.runs):  # interleaved: load drift hits both alike
            with tempfile.TemporaryDirectory(dir=folder) as work:
                reference.append(run(reference_run(done, Path(work))))
            with tempfile.TemporaryDirectory(dir=folder) as work:
                elapsed, first_ms, session_txs, payees = run(paid_run(done, Path(work), chain, market))
            paid.append(elapsed)
            first_bytes.append(first_ms)
            txs.append(session_txs)
            print(f"run {number + 1}: reference {reference[-1]:.2f} s, paid {elapsed:.2f} s "
                  f"(ratio {elapsed / reference[-1]:.2f}), first byte {first_ms:.0f} ms, "
                  f"{session_txs} on-chain txs for {done.torrent.piece_count} slices from {payees} payees", file=sys.stderr)
    finally:
        chain.close()
        for path in done.torrent_path.parent.iterdir():
            path.unlink()
        done.torrent_path.parent.rmdir()
    ref, pay = statistics.median(reference), statistics.median(paid)
    print(json.dumps({"bench": "stream", "size_mib": args.size_mib, "slices": done.torrent.piece_count,
                      "credit_window_slices": args.credit_window,
                      "reference_s": round(ref, 3), "paid_s": round(pay, 3), "time_ratio": round(pay / ref, 3),
                      "first_byte_ms": round(statistics.median(first_bytes), 1), "onchain_txs": max(txs)}))


if __name__ == "__main__":
    main()
