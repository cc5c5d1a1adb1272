"""Fuzz target: arbitrary bytes into the message parser, a live protocol core and a DHT node.

The parser may only raise `RemoteProtocolError`; a `Swarm` core must never raise at all
(a hostile peer costs its connection). Run by test_fuzz.py through atheris:

    python tests/swarm/fuzz_wire.py -max_total_time=60 [corpus_dir]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from veilstream.swarm import wire
    from veilstream.swarm.dht import DhtCore
    from veilstream.swarm.connection import PeerConnection
    from veilstream.swarm.errors import RemoteProtocolError
    from veilstream.swarm.swarm import Swarm

INFO_HASH = bytes(range(32))
PEER_ID = b"-FZ0000-fuzzfuzzfuzz"


def feed_parser(data: bytes) -> None:
    parser = wire.MessageParser()
    try:
        for cut in (len(data) // 3, len(data)):
            parser.feed(data[:cut])
            data = data[cut:]
    except RemoteProtocolError:
        pass


def feed_core(data: bytes) -> None:
    """A magnet leecher core (no torrent yet) receives a handshake, then `data`."""
    core = Swarm(INFO_HASH, peer_id=b"-VS0100-corecorecore", open_store=lambda t: None)
    core.connection_made(1, ("127.0.0.1", 1), outbound=False, now=0.0)
    dialer = PeerConnection(INFO_HASH[:20], PEER_ID, outbound=True)
    core.data_received(1, b"".join(dialer.take_output()), 0.0)
    core.data_received(1, data, 1.0)
    core.tick(500.0)


def feed_dht(data: bytes) -> None:
    """A DHT node receives `data` as a datagram (malformed ones are dropped silently)."""
    DhtCore(b"n" * 20, secret=b"s" * 16).receive(data, ("127.0.0.1", 6881), 0.0)


def test_one_input(data: bytes) -> None:
    feed_parser(data)
    feed_core(data)
    feed_dht(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
