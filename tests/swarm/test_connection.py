"""One connection's state machine: the handshake comes first and must name our content;
flags follow the messages; a bitfield is only legal first."""

import pytest

from veilstream.swarm import wire
from veilstream.swarm.connection import PeerConnection, Phase
from veilstream.swarm.errors import LocalProtocolError, RemoteProtocolError

IH, A, B = b"h" * 20, b"a" * 20, b"b" * 20


def joined():
    dialer, listener = PeerConnection(IH, A, outbound=True), PeerConnection(IH, B, outbound=False)
    events = listener.receive_data(b"".join(dialer.take_output()))
    assert isinstance(events[0], wire.Handshake) and events[0].peer_id == A
    back = dialer.receive_data(b"".join(listener.take_output()))
    assert back[0].peer_id == B
    return dialer, listener


def test_handshake_then_both_sides_are_active_and_choked():
    dialer, listener = joined()
    assert dialer.phase is listener.phase is Phase.ACTIVE
    assert dialer.am_choking and dialer.peer_choking and not dialer.am_interested
    assert dialer.supports_extensions and listener.supports_v2


def test_a_handshake_for_another_content_is_refused():
    other = PeerConnection(b"x" * 20, A, outbound=True)
    with pytest.raises(RemoteProtocolError, match="another info-hash"):
        PeerConnection(IH, B, outbound=False).receive_data(b"".join(other.take_output()))


def test_garbage_instead_of_a_handshake_is_refused_early():
    with pytest.raises(RemoteProtocolError):
        PeerConnection(IH, B, outbound=False).receive_data(b"GET / HTTP/1.1\r\n")


def test_flags_follow_messages_both_ways():
    dialer, listener = joined()
    dialer.send(wire.Interested())
    listener.receive_data(b"".join(dialer.take_output()))
    assert dialer.am_interested and listener.peer_interested
    listener.send(wire.Unchoke())
    dialer.receive_data(b"".join(listener.take_output()))
    assert not listener.am_choking and not dialer.peer_choking


def test_bitfield_after_other_messages_is_a_protocol_error():
    dialer, listener = joined()
    listener.receive_data(wire.encode(wire.Extended(0, b"de")) + wire.encode(wire.Bitfield(b"\x80")))
    with pytest.raises(RemoteProtocolError, match="bitfield"):
        listener.receive_data(wire.encode(wire.Bitfield(b"\x80")))


def test_sending_before_the_handshake_is_our_bug():
    with pytest.raises(LocalProtocolError):
        PeerConnection(IH, B, outbound=False).send(wire.Interested())


def test_closed_connection_ignores_bytes():
    dialer, listener = joined()
    listener.close()
    assert listener.receive_data(wire.encode(wire.Have(1))) == []
