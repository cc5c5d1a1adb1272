"""The protocol core for one content across all its peers, without IO: the coordinator.

The transport tells it that a connection opened, closed, or delivered bytes, and lets
time pass with `tick(now)`; it answers with bytes to write per connection
(`output_for`), connections to close (`take_closing`) and events for the application
(`take_events`: a piece verified, the metadata arrived, the download completed, a peer
was dropped, an extension message came in). It never reads a clock or a socket; the
only IO it reaches is the injected `PieceStorage` (already-verified pieces in, blocks out).

The decisions are made by sub-machines that answer with verdicts; this module routes
messages to them and acts on what they say:

    peer.py     `Peer`: one connection's record (flags, queues, rates, hash budget)
    magnet.py   `MetadataFetch`: the info dict (BEP 9), then the piece layer (BEP 52)
    verify.py   `PieceVerifier`: blocks in; Verified / Bad / NeedBlockHashes out
    choker.py   `Choker`: which peers hold upload slots
    picker.py   `PiecePicker`: which block to ask which peer for next

What it does, by message (the table is `self._handlers`):
- handshake → bitfield and BEP 10 handshake out; metadata fetched if we lack it;
- choke/unchoke/interested → upload slots (the choker), request pipelines;
- have/bitfield → availability and interest; requests are pipelined from the picker;
- piece → handed to the verifier block by block; a piece is written only once its
  Merkle root matches the piece layer. A bad piece from one peer bans that peer; from
  several, its block hashes are asked for to find the liar;
- request → validated (range, 16 KiB, we have it, not choked), queued (bounded), served
  as the transport's write buffer allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from veilstream.content.torrent import Torrent
from veilstream.swarm import wire
from veilstream.swarm.choker import Choker
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
from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError, PieceStorageError, SwarmError
from veilstream.swarm.extensions import (
    CLIENT_NAME,
    METADATA_DATA,
    METADATA_REJECT,
    METADATA_REQUEST,
    UT_METADATA,
    ExtensionHandshake,
    ExtensionRegistry,
    MetadataMessage,
    metadata_piece,
)
from veilstream.swarm.hashes import HashServer
from veilstream.swarm.magnet import (
    BadMetadata,
    MetadataComplete,
    MetadataFetch,
    MetadataUnusable,
    MetadataVerdict,
    NeedMore,
    NeedPieceLayer,
)
from veilstream.swarm.peer import Peer
from veilstream.swarm.picker import PiecePicker
from veilstream.swarm.rate import NO_LIMIT_ALLOWANCE, RateLimits, Throttle
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStorage, bytes_to_bits
from veilstream.swarm.verify import Bad, HashElsewhere, NeedBlockHashes, PieceVerifier, Verdict, Verified

BLOCK_SIZE = wire.BLOCK_SIZE
MAX_QUEUED_UPLOAD_REQUESTS = 2000  # libtorrent's max_allowed_in_request_queue; more is a request flood
# A peer's request queue is topped up once a quarter of it has drained, not after every
# block: one write of many requests instead of many small ones (each a syscall and a wake-up
# of the peer); three quarters of the queue stay in flight, which keeps the pipe full.
REQUEST_REFILL_FRACTION = 4


class Swarm:
    """All connections for one content (by its v2 info-hash)."""

    def __init__(self, info_hash: bytes, *, peer_id: bytes, settings: SwarmSettings = SwarmSettings(),
                 registry: ExtensionRegistry | None = None, torrent: Torrent | None = None,
                 store: PieceStorage | None = None, open_store=None, listen_port: int | None = None,
                 rng: random.Random | None = None, shared_limits: RateLimits | None = None) -> None:
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
        self.store: PieceStorage | None = None
        self.picker: PiecePicker | None = None
        self._fetch_end: int | None = None  # kept for a picker made later (a magnet's metadata)
        self.hash_server: HashServer | None = None
        self.verifier: PieceVerifier | None = None  # once there is a torrent and a store
        self.choker = Choker(settings.upload_slots, settings.choke_interval_s, settings.optimistic_unchoke_interval_s,
                             self._rng)
        self._magnet: MetadataFetch | None = None if torrent is not None else MetadataFetch(
            info_hash, settings.metadata_request_timeout_s)
        self._hash_offload: Callable[[int, bytearray], None] | None = None
        # Set by an application that charges for uploads (the market): asked before each
        # block goes out as gate(conn, piece, length); False holds the peer's queue until
        # `uploads_may_resume(conn)`. A yes is a charge: the block is sent.
        self.upload_gate: Callable[[int, int, int], bool] | None = None
        # Rate limits: this content's own, and those it shares with every content of the
        # node (`shared_limits`; a core on its own takes the settings' as its own share).
        # A block goes, or a request is asked, only while both have room.
        self.rate_limits = RateLimits()
        self.shared_limits = shared_limits if shared_limits is not None else RateLimits(
            settings.upload_rate_limit, settings.download_rate_limit)
        self._upload = Throttle(self.rate_limits.upload, self.shared_limits.upload)
        self._download = Throttle(self.rate_limits.download, self.shared_limits.download)
        self._rate_held: set[int] = set()  # peers whose queued blocks wait for the upload limit
        # When a limit will have room again for what waits on it: the transport calls
        # `rate_refilled(now)` then (one timer, no polling). None: nothing waits.
        self.rate_wake_at: float | None = None
        self.failed: SwarmError | None = None
        self.finished = False
        self._reader_seen = False
        self.downloaded_bytes = self.uploaded_bytes = self.wasted_bytes = 0
        self._last_rate_at: float | None = None
        self._last_resume_save = 0.0
        # What each message does: every kind the parser yields has a row. Piece, the bulk
        # of all traffic, is routed before the table is consulted (see `data_received`).
        self._handlers: dict[type, Callable[[Peer, object, float], None]] = {
            wire.Handshake: self._on_handshake,
            wire.KeepAlive: self._ignore,
            wire.Port: self._ignore,  # the DHT port is not used for routing here
            wire.Piece: self._on_block,
            wire.Request: self._on_request,
            wire.Cancel: self._on_cancel,
            wire.Have: self._on_have,
            wire.Bitfield: self._on_bitfield,
            wire.Choke: self._on_choke,
            wire.Unchoke: self._on_unchoke,
            wire.Interested: self._on_interested,
            wire.NotInterested: self._on_not_interested,
            wire.Extended: self._on_extended,
            wire.HashRequest: self._on_hash_request,
            wire.Hashes: self._on_hashes,
            wire.HashReject: self._on_hash_reject,
        }
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
            on_block, handlers, piece_kind, wire_ = self._on_block, self._handlers, wire.Piece, peer.wire
            for message in wire_.receive_data(data):
                if type(message) is piece_kind:  # the bulk of all traffic: skip the table
                    on_block(peer, message, now)
                else:
                    handlers[type(message)](peer, message, now)
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

    def output_for(self, conn: int, budget_bytes: int, now: float | None = None) -> list[bytes]:
        """Bytes to write to `conn` now: control messages, then queued blocks up to
        `budget_bytes` (the room in the transport's write buffer) and the rate limits."""
        self.dirty.discard(conn)
        peer = self.peers.get(conn)
        if peer is None or peer.wire.phase is Phase.CLOSED:
            return []
        if peer.uploads and self.store is not None and not peer.wire.am_choking:
            uploads, store, send_block, gate = peer.uploads, self.store, peer.wire.send_block, self.upload_gate
            held = False
            upload = self._upload
            if now is None:
                now = self._now_hint
            limited = upload.limited
            allowance = upload.allowance(now) if limited else NO_LIMIT_ALLOWANCE
            sent, waits_on_rate = 0, False
            try:
                while uploads and budget_bytes > 0:
                    index, begin, length = uploads[0]
                    if length > allowance:  # before the gate: a yes from it is a charge, and the block must go
                        held = waits_on_rate = True
                        break
                    if gate is not None and not gate(peer.conn, index, length):
                        held = True
                        break
                    uploads.popleft()
                    block = store.read_block(index, begin, length)
                    if block is None:
                        continue
                    send_block(index, begin, block)
                    budget_bytes -= length
                    allowance -= length
                    sent += length
            except PieceStorageError as exc:
                self._fail(exc)
            if sent:
                peer.uploaded += sent
                self.uploaded_bytes += sent
                if limited:
                    upload.spend(sent, now)
            if waits_on_rate:  # wake once a batch may go, not for every block
                self._hold_for_rate(conn, upload.ready_at(len(uploads) * BLOCK_SIZE, now))
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
        if self.choker.rechoke_due(now):
            self._rechoke(now)
        if self.rate_wake_at is not None and now >= self.rate_wake_at:
            self.rate_refilled(now)
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

    def set_rate_limits(self, *, upload: int | None = None, download: int | None = None, now: float) -> None:
        """This content's own limits in bytes/s (0: none; None: unchanged), from `now` on;
        whatever waits on them is tried again at once."""
        self.rate_limits.set(upload=upload, download=download, now=now)
        self.rate_refilled(now)

    def rate_refilled(self, now: float) -> None:
        """`rate_wake_at` has come (or a limit changed): what waited on a limit is tried again."""
        self._now_hint = now
        self.rate_wake_at = None
        held, self._rate_held = self._rate_held, set()
        for conn in held:
            if conn in self.peers:
                self.dirty.add(conn)
        self._refill_all(now)

    def _hold_for_rate(self, conn: int | None, wake_at: float) -> None:
        if conn is not None:
            self._rate_held.add(conn)
        if self.rate_wake_at is None or wake_at < self.rate_wake_at:
            self.rate_wake_at = wake_at

    def uploads_may_resume(self, conn: int) -> None:
        """The upload gate may now say yes to `conn` (say, a cheque came in)."""
        if conn in self.peers:
            self.dirty.add(conn)

    def piece_hashed(self, index: int, block_hashes: list[bytes], now: float) -> None:
        """The block hashes of a piece handed to `hash_offload` (computed elsewhere,
        e.g. on a thread); the piece is then checked exactly as if hashed inline."""
        if self.verifier is not None:
            verdict = self.verifier.hashes_computed(index, block_hashes)
            if verdict is not None:
                self._act_on_piece(verdict, now)

    @property
    def hash_offload(self) -> Callable[[int, bytearray], None] | None:
        """Set by a transport that hashes complete pieces elsewhere (a thread): called with
        (index, buffer) for bulk pieces; the answer comes back through `piece_hashed`.
        None: every block is hashed as it arrives."""
        return self._hash_offload

    @hash_offload.setter
    def hash_offload(self, offload: Callable[[int, bytearray], None] | None) -> None:
        self._hash_offload = offload
        if self.verifier is not None:
            self.verifier.hash_elsewhere = self._hash_elsewhere()

    def _hash_elsewhere(self) -> Callable[[int], bool] | None:
        # Deadline pieces stay inline: handing them to a thread would make the player wait.
        if self._hash_offload is None or self.picker is None:
            return None
        in_window = self.picker.in_window
        return lambda index: not in_window(index)

    def is_banned(self, address: tuple[str, int]) -> bool:
        return address in self.banned_addresses

    @property
    def connected_peers(self) -> int:
        return sum(1 for p in self.peers.values() if p.wire.phase is Phase.ACTIVE)

    @property
    def download_rate(self) -> float:
        return sum(p.download_rate for p in self.peers.values())

    # ======================================================================================
    # message handling (the handlers of `self._handlers`, each (peer, message, now))
    # ======================================================================================
    def _ignore(self, peer: Peer, message: wire.Message, now: float) -> None:
        pass

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
    def _on_bitfield(self, peer: Peer, message: wire.Bitfield, now: float) -> None:
        if self.torrent is None:
            peer.early_bitfield = message.bits
            return
        has = bytes_to_bits(message.bits, self.torrent.piece_count)
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

    def _on_have(self, peer: Peer, message: wire.Have, now: float) -> None:
        index = message.index
        if self.torrent is None:
            peer.note_early_have(index)
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

    # -- uploading (the choker holds the slots) --------------------------------------------
    def _on_request(self, peer: Peer, request: wire.Request, now: float) -> None:
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

    def _on_cancel(self, peer: Peer, message: wire.Cancel, now: float) -> None:
        try:
            peer.uploads.remove((message.index, message.begin, message.length))
        except ValueError:
            pass

    def _on_interested(self, peer: Peer, message: wire.Interested, now: float) -> None:
        if peer.wire.am_choking and self.choker.has_free_slot(self.peers.values()):
            self._unchoke(peer)

    def _on_not_interested(self, peer: Peer, message: wire.NotInterested, now: float) -> None:
        if not peer.wire.am_choking:
            self._choke(peer)
            for other in self.choker.fill_free_slots(self.peers.values()):
                self._unchoke(other)

    def _unchoke(self, peer: Peer) -> None:
        peer.wire.send(wire.Unchoke())
        self.dirty.add(peer.conn)

    def _choke(self, peer: Peer) -> None:
        peer.wire.send(wire.Choke())
        peer.uploads.clear()  # BEP 3: choking discards the peer's queued requests
        self.choker.choked(peer.conn)
        self.dirty.add(peer.conn)

    def _rechoke(self, now: float) -> None:
        seeding = self.finished or (self.store is not None and self.store.complete)
        unchoke, choke = self.choker.rechoke(self.peers.values(), seeding=seeding, now=now)
        for peer in unchoke:
            self._unchoke(peer)
        for peer in choke:
            self._choke(peer)

    # -- downloading --------------------------------------------------------------------------
    def _on_unchoke(self, peer: Peer, message: wire.Unchoke, now: float) -> None:
        self._fill_requests(peer, now)

    def _on_choke(self, peer: Peer, message: wire.Choke, now: float) -> None:
        # BEP 3: a choke discards every request we had outstanding at this peer
        for piece, begin in peer.requests:
            if self.picker is not None:
                self.picker.abort(piece, begin // BLOCK_SIZE, peer.conn)
        peer.requests.clear()

    def _is_fast(self, peer: Peer) -> bool:
        best = max((p.download_rate for p in self.peers.values() if not p.wire.peer_choking), default=0.0)
        return best <= 0 or peer.download_rate >= self.settings.fast_peer_rate_fraction * best

    def _fill_requests(self, peer: Peer, now: float) -> None:
        picker = self.picker
        if (picker is None or self.finished or self.failed or peer.has is None or peer.wire.phase is not Phase.ACTIVE
                or peer.wire.peer_choking or not peer.wire.am_interested):
            return
        depth = peer.queue_depth(self.settings.request_queue_depth_blocks)
        want = depth - len(peer.requests)
        if want <= 0 or (peer.requests and want * REQUEST_REFILL_FRACTION < depth):
            return
        download = self._download
        limited = download.limited
        short = 0  # blocks the download limit holds back for now
        if limited:  # the limit paces requests (as libtorrent does): a block's tokens go when it is asked
            allowed = download.allowance(now) // BLOCK_SIZE
            if allowed < want:
                short, want = want - allowed, allowed
                if want <= 0:
                    self._hold_for_rate(None, download.ready_at(short * BLOCK_SIZE, now))
                    return
        picks = picker.pick(peer.conn, peer.has, want, fast=self._is_fast(peer), now=now)
        if not picks:
            if not peer.requests and not picker.wants_from(peer.has):
                peer.wire.send(wire.NotInterested())
                self.dirty.add(peer.conn)
            return
        requests, block_length, triples = peer.requests, picker.block_length, []
        asked = 0
        for piece, block in picks:
            begin = block * BLOCK_SIZE
            requests[(piece, begin)] = now
            length = block_length(piece, block)
            asked += length
            triples.append((piece, begin, length))
        if limited:
            download.spend(asked, now)
            if short and len(picks) == want:
                self._hold_for_rate(None, download.ready_at(short * BLOCK_SIZE, now))
        peer.wire.send_requests(triples)
        peer.last_sent = now
        self.dirty.add(peer.conn)

    def _refill_all(self, now: float) -> None:
        if self.picker is None or self.finished:
            return
        for peer in sorted(self.peers.values(), key=lambda p: -p.download_rate):
            self._fill_requests(peer, now)

    def _expire_requests(self, peer: Peer, now: float) -> None:
        expired = peer.expired_requests(now, self.settings.request_timeout_s)
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
            self.wasted_bytes += len(data)
            peer.count_unrequested(len(data))
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
        verdict = self.verifier.add_block(index, number, begin, data, peer.conn)
        if verdict is not None:
            self._act_on_piece(verdict, now)

    # -- verdicts on whole pieces (verify.py) ----------------------------------------------------
    def _act_on_piece(self, verdict: Verdict, now: float) -> None:
        kind = type(verdict)
        if kind is Verified:
            self._store_verified(verdict, now)
        elif kind is HashElsewhere:
            self._hash_offload(verdict.index, verdict.buffer)
        else:
            self.picker.piece_failed(verdict.index)
            if kind is Bad:
                self._ban(verdict)
            else:
                self._trace_bad_piece(verdict, now)

    def _store_verified(self, verdict: Verified, now: float) -> None:
        picker, index = self.picker, verdict.index
        try:
            self.store.write_verified_piece(index, verdict.buffer)
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
        ranked = verdict.bytes_by_sender
        self._events.append(PieceVerified(index, tuple(conn for conn, _ in ranked), ranked))
        if picker.complete:
            self._complete(now)

    def _trace_bad_piece(self, verdict: NeedBlockHashes, now: float) -> None:
        """Several peers contributed to a bad piece: ask an uninvolved v2 peer for its
        block hashes, proven up to the piece hash, and ban whoever sent a block that
        differs; with nobody to ask, the senders take strikes."""
        index, suspects = verdict.index, verdict.suspects
        helpers = [p for p in self.peers.values()
                   if p.wire.phase is Phase.ACTIVE and p.has is not None and p.has[index]]
        helpers.sort(key=lambda p: (p.conn in suspects, not p.wire.supports_v2))
        if helpers and verdict.request is not None:
            self.verifier.tracing(verdict)
            self._send_hash_request(helpers[0], verdict.request, ("blocks", index), now)
            return
        self._ban(self.verifier.untraceable(index, [conn for conn in suspects if conn in self.peers]))

    def _ban(self, verdict: Bad) -> None:
        for conn in verdict.culprits:
            culprit = self.peers.get(conn)
            if culprit is not None:
                self._drop(culprit, verdict.reason, ban=True)

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

    # -- BEP 52 hash messages ----------------------------------------------------------------
    def _send_hash_request(self, peer: Peer, request: wire.HashRequest, purpose: tuple, now: float) -> None:
        key = (request.base_layer, request.index, request.length, request.proof_layers)
        peer.hash_requests[key] = (purpose, now)
        peer.wire.send(request)
        self.dirty.add(peer.conn)

    def _on_hash_request(self, peer: Peer, request: wire.HashRequest, now: float) -> None:
        answer = None
        if self.hash_server is not None and peer.take_hash_token(now):
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
            if self._magnet is not None:
                self._act_on_metadata(self._magnet.layer_received(detail, message), now)
        elif purpose == "blocks":
            if self.verifier is not None:
                liars = self.verifier.block_hashes_arrived(detail, message)
                if liars is not None:
                    self._ban(liars)

    def _on_hash_reject(self, peer: Peer, message: wire.HashReject, now: float) -> None:
        key = (message.base_layer, message.index, message.length, message.proof_layers)
        pending = peer.hash_requests.pop(key, None)
        if pending is not None and pending[0][0] == "layer" and self._magnet is not None:
            self._magnet.layer_lost(pending[0][1])  # ask someone else on the next tick

    # -- BEP 10 / BEP 9 (magnet.py decides) -------------------------------------------------------
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
            if self._magnet is not None:
                self._act_on_metadata(self._magnet.metadata_received(msg.piece, msg.total_size, msg.data), now)
        elif msg.kind == METADATA_REJECT and self._magnet is not None:
            self._magnet.metadata_rejected(msg.piece)

    def _act_on_metadata(self, verdict: MetadataVerdict, now: float) -> None:
        kind = type(verdict)
        if kind is NeedMore:
            return
        if kind is BadMetadata:
            raise RemoteProtocolError(verdict.reason, ban=verdict.ban)
        if kind is NeedPieceLayer:
            self._ask_piece_layer(now)
        elif kind is MetadataComplete:
            self._metadata_ready(verdict.torrent, now)
        elif kind is MetadataUnusable:
            self._fail(verdict.error)

    def _ask_metadata(self, peer: Peer, now: float) -> None:
        if self._magnet is None or peer.ext is None:
            return
        their_id = peer.ext.extensions.get(UT_METADATA)
        if their_id is None or peer.wire.phase is not Phase.ACTIVE:
            return
        for piece in self._magnet.metadata_requests(peer.ext.metadata_size, now):
            peer.wire.send(wire.Extended(their_id, MetadataMessage(METADATA_REQUEST, piece).encode()))
            self.dirty.add(peer.conn)

    def _ask_piece_layer(self, now: float) -> None:
        if self._magnet is None or self._magnet.info is None:
            return
        # libtorrent leaves the v2 reserved bit unset for pure-v2 torrents, so any peer
        # may be asked; those that set it are asked first.
        helpers = sorted((p for p in self.peers.values() if p.wire.phase is Phase.ACTIVE),
                         key=lambda p: not p.wire.supports_v2)
        for helper, request in self._magnet.layer_requests(helpers, now):
            self._send_hash_request(helper, request, ("layer", request.index), now)

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

    def _attach(self, torrent: Torrent, store: PieceStorage | None) -> None:
        self.torrent = torrent
        self.store = store
        self.hash_server = HashServer(torrent, store.read_piece if store is not None else (lambda i: None))
        self._magnet = None
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
            self.verifier = PieceVerifier(torrent, store.piece_buffer, self._hash_elsewhere())
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
            peer.update_rates(dt)

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
        """Undo what a departing peer held: its availability, outstanding requests,
        upload slot and strikes."""
        if self.picker is not None:
            for piece, begin in peer.requests:
                self.picker.abort(piece, begin // BLOCK_SIZE, peer.conn)
            if peer.has is not None:
                self.picker.remove_peer(peer.has)
        peer.requests.clear()
        peer.uploads.clear()
        for (purpose, detail), _ in peer.hash_requests.values():
            if purpose == "layer" and self._magnet is not None:
                self._magnet.layer_lost(detail)
        peer.hash_requests.clear()
        self.choker.choked(peer.conn)
        if self.verifier is not None:
            self.verifier.forget_peer(peer.conn)

    def _drop(self, peer: Peer, reason: str, *, ban: bool = False) -> None:
        if peer.wire.phase is Phase.CLOSED:
            return
        if ban:
            self.banned_addresses.add(peer.address)
            if peer.wire.remote is not None:
                self.banned_peer_ids.add(peer.wire.remote.peer_id)
            if self.verifier is not None and self.picker is not None:
                for index in self.verifier.discard_blocks_from(peer.conn):
                    self.picker.piece_failed(index)  # its unverified blocks go: the piece starts over
        self._forget(peer)
        peer.wire.close()
        self.peers.pop(peer.conn, None)
        self.dirty.discard(peer.conn)
        self._closing.append((peer.conn, reason))
        self._events.append(PeerDropped(peer.conn, peer.address, reason, ban))
