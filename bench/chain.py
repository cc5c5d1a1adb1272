"""Chain costs: gas per operation, on-chain transactions per 10,000 slices streamed, and
off-chain cheque verification speed.

    .venv/bin/python bench/chain.py [--chain embedded|anvil] [--viewers 100] [--seeders 10]
                                    [--slices-per-viewer 10000]

Gas is measured on the real compiled contracts, on a fresh anvil (or the embedded py-evm
with --chain embedded: same gas, much slower). The streaming run is a real one on that chain: every viewer deposits once,
streams its slices from seeders picked at random, and owes each seeder through one
cumulative cheque; a seeder cashes the latest cheques of all its viewers in one batch
whenever what it is owed but has not cashed passes a threshold (`--threshold-slices`
slices' worth), and every payee claims once at the end. Only the cheques that reach the
chain are signed (a cheque is replaced by the next, so only the latest matters on chain);
the off-chain check of every cheque is measured apart, on one core. The last line is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from contextlib import ExitStack

from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import ChainClient, ChainSettings, Cheque, ChequeDomain
from veilstream.chain.anvil import ANVIL_DEV_KEY, Anvil, find_anvil
from veilstream.chain.client import connect_rpc

ETHER = 10**18
PRICE_PER_SLICE = 10**12  # 1 microether per 1 MiB slice
SEEDER_SHARE_BPS = 3_000
SLICES_IN_CONTENT = 100_000
BATCH = 50
MAX_BATCH = 256
DISPUTED_SLICES = 256  # a dispute re-derives every key under the bad node: gas grows with its slices


def content_keys():
    """A real key tree and commitment tree for the bench content: AccessSales checks every
    delivery against the registered root."""
    from veilstream.content import merkle
    from veilstream.content.keytree import TreeNode, tree_depth
    from veilstream.content.unseal import all_commitments

    root = TreeNode(tree_depth(SLICES_IN_CONTENT), 0, keccak(b"bench content key"))
    return root, merkle.MerkleTree(all_commitments(root, SLICES_IN_CONTENT))


def actor(name: str):
    return Account.from_key(keccak(f"bench actor {name}".encode()))


def open_chain(kind: str, stack: ExitStack) -> ChainClient:
    settings = ChainSettings()
    if kind == "embedded":
        client = ChainClient.embedded(None, settings=settings)
        stack.callback(client.close)
        return client
    node = stack.enter_context(Anvil())
    deployment = ChainClient.deploy(connect_rpc(node.url), Account.from_key(ANVIL_DEV_KEY), settings)
    return ChainClient.connect(node.url, deployment)


def info_naming(creator: str, label: bytes, key_root: bytes | None = None) -> tuple[bytes, bytes]:
    """An info dict laid out as a Veilstream torrent's (a name, then the manifest), naming
    `creator`, and its content id: what registration proves the creator with."""
    name = b"veil-" + keccak(label)[:16].hex().encode()
    info = (b"d4:name37:" + name + b"10:veilstreamd7:creator20:" + bytes.fromhex(creator[2:]) + b"13:creator nostr32:"
            + bytes(32) + b"8:key root32:" + (key_root or keccak(label)) + b"1:vi1eee")
    return info, hashlib.sha256(info).digest()


def measure_gas(base: ChainClient) -> dict[str, int]:
    gas: dict[str, int] = {}
    creator = base.with_account(actor("gas creator"))
    seeder = base.with_account(actor("gas seeder"))
    viewers = [base.with_account(actor(f"gas viewer {i}")) for i in range(BATCH + 1)]
    for client in [creator, seeder, *viewers]:
        base.dev.fund(client.address, 10 * ETHER)
    keys, commitments = content_keys()
    info, cid = info_naming(creator.address, b"bench content", commitments.root)

    gas["register"] = creator.register(
        info, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=SEEDER_SHARE_BPS, slice_count=SLICES_IN_CONTENT
    ).gas_used
    deposits = [v.deposit(ETHER).gas_used for v in viewers]
    gas["deposit"] = deposits[0]

    first = viewers[0].sign_cheque(cid, seeder.address, 100 * PRICE_PER_SLICE)
    gas["cash_1"] = seeder.cash([first]).receipt.gas_used
    again = viewers[0].sign_cheque(cid, seeder.address, 200 * PRICE_PER_SLICE)
    gas["cash_1_again"] = seeder.cash([again]).receipt.gas_used

    batch = [v.sign_cheque(cid, seeder.address, 100 * PRICE_PER_SLICE) for v in viewers[1:]]
    gas["cash_50"] = seeder.cash(batch).receipt.gas_used
    batch = [v.sign_cheque(cid, seeder.address, 200 * PRICE_PER_SLICE) for v in viewers[1:]]
    gas["cash_50_again"] = seeder.cash(batch).receipt.gas_used
    gas["claim"] = seeder._send(seeder.wallet.functions.claim()).gas_used

    from dataclasses import replace as replaced

    from veilstream.market.access import OneTimeKey, seal_delivery

    buyer = viewers[1]
    key = OneTimeKey.generate()
    grant = buyer.buy(cid, 0, 65_536, key.public)  # AccessSales.MAX_GRANT_SLICES at once
    receipt = buyer.events(base.block_number(), names={"GrantOpened"})
    gas["buy"] = base.w3.eth.get_transaction_receipt(receipt.events[0].tx_hash)["gasUsed"]
    gas["post_key"] = creator.post_key(grant, seal_delivery(keys, commitments, None, base.grant(grant), key.public)).gas_used
    gas["confirm"] = buyer.confirm(grant).gas_used
    grant = buyer.buy(cid, 1_000, 50_000, key.public)
    gas["post_key_range"] = creator.post_key(
        grant, seal_delivery(keys, commitments, None, base.grant(grant), key.public)).gas_used
    base.dev.advance_time(base.deployment.settings.dispute_window_s + 1)
    gas["settle"] = viewers[0].settle(grant).gas_used
    grant = buyer.buy(cid, 0, DISPUTED_SLICES, key.public)
    honest = seal_delivery(keys, commitments, None, base.grant(grant), key.public)
    node = honest.nodes[0]
    bad = replaced(honest, nodes=(replaced(node, sealed_key=bytes(32)), *honest.nodes[1:]))
    creator.post_key(grant, bad)
    gas[f"dispute_{DISPUTED_SLICES}_slices"] = buyer.dispute(grant, key.secret, bad, 0).gas_used
    lanes = [Account.create().address for _ in range(3)]
    until = base.timestamp() + 2 * base.deployment.settings.lane_min_duration_s
    gas["open_lanes_3"] = viewers[3].open_lanes(cid, lanes, ETHER // 100, until).gas_used

    gas["withdraw_request"] = viewers[2].request_withdrawal(ETHER // 10).gas_used
    base.dev.advance_time(base.deployment.settings.withdrawal_delay_s)
    gas["withdraw_execute"] = viewers[2].execute_withdrawal().gas_used
    gas["anchor"] = creator._send(creator.anchors.functions.post(1, keccak(b"audit head"))).gas_used
    return gas


def stream(base: ChainClient, viewers_n: int, seeders_n: int, slices_per_viewer: int, threshold_slices: int) -> dict:
    """Run the streaming workload on chain; returns tx and gas counts by kind."""
    rng = random.Random(4)
    creator = base.with_account(actor("stream creator"))
    seeders = [base.with_account(actor(f"stream seeder {i}")) for i in range(seeders_n)]
    viewers = [base.with_account(actor(f"stream viewer {i}")) for i in range(viewers_n)]
    for client in [creator, *seeders, *viewers]:
        base.dev.fund(client.address, ETHER)
    info, cid = info_naming(creator.address, b"streamed content")
    creator.register(info, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=SEEDER_SHARE_BPS, slice_count=SLICES_IN_CONTENT)

    txs = {"deposit": 0, "cash": 0, "claim": 0}
    gas = {"deposit": 0, "cash": 0, "claim": 0}
    deposit = 2 * slices_per_viewer * PRICE_PER_SLICE  # what the viewer means to spend, with room
    for v in viewers:
        gas["deposit"] += v.deposit(deposit).gas_used
        txs["deposit"] += 1

    owed = [[0] * seeders_n for _ in viewers]  # cumulative per (viewer, seeder)
    cashed = [[0] * seeders_n for _ in viewers]
    uncashed = [0] * seeders_n
    threshold = threshold_slices * PRICE_PER_SLICE
    cheques_cashed = 0

    def cash(s: int) -> None:
        nonlocal cheques_cashed
        latest = [
            viewers[v].sign_cheque(cid, seeders[s].address, owed[v][s])
            for v in range(viewers_n)
            if owed[v][s] > cashed[v][s]
        ]
        for start in range(0, len(latest), MAX_BATCH):
            result = seeders[s].cash(latest[start : start + MAX_BATCH])
            assert not result.rejected and not result.shortfalls
            gas["cash"] += result.receipt.gas_used
            txs["cash"] += 1
        cheques_cashed += len(latest)
        for v in range(viewers_n):
            cashed[v][s] = owed[v][s]
        uncashed[s] = 0

    for _slice in range(slices_per_viewer):
        for v in range(viewers_n):
            s = rng.randrange(seeders_n)
            owed[v][s] += PRICE_PER_SLICE
            uncashed[s] += PRICE_PER_SLICE
            if uncashed[s] >= threshold:
                cash(s)
    for s in range(seeders_n):  # the end of the sessions: what is left is cashed too
        if uncashed[s]:
            cash(s)
    for payee in [*seeders, creator]:
        gas["claim"] += payee._send(payee.wallet.functions.claim()).gas_used
        txs["claim"] += 1

    paid = sum(map(sum, cashed))
    assert paid == viewers_n * slices_per_viewer * PRICE_PER_SLICE
    return {"txs": txs, "gas": gas, "cheques_cashed": cheques_cashed}


def verify_rate(seconds: float = 2.0) -> float:

    domain = ChequeDomain(31337, "0x" + "5f" * 20)
    viewers = [actor(f"verify viewer {i}") for i in range(16)]
    cheques = [
        domain.sign(viewers[i % 16], Cheque(viewers[i % 16].address, keccak(b"c%d" % i), "0x" + "ab" * 20, i + 1))
        for i in range(512)
    ]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for signed in cheques:
            domain.verify(signed)
        count += len(cheques)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", choices=["embedded", "anvil"], default="anvil" if find_anvil() else "embedded",
                        help="where to run (default: anvil if installed; py-evm runs a 100-cheque batch in ~1s)")
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seeders", type=int, default=10)
    parser.add_argument("--slices-per-viewer", type=int, default=10_000)
    parser.add_argument("--threshold-slices", type=int, default=10_000,
                        help="a seeder cashes when it is owed this many slices' worth (default 0.01 ETH)")
    args = parser.parse_args()

    with ExitStack() as stack:
        base = open_chain(args.chain, stack)
        t0 = time.perf_counter()
        gas = measure_gas(base)
        print(f"gas measured on {args.chain} (chain id {base.chain_id}) in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        print(f"{'operation':<22}{'gas':>12}", file=sys.stderr)
        for name, value in gas.items():
            print(f"{name:<22}{value:>12,}", file=sys.stderr)
        print(f"{'cash_50 per cheque':<22}{gas['cash_50'] // BATCH:>12,}", file=sys.stderr)
        print(f"{'cash_50_again/cheque':<22}{gas['cash_50_again'] // BATCH:>12,}", file=sys.stderr)

        t0 = time.perf_counter()
        run = stream(base, args.viewers, args.seeders, args.slices_per_viewer, args.threshold_slices)
    slices = args.viewers * args.slices_per_viewer
    txs = sum(run["txs"].values())
    total_gas = sum(run["gas"].values())
    per_10k = 10_000 / slices
    print(
        f"streaming: {args.viewers} viewers x {args.slices_per_viewer} slices from {args.seeders} seeders "
        f"= {slices:,} slices in {time.perf_counter() - t0:.1f}s; on chain: "
        + ", ".join(f"{n} {k}" for k, n in run["txs"].items())
        + f" = {txs} txs, {total_gas:,} gas, {run['cheques_cashed']} cheques cashed",
        file=sys.stderr,
    )
    print(f"per 10,000 slices: {txs * per_10k:.2f} txs, {total_gas * per_10k:,.0f} gas", file=sys.stderr)

    rate = verify_rate()
    print(f"cheque verification: {rate:,.0f}/s on one core", file=sys.stderr)
    gas["cash_50_per_cheque"] = gas["cash_50"] // BATCH
    gas["per_10k_slices"] = round(total_gas * per_10k)
    print(json.dumps({
        "bench": "chain",
        "gas": gas,
        "txs_per_10k_slices": round(txs * per_10k, 3),
        "cheque_verify_per_s": round(rate),
    }))


if __name__ == "__main__":
    main()
