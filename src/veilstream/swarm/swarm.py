"""The protocol core for one content across all its peers, without IO.

The transport tells it that a connection opened, closed, or delivered bytes, and lets
time pass with `tick(now)`; it answers with bytes to write per connection
(`output_for`), connections to close (`take_closing`) and events for the application
(`take_events`: a piece verified, the metadata arrived, the download completed, a peer
was dropped, an extension message came in). It never reads a clock or a socket; the
only IO it reaches is the injected `PieceStore` (already-verified pieces in, blocks out).

What it does, by message:
- handshake → bitfield and BEP 10 handshake out; metadata fetched (BEP 9) if we lack it,
  then the piece layer by BEP 52 hash requests, all checked against the info-hash;
- choke/unchoke/interested → upload slots (bounded, plus an optimistic one);
- have/bitfield → availability and interest; requests are pipelined from the picker;
- piece → each block is hashed as it arrives and held in memory; a piece is written
  only once its Merkle root matches the piece layer. A bad piece from one peer bans
  that peer; from several, its block hashes are asked for to find the liar;
- request → validated (range, 16 KiB, we have it, not choked), queued (bounded), served
  as the transport's write buffer allows.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from hashlib import sha256

from veilstream.content import bencode
from veilstream.content.torrent import Torrent, TorrentError
from veilstream.swarm import wire
from veilstream.swarm.connection import Phase, PeerConnection
from veilstream.swarm.events import (
    DownloadComplete,
    ExtensionMessageReceived,
    MetadataReceived,
    PeerDropped,
    PeerReady,
    PieceVerified,
    SwarmEvent,
    SwarmFailed,
)
from veilstream.swarm.errors import FetchError, LocalProtocolError, RemoteProtocolError, PieceStorageError, SwarmError
from veilstream.swarm.extensions import (
    CLIENT_NAME,
    METADATA_DATA,
    METADATA_REJECT,
    METADATA_REQUEST,
    UT_METADATA,
    ExtensionHandshake,
    ExtensionRegistry,
    MetadataAssembler,
    MetadataMessage,
    metadata_piece,
)
from veilstream.swarm.hashes import (
    HashServer,
    TreeShape,
    block_layer_request,
    chain_root,
    piece_layer_requests,
    piece_root_from_block_hashes,
)
from veilstream.swarm.picker import PiecePicker
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStore, bytes_to_bits

BLOCK_SIZE = wire.BLOCK_SIZE
MAX_QUEUED_UPLOAD_REQUESTS = 2000  # libtorrent's max_allowed_in_request_queue; more is a request flood
DEFAULT_PEER_REQQ = 250  # BEP 10: assume this many if a peer does not say (`reqq`)
SNUBBED_QUEUE_DEPTH = 4  # a peer that let a request time out gets few until it delivers again
MAX_UNREQUESTED_BYTES = 16 * 1024 * 1024  # > any queue we keep: blocks cancelled in flight are normal, floods are not
MAX_EARLY_HAVES = 1 << 20  # `have`s remembered before we know the piece count (magnet)
HASH_REQUEST_BURST = 64  # hash requests a peer may make at once...
HASH_REQUEST_RATE_PER_S = 32.0  # ...and per second after that (each may cost us a piece read and hashing)
HASH_FAILURE_STRIKES = 2  # shared in two pieces that failed without a culprit found: banned
# A peer's request queue is topped up once a quarter of it has drained, not after every
# block: one write of many requests instead of many small ones (each a syscall and a wake-up
# of the peer); three quarters of the queue stay in flight, which keeps the pipe full.
REQUEST_REFILL_FRACTION = 4
RATE_SMOOTHING = 0.3  # weight of the newest interval in a peer's moving-average rate


class _Assembly:
    """A piece's blocks, held in memory until the piece verifies."""

    __slots__ = ("buffer", "hashes", "senders", "inline")

    def __init__(self, buffer: bytearray, blocks: int) -> None:
        self.buffer = buffer
        self.inline = True
        self.hashes: list[bytes | None] = [None] * blocks
        self.senders: list[int | None] = [None] * blocks


class Peer:
    __slots__ = (
        "conn", "address", "wire", "ext", "has", "early_bitfield", "early_haves", "requests", "uploads",
        "downloaded", "uploaded", "download_rate", "upload_rate", "_dl_mark", "_ul_mark", "connected_at",
        "last_received", "last_sent", "unrequested_bytes", "hash_tokens", "hash_tokens_at", "hash_requests",
        "snubbed", "optimistic", "unchoked_at", "strikes",
    )

    def __init__(self, conn: int, address: tuple[str, int], connection: PeerConnection, now: float) -> None:
        self.conn = conn
        self.address = address
        self.wire = connection
        self.ext: ExtensionHandshake | None = None
        self.has: bytearray | None = None
        self.early_bitfield: bytes | None = None
        self.early_haves: set[int] = set()
        self.requests: dict[tuple[int, int], float] = {}  # (piece, begin) → when asked
        self.uploads: deque[tuple[int, int, int]] = deque()
        self.downloaded = self.uploaded = 0
        self.download_rate = self.upload_rate = 0.0  # bytes/s, moving averages
        self._dl_mark = self._ul_mark = 0
        self.connected_at = self.last_received = self.last_sent = now
        self.unrequested_bytes = 0
        self.hash_tokens = float(HASH_REQUEST_BURST)
        self.hash_tokens_at = now
        self.hash_requests: dict[tuple, tuple] = {}  # (base, index, length, proof) → (purpose, detail, when)
        self.snubbed = False
        self.optimistic = False
        self.unchoked_at = 0.0
        self.strikes = 0


class Swarm:
    """All connections for one content (by its v2 info-hash)."""

    def __init__(self, info_hash: bytes, *, peer_id: bytes, settings: SwarmSettings = SwarmSettings(),
                 registry: ExtensionRegistry | None = None, torrent: Torrent | None = None,
                 store: PieceStore | None = None, open_store=None, listen_port: int | None = None,
                 rng: random.Random | None = None) -> None:
        if len(info_hash) != 32:
            raise LocalProtocolError("a v2 info-hash is 32 bytes")
        self.info_hash = info_hash
        self.wire_hash = info_hash[: wire.INFO_HASH_WIRE_LENGTH]
        self.peer_id = peer_id
        self.settings = settings
        self.registry = registry or ExtensionRegistry()
        self.listen_port = listen_port
        self._open_store = open_store
        self._rng = rng or random.Random()
        self.peers: dict[int, Peer] = {}
        self.banned_peer_ids: set[bytes] = set()
        self.banned_addresses: set[tuple[str, int]] = set()
        self._events: list[SwarmEvent] = []
        self._closing: list[tuple[int, str]] = []
        self.dirty: set[int] = set()
        self.torrent: Torrent | None = None
        self.store: PieceStore | None = None
        self.picker: PiecePicker | None = None
        self._fetch_end: int | None = None  # kept for a picker made later (a magnet's metadata)
        self.hash_server: HashServer | None = None
        self.shape: TreeShape | None = None
        self._assemblies: dict[int, _Assembly] = {}
        self._hashing: dict[int, _Assembly] = {}  # complete pieces whose hashes are being computed
        # Set by a transport that hashes complete pieces elsewhere (a thread): called with
        # (index, buffer); the answer comes back through `piece_hashed`. None: hash inline.
        self.hash_offload = None
        # Set by an application that charges for uploads (the market): asked before each
        # block goes out as gate(conn, piece, length); False holds the peer's queue until
        # `uploads_may_resume(conn)`. A yes is a charge: the block is sent.
        self.upload_gate: Callable[[int, int, int], bool] | None = None
        self._suspects: dict[int, tuple[list[bytes | None], list[int | None]]] = {}  # piece → block hashes, senders
        self.metadata: MetadataAssembler | None = None
        self._metadata_info: dict | None = None  # verified info dict awaiting its piece layer
        self._layer_chunks: dict[int, bytes] = {}
        self._layer_asked: dict[int, float] = {}
        self.failed: SwarmError | None = None
        self.finished = False
        self._reader_seen = False
        self.downloaded_bytes = self.uploaded_bytes = self.wasted_bytes = 0
        self._last_rechoke = self._last_optimistic = 0.0
        self._last_rate_at: float | None = None
        self._last_resume_save = 0.0
        if torrent is not None:
            if torrent.info_hash != info_hash:
                raise LocalProtocolError("the torrent does not have this info-hash")
            self._attach(torrent, store)

    # ======================================================================================
    # transport-facing
    # ======================================================================================
    def connection_made(self, conn: int, address: tuple[str, int], *, outbound: bool, now: float) -> None:
        if conn in self.peers:
            raise LocalProtocolError(f"connection {conn} already exists")
        self._now_hint = now
        peer = Peer(conn, address, PeerConnection(self.wire_hash, self.peer_id, outbound=outbound), now)
        self.peers[conn] = peer
        if peer.wire.has_output:
            self.dirty.add(conn)

    def data_received(self, conn: int, data: bytes | memoryview, now: float) -> None:
        """Bytes from `conn`. They may be a view into the transport's receive buffer:
        nothing here keeps a reference to them once this returns."""
        peer = self.peers.get(conn)
        if peer is None:
            return
        self._now_hint = now
        peer.last_received = now
        try:
            on_block, handle, piece_kind, wire_ = self._on_block, self._handle, wire.Piece, peer.wire
            for message in wire_.receive_data(data):
                if type(message) is piece_kind:  # the bulk of all traffic: skip the dispatch
                    on_block(peer, message, now)
                else:
                    handle(peer, message, now)
                if wire_.phase is Phase.CLOSED:
                    return
            if self.picker is not None and not self.finished:
                self._fill_requests(peer, now)
        except RemoteProtocolError as exc:
            self._drop(peer, exc.reason, ban=exc.ban)
        if peer.wire.has_output or peer.uploads:
            self.dirty.add(conn)

    def connection_lost(self, conn: int, now: float) -> None:
        peer = self.peers.pop(conn, None)
        if peer is None:
            return
        self._forget(peer)
        self.dirty.discard(conn)
        if peer.wire.phase is not Phase.CLOSED:
            peer.wire.close()
            self._events.append(PeerDropped(conn, peer.address, "connection closed", False))
        self._refill_all(now)

    def output_for(self, conn: int, budget_bytes: int) -> list[bytes]:
        """Bytes to write to `conn` now: control messages, then queued blocks up to
        `budget_bytes` (the room in the transport's write buffer)."""
        self.dirty.discard(conn)
        peer = self.peers.get(conn)
        if peer is None or peer.wire.phase is Phase.CLOSED:
            return []
        if peer.uploads and self.store is not None and not peer.wire.am_choking:
            uploads, store, send_block, gate = peer.uploads, self.store, peer.wire.send_block, self.upload_gate
            held = False
            try:
                while uploads and budget_bytes > 0:
                    index, begin, length = uploads[0]
                    if gate is not None and not gate(peer.conn, index, length):
                        held = True
                        break
                    uploads.popleft()
                    block = store.read_block(index, begin, length)
                    if block is None:
                        continue
                    send_block(index, begin, block)
                    budget_bytes -= length
                    peer.uploaded += length
                    self.uploaded_bytes += length
            except PieceStorageError as exc:
                self._fail(exc)
            if uploads and not held:
                self.dirty.add(conn)  # more once the buffer drains
        out = peer.wire.take_output()
        if out:
            peer.last_sent = self._now_hint
        return out

    _now_hint = 0.0

    def take_closing(self) -> list[tuple[int, str]]:
        out, self._closing = self._closing, []
        return out

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def take_events(self) -> list[SwarmEvent]:
        out, self._events = self._events, []
        return out

    def tick(self, now: float) -> None:
        self._now_hint = now
        settings = self.settings
        self._update_rates(now)
        for peer in list(self.peers.values()):
            if peer.wire.phase is Phase.CLOSED:
                continue
            if peer.wire.phase is Phase.HANDSHAKE:
                if now - peer.connected_at > settings.handshake_timeout_s:
                    self._drop(peer, "no handshake in time")
                continue
            if now - peer.last_received > settings.peer_idle_timeout_s:
                self._drop(peer, "peer went silent")
                continue
            if now - peer.last_sent > settings.keepalive_interval_s:
                peer.wire.send(wire.KeepAlive())
                peer.last_sent = now
                self.dirty.add(peer.conn)
            self._expire_requests(peer, now)
        if self.torrent is None:
            for peer in list(self.peers.values()):
                self._ask_metadata(peer, now)
            self._ask_piece_layer(now)
        if now - self._last_rechoke >= settings.choke_interval_s:
            self._rechoke(now)
        self._refill_all(now)
        if self.store is not None and now - self._last_resume_save >= settings.resume_save_interval_s:
            self._last_resume_save = now
            self._save_resume()

    # ======================================================================================
    # application-facing
    # ======================================================================================
    def seek(self, offset: int) -> None:
        """Move the playback window to the piece holding byte `offset`."""
        if self.picker is not None and self.torrent is not None:
            self.picker.seek(max(0, offset) // self.torrent.piece_length)
            self._refill_all(self._now_hint)

    def limit_fetching(self, end_piece: int | None) -> None:
        """Start no piece at or past `end_piece` (None: no limit); a raised limit is asked for at once."""
        self._fetch_end = end_piece
        if self.picker is not None and self.picker.fetch_end != end_piece:
            raised = end_piece is None or self.picker.fetch_end is None or end_piece > self.picker.fetch_end
            self.picker.fetch_end = end_piece
            if raised:
                self._refill_all(self._now_hint)

    def follow_reader(self, offset: int) -> None:
        """The player reads at `offset`: move the playback window forward to it (never
        back: reading an old piece again is no seek)."""
        if self.picker is not None and self.torrent is not None:
            piece = max(0, offset) // self.torrent.piece_length
            if piece > self.picker.position:
                self.picker.seek(piece)
            if self.store is not None and not self._reader_seen:
                self._reader_seen = True
                self.store.keep_recent_pieces(self.settings.recent_pieces_kept_bytes)

    def send_extension(self, conn: int, name: str, payload: bytes) -> bool:
        """Send a registered extension message (e.g. the market's) to a peer that speaks it;
        False if the peer is gone (it may leave at any time: not a caller's mistake)."""
        if name not in self.registry.ids:
            raise LocalProtocolError(f"extension {name!r} is not registered")
        peer = self.peers.get(conn)
        if peer is None or peer.wire.phase is Phase.CLOSED:
            return False
        if peer.ext is None or name not in peer.ext.extensions:
            raise LocalProtocolError(f"peer {conn} does not speak extension {name!r}")
        peer.wire.send(wire.Extended(peer.ext.extensions[name], payload))
        self.dirty.add(conn)
        return True

    def drop_peer(self, conn: int, reason: str, *, ban: bool = False) -> None:
        """Close a peer's connection (a protocol the layer above speaks was broken, say);
        with `ban`, its address and peer id are not let back in."""
        peer = self.peers.get(conn)
        if peer is not None:
            self._drop(peer, reason, ban=ban)

    def uploads_may_resume(self, conn: int) -> None:
        """The upload gate may now say yes to `conn` (say, a cheque came in)."""
        if conn in self.peers:
            self.dirty.add(conn)

    def is_banned(self, address: tuple[str, int]) -> bool:
        return address in self.banned_addresses

    @property
    def connected_peers(self) -> int:
        return sum(1 for p in self.peers.values() if p.wire.phase is Phase.ACTIVE)

    @property
    def download_rate(self) -> float:
        return sum(p.download_rate for p in self.peers.values())

    # ======================================================================================
    # message handling
    # ======================================================================================
    def _handle(self, peer: Peer, message, now: float) -> None:
        kind = type(message)
        if kind is wire.Piece:
            self._on_block(peer, message, now)
        elif kind is wire.Request:
            self._on_request(peer, message)
        elif kind is wire.Have:
            self._on_have(peer, message.index)
        elif kind is wire.Handshake:
            self._on_handshake(peer, message, now)
        elif kind is wire.Bitfield:
            self._on_bitfield(peer, message.bits)
        elif kind is wire.Cancel:
            try:
                peer.uploads.remove((message.index, message.begin, message.length))
            except ValueError:
                pass
        elif kind is wire.Unchoke:
            self._fill_requests(peer, now)
        elif kind is wire.Choke:
            # BEP 3: a choke discards every request we had outstanding at this peer
            for piece, begin in peer.requests:
                if self.picker is not None:
                    self.picker.abort(piece, begin // BLOCK_SIZE, peer.conn)
            peer.requests.clear()
        elif kind is wire.Interested:
            if peer.wire.am_choking and self._unchoked_count() < self.settings.upload_slots:
                self._unchoke(peer, now)
        elif kind is wire.NotInterested:
            if not peer.wire.am_choking:
                self._choke(peer)
                self._unchoke_next(now)
        elif kind is wire.Extended:
            self._on_extended(peer, message, now)
        elif kind is wire.HashRequest:
            self._on_hash_request(peer, message, now)
        elif kind is wire.Hashes:
            self._on_hashes(peer, message, now)
        elif kind is wire.HashReject:
            self._on_hash_reject(peer, message, now)
        # KeepAlive, Port: nothing to do (the DHT port is not used for routing here)

    def _on_handshake(self, peer: Peer, handshake: wire.Handshake, now: float) -> None:
        if handshake.peer_id == self.peer_id:
            raise RemoteProtocolError("connected to ourselves")
        if handshake.peer_id in self.banned_peer_ids:
            raise RemoteProtocolError("banned peer")
        if self.connected_peers >= self.settings.max_peers_per_content:
            raise RemoteProtocolError("too many peers")
        if self.store is not None and self.store.have_count:
            peer.wire.send(wire.Bitfield(self.store.bitfield()))
        if peer.wire.supports_extensions:
            ours = ExtensionHandshake(
                self.registry.ids,
                len(self.torrent.info_bytes) if self.torrent is not None else None,
                self.listen_port,
                CLIENT_NAME.decode(),
                MAX_QUEUED_UPLOAD_REQUESTS,
            )
            peer.wire.send(wire.Extended(0, ours.encode()))
        peer.last_sent = now
        if self.torrent is not None:
            peer.has = bytearray(self.torrent.piece_count)

    # -- availability and interest ------------------------------------------------------
    def _on_bitfield(self, peer: Peer, bits: bytes) -> None:
        if self.torrent is None:
            peer.early_bitfield = bits
            return
        has = bytes_to_bits(bits, self.torrent.piece_count)
        if has is None:
            raise RemoteProtocolError("bitfield has the wrong length or spare bits set")
        self._set_has(peer, has)

    def _set_has(self, peer: Peer, has: bytearray) -> None:
        if self.picker is not None and peer.has is not None:
            self.picker.remove_peer(peer.has)
        peer.has = has
        if self.picker is not None:
            self.picker.add_peer(has)
            if not self.finished and self.picker.wants_from(has) and not peer.wire.am_interested:
                peer.wire.send(wire.Interested())

    def _on_have(self, peer: Peer, index: int) -> None:
        if self.torrent is None:
            if len(peer.early_haves) >= MAX_EARLY_HAVES:
                raise RemoteProtocolError("too many have messages")
            peer.early_haves.add(index)
            return
        if not 0 <= index < self.torrent.piece_count:
            raise RemoteProtocolError(f"have for piece {index} of {self.torrent.piece_count}")
        if peer.has is None:
            peer.has = bytearray(self.torrent.piece_count)
        if peer.has[index]:
            return
        peer.has[index] = 1
        if self.picker is not None:
            self.picker.peer_has(index)
            if not self.finished and not self.picker.have[index] and not peer.wire.am_interested:
                peer.wire.send(wire.Interested())

    # -- uploading -------------------------------------------------------------------------
    def _on_request(self, peer: Peer, request: wire.Request) -> None:
        torrent = self.torrent
        if torrent is None:
            return  # we announced no pieces; nothing to serve
        index, begin, length = request.index, request.begin, request.length
        if not 0 <= index < torrent.piece_count:
            raise RemoteProtocolError(f"request for piece {index} of {torrent.piece_count}")
        size = min(torrent.piece_length, torrent.length - index * torrent.piece_length)
        if not 0 < length <= BLOCK_SIZE or begin < 0 or begin + length > size:
            raise RemoteProtocolError(f"request out of range: piece {index} [{begin}, +{length})")
        if peer.wire.am_choking or self.store is None or not self.store.have[index]:
            return  # BEP 3: requests while choked are dropped; we never offered pieces we lack
        if len(peer.uploads) >= MAX_QUEUED_UPLOAD_REQUESTS:
            raise RemoteProtocolError("request flood")
        peer.uploads.append((index, begin, length))

    def _unchoked_count(self) -> int:
        return sum(1 for p in self.peers.values() if not p.wire.am_choking and p.wire.phase is Phase.ACTIVE)

    def _unchoke(self, peer: Peer, now: float) -> None:
        peer.wire.send(wire.Unchoke())
        peer.unchoked_at = now
        self.dirty.add(peer.conn)

    def _choke(self, peer: Peer) -> None:
        peer.wire.send(wire.Choke())
        peer.uploads.clear()  # BEP 3: choking discards the peer's queued requests
        peer.optimistic = False
        self.dirty.add(peer.conn)

    def _unchoke_next(self, now: float) -> None:
        waiting = [p for p in self.peers.values()
                   if p.wire.phase is Phase.ACTIVE and p.wire.am_choking and p.wire.peer_interested]
        free = self.settings.upload_slots - self._unchoked_count()
        for peer in sorted(waiting, key=lambda p: -p.download_rate)[: max(0, free)]:
            self._unchoke(peer, now)

    def _rechoke(self, now: float) -> None:
        """Every choke interval: keep the best `upload_slots - 1` interested peers
        unchoked (by what they give us, or take from us once we seed), plus one optimistic
        unchoke that rotates every optimistic interval."""
        self._last_rechoke = now
        interested = [p for p in self.peers.values() if p.wire.phase is Phase.ACTIVE and p.wire.peer_interested]
        seeding = self.finished or (self.store is not None and self.store.complete)
        ranked = sorted(interested, key=lambda p: -(p.upload_rate if seeding else p.download_rate))
        regular = set(id(p) for p in ranked[: max(0, self.settings.upload_slots - 1)])
        rotate = now - self._last_optimistic >= self.settings.optimistic_unchoke_interval_s
        current = [p for p in interested if p.optimistic and id(p) not in regular]
        if rotate or not current:
            others = [p for p in interested if id(p) not in regular]
            for p in current:
                p.optimistic = False
            current = [self._rng.choice(others)] if others else []
            if current:
                current[0].optimistic = True
            self._last_optimistic = now
        keep = regular | {id(p) for p in current}
        for peer in self.peers.values():
            if peer.wire.phase is not Phase.ACTIVE:
                continue
            if id(peer) in keep and peer.wire.am_choking:
                self._unchoke(peer, now)
            elif id(peer) not in keep and not peer.wire.am_choking:
                self._choke(peer)

    # -- downloading --------------------------------------------------------------------------
    def _queue_depth(self, peer: Peer) -> int:
        if peer.snubbed:
            return SNUBBED_QUEUE_DEPTH
        reqq = peer.ext.request_queue if peer.ext is not None and peer.ext.request_queue else DEFAULT_PEER_REQQ
        return min(self.settings.request_queue_depth_blocks, reqq)

    def _is_fast(self, peer: Peer) -> bool:
        best = max((p.download_rate for p in self.peers.values() if not p.wire.peer_choking), default=0.0)
        return best <= 0 or peer.download_rate >= self.settings.fast_peer_rate_fraction * best

    def _fill_requests(self, peer: Peer, now: float) -> None:
        picker = self.picker
        if (picker is None or self.finished or self.failed or peer.has is None or peer.wire.phase is not Phase.ACTIVE
                or peer.wire.peer_choking or not peer.wire.am_interested):
            return
        depth = self._queue_depth(peer)
        want = depth - len(peer.requests)
        if want <= 0 or (peer.requests and want * REQUEST_REFILL_FRACTION < depth):
            return
        picks = picker.pick(peer.conn, peer.has, want, fast=self._is_fast(peer), now=now)
        if not picks:
            if not peer.requests and not picker.wants_from(peer.has):
                peer.wire.send(wire.NotInterested())
                self.dirty.add(peer.conn)
            return
        requests, block_length, triples = peer.requests, picker.block_length, []
        for piece, block in picks:
            begin = block * BLOCK_SIZE
            requests[(piece, begin)] = now
            triples.append((piece, begin, block_length(piece, block)))
        peer.wire.send_requests(triples)
        peer.last_sent = now
        self.dirty.add(peer.conn)

    def _refill_all(self, now: float) -> None:
        if self.picker is None or self.finished:
            return
        for peer in sorted(self.peers.values(), key=lambda p: -p.download_rate):
            self._fill_requests(peer, now)

    def _expire_requests(self, peer: Peer, now: float) -> None:
        timeout = self.settings.request_timeout_s
        expired = []
        for key, asked in peer.requests.items():
            if now - asked < timeout:
                break
            expired.append(key)
        if not expired:
            return
        peer.snubbed = True
        for piece, begin in expired:
            del peer.requests[(piece, begin)]
            if self.picker is not None:
                self.picker.abort(piece, begin // BLOCK_SIZE, peer.conn)
                peer.wire.send(wire.Cancel(piece, begin, self.picker.block_length(piece, begin // BLOCK_SIZE)))
        self.dirty.add(peer.conn)

    def _on_block(self, peer: Peer, block: wire.Piece, now: float) -> None:
        index, begin, data = block.index, block.begin, block.data
        key = (index, begin)
        asked = peer.requests.pop(key, None)
        if asked is None or self.picker is None:
            peer.unrequested_bytes += len(data)
            self.wasted_bytes += len(data)
            if peer.unrequested_bytes > MAX_UNREQUESTED_BYTES:
                raise RemoteProtocolError("too much data we never asked for")
            return
        picker = self.picker
        number = begin // BLOCK_SIZE
        length = len(data)
        if begin % BLOCK_SIZE or length != picker.block_length(index, number):
            raise RemoteProtocolError(f"block {index}/{begin} has {length} bytes, not what was asked")
        peer.downloaded += length
        self.downloaded_bytes += length
        peer.snubbed = False
        new, others = picker.block_received(index, number, peer.conn)
        if not new:
            self.wasted_bytes += length
            return
        for conn in others:  # endgame or deadline duplicates: tell the others to stop
            other = self.peers.get(conn)
            if other is not None and other.requests.pop(key, None) is not None:
                other.wire.send(wire.Cancel(index, begin, length))
                self.dirty.add(conn)
        assembly = self._assemblies.get(index)
        if assembly is None:
            assembly = self._assemblies[index] = _Assembly(self.store.piece_buffer(picker.piece_size(index)),
                                                           picker.block_count(index))
            # Deadline pieces are hashed here, block by block as they come: handing them
            # to a thread would make the player wait for GIL hand-offs. Bulk pieces go to
            # `hash_offload` (when set) and hash in parallel with the network.
            assembly.inline = self.hash_offload is None or picker.in_window(index)
        assembly.buffer[begin : begin + length] = data
        if assembly.inline:
            assembly.hashes[number] = sha256(data).digest()
        assembly.senders[number] = peer.conn
        if picker.piece_ready(index):
            del self._assemblies[index]
            if not assembly.inline:
                self._hashing[index] = assembly
                self.hash_offload(index, assembly.buffer)
            else:
                self._piece_checked(index, assembly, now)

    def piece_hashed(self, index: int, block_hashes: list[bytes], now: float) -> None:
        """The block hashes of a piece handed to `hash_offload` (computed elsewhere,
        e.g. on a thread); the piece is then checked exactly as if hashed inline."""
        assembly = self._hashing.pop(index, None)
        if assembly is None or len(block_hashes) != len(assembly.hashes):
            return  # dropped meanwhile (its sender was banned)
        assembly.hashes = list(block_hashes)
        self._piece_checked(index, assembly, now)

    def _piece_checked(self, index: int, assembly: _Assembly, now: float) -> None:
        picker, torrent = self.picker, self.torrent
        if piece_root_from_block_hashes(assembly.hashes, self.shape) != torrent.piece_hash(index):
            picker.piece_failed(index)
            self._hash_failed(index, assembly, now)
            return
        try:
            self.store.write_verified_piece(index, assembly.buffer)
        except PieceStorageError as exc:
            picker.piece_failed(index)
            self._fail(exc)
            return
        picker.piece_verified(index)
        have = wire.Have(index)
        for other in self.peers.values():
            if other.wire.phase is Phase.ACTIVE and (other.has is None or not other.has[index]):
                other.wire.send(have)
                self.dirty.add(other.conn)
        delivered: dict[int, int] = {}
        for number, sender in enumerate(assembly.senders):
            if sender is not None:
                delivered[sender] = delivered.get(sender, 0) + picker.block_length(index, number)
        ranked = tuple(sorted(delivered.items(), key=lambda item: item[1], reverse=True))
        self._events.append(PieceVerified(index, tuple(conn for conn, _ in ranked), ranked))
        if picker.complete:
            self._complete(now)

    def _complete(self, now: float) -> None:
        self.finished = True
        self._save_resume()
        for peer in list(self.peers.values()):
            if peer.wire.phase is not Phase.ACTIVE:
                continue
            for piece, begin in list(peer.requests):
                peer.wire.send(wire.Cancel(piece, begin, self.picker.block_length(piece, begin // BLOCK_SIZE)))
            peer.requests.clear()
            if peer.wire.am_interested:
                peer.wire.send(wire.NotInterested())
            self.dirty.add(peer.conn)
        self._events.append(DownloadComplete())

    def _hash_failed(self, index: int, assembly: _Assembly, now: float) -> None:
        senders = {s for s in assembly.senders if s is not None}
        if len(senders) == 1:
            culprit = self.peers.get(senders.pop())
            if culprit is not None:
                self._drop(culprit, f"sent a bad block in piece {index}", ban=True)
            return
        # Several peers contributed: ask an uninvolved v2 peer for the piece's block
        # hashes, proven up to the piece hash, and ban whoever sent a block that differs.
        request = block_layer_request(self.shape, self.torrent.pieces_root, index)
        helpers = [p for p in self.peers.values()
                   if p.wire.phase is Phase.ACTIVE and p.has is not None and p.has[index]]
        helpers.sort(key=lambda p: (p.conn in senders, not p.wire.supports_v2))
        if helpers and self.shape.blocks_per_piece > 1:
            self._suspects[index] = (assembly.hashes, assembly.senders)
            self._send_hash_request(helpers[0], request, ("blocks", index), now)
            return
        for conn in senders:
            suspect = self.peers.get(conn)
            if suspect is not None:
                suspect.strikes += 1
                if suspect.strikes >= HASH_FAILURE_STRIKES:
                    self._drop(suspect, "shared in repeated bad pieces", ban=True)

    # -- BEP 52 hash messages ----------------------------------------------------------------
    def _send_hash_request(self, peer: Peer, request: wire.HashRequest, purpose: tuple, now: float) -> None:
        key = (request.base_layer, request.index, request.length, request.proof_layers)
        peer.hash_requests[key] = (purpose, now)
        peer.wire.send(request)
        self.dirty.add(peer.conn)

    def _on_hash_request(self, peer: Peer, request: wire.HashRequest, now: float) -> None:
        peer.hash_tokens = min(HASH_REQUEST_BURST, peer.hash_tokens + (now - peer.hash_tokens_at) * HASH_REQUEST_RATE_PER_S)
        peer.hash_tokens_at = now
        answer = None
        if self.hash_server is not None and peer.hash_tokens >= 1:
            peer.hash_tokens -= 1
            try:
                answer = self.hash_server.answer(request)
            except PieceStorageError:
                answer = None
        fields = (request.pieces_root, request.base_layer, request.index, request.length, request.proof_layers)
        peer.wire.send(wire.Hashes(*fields, answer) if answer is not None else wire.HashReject(*fields))

    def _on_hashes(self, peer: Peer, message: wire.Hashes, now: float) -> None:
        key = (message.base_layer, message.index, message.length, message.proof_layers)
        pending = peer.hash_requests.pop(key, None)
        if pending is None:
            return  # unsolicited or late: ignore
        (purpose, detail), _ = pending
        if purpose == "layer":
            if self._metadata_info is None:
                return
            root = self._layer_root()
            if message.pieces_root != root or chain_root(message.hashes, *key) != root:
                raise RemoteProtocolError("piece-layer hashes do not chain to the pieces root", ban=True)
            self._layer_chunks[detail] = message.hashes[: 32 * message.length]
            self._layer_asked.pop(detail, None)
            self._try_finish_metadata(now)
        elif purpose == "blocks":
            suspects = self._suspects.pop(detail, None)
            if suspects is None or self.torrent is None:
                return
            if chain_root(message.hashes, *key) != self.torrent.piece_hash(detail):
                raise RemoteProtocolError("block hashes do not chain to the piece hash", ban=True)
            hashes, senders = suspects
            for number, got in enumerate(hashes):
                if got is not None and got != message.hashes[32 * number : 32 * number + 32]:
                    liar = self.peers.get(senders[number])
                    if liar is not None and liar.wire.phase is not Phase.CLOSED:
                        self._drop(liar, f"sent a bad block in piece {detail}", ban=True)

    def _on_hash_reject(self, peer: Peer, message: wire.HashReject, now: float) -> None:
        key = (message.base_layer, message.index, message.length, message.proof_layers)
        pending = peer.hash_requests.pop(key, None)
        if pending is not None and pending[0][0] == "layer":
            self._layer_asked.pop(pending[0][1], None)  # ask someone else on the next tick

    # -- BEP 10 / BEP 9 ------------------------------------------------------------------------
    def _on_extended(self, peer: Peer, message: wire.Extended, now: float) -> None:
        if message.ext_id == 0:
            first = peer.ext is None
            peer.ext = ExtensionHandshake.decode(message.payload)
            if first:
                self._events.append(PeerReady(peer.conn, peer.address, frozenset(peer.ext.extensions)))
            if first and self.torrent is None:
                self._ask_metadata(peer, now)
                self._ask_piece_layer(now)
            return
        name = self.registry.name_of(message.ext_id)
        if name is None:
            return  # an id we never assigned: ignore
        if name == UT_METADATA:
            self._on_metadata_message(peer, MetadataMessage.decode(message.payload), now)
        else:
            self._events.append(ExtensionMessageReceived(peer.conn, name, message.payload))

    def _on_metadata_message(self, peer: Peer, msg: MetadataMessage, now: float) -> None:
        if msg.kind == METADATA_REQUEST:
            their_id = peer.ext.extensions.get(UT_METADATA) if peer.ext else None
            if their_id is None:
                return
            data = metadata_piece(self.torrent.info_bytes, msg.piece) if self.torrent is not None else None
            if data is None:
                reply = MetadataMessage(METADATA_REJECT, msg.piece)
            else:
                reply = MetadataMessage(METADATA_DATA, msg.piece, len(self.torrent.info_bytes), data)
            peer.wire.send(wire.Extended(their_id, reply.encode()))
        elif msg.kind == METADATA_DATA:
            if self.torrent is not None or self.metadata is None or self._metadata_info is not None:
                return
            if msg.total_size != self.metadata.size:
                raise RemoteProtocolError("metadata total_size differs from the handshake's")
            if not self.metadata.add(msg.piece, msg.data):
                return
            raw = self.metadata.assemble()
            if raw is None:
                self.metadata = None
                raise RemoteProtocolError("metadata does not hash to the info-hash", ban=True)
            self._on_info(raw, now)
        elif msg.kind == METADATA_REJECT and self.metadata is not None:
            self.metadata.requested.pop(msg.piece, None)

    def _ask_metadata(self, peer: Peer, now: float) -> None:
        if self.torrent is not None or self._metadata_info is not None or peer.ext is None:
            return
        their_id = peer.ext.extensions.get(UT_METADATA)
        if their_id is None or peer.wire.phase is not Phase.ACTIVE:
            return
        if self.metadata is None:
            if peer.ext.metadata_size is None:
                return
            try:
                self.metadata = MetadataAssembler(self.info_hash, peer.ext.metadata_size)
            except RemoteProtocolError:
                return
        timeout = self.settings.metadata_request_timeout_s
        for piece in self.metadata.missing():
            asked = self.metadata.requested.get(piece)
            if asked is not None and now - asked < timeout:
                continue
            self.metadata.requested[piece] = now
            peer.wire.send(wire.Extended(their_id, MetadataMessage(METADATA_REQUEST, piece).encode()))
            self.dirty.add(peer.conn)

    def _on_info(self, raw: bytes, now: float) -> None:
        """The info dict arrived and hashes to the info-hash; its piece layer may follow."""
        try:
            info = bencode.decode(raw)
            if not isinstance(info, dict):
                raise TorrentError("info is not a dictionary")
            length, piece_length, _root = _file_entry(info)
            if length <= piece_length:
                self._metadata_ready(Torrent.from_info(info, {}), now)
                return
        except (TorrentError, bencode.BencodeError) as exc:
            self._fail(FetchError(f"this content id names something that is not a Veilstream torrent: {exc}"))
            return
        self._metadata_info = info
        self.shape = TreeShape(length, piece_length)
        self._ask_piece_layer(now)

    def _layer_root(self) -> bytes:
        return _file_entry(self._metadata_info)[2]

    def _ask_piece_layer(self, now: float) -> None:
        if self._metadata_info is None or self.torrent is not None:
            return
        # libtorrent leaves the v2 reserved bit unset for pure-v2 torrents, so any peer
        # may be asked; those that set it are asked first.
        helpers = sorted((p for p in self.peers.values() if p.wire.phase is Phase.ACTIVE),
                         key=lambda p: not p.wire.supports_v2)
        if not helpers:
            return
        for n, request in enumerate(piece_layer_requests(self.shape, self._layer_root())):
            if request.index in self._layer_chunks:
                continue
            asked = self._layer_asked.get(request.index)
            if asked is not None and now - asked < self.settings.metadata_request_timeout_s:
                continue
            self._layer_asked[request.index] = now
            helper = helpers[(n + int(now)) % len(helpers)]
            self._send_hash_request(helper, request, ("layer", request.index), now)

    def _try_finish_metadata(self, now: float) -> None:
        requests = piece_layer_requests(self.shape, self._layer_root())
        if any(r.index not in self._layer_chunks for r in requests):
            return
        layer = b"".join(self._layer_chunks[r.index] for r in requests)[: 32 * self.shape.piece_count]
        try:
            torrent = Torrent.from_info(self._metadata_info, {self._layer_root(): layer})
        except TorrentError as exc:
            self._fail(FetchError(f"the content's metadata is not a valid Veilstream torrent: {exc}"))
            return
        self._metadata_ready(torrent, now)

    def _metadata_ready(self, torrent: Torrent, now: float) -> None:
        if self._open_store is None:
            raise LocalProtocolError("a magnet fetch needs open_store to place the download")
        try:
            store = self._open_store(torrent)
        except PieceStorageError as exc:
            self._fail(exc)
            return
        self._attach(torrent, store)
        self._events.append(MetadataReceived(torrent))
        for peer in self.peers.values():
            if peer.wire.phase is not Phase.ACTIVE:
                continue
            if self.store.have_count:
                for index in range(torrent.piece_count):
                    if self.store.have[index]:
                        peer.wire.send(wire.Have(index))
            has = bytearray(torrent.piece_count)
            if peer.early_bitfield is not None:
                parsed = bytes_to_bits(peer.early_bitfield, torrent.piece_count)
                if parsed is None:
                    self._drop(peer, "bitfield has the wrong length or spare bits set")
                    continue
                has = parsed
            for index in peer.early_haves:
                if not 0 <= index < torrent.piece_count:
                    self._drop(peer, f"have for piece {index} of {torrent.piece_count}")
                    break
                has[index] = 1
            else:
                peer.early_bitfield, peer.early_haves = None, set()
                self._set_has(peer, has)
                self.dirty.add(peer.conn)
        if self.store.complete:
            self._complete(now)
        self._refill_all(now)

    def _attach(self, torrent: Torrent, store: PieceStore | None) -> None:
        self.torrent = torrent
        self.store = store
        self.shape = TreeShape(torrent.length, torrent.piece_length)
        self.hash_server = HashServer(torrent, store.read_piece if store is not None else (lambda i: None))
        self._metadata_info = None
        self.metadata = None
        if store is not None:
            window = max(1, self.settings.stream_window_bytes // torrent.piece_length)
            self.picker = PiecePicker(torrent.piece_count, torrent.piece_length, torrent.length, window,
                                      store.have, rng=self._rng)
            self.picker.deadline_rerequest_s = self.settings.deadline_rerequest_s
            self.picker.endgame_duplicates = self.settings.endgame_duplicate_requests
            self.picker.whole_pieces = self.settings.whole_pieces_per_peer
            self.picker.endgame = self.settings.endgame
            self.picker.sequential = self.settings.sequential
            self.picker.fetch_end = self._fetch_end
            self.finished = store.complete

    # -- bookkeeping ----------------------------------------------------------------------------
    def _update_rates(self, now: float) -> None:
        if self._last_rate_at is None:
            self._last_rate_at = now
            return
        dt = now - self._last_rate_at
        if dt <= 0:
            return
        self._last_rate_at = now
        for peer in self.peers.values():
            dl, ul = peer.downloaded - peer._dl_mark, peer.uploaded - peer._ul_mark
            peer._dl_mark, peer._ul_mark = peer.downloaded, peer.uploaded
            peer.download_rate += RATE_SMOOTHING * (dl / dt - peer.download_rate)
            peer.upload_rate += RATE_SMOOTHING * (ul / dt - peer.upload_rate)

    def _save_resume(self, *, background: bool = True) -> None:
        if self.store is None:
            return
        try:
            self.store.save_resume(background=background)
        except PieceStorageError as exc:
            self._fail(exc)

    def _fail(self, error: SwarmError) -> None:
        if self.failed is None:
            self.failed = error
            self._events.append(SwarmFailed(error))

    def _forget(self, peer: Peer) -> None:
        """Undo what a departing peer held: its availability and outstanding requests."""
        if self.picker is not None:
            for piece, begin in peer.requests:
                self.picker.abort(piece, begin // BLOCK_SIZE, peer.conn)
            if peer.has is not None:
                self.picker.remove_peer(peer.has)
        peer.requests.clear()
        peer.uploads.clear()
        for (purpose, detail), _ in peer.hash_requests.values():
            if purpose == "layer":
                self._layer_asked.pop(detail, None)
        peer.hash_requests.clear()

    def _drop(self, peer: Peer, reason: str, *, ban: bool = False) -> None:
        if peer.wire.phase is Phase.CLOSED:
            return
        if ban:
            self.banned_addresses.add(peer.address)
            if peer.wire.remote is not None:
                self.banned_peer_ids.add(peer.wire.remote.peer_id)
            # its unverified blocks go too: any piece it contributed to starts over
            for pending in (self._assemblies, self._hashing):
                for index, assembly in list(pending.items()):
                    if peer.conn in assembly.senders and self.picker is not None:
                        del pending[index]
                        self.picker.piece_failed(index)
        self._forget(peer)
        peer.wire.close()
        self.peers.pop(peer.conn, None)
        self.dirty.discard(peer.conn)
        self._closing.append((peer.conn, reason))
        self._events.append(PeerDropped(peer.conn, peer.address, reason, ban))


def _file_entry(info: dict) -> tuple[int, int, bytes]:
    """(length, piece length, pieces root) of a single-file v2 info dict."""
    name, piece_length, tree = info.get(b"name"), info.get(b"piece length"), info.get(b"file tree")
    entry = tree.get(name) if isinstance(tree, dict) and isinstance(name, bytes) else None
    entry = entry.get(b"") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(piece_length, int):
        raise TorrentError("info dictionary is not a single-file v2 torrent")
    length, root = entry.get(b"length"), entry.get(b"pieces root")
    if (not isinstance(length, int) or length <= 0 or not isinstance(root, bytes) or len(root) != 32
            or piece_length < BLOCK_SIZE or piece_length & (piece_length - 1)):
        raise TorrentError("file entry lacks a valid length, piece length or pieces root")
    return length, piece_length, root
