"""The wire vocabulary: every message survives encode → parse, whatever the chunking,
and every malformed or oversized frame is a `RemoteProtocolError`."""

import struct

import pytest

from veilstream.swarm import wire
from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError

ROOT = bytes(range(32))
MESSAGES = [
    wire.KeepAlive(), wire.Choke(), wire.Unchoke(), wire.Interested(), wire.NotInterested(),
    wire.Have(7), wire.Bitfield(b"\xff\x80"), wire.Request(3, 16384, 16384), wire.Cancel(3, 0, 100),
    wire.Piece(2, 32768, bytes(range(256)) * 64), wire.Port(6881), wire.Extended(0, b"d1:md11:ut_metadatai1eee"),
    wire.HashRequest(ROOT, 6, 0, 512, 3), wire.HashReject(ROOT, 0, 64, 64, 5),
    wire.Hashes(ROOT, 6, 0, 2, 0, bytes(64)),
]


def test_every_message_round_trips_in_one_buffer():
    raw = b"".join(wire.encode(m) for m in MESSAGES)
    assert wire.MessageParser().feed(raw) == MESSAGES


def test_messages_reassemble_when_fed_a_byte_at_a_time():
    raw = b"".join(wire.encode(m) for m in MESSAGES)
    parser, got = wire.MessageParser(), []
    for i in range(len(raw)):
        got += parser.feed(raw[i : i + 1])
    assert got == MESSAGES and parser.buffered == 0


def test_handshake_round_trip_and_reserved_bits():
    reserved = wire.reserved_bytes(wire.EXTENSION_PROTOCOL_BIT, wire.V2_UPGRADE_BIT)
    raw = wire.encode_handshake(b"i" * 20, b"p" * 20, reserved)
    hs = wire.parse_handshake(raw)
    assert (hs.info_hash, hs.peer_id) == (b"i" * 20, b"p" * 20)
    assert wire.has_bit(hs.reserved, wire.EXTENSION_PROTOCOL_BIT) and wire.has_bit(hs.reserved, wire.V2_UPGRADE_BIT)
    with pytest.raises(RemoteProtocolError):
        wire.parse_handshake(b"\x13BitTorrent protocoX" + raw[20:])


@pytest.mark.parametrize("frame, why", [
    (struct.pack(">I", wire.MAX_MESSAGE_BYTES + 1), "oversized length prefix"),
    (struct.pack(">IBII", 9 + wire.BLOCK_SIZE + 1, wire.PIECE, 0, 0) + bytes(wire.BLOCK_SIZE + 1), "block over 16 KiB"),
    (struct.pack(">IBII", 9, wire.PIECE, 0, 0), "empty block"),
    (struct.pack(">IB", 2, wire.CHOKE) + b"x", "choke with a payload"),
    (struct.pack(">IBI", 5, wire.REQUEST, 1), "short request"),
    (struct.pack(">IB", 1, wire.HAVE), "have without an index"),
    (struct.pack(">IB", 1, wire.EXTENDED), "extended without an id"),
    (struct.pack(">IB", 50, wire.HASHES) + bytes(49), "hashes not a multiple of 32"),
    (struct.pack(">IB", 1 + wire.MAX_UNKNOWN_MESSAGE_BYTES + 1, 99) + bytes(wire.MAX_UNKNOWN_MESSAGE_BYTES + 1), "big unknown message"),
])
def test_malformed_frames_are_the_peers_fault(frame, why):
    with pytest.raises(RemoteProtocolError):
        wire.MessageParser().feed(frame)


def test_small_unknown_messages_are_skipped():
    raw = struct.pack(">IB", 3, 14) + b"ab" + wire.encode(wire.Have(1))  # BEP 6 have-all-ish id
    assert wire.MessageParser().feed(raw) == [wire.Have(1)]


def test_oversized_length_is_refused_before_buffering_the_body():
    parser = wire.MessageParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(struct.pack(">I", 1 << 31))


def test_we_cannot_send_a_request_beyond_16_kib():
    with pytest.raises(LocalProtocolError):
        wire.encode(wire.Request(0, 0, wire.BLOCK_SIZE + 1))
