"""Fetching a torrent from its v2 info-hash alone (a magnet), without IO.

Two steps, each checked against the info-hash before anything is believed:

    1. the info dict, by BEP 9 `ut_metadata` (16 KiB pieces; the whole must hash to
       the info-hash);
    2. for a file of more than one piece, its piece layer, by BEP 52 hash requests
       (each chunk must chain to the file's `pieces root`, which step 1 vouched for).

The swarm asks `MetadataFetch` what to request of a peer now (`metadata_requests`,
`layer_requests`) and feeds it the replies; each reply gets a verdict:

    NeedMore()                  keep going
    NeedPieceLayer()            the info dict verified; ask for its piece layer now
    MetadataComplete(torrent)   done: a torrent checked end to end
    BadMetadata(reason, ban)    the peer that sent this broke the protocol (or lied)
    MetadataUnusable(error)     the info-hash names something that is no Veilstream torrent

Requests not answered within the timeout are asked again (of whichever peer is asked next).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from veilstream.content import bencode
from veilstream.content.merkle import BLOCK_SIZE
from veilstream.content.torrent import Torrent, TorrentError
from veilstream.swarm import wire
from veilstream.swarm.errors import FetchError, RemoteProtocolError
from veilstream.swarm.extensions import MetadataAssembler
from veilstream.swarm.hashes import TreeShape, chain_root, piece_layer_requests


@dataclass(frozen=True, slots=True)
class NeedMore:
    pass


@dataclass(frozen=True, slots=True)
class NeedPieceLayer:
    pass


@dataclass(frozen=True, slots=True)
class MetadataComplete:
    torrent: Torrent


@dataclass(frozen=True, slots=True)
class BadMetadata:
    reason: str
    ban: bool  # it lied (data that does not hash or chain), not just malformed


@dataclass(frozen=True, slots=True)
class MetadataUnusable:
    error: FetchError


MetadataVerdict = NeedMore | NeedPieceLayer | MetadataComplete | BadMetadata | MetadataUnusable
NEED_MORE = NeedMore()

Helper = TypeVar("Helper")


class MetadataFetch:
    """The info dict, then the piece layer, of the torrent with v2 info-hash `info_hash`."""

    def __init__(self, info_hash: bytes, request_timeout_s: float) -> None:
        self.info_hash = info_hash
        self.request_timeout_s = request_timeout_s
        self.assembler: MetadataAssembler | None = None  # step 1, once a peer told us the size
        self.info: dict | None = None  # step 2: the verified info dict awaiting its piece layer
        self.shape: TreeShape | None = None
        self._layer_chunks: dict[int, bytes] = {}  # first piece-layer index → its hashes
        self._layer_asked: dict[int, float] = {}  # first piece-layer index → when asked

    # -- step 1: the info dict (BEP 9) ---------------------------------------------------------
    def metadata_requests(self, metadata_size: int | None, now: float) -> list[int]:
        """Metadata pieces to ask of a peer that speaks ut_metadata and announced
        `metadata_size` (None: it did not say), and marks them asked."""
        if self.info is not None:
            return []
        if self.assembler is None:
            if metadata_size is None:
                return []
            try:
                self.assembler = MetadataAssembler(self.info_hash, metadata_size)
            except RemoteProtocolError:
                return []
        out = []
        requested = self.assembler.requested
        for piece in self.assembler.missing():
            asked = requested.get(piece)
            if asked is not None and now - asked < self.request_timeout_s:
                continue
            requested[piece] = now
            out.append(piece)
        return out

    def metadata_received(self, piece: int, total_size: int | None, data: bytes) -> MetadataVerdict:
        if self.assembler is None or self.info is not None:
            return NEED_MORE  # unasked, or late
        if total_size != self.assembler.size:
            return BadMetadata("metadata total_size differs from the handshake's", False)
        try:
            if not self.assembler.add(piece, data):
                return NEED_MORE
        except RemoteProtocolError as exc:
            return BadMetadata(exc.reason, exc.ban)
        raw = self.assembler.assemble()
        if raw is None:
            self.assembler = None
            return BadMetadata("metadata does not hash to the info-hash", True)
        return self._info_verified(raw)

    def metadata_rejected(self, piece: int) -> None:
        if self.assembler is not None:
            self.assembler.requested.pop(piece, None)

    def _info_verified(self, raw: bytes) -> MetadataVerdict:
        """The info dict hashes to the info-hash; a one-piece file needs no piece layer."""
        try:
            info = bencode.decode(raw)
            if not isinstance(info, dict):
                raise TorrentError("info is not a dictionary")
            length, piece_length, _root = file_entry(info)
            if length <= piece_length:
                return MetadataComplete(Torrent.from_info(info, {}))
        except (TorrentError, bencode.BencodeError) as exc:
            return MetadataUnusable(FetchError(f"this content id names something that is not a Veilstream torrent: {exc}"))
        self.info = info
        self.shape = TreeShape(length, piece_length)
        return NeedPieceLayer()

    # -- step 2: the piece layer (BEP 52) -----------------------------------------------------
    @property
    def pieces_root(self) -> bytes:
        return file_entry(self.info)[2]

    def layer_requests(self, helpers: Sequence[Helper], now: float) -> list[tuple[Helper, wire.HashRequest]]:
        """Piece-layer requests due now, spread over `helpers` (peers to ask, best first),
        and marks them asked. The answers come back as `layer_received(index, ...)`,
        `index` being the request's."""
        if self.info is None or not helpers:
            return []
        out = []
        for n, request in enumerate(piece_layer_requests(self.shape, self.pieces_root)):
            if request.index in self._layer_chunks:
                continue
            asked = self._layer_asked.get(request.index)
            if asked is not None and now - asked < self.request_timeout_s:
                continue
            self._layer_asked[request.index] = now
            out.append((helpers[(n + int(now)) % len(helpers)], request))
        return out

    def layer_received(self, index: int, message: wire.Hashes) -> MetadataVerdict:
        if self.info is None:
            return NEED_MORE
        root = self.pieces_root
        key = (message.base_layer, message.index, message.length, message.proof_layers)
        try:
            proven = message.pieces_root == root and chain_root(message.hashes, *key) == root
        except RemoteProtocolError as exc:
            return BadMetadata(exc.reason, exc.ban)
        if not proven:
            return BadMetadata("piece-layer hashes do not chain to the pieces root", True)
        self._layer_chunks[index] = message.hashes[: 32 * message.length]
        self._layer_asked.pop(index, None)
        return self._try_finish()

    def layer_lost(self, index: int) -> None:
        """A piece-layer request was rejected or its peer left: ask someone else next time."""
        self._layer_asked.pop(index, None)

    def _try_finish(self) -> MetadataVerdict:
        requests = piece_layer_requests(self.shape, self.pieces_root)
        if any(r.index not in self._layer_chunks for r in requests):
            return NEED_MORE
        layer = b"".join(self._layer_chunks[r.index] for r in requests)[: 32 * self.shape.piece_count]
        try:
            torrent = Torrent.from_info(self.info, {self.pieces_root: layer})
        except TorrentError as exc:
            return MetadataUnusable(FetchError(f"the content's metadata is not a valid Veilstream torrent: {exc}"))
        return MetadataComplete(torrent)


def file_entry(info: dict) -> tuple[int, int, bytes]:
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
