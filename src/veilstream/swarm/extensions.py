"""BEP 10 extension protocol: the extension handshake and the registry of named
extensions, plus the BEP 9 `ut_metadata` messages that ride on it.

Each side numbers the extensions it speaks in its own handshake (`m`); a message is sent
with the id the *receiver* chose. The registry starts with `ut_metadata`; later layers
(the market's vouchers, keys and terms) register their names before a node starts, and a
name a peer does not know is simply absent from its `m`, so unknown extensions are ignored
in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veilstream.content import bencode
from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError

UT_METADATA = "ut_metadata"  # BEP 9
MAX_EXTENSIONS = 200  # ids are one byte (1..255); a peer advertising more is hostile
MAX_EXTENSION_NAME_BYTES = 64  # real names are like "ut_metadata", "lt_donthave"
MAX_METADATA_BYTES = 8 * 1024 * 1024  # our info dicts hold no piece layers: a few KiB; libtorrent caps at 30 MiB
METADATA_PIECE_BYTES = 16 * 1024  # BEP 9: metadata moves in 16 KiB pieces
CLIENT_NAME = b"Veilstream 0.1"


class ExtensionRegistry:
    """The extensions this node speaks, each with the id peers must use to reach it."""

    def __init__(self, names: tuple[str, ...] = (UT_METADATA,)) -> None:
        self._ids: dict[str, int] = {}
        for name in names:
            self.register(name)

    def register(self, name: str) -> int:
        if name in self._ids:
            return self._ids[name]
        if len(self._ids) >= MAX_EXTENSIONS or not name or len(name.encode()) > MAX_EXTENSION_NAME_BYTES:
            raise LocalProtocolError(f"cannot register extension {name!r}")
        self._ids[name] = len(self._ids) + 1
        return self._ids[name]

    def name_of(self, local_id: int) -> str | None:
        for name, ext_id in self._ids.items():
            if ext_id == local_id:
                return name
        return None

    @property
    def ids(self) -> dict[str, int]:
        return dict(self._ids)


@dataclass(frozen=True)
class ExtensionHandshake:
    """What a peer said in its BEP 10 handshake (only the fields we use)."""

    extensions: dict[str, int] = field(default_factory=dict)  # name → the id the peer chose
    metadata_size: int | None = None
    listen_port: int | None = None
    client: str = ""
    request_queue: int | None = None  # `reqq`: how many requests the peer will queue

    def encode(self) -> bytes:
        body: dict[bytes, object] = {b"m": {k.encode(): v for k, v in self.extensions.items()}, b"v": self.client.encode()}
        if self.metadata_size is not None:
            body[b"metadata_size"] = self.metadata_size
        if self.listen_port:
            body[b"p"] = self.listen_port
        if self.request_queue:
            body[b"reqq"] = self.request_queue
        return bencode.encode(body)

    @classmethod
    def decode(cls, payload: bytes) -> ExtensionHandshake:
        value = _decode_dict(payload, "extension handshake")
        m = value.get(b"m", {})
        if not isinstance(m, dict) or len(m) > MAX_EXTENSIONS:
            raise RemoteProtocolError("extension handshake has a malformed `m`")
        extensions = {}
        for raw_name, ext_id in m.items():
            # 0 means "disabled"; non-int ids and out-of-range ids are ignored, not fatal.
            if isinstance(ext_id, int) and 0 < ext_id < 256 and len(raw_name) <= MAX_EXTENSION_NAME_BYTES:
                extensions[raw_name.decode("utf-8", "replace")] = ext_id
        size = value.get(b"metadata_size")
        if size is not None and (not isinstance(size, int) or not 0 < size <= MAX_METADATA_BYTES):
            raise RemoteProtocolError(f"metadata_size {size!r} out of range")
        port = value.get(b"p")
        reqq = value.get(b"reqq")
        client = value.get(b"v", b"")
        return cls(
            extensions,
            size,
            port if isinstance(port, int) and 0 < port < 65536 else None,
            client.decode("utf-8", "replace")[:64] if isinstance(client, bytes) else "",
            reqq if isinstance(reqq, int) and reqq > 0 else None,
        )


def _decode_dict(payload: bytes, what: str) -> dict:
    try:
        value = bencode.decode(payload)
    except bencode.BencodeError as exc:
        raise RemoteProtocolError(f"{what} is not valid bencoding: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} is not a dictionary")
    return value


# -- BEP 9 ut_metadata ----------------------------------------------------------------

METADATA_REQUEST, METADATA_DATA, METADATA_REJECT = 0, 1, 2


@dataclass(frozen=True)
class MetadataMessage:
    kind: int
    piece: int
    total_size: int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        body: dict[bytes, object] = {b"msg_type": self.kind, b"piece": self.piece}
        if self.kind == METADATA_DATA:
            body[b"total_size"] = self.total_size or 0
        return bencode.encode(body) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> MetadataMessage:
        try:
            value, end = bencode.decode_prefix(payload)
        except bencode.BencodeError as exc:
            raise RemoteProtocolError(f"ut_metadata message is not valid bencoding: {exc}") from None
        if not isinstance(value, dict):
            raise RemoteProtocolError("ut_metadata message is not a dictionary")
        kind, piece, total = value.get(b"msg_type"), value.get(b"piece"), value.get(b"total_size")
        if kind not in (METADATA_REQUEST, METADATA_DATA, METADATA_REJECT) or not isinstance(piece, int) or piece < 0:
            raise RemoteProtocolError("ut_metadata message lacks a valid msg_type or piece")
        if piece > MAX_METADATA_BYTES // METADATA_PIECE_BYTES:
            raise RemoteProtocolError("ut_metadata piece index out of range")
        data = payload[end:]
        if kind == METADATA_DATA:
            if not isinstance(total, int) or not 0 < total <= MAX_METADATA_BYTES or len(data) > METADATA_PIECE_BYTES:
                raise RemoteProtocolError("ut_metadata data message has a bad size")
        elif data:
            raise RemoteProtocolError("ut_metadata request/reject carries trailing bytes")
        return cls(kind, piece, total if isinstance(total, int) else None, data)


class MetadataAssembler:
    """Collects the info dict piece by piece (BEP 9) and accepts it only if its SHA-256
    is the v2 info-hash we were given."""

    def __init__(self, info_hash: bytes, size: int) -> None:
        if not 0 < size <= MAX_METADATA_BYTES:
            raise RemoteProtocolError(f"metadata size {size} out of range")
        self.info_hash = info_hash
        self.size = size
        self.piece_count = -(-size // METADATA_PIECE_BYTES)
        self._pieces: dict[int, bytes] = {}
        self.requested: dict[int, float] = {}  # piece → when asked

    def missing(self) -> list[int]:
        return [i for i in range(self.piece_count) if i not in self._pieces]

    def add(self, piece: int, data: bytes) -> bool:
        """Store one piece; True once all pieces are in."""
        if not 0 <= piece < self.piece_count:
            raise RemoteProtocolError(f"metadata piece {piece} out of range")
        expected = min(METADATA_PIECE_BYTES, self.size - piece * METADATA_PIECE_BYTES)
        if len(data) != expected:
            raise RemoteProtocolError(f"metadata piece {piece} has {len(data)} bytes, expected {expected}")
        self._pieces[piece] = data
        self.requested.pop(piece, None)
        return len(self._pieces) == self.piece_count

    def assemble(self) -> bytes | None:
        """The verified info dict bytes, or None (and a reset) if the hash is wrong."""
        from hashlib import sha256

        raw = b"".join(self._pieces[i] for i in range(self.piece_count))
        if sha256(raw).digest() != self.info_hash:
            self._pieces.clear()
            return None
        return raw


def metadata_piece(info_bytes: bytes, piece: int) -> bytes | None:
    """Piece `piece` of our info dict, or None if out of range."""
    start = piece * METADATA_PIECE_BYTES
    if not 0 <= start < len(info_bytes):
        return None
    return info_bytes[start : start + METADATA_PIECE_BYTES]
