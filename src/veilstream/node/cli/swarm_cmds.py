"""`veil seed`, `veil fetch`, `veil tracker`: moving ciphertext between peers.

A seeder needs no keys: it serves the verified ciphertext named by a torrent. A fetch
verifies every block it is given, stores only verified pieces, and resumes after a crash
(fetching only what is missing).
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from veilstream.content import Torrent, TorrentError, parse_content_id
from veilstream.errors import VeilError
from veilstream.node.cli.common import console, err_console, hold_content, open_vault, veil_home
from veilstream.swarm import FetchError, ListenError, PieceStore, SwarmNode, SwarmSettings, TrackerServer, run
from veilstream.vault import write_atomic
from veilstream.node.hints import magnet_hints, parse_host_port  # noqa: F401 (used by the other commands too)

STATUS_REFRESH_S = 0.25  # how often the live progress line is redrawn
FETCH_STALL_S = 120.0  # a fetch gives up after this long without a new verified piece (BitTorrent clients call a swarm stalled sooner)


class SwarmCommandError(VeilError):
    """Bad arguments to a swarm command."""


def _settings(listen: str | None, dht: bool) -> SwarmSettings:
    settings = SwarmSettings(dht_enabled=dht)
    if listen:
        host, port = parse_host_port(listen, what="--listen")
        settings = settings.but(listen_host=host, listen_port=port)
    return settings


# -- veil seed ----------------------------------------------------------------------------


def _find_seedable(target: str) -> list[tuple[Torrent, Path]]:
    """(torrent, ciphertext) pairs named by a .torrent file, a directory, or a content id
    held in the vault."""
    path = Path(target)
    if path.is_file():
        torrent = Torrent.load(path)
        return [(torrent, path.parent / torrent.name)]
    if path.is_dir():
        found = sorted(path.glob("*.torrent")) or sorted(path.glob("*/*.torrent"))
        if not found:
            raise SwarmCommandError(f"no .torrent files in {path} (nor one level below)")
        pairs = []
        for file in found:
            torrent = Torrent.load(file)
            pairs.append((torrent, file.parent / torrent.name))
        return pairs
    try:
        cid = parse_content_id(target)
    except TorrentError:
        raise SwarmCommandError(f"{target!r} is neither a .torrent file, a directory, nor a content id") from None
    vault = open_vault()
    return [(vault.torrent(cid), vault.ciphertext_path(cid))]


def seed(
    target: str = typer.Argument(..., metavar="TORRENT|DIR", help="A .torrent file (ciphertext beside it), a directory of them, or a content id in the vault."),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="Where to accept peers, HOST:PORT (port 0: any free port)."),
    tracker: list[str] = typer.Option([], "--tracker", help="Announce to this HTTP tracker (repeatable)."),
    dht_bootstrap: list[str] = typer.Option([], "--dht-bootstrap", help="Join the DHT through this node, HOST:PORT (repeatable)."),
) -> None:
    """Serve ciphertext to peers (no keys needed or held) until interrupted."""
    pairs = _find_seedable(target)
    settings = _settings(listen, bool(dht_bootstrap))
    bootstrap = [parse_host_port(b, what="--dht-bootstrap") for b in dht_bootstrap]
    stores = []
    with err_console.status("verifying ciphertext before serving it"):
        for torrent, ciphertext in pairs:
            store = PieceStore.for_seeding(torrent, ciphertext, read_cache_pieces=settings.read_cache_pieces)
            if not store.have_count:
                raise SwarmCommandError(f"{ciphertext} matches none of {torrent.content_id[:16]}…'s pieces: wrong or corrupt file")
            stores.append(store)

    async def serve() -> None:
        async with SwarmNode(settings) as node:
            host, port = node.listen_address
            if node.dht is not None:
                await node.dht.bootstrap(bootstrap)
            table = Table("content id", "pieces", "magnet", title=f"seeding on {host}:{port}", title_justify="left")
            contents = []
            for store in stores:
                content = node.seed(store)
                contents.append(content)
                for url in tracker:
                    node.announce_to(content, url)
                if node.dht is not None:
                    node.discover_via_dht(content)
                missing = store.torrent.piece_count - store.have_count
                note = f" ({missing} corrupt, not served)" if missing else ""
                magnet = store.torrent.magnet + "".join(f"&tr={t}" for t in tracker) + f"&x.pe={host}:{port}"
                table.add_row(store.torrent.content_id, f"{store.have_count}/{store.torrent.piece_count}{note}", magnet)
            console.print(table)
            with Live(console=err_console, refresh_per_second=4, transient=True) as live:
                while True:
                    uploaded = sum(c.swarm.uploaded_bytes for c in contents)
                    peers = sum(c.peers for c in contents)
                    live.update(f"[dim]peers {peers} · uploaded {uploaded / 2**20:.1f} MiB · Ctrl-C stops[/]")
                    await asyncio.sleep(STATUS_REFRESH_S)

    try:
        run(serve())
    except KeyboardInterrupt:
        err_console.print("stopped seeding")


# -- veil fetch -------------------------------------------------------------------------------


def _fetch_target(source: str) -> tuple[Torrent | None, str]:
    path = Path(source)
    if path.is_file() or source.endswith(".torrent"):
        torrent = Torrent.load(path)
        return torrent, torrent.content_id
    try:
        return None, parse_content_id(source)
    except TorrentError as exc:
        raise SwarmCommandError(f"{source!r} is not a torrent file, a magnet link or a content id ({exc})") from None


def fetch(
    source: str = typer.Argument(..., metavar="MAGNET|TORRENT", help="A magnet link, a content id, or a .torrent file."),
    peer: list[str] = typer.Option([], "--peer", help="Connect to this peer, HOST:PORT (repeatable)."),
    tracker: list[str] = typer.Option([], "--tracker", help="Ask this HTTP tracker for peers (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Put the ciphertext and torrent here instead of in the vault."),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="Where to accept peers while fetching, HOST:PORT."),
    dht_bootstrap: list[str] = typer.Option([], "--dht-bootstrap", help="Find peers in the DHT through this node, HOST:PORT (repeatable)."),
    timeout: float = typer.Option(FETCH_STALL_S, "--timeout", min=0, help="Give up after this many seconds without "
                                  "progress (no metadata, no new verified piece); what arrived is kept. 0: wait forever."),
) -> None:
    """Download ciphertext from peers, verifying every block; resumes if interrupted."""
    torrent, cid = _fetch_target(source)
    extra_trackers, extra_peers = magnet_hints(source)
    trackers = list(tracker) + extra_trackers + (list(torrent.trackers) if torrent else [])
    peers = [parse_host_port(p, what="--peer") for p in peer] + extra_peers
    bootstrap = [parse_host_port(b, what="--dht-bootstrap") for b in dht_bootstrap]
    if not peers and not trackers and not bootstrap:
        raise SwarmCommandError("no way to find peers: give --peer HOST:PORT, --tracker URL or --dht-bootstrap HOST:PORT")
    settings = _settings(listen, bool(bootstrap))
    vault = None
    if out is None:
        vault = open_vault()
        if vault.content_dir(cid).exists():
            console.print(f"[green]✓[/] {cid[:16]}… is already in the vault: {vault.content_dir(cid)}")
            return
        directory = veil_home() / "partial" / cid  # stable across restarts, unlike the vault's scratch dirs
    else:
        directory = out
    if torrent is None and (directory / f"{cid}.torrent").is_file():
        torrent = Torrent.load(directory / f"{cid}.torrent")  # metadata kept from an earlier run
        if torrent.content_id != cid:
            raise FetchError(f"{directory / f'{cid}.torrent'} is not the torrent of {cid[:16]}…; remove it")

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
        TextColumn("{task.fields[peers]} peers"), TimeRemainingColumn(), console=err_console, transient=True,
    )

    async def download():
        async with SwarmNode(settings) as node:
            if node.dht is not None:
                await node.dht.bootstrap(bootstrap)
            with progress:
                task = progress.add_task("verifying what is already here", total=torrent.length if torrent else None, peers=0)
                check = lambda n: progress.advance(task, n)  # noqa: E731
                content = node.fetch(torrent if torrent else bytes.fromhex(cid), directory, progress=check)
                for host, port in peers:
                    content.add_peer(host, port)
                for url in trackers:
                    node.announce_to(content, url)
                if node.dht is not None:
                    node.discover_via_dht(content)
                # with no tracker or DHT to find others, once every peer given is gone nobody is left to ask
                watch = _Stall(timeout, cid, peers_only=not trackers and node.dht is None)
                meta = await _with_status(content.metadata(), content, progress, task, "fetching metadata", watch)
                write_torrent(directory, meta)
                resumed = content.store.resumed_count
                progress.update(task, total=meta.length, completed=content.have_bytes)
                path = await _with_status(content.completed(), content, progress, task, f"fetching {cid[:12]}…", watch)
            return meta, path, resumed

    # one process at a time fetches a content into a vault: they would share its work dir
    with hold_content(vault, cid) if vault is not None else nullcontext():
        meta, path, resumed = run(download())
        if vault is not None:
            (directory / (meta.name + ".resume")).unlink(missing_ok=True)
            path = vault.adopt(directory, meta, role="seeder") / meta.name
    fetched = meta.piece_count - resumed
    console.print(f"[green]✓[/] {meta.piece_count} pieces verified ({resumed} resumed from disk, {fetched} fetched) → {path}")


def write_torrent(directory: Path, torrent: Torrent) -> None:
    target = directory / f"{torrent.content_id}.torrent"
    if not target.exists():
        write_atomic(target, torrent.to_bytes(), 0o644)


class _Stall:
    """When a fetch stops waiting: `limit_s` without progress (0: never), or, when peers
    were its only sources, once none of them is left connected or connecting."""

    def __init__(self, limit_s: float, cid: str, *, peers_only: bool) -> None:
        self.limit_s = limit_s
        self.cid = cid
        self.peers_only = peers_only
        self._mark: tuple | None = None
        self._since = 0.0

    def check(self, content, now: float) -> None:
        mark = (content.torrent is not None, content.have_bytes)
        if mark != self._mark:
            self._mark, self._since = mark, now
        kept = "; what arrived is kept: run the command again to resume" if content.have_bytes else ""
        if self.peers_only and not content.addresses:
            raise FetchError(f"no peer given has {self.cid[:16]}… (any more): each refused it, went away or could not "
                             f"be reached; give another --peer or a --tracker{kept}")
        if self.limit_s and now - self._since >= self.limit_s:
            what = f"{self.cid[:16]}…'s metadata" if content.torrent is None else f"a new piece of {self.cid[:16]}…"
            hint = ("; a node that sells slices serves peers that do not pay nothing, unless started with "
                    "`veil serve --serve-plain`" if content.peers and content.torrent is not None else "")
            raise FetchError(f"no peer sent {what} within {self.limit_s:g} s ({content.peers} connected){kept}{hint} "
                             "(--timeout 0 waits forever)")


async def _with_status(awaitable, content, progress: Progress, task, description: str, stall: _Stall):
    """Await `awaitable` while redrawing the progress line (rate, peers, ETA); `stall`
    says when to stop waiting."""
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(awaitable)  # awaited below whatever happens
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=STATUS_REFRESH_S)
            progress.update(task, description=description, completed=content.have_bytes, peers=content.peers)
            if done:
                return waiter.result()
            stall.check(content, loop.time())
    finally:
        if not waiter.done():  # leaving with an error (a stall, Ctrl-C): the fetch ends before we do
            waiter.cancel()
            await asyncio.wait({waiter})


# -- veil tracker ------------------------------------------------------------------------------


def tracker_command(
    listen: str = typer.Option("127.0.0.1:6969", "--listen", help="Where to serve announces, HOST:PORT."),
) -> None:
    """Run an embedded HTTP tracker (BEP 3/23) for a local network until interrupted."""
    host, port = parse_host_port(listen, what="--listen")

    async def serve() -> None:
        server = TrackerServer()
        try:
            await server.start(host, port)
        except OSError as exc:
            raise ListenError.of(host, port, exc) from None
        console.print(f"tracker announce URL: [bold]{server.url}[/]")
        try:
            with Live(console=err_console, refresh_per_second=2, transient=True) as live:
                while True:
                    swarms = server.state.swarms
                    live.update(f"[dim]{len(swarms)} contents · {sum(len(s) for s in swarms.values())} peers · Ctrl-C stops[/]")
                    await asyncio.sleep(STATUS_REFRESH_S)
        finally:
            await server.close()

    try:
        run(serve())
    except KeyboardInterrupt:
        err_console.print("tracker stopped")


def register(app: typer.Typer) -> None:
    app.command("seed")(seed)
    app.command("fetch")(fetch)
    app.command("tracker")(tracker_command)

