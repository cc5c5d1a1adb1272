"""The asyncio side of the swarm: sockets, timers, and tasks; no protocol logic.

A `SwarmNode` listens on one port for every content it serves or fetches, routes each
incoming connection by the info-hash in its handshake, and moves bytes between sockets
and each content's `Swarm` core (one `Transfer` per content). Timers call `Swarm.tick`. Trackers and the DHT are
polled by tasks. Every task lives in the node's `TaskGroup`; leaving the node's
`async with` closes every connection and cancels every task.

    async with SwarmNode(settings) as node:
        transfer = node.fetch(torrent_or_info_hash, directory)
        transfer.add_peer("127.0.0.1", 6881)
        await transfer.completed()
        data = await transfer.read(offset, length)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from veilstream.content.merkle import block_hashes
from veilstream.content.torrent import Torrent
from veilstream.swarm import tracker as tracker_client
from veilstream.swarm.errors import FetchError, ListenError, LocalProtocolError, SwarmError, TrackerError
from veilstream.swarm.extensions import ExtensionRegistry
from veilstream.swarm.rate import RateLimits
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStore
from veilstream.swarm.events import (
    DownloadComplete,
    MetadataReceived,
    PeerDropped,
    PieceVerified,
    SwarmEvent,
    SwarmFailed,
)
from veilstream.swarm.swarm import Swarm

log = logging.getLogger("veilstream.swarm")

PEER_ID_PREFIX = b"-VS0100-"  # Azureus-style client id: Veilstream 0.1.0.0
ROUTING_PREFIX_BYTES = 48  # handshake bytes needed to read the info-hash and route a connection
MAX_UNROUTED_CONNECTIONS = 256  # inbound connections still in their handshake; more are refused
RECEIVE_BUFFER_BYTES = 1024 * 1024  # one socket read at most; uvloop's own buffer is 256 KiB

# A rate timer fires this much after the bucket should have room: a loop whose clock has
# millisecond steps (uvloop's) may otherwise wake a hair early, find no room, and go again.
RATE_TIMER_SLACK_S = 0.001

RECENT_DROPS_KEPT = 256  # a transfer remembers this many dropped peers (for `veil status`, tests); older ones go


def new_peer_id() -> bytes:
    return PEER_ID_PREFIX + os.urandom(12)


def run(coro, *, use_uvloop: bool = True):
    """Run `coro` on uvloop when it is installed (it moves loopback bytes ~2× faster)."""
    factory = None
    if use_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a pinned dependency
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


class Transfer:
    """One content on this node, seeded or fetched: its protocol core, its storage, ways
    to wait on it, and its events for any number of subscribers (`subscribe`)."""

    def __init__(self, node: SwarmNode, swarm: Swarm) -> None:
        self.node = node
        self.swarm = swarm
        self._flushing = False
        self._changed = asyncio.Event()
        self._metadata = asyncio.Event()
        self._complete = asyncio.Event()
        self.addresses: set[tuple[str, int]] = set()  # connected or being connected
        self._subscribers: list[Callable[[SwarmEvent], None]] = []
        self.tasks: set[asyncio.Task] = set()  # its announce, lookup and connect tasks (the node's group owns them)
        self.dropped: deque[PeerDropped] = deque(maxlen=RECENT_DROPS_KEPT)
        self.started_at = time.monotonic()
        self._rate_timer: asyncio.TimerHandle | None = None  # wakes the core when a rate limit has room
        self._rate_timer_at = 0.0
        self.first_piece_at: float | None = None
        self.completed_at: float | None = None
        if swarm.torrent is not None:
            self._metadata.set()
        if swarm.finished:
            self._complete.set()

    # -- what it is -----------------------------------------------------------------------
    @property
    def settings(self) -> SwarmSettings:
        return self.swarm.settings

    @property
    def info_hash(self) -> bytes:
        return self.swarm.info_hash

    @property
    def torrent(self) -> Torrent | None:
        return self.swarm.torrent

    @property
    def store(self) -> PieceStore | None:
        return self.swarm.store

    @property
    def have_bytes(self) -> int:
        store = self.swarm.store
        if store is None:
            return 0
        last = store.torrent.piece_count - 1
        full = store.have_count - store.have[last]
        return full * store.torrent.piece_length + (store.piece_size(last) if store.have[last] else 0)

    @property
    def peers(self) -> int:
        return self.swarm.connected_peers

    @property
    def download_rate(self) -> float:
        return self.swarm.download_rate

    # -- rate limits ------------------------------------------------------------------------
    @property
    def rate_limits(self) -> tuple[int, int]:
        """This content's own (upload, download) limits in bytes/s, 0 for none; the node's
        (`SwarmNode.rate_limits`) apply beside them."""
        return self.swarm.rate_limits.rates

    def set_rate_limits(self, *, upload: int | None = None, download: int | None = None) -> None:
        """This content's own limits in bytes/s (0: none; None: unchanged), at once."""
        self.swarm.set_rate_limits(upload=upload, download=download, now=time.monotonic())
        self.node._flush(self)

    # -- waiting ----------------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self.swarm.failed is not None:
            raise self.swarm.failed

    async def metadata(self) -> Torrent:
        while not self._metadata.is_set():
            self._raise_if_failed()
            await self._wait_change()
        self._raise_if_failed()
        return self.swarm.torrent

    async def completed(self) -> Path:
        """Wait until every piece is verified and stored; returns the ciphertext path."""
        while not self._complete.is_set():
            self._raise_if_failed()
            await self._wait_change()
        self._raise_if_failed()
        return self.swarm.store.finish()

    async def read(self, offset: int, length: int) -> bytes:
        """Verified ciphertext bytes [offset, offset+length), as soon as the pieces that
        cover them are in (never an unverified byte). A player reads in order, so the
        streaming window follows its reads forward (`seek` moves it anywhere)."""
        await self.metadata()
        while True:
            data = self.read_now(offset, length)
            if data is not None:
                return data
            await self._wait_change()

    async def wait_for_piece(self, index: int) -> None:
        """Until piece `index` is verified and stored; the window follows the reader."""
        torrent = await self.metadata()
        if not 0 <= index < torrent.piece_count:
            raise LocalProtocolError(f"no piece {index} in a {torrent.piece_count}-piece content")
        while not self.has_piece(index):
            await self._wait_change()

    def has_piece(self, index: int) -> bool:
        """Is piece `index` in? Asking tells the swarm the player is there: the streaming
        window moves forward to it."""
        self._raise_if_failed()
        if self.swarm.torrent is None:
            return False
        self.swarm.follow_reader(index * self.swarm.torrent.piece_length)
        return bool(self.swarm.store.have[index])

    def piece_view(self, index: int) -> memoryview:
        """Verified piece `index` (it must be in), not copied: valid only until the caller
        next awaits. A player that decrypts or writes it at once saves a copy per piece."""
        view = self.swarm.store.piece_view(index) if self.has_piece(index) else None
        if view is None:
            raise LocalProtocolError(f"piece {index} is not in yet")
        return view

    def read_now(self, offset: int, length: int) -> bytes | None:
        """`read` without waiting: the bytes if every covering piece is in, else None."""
        self._raise_if_failed()
        torrent = self.swarm.torrent
        if torrent is None:
            return None
        if offset < 0 or length < 0 or offset + length > torrent.length:
            raise LocalProtocolError(f"read [{offset}, +{length}) is outside the {torrent.length}-byte content")
        self.swarm.follow_reader(offset)
        pl, store = torrent.piece_length, self.swarm.store
        if not all(store.have[i] for i in range(offset // pl, (offset + max(length, 1) - 1) // pl + 1)):
            return None
        return store.read(offset, length)

    def seek(self, offset: int) -> None:
        """Move the streaming window: pieces from `offset` on are fetched first."""
        self.swarm.seek(offset)
        self.node._flush(self)

    def limit_fetching(self, end_piece: int | None) -> None:
        """Fetch no piece at or past `end_piece` (None: no limit)."""
        self.swarm.limit_fetching(end_piece)
        self.node._flush(self)

    async def _wait_change(self) -> None:
        event = self._changed
        await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- peers ----------------------------------------------------------------------------
    def add_peer(self, host: str, port: int) -> None:
        self.node.connect(self, host, port)

    def send_extension(self, conn: int, name: str, payload: bytes) -> bool:
        """Send an extension message; False if the peer has left."""
        sent = self.swarm.send_extension(conn, name, payload)
        self.node._flush(self)
        return sent

    def drop_peer(self, conn: int, reason: str, *, ban: bool = False) -> None:
        """Close a peer's connection (and with `ban`, keep it out)."""
        self.swarm.drop_peer(conn, reason, ban=ban)
        self.node._flush(self)

    def set_upload_gate(self, gate: Callable[[int, int, int], bool] | None) -> None:
        """Charge for uploads: `gate(conn, piece, length)` is asked before each block goes out."""
        self.swarm.upload_gate = gate

    def uploads_may_resume(self, conn: int) -> None:
        self.swarm.uploads_may_resume(conn)
        self.node._flush(self)

    # -- events ---------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[SwarmEvent], None]) -> Callable[[], None]:
        """Call `listener` with every event of this content (see `swarm.events`), in the
        order the core reports them, after the node's own bookkeeping; returns the call that
        unsubscribes. Listeners run inside the node's flush: what they send leaves in the
        same write. A listener that raises is a bug and stops the node."""
        self._subscribers.append(listener)

        def unsubscribe() -> None:
            if listener in self._subscribers:
                self._subscribers.remove(listener)

        return unsubscribe

    def _on_event(self, event: SwarmEvent) -> None:
        kind = type(event)
        if kind is PieceVerified:
            if self.first_piece_at is None:
                self.first_piece_at = time.monotonic()
        elif kind is MetadataReceived:
            self._metadata.set()
        elif kind is DownloadComplete:
            self.completed_at = time.monotonic()
            self._complete.set()
        elif kind is PeerDropped:
            self.dropped.append(event)
            self.addresses.discard(event.address)
        elif kind is SwarmFailed:
            log.warning("swarm failed: %s", event.error)
        for listener in tuple(self._subscribers):
            listener(event)
        self._notify()


class _PeerWire(asyncio.BufferedProtocol):
    """Moves bytes between one socket and a `Swarm`.

    Sockets are read straight into the node's receive buffer (no bytes object per read);
    the core consumes every byte of it before `buffer_updated` returns (a message split
    across reads is kept by the core), so one buffer serves every connection of the node.
    """

    def __init__(self, node: SwarmNode, transfer: Transfer | None, address: tuple[str, int] | None) -> None:
        self.node = node
        self.transfer = transfer
        self.address = address
        self.conn = node._next_conn_id()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.refused = False  # closed at accept: never counted, never routed
        self.dialling = transfer is not None  # an outgoing connection, counted by the node until made
        self._prefix = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        settings = self.node.settings
        transport.set_write_buffer_limits(high=settings.write_buffer_high_bytes, low=settings.write_buffer_low_bytes)
        peer = transport.get_extra_info("peername")
        if self.address is None:
            self.address = (peer[0], peer[1]) if peer else ("?", 0)
        if self.transfer is None:
            refusal = self.node._refusal()
            if refusal is not None:
                log.debug("refused a connection from %s:%d: %s", *self.address[:2], refusal)
                self.refused = True
                self.node.refused_connections += 1
                transport.abort()
                return
        else:
            self.dialling = False
            self.node._dialling -= 1
        self.node._wires[self.conn] = self
        if self.transfer is not None:  # outbound: we speak first
            self.transfer.swarm.connection_made(self.conn, self.address, outbound=True, now=time.monotonic())
            self.node._flush(self.transfer)
        else:
            self.node._unrouted += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.node._receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.node._receive_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        transfer = self.transfer
        if transfer is None:
            self._prefix += data
            if len(self._prefix) < ROUTING_PREFIX_BYTES:
                return
            self.node._unrouted -= 1
            transfer = self.node._route(bytes(self._prefix[28:48]))
            if transfer is None or transfer.swarm.is_banned(self.address):
                self.transport.abort()
                return
            self.transfer = transfer
            data, self._prefix = bytes(self._prefix), bytearray()
            transfer.swarm.connection_made(self.conn, self.address, outbound=False, now=time.monotonic())
        try:
            transfer.swarm.data_received(self.conn, data, time.monotonic())
        except Exception:  # a bug must cost this connection, never the node
            log.exception("internal error while handling a peer's data; dropping the peer")
            self.node.internal_errors += 1
            self.transport.abort()
            return
        self.node._flush(transfer)

    def connection_lost(self, exc) -> None:
        if self.refused:
            return
        self.node._wires.pop(self.conn, None)
        if self.transfer is None:
            if len(self._prefix) < ROUTING_PREFIX_BYTES:
                self.node._unrouted -= 1
            return
        self.transfer.swarm.connection_lost(self.conn, time.monotonic())
        self.transfer.addresses.discard(self.address)
        self.node._flush(self.transfer)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.transfer is not None:
            self.node._flush(self.transfer)


class SwarmNode:
    def __init__(self, settings: SwarmSettings = SwarmSettings(), *, registry: ExtensionRegistry | None = None,
                 peer_id: bytes | None = None) -> None:
        self.settings = settings
        self.registry = registry or ExtensionRegistry()
        self.peer_id = peer_id or new_peer_id()
        self.transfers: dict[bytes, Transfer] = {}  # by the 20-byte wire info-hash
        self.internal_errors = 0
        self._wires: dict[int, _PeerWire] = {}
        self._conn_ids = 0
        self._unrouted = 0
        self._dialling = 0  # outgoing connections started, not yet made
        self.refused_connections = 0  # incoming ones closed at accept (the limits), since the start
        # The node's rate limits, shared by every content (each has its own beside them);
        # contents' own limits by wire hash, kept for transfers added later (a resumed seed).
        self.shared_limits = RateLimits(settings.upload_rate_limit, settings.download_rate_limit, time.monotonic())
        self._content_limits: dict[bytes, tuple[int | None, int | None]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._group: asyncio.TaskGroup | None = None
        self.dht_lookups = 0  # lookups finished (with peers or none): how a watcher sees the loop go on
        self._dht_done = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self._hash_pool: ThreadPoolExecutor | None = None
        self._receive_buffer = memoryview(bytearray(RECEIVE_BUFFER_BYTES))
        self._closed = False
        self.dht = None

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> SwarmNode:
        loop = asyncio.get_running_loop()
        if self.settings.hash_threads > 0:
            self._hash_pool = ThreadPoolExecutor(max_workers=self.settings.hash_threads, thread_name_prefix="veil-hash")
            for _ in range(self.settings.hash_threads):  # start the threads now, not on the first piece
                self._hash_pool.submit(int)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        try:
            self._server = await loop.create_server(
                lambda: _PeerWire(self, None, None), self.settings.listen_host, self.settings.listen_port)
            if self.settings.dht_enabled:
                from veilstream.swarm.dht import DhtNode

                self.dht = DhtNode(self.settings)
                await self.dht.start(self.settings.listen_host, self.settings.dht_port)
            self._spawn(self._tick_forever())
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)  # shuts down, lets `exc` leave as itself
            if isinstance(exc, OSError):
                raise ListenError.of(self.settings.listen_host, self.settings.listen_port, exc) from None
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self._shutdown()
        try:
            await self._group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group wraps the block's own error: let it leave as itself (a
            # FetchError stays one line), unless a task failed beside it.
            if exc is None or group.exceptions != (exc,):
                raise

    async def _shutdown(self) -> None:
        self._closed = True
        if self._hash_pool is not None:
            self._hash_pool.shutdown(wait=True, cancel_futures=True)
        if self._server is not None:
            self._server.close()
        for wire_ in list(self._wires.values()):
            wire_.transport.abort()
        for task in list(self._background):
            task.cancel()
        for transfer in self.transfers.values():
            if transfer._rate_timer is not None:
                transfer._rate_timer.cancel()
            # no "stopped" announce: trackers expire silent peers, and waiting on one
            # would let an unreachable tracker delay shutdown
            if transfer.store is not None:
                try:
                    transfer.store.close()
                except SwarmError as exc:
                    log.warning("closing storage: %s", exc)
        if self.dht is not None:
            self.dht.close()

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every connection has written what it was given (say, a viewer's last
        cheques) — closing aborts connections, dropping anything still buffered. True if
        everything drained in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while any(w.transport is not None and not w.transport.is_closing()
                          and w.transport.get_write_buffer_size() for w in self._wires.values()):
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    @property
    def listen_address(self) -> tuple[str, int]:
        return self._server.sockets[0].getsockname()[:2]

    @property
    def listen_port(self) -> int:
        return self.listen_address[1]

    def _spawn(self, coro) -> asyncio.Task:
        task = self._group.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _next_conn_id(self) -> int:
        self._conn_ids += 1
        return self._conn_ids

    def _route(self, wire_hash: bytes) -> Transfer | None:
        return self.transfers.get(wire_hash)

    # -- limits -----------------------------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        """Connections open or being opened, every content's and those still unrouted."""
        return len(self._wires) + self._dialling

    def _refusal(self) -> str | None:
        """Why a new connection may not be taken now, or None."""
        if self.connection_count >= self.settings.max_connections:
            return f"the node has {self.connection_count} connections (max_connections {self.settings.max_connections})"
        if self._unrouted >= MAX_UNROUTED_CONNECTIONS:
            return f"{self._unrouted} connections are still in their handshake"
        return None

    @property
    def rate_limits(self) -> tuple[int, int]:
        """The node's (upload, download) limits in bytes/s, every content's bytes together; 0: none."""
        return self.shared_limits.rates

    def set_rate_limits(self, *, upload: int | None = None, download: int | None = None) -> None:
        """The node's limits in bytes/s (0: none; None: unchanged), at once for every content."""
        now = time.monotonic()
        self.shared_limits.set(upload=upload, download=download, now=now)
        for transfer in list(self.transfers.values()):
            transfer.swarm.rate_refilled(now)
            self._flush(transfer)

    def set_content_rate_limits(self, info_hash: bytes, *, upload: int | None = None,
                                download: int | None = None) -> None:
        """A content's own limits (see `Transfer.set_rate_limits`), now if the node has it and
        for every transfer of it added later."""
        wire_hash = info_hash[:20]
        old_upload, old_download = self._content_limits.get(wire_hash, (None, None))
        self._content_limits[wire_hash] = (old_upload if upload is None else upload,
                                           old_download if download is None else download)
        transfer = self.transfers.get(wire_hash)
        if transfer is not None:
            transfer.set_rate_limits(upload=upload, download=download)

    # -- transfers ------------------------------------------------------------------------------
    def seed(self, store: PieceStore) -> Transfer:
        """Serve a complete (verified) store."""
        torrent = store.torrent
        swarm = Swarm(torrent.info_hash, peer_id=self.peer_id, settings=self.settings, registry=self.registry,
                      torrent=torrent, store=store, listen_port=self.listen_port, shared_limits=self.shared_limits)
        return self._add(swarm)

    def fetch(self, target: Torrent | bytes, directory: Path,
              progress: Callable[[int], None] | None = None, *, settings: SwarmSettings | None = None) -> Transfer:
        """Download a torrent, or a bare v2 info-hash (metadata fetched from peers), into
        `directory`, resuming whatever is already there. `settings` (default: the node's) are
        this transfer's: a paying viewer's differ from a seeder's."""
        settings = settings or self.settings

        def open_store(torrent: Torrent) -> PieceStore:
            return PieceStore.for_download(torrent, directory, read_cache_pieces=settings.read_cache_pieces, progress=progress)

        if isinstance(target, Torrent):
            swarm = Swarm(target.info_hash, peer_id=self.peer_id, settings=settings, registry=self.registry,
                          torrent=target, store=open_store(target), listen_port=self.listen_port,
                          shared_limits=self.shared_limits)
        else:
            if len(target) != 32:
                raise FetchError("a content id is a 32-byte v2 info-hash")
            swarm = Swarm(target, peer_id=self.peer_id, settings=settings, registry=self.registry,
                          open_store=open_store, listen_port=self.listen_port, shared_limits=self.shared_limits)
        return self._add(swarm)

    def remove(self, transfer: Transfer) -> None:
        """Stop `transfer`: its peers are closed, its tasks cancelled, its storage closed, and
        the node forgets it (the same content may be added again)."""
        if self.transfers.get(transfer.swarm.wire_hash) is not transfer:
            return
        del self.transfers[transfer.swarm.wire_hash]
        if transfer._rate_timer is not None:
            transfer._rate_timer.cancel()
            transfer._rate_timer = None
        for task in list(transfer.tasks):
            task.cancel()
        for conn in list(transfer.swarm.peers):
            transfer.swarm.drop_peer(conn, "this node stopped the transfer")
        self._flush(transfer)
        if transfer.store is not None:
            try:
                transfer.store.close()
            except SwarmError as exc:
                log.warning("closing storage: %s", exc)

    def _spawn_for(self, transfer: Transfer, coro) -> None:
        task = self._spawn(coro)
        transfer.tasks.add(task)
        task.add_done_callback(transfer.tasks.discard)

    def _add(self, swarm: Swarm) -> Transfer:
        if swarm.wire_hash in self.transfers:
            raise LocalProtocolError("this node already has that content")
        transfer = Transfer(self, swarm)
        own = self._content_limits.get(swarm.wire_hash)
        if own is not None:
            swarm.set_rate_limits(upload=own[0], download=own[1], now=time.monotonic())
        if self._hash_pool is not None:
            swarm.hash_offload = lambda index, buffer: self._offload_hash(transfer, index, buffer)
        self.transfers[swarm.wire_hash] = transfer
        return transfer

    def connect(self, transfer: Transfer, host: str, port: int) -> None:
        address = (host, port)
        if address in transfer.addresses or transfer.swarm.is_banned(address) or address == self.listen_address:
            return
        if len(transfer.addresses) >= self.settings.max_peers_per_content:
            return
        if self.connection_count >= self.settings.max_connections:
            log.debug("not connecting to %s:%d: the node has %d connections (max_connections %d)",
                      host, port, self.connection_count, self.settings.max_connections)
            return
        transfer.addresses.add(address)
        self._dialling += 1  # counted from now: connections started together must not overshoot the limit
        self._spawn_for(transfer, self._connect(transfer, address))

    async def _connect(self, transfer: Transfer, address: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        wire_ = _PeerWire(self, transfer, address)
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await loop.create_connection(lambda: wire_, *address)
        except (OSError, TimeoutError) as exc:
            transfer.addresses.discard(address)
            log.info("cannot connect to %s:%d: %s", address[0], address[1], exc)
        finally:
            if wire_.dialling:  # never made (failed, timed out, cancelled)
                wire_.dialling = False
                self._dialling -= 1

    def _offload_hash(self, transfer: Transfer, index: int, buffer: bytearray) -> None:
        """Hash a complete piece's blocks on a worker thread (hashlib releases the GIL,
        so this runs beside the event loop); the core gets the hashes back on the loop."""
        loop = asyncio.get_running_loop()

        def done(future) -> None:
            if not future.cancelled() and not self._closed:
                loop.call_soon_threadsafe(self._piece_hashed, transfer, index, future)

        self._hash_pool.submit(block_hashes, buffer).add_done_callback(done)

    def _piece_hashed(self, transfer: Transfer, index: int, future) -> None:
        if self._closed:
            return
        transfer.swarm.piece_hashed(index, future.result(), time.monotonic())
        self._flush(transfer)

    # -- timers and IO ----------------------------------------------------------------------------
    async def _tick_forever(self) -> None:
        interval = self.settings.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for transfer in list(self.transfers.values()):
                transfer.swarm.tick(now)
                self._flush(transfer)

    def _flush(self, transfer: Transfer) -> None:
        """Hand the core's events to the application, then write what the core has for
        each peer and close what it closed; again while that produced more events. The
        handlers run first so that what they send (a cheque for the piece that just
        verified) leaves in the same write as the core's own messages: one system call
        per peer per flush, not one per message or per pass."""
        if transfer._flushing:
            return  # called from an event handler: the flush under way writes it
        transfer._flushing = True
        try:
            swarm = transfer.swarm
            while True:
                while events := swarm.take_events():
                    for event in events:
                        transfer._on_event(event)
                if swarm.dirty:
                    self._write_dirty(swarm)
                for conn, reason in swarm.take_closing():
                    wire_ = self._wires.get(conn)
                    if wire_ is not None and wire_.transport is not None:
                        log.info("closing %s: %s", wire_.address, reason)
                        wire_.transport.close()
                if not swarm.has_events:
                    break
            wake = swarm.rate_wake_at
            if wake is not None and (transfer._rate_timer is None or wake < transfer._rate_timer_at):
                self._wake_for_rate(transfer, wake)
        finally:
            transfer._flushing = False

    def _wake_for_rate(self, transfer: Transfer, wake: float) -> None:
        """One timer per transfer, at the earliest time a limit has room for what waits on it."""
        if self._closed or self.transfers.get(transfer.swarm.wire_hash) is not transfer:
            return
        if transfer._rate_timer is not None:
            transfer._rate_timer.cancel()
        delay = max(0.0, wake - time.monotonic()) + RATE_TIMER_SLACK_S
        transfer._rate_timer = asyncio.get_running_loop().call_later(delay, self._rate_refilled, transfer)
        transfer._rate_timer_at = wake

    def _rate_refilled(self, transfer: Transfer) -> None:
        transfer._rate_timer = None
        if self._closed or self.transfers.get(transfer.swarm.wire_hash) is not transfer:
            return
        transfer.swarm.rate_refilled(time.monotonic())
        self._flush(transfer)

    def _write_dirty(self, swarm: Swarm) -> None:
        high = self.settings.write_buffer_high_bytes
        now = time.monotonic()
        for conn in list(swarm.dirty):
            wire_ = self._wires.get(conn)
            if wire_ is None or wire_.transport is None or wire_.transport.is_closing():
                swarm.dirty.discard(conn)
                continue
            if wire_.paused:
                continue
            chunks = swarm.output_for(conn, high - wire_.transport.get_write_buffer_size(), now)
            if chunks:
                # one writev per flush, blocks not copied (uvloop's writelines buffers
                # every chunk, then makes one uv_try_write of them all)
                wire_.transport.writelines(chunks)

    # -- discovery --------------------------------------------------------------------------------
    def announce_to(self, transfer: Transfer, url: str) -> None:
        """Keep announcing `transfer` to an HTTP tracker and connect to the peers it names."""
        self._spawn_for(transfer, self._announce_loop(transfer, url))

    async def _announce_loop(self, transfer: Transfer, url: str) -> None:
        event: str | None = "started"
        interval = self.settings.tracker_min_interval_s
        while True:
            try:
                reply = await tracker_client.announce(
                    url, transfer.info_hash, self.peer_id, self.listen_port,
                    timeout_s=self.settings.tracker_timeout_s, uploaded=transfer.swarm.uploaded_bytes,
                    downloaded=transfer.swarm.downloaded_bytes, left=self._left(transfer), event=event,
                    numwant=self.settings.tracker_numwant)
                event = None
                interval = max(self.settings.tracker_min_interval_s, min(reply.interval_s, self.settings.tracker_default_interval_s))
                for host, port in reply.peers:
                    self.connect(transfer, host, port)
            except TrackerError as exc:
                log.info("tracker %s: %s", url, exc)
            # re-announce sooner while we still lack peers
            wait = interval if transfer.peers else self.settings.tracker_min_interval_s
            done_before = transfer._complete.is_set()
            try:
                async with asyncio.timeout(wait):
                    while transfer._complete.is_set() == done_before:
                        await transfer._wait_change()
                if not done_before:
                    event = "completed"
            except TimeoutError:
                pass

    def _left(self, transfer: Transfer) -> int:
        torrent = transfer.torrent
        return torrent.length - transfer.have_bytes if torrent is not None else 1

    def discover_via_dht(self, transfer: Transfer) -> None:
        """Look the content up in the DHT (and announce it) now and then."""
        if self.dht is None:
            raise LocalProtocolError("the DHT is disabled in these settings")
        self._spawn_for(transfer, self._dht_loop(transfer))

    async def dht_lookup_finished(self) -> int:
        """Wait for the next DHT lookup to finish (found peers or not); returns how many have."""
        event = self._dht_done
        await event.wait()
        return self.dht_lookups

    async def _dht_loop(self, transfer: Transfer) -> None:
        while True:
            try:
                peers = await self.dht.get_peers(transfer.info_hash[:20], announce_port=self.listen_port)
                for host, port in peers:
                    self.connect(transfer, host, port)
            except (SwarmError, OSError) as exc:  # expected: an empty table, a network that refuses
                log.info("dht lookup: %s", exc)
            self.dht_lookups += 1
            self._dht_done.set()
            self._dht_done = asyncio.Event()
            wait = self.settings.tracker_default_interval_s if transfer.peers else self.settings.tracker_min_interval_s
            await asyncio.sleep(wait)
