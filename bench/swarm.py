"""Swarm benchmark: how fast ciphertext moves between peers over loopback.

    .venv/bin/python bench/swarm.py [--size-mib 1024] [--swarm-size-mib 256] [--leechers 20] [--rounds 1]

1. veil → veil: one `veil` seeder process, one leecher process, a SIZE ciphertext;
   timed from the leecher's connect to its last verified piece.
2. libtorrent → libtorrent: the same ciphertext between two libtorrent 2.1 sessions in
   one process; timed from the leecher's peer connection to torrent_finished.
3. time to the first verified piece, veil leecher, after connect.
4. one veil seeder → N veil leechers (two processes of N/2 nodes each) on a smaller
   content: aggregate MiB/s from the start signal to the last leecher finishing.

Contents are published once into bench/out/swarm/ and reused. With `--rounds N`, 1–3 run
N times, veil and libtorrent back to back in each round, and the figures are medians (the
ratio is the median of the rounds' ratios: each compares two runs under the same load).
The last line printed is one JSON object (the figures above).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from veilstream.content import PublishOptions, Torrent, publish_file  # noqa: E402
from veilstream.identity import Identity  # noqa: E402

OUT = ROOT / "bench" / "out" / "swarm"
WORDS = "leader monkey parrot ring guide accident before fence cannon height naive bean"
MIB = 1 << 20


def published(size_mib: int) -> tuple[Path, Path]:
    """(torrent, ciphertext) of a `size_mib` content, made once."""
    folder = OUT / f"content-{size_mib}"
    done = folder / "done.json"
    if done.is_file():
        names = json.loads(done.read_text())
        return folder / names["torrent"], folder / names["ciphertext"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    plain = folder / "plain.bin"
    with open(plain, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    pub_dir = folder / "pub"
    pub_dir.mkdir()
    print(f"publishing a {size_mib} MiB content (once)…", file=sys.stderr)
    pub = publish_file(plain, pub_dir, Identity.from_mnemonic(WORDS), PublishOptions(slice_size=MIB))
    plain.unlink()
    torrent = pub.torrent_path.relative_to(folder)
    ciphertext = pub.ciphertext_path.relative_to(folder)
    done.write_text(json.dumps({"torrent": str(torrent), "ciphertext": str(ciphertext)}))
    return folder / torrent, folder / ciphertext


# -- child processes ------------------------------------------------------------------------


def child_seed(torrent_path: str, ciphertext: str) -> None:
    from veilstream.swarm import PieceStore, SwarmNode, SwarmSettings, run

    async def main():
        torrent = Torrent.load(Path(torrent_path))
        store = PieceStore.for_seeding(torrent, Path(ciphertext), read_cache_pieces=64)
        async with SwarmNode(SwarmSettings(upload_slots=32, max_peers_per_content=100)) as node:
            node.seed(store)
            print("PORT", node.listen_port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin

    run(main())


def child_leech(torrent_path: str, out: str, host: str, port: str, count: str) -> None:
    from veilstream.swarm import SwarmNode, run

    async def main():
        torrent = Torrent.load(Path(torrent_path))
        nodes = [SwarmNode() for _ in range(int(count))]
        for node in nodes:
            await node.__aenter__()
        try:
            contents = [node.fetch(torrent, Path(out) / f"l{i}") for i, node in enumerate(nodes)]
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            start = time.monotonic()
            for content in contents:
                content.add_peer(host, int(port))
            await asyncio.gather(*(c.completed() for c in contents))
            end = time.monotonic()
            firsts = [(c.first_piece_at - start) * 1000 for c in contents]
            dones = [c.completed_at - start for c in contents]
            print(json.dumps({"seconds": end - start, "first_piece_ms": min(firsts), "done_s": dones}), flush=True)
        finally:
            for node in nodes:
                await node.__aexit__(None, None, None)

    run(main())


# -- the measurements ------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def veil_round(torrent: Path, ciphertext: Path, leecher_processes: int, per_process: int, tag: str) -> tuple[float, float]:
    """(seconds from start to the last leecher done, best first-piece ms)."""
    work = OUT / f"dl-{tag}"
    shutil.rmtree(work, ignore_errors=True)
    seeder = spawn("_seed", str(torrent), str(ciphertext))
    try:
        line = seeder.stdout.readline().split()
        assert line and line[0] == "PORT", line
        leechers = [spawn("_leech", str(torrent), str(work / f"p{i}"), "127.0.0.1", line[1], str(per_process))
                    for i in range(leecher_processes)]
        for leecher in leechers:
            assert leecher.stdout.readline().strip() == "READY"
        for leecher in leechers:
            leecher.stdin.write("go\n")
            leecher.stdin.flush()
        results = [json.loads(leecher.stdout.readline()) for leecher in leechers]
        for leecher in leechers:
            leecher.stdin.close()
            leecher.wait(60)
    finally:
        seeder.stdin.close()
        seeder.wait(60)
    shutil.rmtree(work, ignore_errors=True)
    return max(r["seconds"] for r in results), min(r["first_piece_ms"] for r in results)


def libtorrent_round(torrent: Path, ciphertext: Path) -> float:
    import libtorrent as lt

    def session():
        return lt.session({
            "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
            "enable_incoming_utp": False, "alert_mask": lt.alert_category.status | lt.alert_category.connect,
        })

    work = OUT / "dl-libtorrent"
    shutil.rmtree(work, ignore_errors=True)
    seed_ses, leech_ses = session(), session()
    params = lt.add_torrent_params()
    params.ti, params.save_path = lt.torrent_info(str(torrent)), str(ciphertext.parent)
    seed = seed_ses.add_torrent(params)
    deadline = time.monotonic() + 120
    while not seed.status().is_seeding:
        if time.monotonic() > deadline:
            raise SystemExit("libtorrent did not finish checking the seed")
        seed_ses.wait_for_alert(100)
        seed_ses.pop_alerts()
    params = lt.add_torrent_params()
    params.ti, params.save_path = lt.torrent_info(str(torrent)), str(work)
    leech = leech_ses.add_torrent(params)
    leech.connect_peer(("127.0.0.1", seed_ses.listen_port()))
    connected = finished = None
    deadline = time.monotonic() + 600
    while finished is None and time.monotonic() < deadline:
        leech_ses.wait_for_alert(50)
        for alert in leech_ses.pop_alerts():
            if connected is None and isinstance(alert, lt.peer_connect_alert):
                connected = time.monotonic()
            if isinstance(alert, lt.torrent_finished_alert):
                finished = time.monotonic()
        seed_ses.pop_alerts()
    if finished is None or connected is None:
        raise SystemExit("libtorrent → libtorrent did not finish")
    del leech_ses, seed_ses
    shutil.rmtree(work, ignore_errors=True)
    return finished - connected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--swarm-size-mib", type=int, default=256)
    parser.add_argument("--leechers", type=int, default=20)
    parser.add_argument("--skip-libtorrent", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="veil/libtorrent rounds; medians are reported")
    args = parser.parse_args()

    torrent, ciphertext = published(args.size_mib)
    size = Torrent.load(torrent).length / MIB
    veil_rates, firsts, lt_rates, ratios = [], [], [], []
    for _ in range(max(1, args.rounds)):
        veil_s, first_ms = veil_round(torrent, ciphertext, 1, 1, "veil")
        veil_rates.append(size / veil_s)
        firsts.append(first_ms)
        print(f"veil → veil          {size:7.0f} MiB in {veil_s:6.2f} s = {size / veil_s:7.1f} MiB/s; first piece {first_ms:.1f} ms")
        if not args.skip_libtorrent:
            lt_s = libtorrent_round(torrent, ciphertext)
            lt_rates.append(size / lt_s)
            ratios.append(lt_s / veil_s)
            print(f"libtorrent → lt      {size:7.0f} MiB in {lt_s:6.2f} s = {size / lt_s:7.1f} MiB/s")
    veil_rate, first_ms = statistics.median(veil_rates), statistics.median(firsts)
    lt_rate = statistics.median(lt_rates) if lt_rates else None
    s_torrent, s_ciphertext = published(args.swarm_size_mib)
    s_size = Torrent.load(s_torrent).length / MIB
    processes = 2 if args.leechers > 1 else 1
    swarm_s, _ = veil_round(s_torrent, s_ciphertext, processes, args.leechers // processes, "swarm")
    swarm_rate = s_size * (args.leechers // processes) * processes / swarm_s
    print(f"1 seeder → {args.leechers} leechers {s_size:5.0f} MiB each in {swarm_s:6.2f} s = {swarm_rate:7.1f} MiB/s aggregate")
    print(json.dumps({
        "bench": "swarm",
        "veil_mib_s": round(veil_rate, 1),
        "libtorrent_mib_s": round(lt_rate, 1) if lt_rate else None,
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "first_piece_ms": round(first_ms, 1),
        "swarm20_mib_s": round(swarm_rate, 1),
    }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        child_seed(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_leech":
        child_leech(*sys.argv[2:])
    else:
        main()
