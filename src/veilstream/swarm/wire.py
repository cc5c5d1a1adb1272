"""The peer wire vocabulary: BEP 3 messages, BEP 10 extended messages, BEP 52 hash
messages; how each is framed and parsed.

Messages are small immutable classes; `MessageParser` turns a byte stream into them and
`encode` turns them back into bytes. Nothing here knows about torrents, sockets or time.
Every size the parser accepts is bounded by a named constant; anything else raises
`RemoteProtocolError` (the caller closes the connection).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 68  # BEP 3: 1 + 19 + 8 reserved + 20 info-hash + 20 peer id
HANDSHAKE_PREFIX = bytes([len(PROTOCOL)]) + PROTOCOL
INFO_HASH_WIRE_LENGTH = 20  # BEP 52: the v2 (SHA-256) info-hash is truncated to 20 bytes on the wire
PEER_ID_LENGTH = 20

BLOCK_SIZE = 16 * 1024  # BEP 52: blocks are 16 KiB; every major client refuses larger requests
MAX_BITFIELD_BYTES = 1 << 20  # 8 M pieces: a 16 TiB file at 2 MiB pieces; far past any real torrent
MAX_HASHES_PER_MESSAGE = 8192  # libtorrent refuses hash requests for more; 256 KiB of hashes
MAX_EXTENDED_BYTES = 1 << 20  # metadata pieces are 16 KiB; extended handshakes are a few hundred bytes
MAX_MESSAGE_BYTES = max(9 + BLOCK_SIZE, 1 + MAX_BITFIELD_BYTES, 49 + 32 * MAX_HASHES_PER_MESSAGE, 2 + MAX_EXTENDED_BYTES)
MAX_UNKNOWN_MESSAGE_BYTES = 64 * 1024  # messages of ids we don't speak are skipped only if small

# Reserved-bit flags (byte index, mask).
EXTENSION_PROTOCOL_BIT = (5, 0x10)  # BEP 10
V2_UPGRADE_BIT = (7, 0x10)  # BEP 52: "this peer supports v2"


def reserved_bytes(*bits: tuple[int, int]) -> bytes:
    raw = bytearray(8)
    for index, mask in bits:
        raw[index] |= mask
    return bytes(raw)


def has_bit(reserved: bytes, bit: tuple[int, int]) -> bool:
    return bool(reserved[bit[0]] & bit[1])


# -- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    reserved: bytes
    info_hash: bytes  # 20 bytes on the wire
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    bits: bytes  # big-endian bit per piece, spare bits zero


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    data: bytes | memoryview  # parsed blocks are views into the received chunk


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    port: int  # BEP 5: the sender's DHT port


@dataclass(frozen=True, slots=True)
class Extended:
    ext_id: int  # 0: the BEP 10 handshake; otherwise the id *we* assigned to the extension
    payload: bytes


@dataclass(frozen=True, slots=True)
class HashRequest:
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int


@dataclass(frozen=True, slots=True)
class Hashes:
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int
    hashes: bytes  # `length` base-layer hashes, then the uncle hashes


@dataclass(frozen=True, slots=True)
class HashReject:
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int


Message = (
    KeepAlive | Choke | Unchoke | Interested | NotInterested | Have | Bitfield | Request | Piece
    | Cancel | Port | Extended | HashRequest | Hashes | HashReject
)

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
EXTENDED = 20  # BEP 10
HASH_REQUEST, HASHES, HASH_REJECT = 21, 22, 23  # BEP 52

_SIMPLE = {CHOKE: Choke(), UNCHOKE: Unchoke(), INTERESTED: Interested(), NOT_INTERESTED: NotInterested()}
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">IB")
_PIECE_HEADER = struct.Struct(">IBII")
_TRIPLE = struct.Struct(">III")
_PAIR = struct.Struct(">II")
REQUEST_FRAME = struct.Struct(">IBIII")  # length prefix, id, index, begin, length
_HASH_FIELDS = struct.Struct(">32sIIII")
KEEPALIVE_BYTES = b"\x00\x00\x00\x00"


# -- encoding -----------------------------------------------------------------------


def encode_handshake(info_hash: bytes, peer_id: bytes, reserved: bytes) -> bytes:
    if len(info_hash) != INFO_HASH_WIRE_LENGTH or len(peer_id) != PEER_ID_LENGTH or len(reserved) != 8:
        raise LocalProtocolError("handshake fields have the wrong sizes")
    return HANDSHAKE_PREFIX + reserved + info_hash + peer_id


def piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes that precede a block of `length` bytes in a piece message."""
    return _PIECE_HEADER.pack(9 + length, PIECE, index, begin)


def encode(message: Message) -> bytes:
    kind = type(message)
    if kind is Piece:
        return piece_header(message.index, message.begin, len(message.data)) + bytes(message.data)
    if kind is Request or kind is Cancel:
        if not 0 < message.length <= BLOCK_SIZE:
            raise LocalProtocolError(f"a block request is 1..{BLOCK_SIZE} bytes, not {message.length}")
        return _HEADER.pack(13, REQUEST if kind is Request else CANCEL) + _TRIPLE.pack(message.index, message.begin, message.length)
    if kind is Have:
        return _HEADER.pack(5, HAVE) + _U32.pack(message.index)
    if kind is KeepAlive:
        return KEEPALIVE_BYTES
    if kind is Choke:
        return _HEADER.pack(1, CHOKE)
    if kind is Unchoke:
        return _HEADER.pack(1, UNCHOKE)
    if kind is Interested:
        return _HEADER.pack(1, INTERESTED)
    if kind is NotInterested:
        return _HEADER.pack(1, NOT_INTERESTED)
    if kind is Bitfield:
        return _HEADER.pack(1 + len(message.bits), BITFIELD) + message.bits
    if kind is Port:
        return _HEADER.pack(3, PORT) + struct.pack(">H", message.port)
    if kind is Extended:
        return _HEADER.pack(2 + len(message.payload), EXTENDED) + bytes([message.ext_id]) + message.payload
    if kind is HashRequest or kind is HashReject:
        fields = _HASH_FIELDS.pack(message.pieces_root, message.base_layer, message.index, message.length, message.proof_layers)
        return _HEADER.pack(1 + len(fields), HASH_REQUEST if kind is HashRequest else HASH_REJECT) + fields
    if kind is Hashes:
        fields = _HASH_FIELDS.pack(message.pieces_root, message.base_layer, message.index, message.length, message.proof_layers)
        return _HEADER.pack(1 + len(fields) + len(message.hashes), HASHES) + fields + message.hashes
    raise LocalProtocolError(f"not a wire message: {message!r}")


# -- parsing ------------------------------------------------------------------------


def parse_handshake(raw: bytes) -> Handshake:
    if len(raw) != HANDSHAKE_LENGTH or raw[:20] != HANDSHAKE_PREFIX:
        raise RemoteProtocolError("not a BitTorrent handshake")
    return Handshake(bytes(raw[20:28]), bytes(raw[28:48]), bytes(raw[48:68]))


class MessageParser:
    """Length-prefixed messages out of a byte stream (after the handshake).

    Blocks are not copied: a `Piece` holds a memoryview into the chunk it arrived in, so
    a caller that reuses its receive buffer must be done with the messages first (every
    other message owns its bytes); only a message split across two chunks is copied, to
    join it."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        out: list[Message] = []
        view = memoryview(data)
        buf = self._buffer
        if buf:  # finish the message that straddles the previous chunk
            if len(buf) < 4:
                take = min(4 - len(buf), len(view))
                buf += view[:take]
                view = view[take:]
                if len(buf) < 4:
                    return out
            (length,) = _U32.unpack_from(buf, 0)
            if length > MAX_MESSAGE_BYTES:
                raise RemoteProtocolError(f"message of {length} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
            take = min(4 + length - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) < 4 + length:
                return out
            whole = memoryview(bytes(buf))
            buf.clear()
            if length == 0:
                out.append(KeepAlive())
            else:
                message = _parse_body(whole, 4, length)
                if message is not None:
                    out.append(message)
        pos, end = 0, len(view)
        unpack = _U32.unpack_from
        while end - pos >= 4:
            (length,) = unpack(view, pos)
            if length > MAX_MESSAGE_BYTES:
                raise RemoteProtocolError(f"message of {length} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
            if end - pos - 4 < length:
                break
            body = pos + 4
            pos = body + length
            if length == 0:
                out.append(KeepAlive())
                continue
            message = _parse_body(view, body, length)
            if message is not None:
                out.append(message)
        if pos < end:
            buf += view[pos:]
        return out


def _parse_body(buf: memoryview, at: int, length: int) -> Message | None:
    kind = buf[at]
    if kind == PIECE:
        if not 9 < length <= 9 + BLOCK_SIZE:
            raise RemoteProtocolError(f"piece message of {length} bytes (a block is 1..{BLOCK_SIZE})")
        index, begin = _PAIR.unpack_from(buf, at + 1)
        return Piece(index, begin, buf[at + 9 : at + length])  # a view: zero-copy
    if kind == REQUEST or kind == CANCEL:
        _expect(length, 13, kind)
        index, begin, size = _TRIPLE.unpack_from(buf, at + 1)
        return Request(index, begin, size) if kind == REQUEST else Cancel(index, begin, size)
    if kind == HAVE:
        _expect(length, 5, kind)
        return Have(_U32.unpack_from(buf, at + 1)[0])
    if kind in _SIMPLE:
        _expect(length, 1, kind)
        return _SIMPLE[kind]
    if kind == BITFIELD:
        if length - 1 > MAX_BITFIELD_BYTES:
            raise RemoteProtocolError("bitfield too large")
        return Bitfield(bytes(buf[at + 1 : at + length]))
    if kind == PORT:
        _expect(length, 3, kind)
        return Port(struct.unpack_from(">H", buf, at + 1)[0])
    if kind == EXTENDED:
        if length < 2:
            raise RemoteProtocolError("extended message without an extension id")
        return Extended(buf[at + 1], bytes(buf[at + 2 : at + length]))
    if kind == HASH_REQUEST or kind == HASH_REJECT:
        _expect(length, 49, kind)
        fields = _HASH_FIELDS.unpack_from(buf, at + 1)
        return HashRequest(*fields) if kind == HASH_REQUEST else HashReject(*fields)
    if kind == HASHES:
        if length < 49 or (length - 49) % 32:
            raise RemoteProtocolError("hashes message is not a whole number of hashes")
        if (length - 49) // 32 > MAX_HASHES_PER_MESSAGE + 64:  # + uncles: at most one per tree layer
            raise RemoteProtocolError("hashes message carries too many hashes")
        return Hashes(*_HASH_FIELDS.unpack_from(buf, at + 1), bytes(buf[at + 49 : at + length]))
    # Unknown ids (BEP 6 fast extension, suggest, ...): we never advertised them, so a
    # well-behaved peer sends none; skip small ones rather than punish a chatty client.
    if length > MAX_UNKNOWN_MESSAGE_BYTES:
        raise RemoteProtocolError(f"unknown message id {kind} of {length} bytes")
    return None


def _expect(length: int, wanted: int, kind: int) -> None:
    if length != wanted:
        raise RemoteProtocolError(f"message id {kind} must be {wanted} bytes long, not {length}")
