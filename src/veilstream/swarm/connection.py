"""One peer connection's protocol state, without IO (after h11's `Connection`).

Feed it bytes with `receive_data` and get `wire` messages back; hand it messages with
`send` and collect the bytes to write with `take_output`. It owns the handshake, the
framing, the four choke/interest flags and the ordering rules; what the messages *mean*
for a torrent is `Swarm`'s business.

    phase          may receive                                 then
    ─────────────  ──────────────────────────────────────────  ──────────────
    HANDSHAKE      68-byte handshake naming our info-hash      ACTIVE
    ACTIVE         any message; Bitfield only before the first
                   other non-extension message, and only once
    CLOSED         nothing (bytes after close are dropped)
"""

from __future__ import annotations

from enum import Enum

from veilstream.swarm import wire
from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError


class Phase(Enum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


OUR_RESERVED = wire.reserved_bytes(wire.EXTENSION_PROTOCOL_BIT, wire.V2_UPGRADE_BIT)

# What a received message does to the peer-side flags.
_FLAG_UPDATES = {
    wire.Choke: ("peer_choking", True),
    wire.Unchoke: ("peer_choking", False),
    wire.Interested: ("peer_interested", True),
    wire.NotInterested: ("peer_interested", False),
}
# What a sent message does to our-side flags.
_OUR_FLAG_UPDATES = {
    wire.Choke: ("am_choking", True),
    wire.Unchoke: ("am_choking", False),
    wire.Interested: ("am_interested", True),
    wire.NotInterested: ("am_interested", False),
}
_NEUTRAL = (wire.KeepAlive, wire.Extended, wire.Port)  # may precede a Bitfield


class PeerConnection:
    __slots__ = (
        "info_hash", "peer_id", "outbound", "phase", "remote", "am_choking", "am_interested",
        "peer_choking", "peer_interested", "_parser", "_pending", "_output", "_bitfield_allowed",
        "_sent_handshake",
    )

    def __init__(self, info_hash: bytes, peer_id: bytes, *, outbound: bool) -> None:
        if len(info_hash) != wire.INFO_HASH_WIRE_LENGTH or len(peer_id) != wire.PEER_ID_LENGTH:
            raise LocalProtocolError("info-hash and peer id must be 20 bytes each")
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.outbound = outbound
        self.phase = Phase.HANDSHAKE
        self.remote: wire.Handshake | None = None
        # BEP 3: both sides start choked and not interested.
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self._parser = wire.MessageParser()
        self._pending = bytearray()
        self._output: list[bytes] = []
        self._bitfield_allowed = True
        self._sent_handshake = False
        if outbound:
            self._send_handshake()

    def _send_handshake(self) -> None:
        self._output.append(wire.encode_handshake(self.info_hash, self.peer_id, OUR_RESERVED))
        self._sent_handshake = True

    # -- receiving ------------------------------------------------------------------
    def receive_data(self, data: bytes | memoryview) -> list[wire.Handshake | wire.Message]:
        if self.phase is Phase.CLOSED:
            return []
        events: list[wire.Handshake | wire.Message] = []
        if self.phase is Phase.HANDSHAKE:
            self._pending += data
            if len(self._pending) < wire.HANDSHAKE_LENGTH:
                if not wire.HANDSHAKE_PREFIX.startswith(bytes(self._pending[:20])):
                    raise RemoteProtocolError("not a BitTorrent handshake")
                return events
            handshake = wire.parse_handshake(bytes(self._pending[: wire.HANDSHAKE_LENGTH]))
            if handshake.info_hash != self.info_hash:
                raise RemoteProtocolError("the peer's handshake names another info-hash")
            data = bytes(self._pending[wire.HANDSHAKE_LENGTH :])
            self._pending = bytearray()
            self.remote = handshake
            self.phase = Phase.ACTIVE
            if not self._sent_handshake:
                self._send_handshake()
            events.append(handshake)
        messages = self._parser.feed(data)
        for message in messages:
            kind = type(message)
            if kind is wire.Piece:  # the bulk of all traffic
                self._bitfield_allowed = False
                continue
            update = _FLAG_UPDATES.get(kind)
            if update is not None:
                setattr(self, update[0], update[1])
            if kind is wire.Bitfield:
                if not self._bitfield_allowed:
                    raise RemoteProtocolError("bitfield sent after other messages")
                self._bitfield_allowed = False
            elif kind not in _NEUTRAL:
                self._bitfield_allowed = False
        if not events:
            return messages
        events.extend(messages)
        return events

    @property
    def supports_extensions(self) -> bool:
        return self.remote is not None and wire.has_bit(self.remote.reserved, wire.EXTENSION_PROTOCOL_BIT)

    @property
    def supports_v2(self) -> bool:
        return self.remote is not None and wire.has_bit(self.remote.reserved, wire.V2_UPGRADE_BIT)

    # -- sending ----------------------------------------------------------------------
    def send(self, message: wire.Message) -> None:
        if self.phase is not Phase.ACTIVE:
            raise LocalProtocolError(f"cannot send {type(message).__name__} in phase {self.phase.value}")
        update = _OUR_FLAG_UPDATES.get(type(message))
        if update is not None:
            setattr(self, update[0], update[1])
        self._output.append(wire.encode(message))

    def send_requests(self, requests: list[tuple[int, int, int]]) -> None:
        """Many block requests as one buffer (the hot path of downloading)."""
        if self.phase is not Phase.ACTIVE:
            raise LocalProtocolError("cannot request before the handshake")
        pack = wire.REQUEST_FRAME.pack
        for _index, _begin, length in requests:
            if not 0 < length <= wire.BLOCK_SIZE:
                raise LocalProtocolError(f"a block request is 1..{wire.BLOCK_SIZE} bytes, not {length}")
        self._output.append(b"".join(pack(13, wire.REQUEST, i, b, n) for i, b, n in requests))

    def send_block(self, index: int, begin: int, data: bytes | memoryview) -> None:
        """A piece message without copying the block (the hot path of seeding)."""
        if self.phase is not Phase.ACTIVE:
            raise LocalProtocolError("cannot send a block before the handshake")
        self._output.append(wire.piece_header(index, begin, len(data)))
        self._output.append(data)

    def take_output(self) -> list[bytes]:
        out, self._output = self._output, []
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._output)

    def close(self) -> None:
        self.phase = Phase.CLOSED
        self._output = []
