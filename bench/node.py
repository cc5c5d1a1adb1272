"""The node as a user runs it: `veil up` processes on loopback, a devnet (anvil), the HTTP API.

    .venv/bin/python bench/node.py [--quick] [--only media,range,api,rss,fanout] [--strict]
                                   [--size-mib 32] [--rounds 3] [--viewers 20]

Each figure comes with its reference, measured in the same run:

- media: a viewer's `veil up` plays a content through `GET /api/v1/contents/{id}/media`
  in 1 MiB Range requests, from `POST /streams` to the last byte (every byte compared);
  reference: the same paid path without HTTP, a `PaidStream` in this process (what `veil
  play` runs) streaming the same content from the same creator node, from the stream's
  start to its last decrypted slice. `media_ratio` = media MiB/s ÷ reference MiB/s, the
  median over rounds, each on a content of its own, node and reference in turn first.
- range: on the viewer node, a stream of another content already open with its first
  slices held; Range requests at 50% of the content, then at positions below it (the
  viewer fetches in order from a seek on, so each lower one is not held yet): time to the
  first body byte, median. Reference: the same first byte of a range already held.
- api: 50 client threads, each on its own keep-alive connection, hammer the viewer node's
  read endpoints (status, streams, wallet, feed) for a while; p99 latency. Reference:
  the same clients on `/api/v1/health` (no token, no work): the floor of the server and
  of this client on this machine. And the mix without /wallet (whose every answer reads
  the chain), to show what the rest costs alone.
- rss: a vault with 100 tiny contents published through `veil publish` (timed); its
  `veil up` seeds them all; VmRSS once it settles, the node's process and any children.
  Reference: a node of a vault with one content, same run.
- fanout: the creator's `veil up` seeds one content to N paid viewers (`PaidStream`s,
  each with its own wallet, lanes and swarm node, in two processes of N/2): aggregate
  MiB/s from the start signal to the last viewer's last slice. Reference: the same
  ciphertext, unpaid, from a plain seeder with the node's swarm settings to N plain
  leechers (bench/swarm.py's, two processes of N/2). Not N viewer *nodes*: N `veil up`
  processes do not fit this benchmark's machine (2 cores); the paid path is the same.

A part that fails prints why; its figures are null and an entry in "errors" says why
(`--strict`: exit 1 then). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from cli_harness import PASS, VEIL, chain_flags, content_id_of, free_port, new_vault, veil, veil_env  # noqa: E402

OUT = ROOT / "bench" / "out" / "node"
MIB = 1 << 20
ETHER = 10**18
PRICE = "1000gwei"
PARTS = ("media", "range", "api", "rss", "fanout")
GOALS = {"media_ratio": (">=", 0.9), "range_first_byte_ms": ("<=", 100), "api_p99_ms": ("<=", 50),
         "idle_rss_mib": ("<=", 200), "fanout_ratio": (">=", 0.8)}
START_TIMEOUT_S = 120


def say(line: str) -> None:
    print(line, flush=True)


def goal(name: str, value) -> str:
    if value is None:
        return "no figure"
    op, bound = GOALS[name]
    met = value >= bound if op == ">=" else value <= bound
    return f"goal {op} {bound}: {'met' if met else 'NOT met'}"


# -- processes -----------------------------------------------------------------------------


class Process:
    """A long-running `veil` command: started, its output drained (a full pipe would stall
    it) and kept, stopped by SIGTERM."""

    def __init__(self, home: Path, *args: str, ready: str) -> None:
        self.process = subprocess.Popen([*VEIL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=veil_env(home))
        self.lines: list[str] = []
        found = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                if ready in line:
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(START_TIMEOUT_S)
        if not any(ready in line for line in self.lines):
            self.stop()
            raise RuntimeError(f"`veil {args[0]}` did not start: {''.join(self.lines)[-2000:]}")
        self.banner = "".join(self.lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Api:
    """A node's API over one keep-alive connection (http.client: no dependency)."""

    def __init__(self, home: Path, banner: str) -> None:
        found = re.search(r"API http://([\d.]+):(\d+)/api/v1", banner)
        self.host, self.port = found[1], int(found[2])
        self.token = (home / "node" / "api-token").read_text().strip()
        self.connection = self.connect()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def headers(self, extra: dict | None = None) -> dict:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(extra or {})}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        self.connection.request(method, f"/api/v1/{path}", body=json.dumps(body) if body is not None else None,
                                headers=self.headers())
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB of `pid` and all its descendants, how many processes that is)."""
    total, count, todo = 0, 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(found[1]) if found else 0
        count += 1
        for task in Path(f"/proc/{current}/task").iterdir():
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return total, count


# -- the network: a devnet, a creator node, a viewer node -----------------------------------


class Network:
    def __init__(self, work: Path) -> None:
        from veilstream.chain.client import ChainClient

        self.work = work
        self.running: list[Process] = []
        port, self.devnet_dir = free_port(), work / "devnet"
        self.chain_flags = chain_flags(port, self.devnet_dir)
        self.node_flags = ["--set", f"node.chain_rpc_url=http://127.0.0.1:{port}",
                           "--set", f"node.chain_deployment={self.devnet_dir / 'devnet.json'}"]
        self.rpc = f"http://127.0.0.1:{port}"
        self.devnet = self.start(work, "devnet", "--port", str(port), "--dir", str(self.devnet_dir),
                                 ready="nodes use it with")
        self.chain = ChainClient.connect(self.rpc, self.devnet_dir / "devnet.json")
        self.creator_home = self.vault("creator")
        self.contents: dict[str, dict] = {}
        self.creator = self.viewer = None

    def start(self, home: Path, *args: str, ready: str) -> Process:
        process = Process(home, *args, ready=ready)
        self.running.append(process)
        return process

    def vault(self, name: str, deposit_wei: int = 0) -> Path:
        """A new vault with ether for gas (and a deposit for cheques)."""
        home = self.work / name
        identity = new_vault(home).unlock(PASS).identity()
        self.chain.dev.fund(identity.wallet_address, ETHER)
        if deposit_wei:
            self.chain.with_account(identity.wallet).deposit(deposit_wei)
        return home

    def publish(self, home: Path, name: str, size: int, slice_size: str) -> dict:
        """`veil publish` of `size` random bytes: its content id, magnet, plaintext, torrent."""
        from veilstream.content import Torrent

        plaintext = os.urandom(size)
        source = self.work / f"{name}.bin"
        source.write_bytes(plaintext)
        result = veil(home, "publish", str(source), "--slice-size", slice_size, "--price", PRICE, *self.chain_flags,
                      timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"veil publish failed: {result.stderr.strip()[-500:]}")
        source.unlink()
        cid = content_id_of(result.stdout)
        folder = home / "content" / cid
        torrent = Torrent.load(folder / f"{cid}.torrent")
        return dict(cid=cid, magnet=re.search(r"(magnet:\?\S+)", result.stdout)[1], plaintext=plaintext,
                    torrent=torrent, torrent_path=folder / f"{cid}.torrent", ciphertext=folder / torrent.name)

    def add_content(self, name: str, size: int, slice_size: str) -> None:
        self.contents[name] = self.publish(self.creator_home, name, size, slice_size)

    def up(self) -> None:
        """The creator's node (seeds every content, sells their keys) and a viewer's."""
        self.creator = self.start(self.creator_home, "up", "--api-port", "0", *self.node_flags, ready="API ")
        self.peers_at = re.search(r"peers at (\S+:\d+)", self.creator.banner)[1]
        self.viewer_home = self.vault("viewer", deposit_wei=ETHER // 10)
        self.viewer = self.start(self.viewer_home, "up", "--api-port", "0", *self.node_flags, ready="API ")
        self.viewer_api = Api(self.viewer_home, self.viewer.banner)

    def magnet(self, name: str) -> str:
        return f"{self.contents[name]['magnet']}&x.pe={self.peers_at}"

    def close(self) -> None:
        for process in reversed(self.running):
            process.stop()
        self.chain.close()


# -- media ---------------------------------------------------------------------------------


def media_by_range(net: Network, name: str) -> tuple[float, float]:
    """(seconds from POST /streams to the last byte of the last 1 MiB range, of them in the
    POST); every byte checked."""
    content = net.contents[name]
    plaintext, api = content["plaintext"], net.viewer_api
    started = time.perf_counter()
    status, opened = api.call("POST", "streams", {"content": net.magnet(name)})
    if status != 201:
        raise RuntimeError(f"POST /streams answered {status}: {opened}")
    opened_s = time.perf_counter() - started
    connection = api.connect()
    for start in range(0, len(plaintext), MIB):
        end = min(len(plaintext), start + MIB) - 1
        connection.request("GET", f"/api/v1/contents/{content['cid']}/media",
                           headers=api.headers({"Range": f"bytes={start}-{end}"}))
        response = connection.getresponse()
        data = response.read()
        if response.status != 206 or data != plaintext[start:end + 1]:
            raise RuntimeError(f"range {start}-{end}: {response.status}, {len(data)} bytes, not the plaintext")
    return time.perf_counter() - started, opened_s


async def paid_stream(rpc: str, deployment: Path, torrent, peer: str, work: Path, account, *,
                      check: bytes | None = None, go: asyncio.Event | None = None) -> tuple[float, float]:
    """One viewer's `PaidStream` of the whole content from `peer`, as `veil play` runs it,
    without a vault: (seconds from its start to its last decrypted slice, to its first)."""
    from veilstream.chain.client import ChainClient
    from veilstream.market import messages
    from veilstream.market.lanes import LaneOpener
    from veilstream.market.onchain import registered_record
    from veilstream.market.stream import PaidStream, viewer_swarm_settings
    from veilstream.swarm import SwarmNode
    from veilstream.swarm.extensions import UT_METADATA, ExtensionRegistry

    client = ChainClient.connect(rpc, deployment).with_account(account)
    try:
        registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
        async with SwarmNode(viewer_swarm_settings(torrent.piece_length), registry=registry) as node:
            if go is not None:
                await go.wait()
            started = time.perf_counter()  # what POST /streams does is timed too: the record, the transfer
            record = await asyncio.to_thread(registered_record, client, torrent)  # as a node's POST /streams does
            transfer = node.fetch(torrent, work)
            cost = torrent.manifest.terms.price_per_slice_wei * torrent.piece_count
            stream = PaidStream(transfer, torrent, wallet=account, domain=client.cheque_domain, budget_wei=cost,
                                lanes=LaneOpener(client), key_agent=record.key_agent)
            host, port = peer.rsplit(":", 1)
            transfer.add_peer(host, int(port))
            size, at, first = torrent.manifest.plain_slice_length, 0, None
            try:
                async for index, plaintext in stream.slices(0, reuse=True):
                    if first is None:
                        first = time.perf_counter() - started
                    if check is not None and bytes(plaintext) != check[index * size:index * size + len(plaintext)]:
                        raise RuntimeError(f"slice {index} is not the plaintext")
                    at += len(plaintext)
                elapsed = time.perf_counter() - started
            finally:
                await stream.aclose()
        if at != torrent.manifest.plaintext_length:
            raise RuntimeError(f"the stream ended after {at} bytes")
        return elapsed, first
    finally:
        client.close()


def new_account(net: Network, deposit_wei: int):
    from eth_account import Account

    account = Account.create()
    net.chain.dev.fund(account.address, ETHER)
    net.chain.with_account(account).deposit(deposit_wei)
    return account


def part_media(net: Network, args, figures: dict) -> None:
    """Rounds on contents of their own (a content streamed once is held), node and
    reference in alternating order; the ratio is the median of the rounds' ratios."""
    from veilstream.swarm import run

    rows = []
    for number, name in enumerate(n for n in net.contents if n.startswith("media")):
        content = net.contents[name]
        size_mib = len(content["plaintext"]) / MIB

        def reference() -> float:
            viewer = new_account(net, ETHER // 10)
            return run(paid_stream(net.rpc, net.devnet_dir / "devnet.json", content["torrent"], net.peers_at,
                                   net.work / f"ref-{name}", viewer, check=content["plaintext"]))[0]

        if number % 2 == 0:
            ref_s = reference()
            media_s, open_s = media_by_range(net, name)
        else:
            media_s, open_s = media_by_range(net, name)
            ref_s = reference()
        net.viewer_api.call("DELETE", f"streams/{content['cid']}")
        rows.append((size_mib / media_s, size_mib / ref_s, ref_s / media_s, open_s, size_mib / (media_s - open_s)))
        say(f"media round {number + 1}: {size_mib:.0f} MiB by 1 MiB Range requests in {media_s:.2f} s "
            f"(POST /streams {open_s * 1000:.0f} ms of it) = {size_mib / media_s:.1f} MiB/s; "
            f"direct PaidStream {ref_s:.2f} s = {size_mib / ref_s:.1f} MiB/s; ratio {ref_s / media_s:.2f}")
    media_rate, ref_rate = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    ratio, open_s = statistics.median(r[2] for r in rows), statistics.median(r[3] for r in rows)
    after_open = statistics.median(r[4] for r in rows)
    figures.update(media_mib_s=round(media_rate, 2), media_reference_mib_s=round(ref_rate, 2),
                   media_ratio=round(ratio, 3), media_open_ms=round(open_s * 1000, 1),
                   media_size_mib=round(size_mib, 1),
                   media_rounds=len(rows), media_after_post_mib_s=round(after_open, 2))
    say(f"media: GET /media by 1 MiB ranges {media_rate:.1f} MiB/s vs direct PaidStream {ref_rate:.1f} MiB/s "
        f"(medians of {len(rows)} rounds; /media after the POST: {after_open:.1f} MiB/s); "
        f"ratio {ratio:.2f} ({goal('media_ratio', ratio)})")


# -- range ---------------------------------------------------------------------------------


def first_byte_ms(api: Api, cid: str, start: int, length: int) -> float:
    connection = api.connect()
    try:
        started = time.perf_counter()
        connection.request("GET", f"/api/v1/contents/{cid}/media",
                           headers=api.headers({"Range": f"bytes={start}-{start + length - 1}"}))
        response = connection.getresponse()
        first = response.read(1)
        took = (time.perf_counter() - started) * 1000
        rest = response.read()
        if response.status != 206 or len(first) + len(rest) != length:
            raise RuntimeError(f"range at {start}: {response.status}, {len(first) + len(rest)} bytes")
        return took
    finally:
        connection.close()


def part_range(net: Network, args, figures: dict) -> None:
    content = net.contents["range"]
    cid, total, api = content["cid"], len(content["plaintext"]), net.viewer_api
    plain_slice = content["torrent"].manifest.plain_slice_length
    status, opened = api.call("POST", "streams", {"content": net.magnet("range")})
    if status != 201:
        raise RuntimeError(f"POST /streams answered {status}: {opened}")
    first_byte_ms(api, cid, 0, 2 * plain_slice)  # warm: the stream is open, its first slices held
    # 50%, then lower and lower: from a seek on, the viewer fetches in order (then from the
    # start), so a position below every earlier seek and above the warm slices is not held
    # yet. Each seek is read again at once, held then: the reference, under the same load.
    fractions = [0.50, 0.46, 0.42, 0.38, 0.34, 0.30, 0.26, 0.22] if not args.quick else [0.50, 0.40, 0.30]
    seeks, held = [], []
    for fraction in fractions:
        seeks.append(first_byte_ms(api, cid, int(total * fraction), 64 * 1024))
        held.append(first_byte_ms(api, cid, int(total * fraction), 64 * 1024))
    median, ref = statistics.median(seeks), statistics.median(held)
    # a seek no slower than its held re-read was probably held already (fetched before we got there)
    looks_held = sum(1 for cold, warm in zip(seeks, held) if cold < 1.5 * warm)
    figures.update(range_first_byte_ms=round(median, 1), range_held_first_byte_ms=round(ref, 1),
                   range_seeks_ms=[round(s, 1) for s in seeks], range_held_ms=[round(s, 1) for s in held],
                   range_seeks_as_fast_as_held=looks_held, range_slice_kib=content["torrent"].piece_length // 1024)
    say(f"range: first byte of a seek to a not-yet-held position (at {', '.join(f'{f:.0%}' for f in fractions)}): "
        f"median {median:.1f} ms ({', '.join(f'{s:.0f}' for s in seeks)} ms; {looks_held} as fast as held); "
        f"the same ranges read again, held: median {ref:.1f} ms; {total / MIB:.0f} MiB content, {content['torrent'].piece_count} slices "
        f"of {content['torrent'].piece_length // 1024} KiB; "
        f"{goal('range_first_byte_ms', median)}")


# -- api -----------------------------------------------------------------------------------


def hammer(api: Api, paths: list[str], clients: int, seconds: float, token: bool = True
           ) -> tuple[list[tuple[str, float]], int]:
    """`clients` threads, each on its own keep-alive connection, GET `paths` in turn until
    `seconds` are up: ((path, latency in ms) of each request, failed requests)."""
    latencies: list[tuple[str, float]] = []
    failures = [0]
    barrier = threading.Barrier(clients + 1)
    headers = api.headers() if token else {}

    def client(offset: int) -> None:
        connection = api.connect()
        mine = []
        barrier.wait()
        deadline = time.perf_counter() + seconds
        turn = offset
        while time.perf_counter() < deadline:
            path = paths[turn % len(paths)]
            turn += 1
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status >= 500:
                    failures[0] += 1
            except (OSError, http.client.HTTPException):
                failures[0] += 1
                connection.close()
                connection = api.connect()
            mine.append((path, (time.perf_counter() - started) * 1000))
        latencies.extend(mine)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    return latencies, failures[0]


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def part_api(net: Network, args, figures: dict) -> None:
    paths = ["/api/v1/status", "/api/v1/streams", "/api/v1/wallet", "/api/v1/feed"]
    api = net.viewer_api
    for path in paths:  # each answers, before it is timed
        status, _ = api.call("GET", path[len("/api/v1/"):])
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    seconds = 3.0 if args.quick else 10.0
    clients = 50
    floor_timed, floor_failed = hammer(api, ["/api/v1/health"], clients, seconds, token=False)
    timed, failed = hammer(api, paths, clients, seconds)
    # the same without /wallet (each of its answers reads the chain): what the rest costs alone
    others = [p for p in paths if not p.endswith("/wallet")]
    no_wallet = p99([ms for _, ms in hammer(api, others, clients, seconds)[0]])
    reads, floor = [ms for _, ms in timed], [ms for _, ms in floor_timed]
    figure, ref = p99(reads), p99(floor)
    each = {path.rsplit("/", 1)[1]: round(p99([ms for p, ms in timed if p == path]), 1) for path in paths}
    figures.update(api_p99_ms=round(figure, 1), api_p50_ms=round(statistics.median(reads), 1),
                   api_rps=round(len(reads) / seconds), api_failed=failed,
                   api_health_p99_ms=round(ref, 1), api_health_rps=round(len(floor) / seconds), api_p99_by_path_ms=each,
                   api_p99_without_wallet_ms=round(no_wallet, 1))
    say(f"api: {clients} keep-alive clients for {seconds:.0f} s on status/streams/wallet/feed: "
        f"{len(reads) / seconds:.0f} req/s, p50 {statistics.median(reads):.1f} ms, p99 {figure:.1f} ms, "
        f"{failed} failed (p99 by path: {', '.join(f'{p} {ms:.0f} ms' for p, ms in each.items())}); "
        f"on /health {len(floor) / seconds:.0f} req/s, p99 {ref:.1f} ms "
        f"({floor_failed} failed); status/streams/feed alone p99 {no_wallet:.1f} ms; {goal('api_p99_ms', figure)}")


# -- rss -----------------------------------------------------------------------------------


def settled_rss(process: Process, api: Api, contents: int) -> tuple[float, int]:
    """(MiB, processes counted) once the node reports its contents and its RSS stops moving."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, state = api.call("GET", "status")
        if status == 200 and len(state["contents"]) == contents:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"the node did not report its {contents} contents within 60 s")
    samples = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        samples.append(rss_kib(process.pid))
        if len(samples) >= 5 and max(s[0] for s in samples[-3:]) - min(s[0] for s in samples[-3:]) < 1024:
            break
    kib, count = samples[-1]
    return kib / 1024, count


def part_rss(net: Network, args, figures: dict) -> None:
    count = 10 if args.quick else 100
    home = net.vault("seeder-many")
    started = time.perf_counter()
    for number in range(count):
        net.publish(home, f"tiny{number}", 3000, "16KiB")
    publish_s = time.perf_counter() - started
    one = net.vault("seeder-one")
    net.publish(one, "tiny-one", 3000, "16KiB")
    results = {}
    for label, vault, held in (("many", home, count), ("one", one, 1)):
        node = net.start(vault, "up", "--api-port", "0", *net.node_flags, ready="API ")
        try:
            results[label] = settled_rss(node, Api(vault, node.banner), held)
        finally:
            node.stop()
    (many, processes), (single, _) = results["many"], results["one"]
    figures.update(idle_rss_mib=round(many, 1), idle_rss_contents=count, idle_rss_processes=processes,
                   idle_rss_one_content_mib=round(single, 1), publish_tiny_s=round(publish_s / count, 2))
    say(f"rss: `veil up` seeding {count} contents: {many:.1f} MiB VmRSS ({processes} process"
        f"{'es' if processes > 1 else ''}: the node and its children); seeding 1 content: {single:.1f} MiB; "
        f"{count} `veil publish` of 3000 bytes took {publish_s:.0f} s ({publish_s / count:.2f} s each); "
        f"{goal('idle_rss_mib', many)}")


# -- fanout --------------------------------------------------------------------------------


def child_viewers(rpc: str, deployment: str, torrent_path: str, peer: str, work: str, keys: str) -> None:
    """N/2 paid viewers in one process; prints READY, starts on a line, prints its JSON."""
    from eth_account import Account

    from veilstream.content import Torrent
    from veilstream.swarm import run

    async def main() -> None:
        torrent = Torrent.load(Path(torrent_path))
        go = asyncio.Event()
        accounts = [Account.from_key(key) for key in keys.split(",")]
        tasks = [asyncio.ensure_future(paid_stream(rpc, Path(deployment), torrent, peer, Path(work) / f"v{i}", account,
                                                   go=go))
                 for i, account in enumerate(accounts)]
        await asyncio.sleep(0.5)
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.perf_counter()
        go.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        done = [r for r in results if not isinstance(r, BaseException)]
        print(json.dumps({"seconds": time.perf_counter() - started, "each_s": [r[0] for r in done],
                          "first_s": [r[1] for r in done], "errors": errors}), flush=True)

    run(main())


def child_plain_seed(torrent_path: str, ciphertext: str) -> None:
    """An unpaid seeder with the node's swarm settings (`[swarm]` defaults)."""
    from veilstream.content import Torrent
    from veilstream.swarm import PieceStore, SwarmNode, SwarmSettings, run

    async def main() -> None:
        torrent = Torrent.load(Path(torrent_path))
        async with SwarmNode(SwarmSettings()) as node:
            node.seed(PieceStore.for_seeding(torrent, Path(ciphertext)))
            print("PORT", node.listen_port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    run(main())


def spawn(script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def start_together(children: list[subprocess.Popen]) -> list[dict]:
    for child in children:
        line = child.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"a viewer process did not get ready: {line!r}")
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [json.loads(child.stdout.readline()) for child in children]
    for child in children:
        child.stdin.close()
        child.wait(60)
    return results


def part_fanout(net: Network, args, figures: dict) -> None:
    content = net.contents["fanout"]
    size_mib = len(content["plaintext"]) / MIB
    viewers = args.viewers or (4 if args.quick else 20)
    per = viewers // 2
    accounts = [new_account(net, ETHER // 10) for _ in range(viewers)]
    work = net.work / "fanout"
    children = [spawn(Path(__file__), "_viewers", net.rpc, str(net.devnet_dir / "devnet.json"),
                      str(content["torrent_path"]), net.peers_at, str(work / f"p{i}"),
                      ",".join(a.key.hex() for a in accounts[i * per:(i + 1) * per])) for i in range(2)]
    try:
        results = start_together(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise RuntimeError(f"{len(errors)} paid viewers failed: {errors[0]}")
    paid_s = max(r["seconds"] for r in results)
    # the reference: the same ciphertext, unpaid, to as many plain leechers
    seeder = spawn(Path(__file__), "_plain_seed", str(content["torrent_path"]), str(content["ciphertext"]))
    try:
        line = seeder.stdout.readline().split()
        if not line or line[0] != "PORT":
            raise RuntimeError(f"the plain seeder did not start: {line}")
        leechers = [spawn(ROOT / "bench" / "swarm.py", "_leech", str(content["torrent_path"]), str(work / f"l{i}"),
                          "127.0.0.1", line[1], str(per)) for i in range(2)]
        try:
            plain = start_together(leechers)
        finally:
            for child in leechers:
                if child.poll() is None:
                    child.kill()
    finally:
        seeder.stdin.close()
        seeder.wait(60)
    plain_s = max(r["seconds"] for r in plain)
    paid_each = sorted(t for r in results for t in r["each_s"])
    paid_first = statistics.median(t for r in results for t in r["first_s"])
    plain_each = sorted(t for r in plain for t in r["done_s"])
    paid_rate, plain_rate = viewers * size_mib / paid_s, viewers * size_mib / plain_s
    ratio = paid_rate / plain_rate
    figures.update(fanout_mib_s=round(paid_rate, 2), fanout_plain_mib_s=round(plain_rate, 2),
                   fanout_ratio=round(ratio, 3), fanout_viewers=viewers, fanout_size_mib=round(size_mib, 1),
                   fanout_paid_viewer_s=[round(paid_each[0], 2), round(statistics.median(paid_each), 2),
                                         round(paid_each[-1], 2)],
                   fanout_paid_first_slice_s=round(paid_first, 3),
                   fanout_plain_leecher_s=[round(plain_each[0], 2), round(statistics.median(plain_each), 2),
                                           round(plain_each[-1], 2)])
    say(f"fanout: creator's `veil up` → {viewers} paid PaidStream viewers (2 processes of {per}), {size_mib:.0f} MiB "
        f"each, in {paid_s:.2f} s = {paid_rate:.1f} MiB/s aggregate; unpaid, plain seeder → {viewers} plain leechers "
        f"in {plain_s:.2f} s = {plain_rate:.1f} MiB/s; ratio {ratio:.2f} ({goal('fanout_ratio', ratio)}); "
        f"each viewer's time min/median/max "
        f"{paid_each[0]:.2f}/{statistics.median(paid_each):.2f}/{paid_each[-1]:.2f} s, "
        f"each plain leecher's {plain_each[0]:.2f}/{statistics.median(plain_each):.2f}/{plain_each[-1]:.2f} s; "
        f"a paid viewer's first slice after {paid_first * 1000:.0f} ms (median)")


# -- main ----------------------------------------------------------------------------------

FIGURES = {"media": ["media_mib_s", "media_reference_mib_s", "media_ratio"],
           "range": ["range_first_byte_ms", "range_held_first_byte_ms"],
           "api": ["api_p99_ms", "api_health_p99_ms"],
           "rss": ["idle_rss_mib", "idle_rss_one_content_mib"],
           "fanout": ["fanout_mib_s", "fanout_plain_mib_s", "fanout_ratio"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)}")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a part failed")
    parser.add_argument("--size-mib", type=int, default=None, help="the media and range contents (default 32; quick 4)")
    parser.add_argument("--rounds", type=int, default=None, help="media rounds (default 3; quick 1)")
    parser.add_argument("--viewers", type=int, default=None, help="fanout viewers, an even number (default 20; quick 4)")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    size = (args.size_mib or (4 if args.quick else 32)) * MIB
    figures: dict = {"bench": "node", "quick": args.quick, "parts": parts}
    for part in PARTS:
        for key in FIGURES[part]:
            figures[key] = None
    errors: dict[str, str] = {}
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=OUT))
    net = None
    started = time.perf_counter()
    try:
        net = Network(work)
        slice_size = "256KiB" if args.quick else "1MiB"
        # the range content: twice the size, and twice the viewer's streaming window (8 MiB) at
        # least, so that each seek lands on slices not held yet
        wanted = [("media", f"media{n}", size) for n in range(args.rounds)]
        wanted += [("range", "range", max(2 * size, 16 * MIB)), ("fanout", "fanout", size // 2)]
        for part, name, bytes_ in wanted:
            if part in parts:
                net.add_content(name, bytes_ - 1234, slice_size)
        if any(p in parts for p in ("media", "range", "api", "fanout")):
            net.up()
        for part in parts:
            try:
                {"media": part_media, "range": part_range, "api": part_api, "rss": part_rss,
                 "fanout": part_fanout}[part](net, args, figures)
            except Exception as exc:  # one part's failure is reported, the others still run
                errors[part] = f"{type(exc).__name__}: {exc}"
                say(f"{part}: FAILED: {errors[part]}")
                traceback.print_exc(file=sys.stderr)
    except Exception as exc:
        errors["setup"] = f"{type(exc).__name__}: {exc}"
        say(f"setup FAILED: {errors['setup']}")
        traceback.print_exc(file=sys.stderr)
    finally:
        if net is not None:
            net.close()
        shutil.rmtree(work, ignore_errors=True)
    figures["goals_met"] = {name: (None if figures.get(name) is None else
                                   (figures[name] >= bound if op == ">=" else figures[name] <= bound))
                            for name, (op, bound) in GOALS.items()
                            if any(name in FIGURES[p] for p in parts)}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["errors"] = errors
    print(json.dumps(figures), flush=True)
    return 1 if errors and args.strict else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        child_viewers(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_plain_seed":
        child_plain_seed(*sys.argv[2:])
    else:
        sys.exit(main())
