"""Real sockets on 127.0.0.1: veil seeds, veil fetches (by torrent, by magnet, through
the embedded tracker, many leechers at once), `read()` streams verified bytes, and a
hostile connection costs only itself."""

import asyncio
import socket
from contextlib import AsyncExitStack

import pytest

from veilstream.swarm import SwarmNode, SwarmSettings, TrackerServer, run
from veilstream.swarm import tracker as tracker_client
from veilstream.swarm.errors import LocalProtocolError, TrackerError
from veilstream.swarm.storage import PieceStore

from .conftest import WAIT_S


def seed_store(published):
    return PieceStore.for_seeding(published.torrent, published.ciphertext_path)


@pytest.mark.parametrize("hash_threads", [0, 2])
@pytest.mark.parametrize("by_magnet", [False, True])
def test_veil_to_veil_over_loopback(content, tmp_path, by_magnet, hash_threads):
    # a one-piece streaming window: the other pieces are bulk, hashed on threads if asked
    settings = SwarmSettings(hash_threads=hash_threads, stream_window_bytes=content.torrent.piece_length)

    async def main():
        async with SwarmNode() as seeder, SwarmNode(settings) as leecher:
            seeder.seed(seed_store(content))
            target = content.torrent.info_hash if by_magnet else content.torrent
            fetch = leecher.fetch(target, tmp_path)
            fetch.add_peer(*seeder.listen_address)
            async with asyncio.timeout(WAIT_S):
                path = await fetch.completed()
            assert path.read_bytes() == content.ciphertext_path.read_bytes()
            assert seeder.internal_errors == leecher.internal_errors == 0

    run(main())


def test_read_returns_verified_bytes_as_soon_as_their_pieces_arrive(content, tmp_path):
    data = content.ciphertext_path.read_bytes()
    pl = content.torrent.piece_length

    async def main():
        async with SwarmNode() as seeder, SwarmNode() as leecher:
            fetch = leecher.fetch(content.torrent, tmp_path)
            fetch.seek(15 * pl)
            reader = asyncio.ensure_future(fetch.read(15 * pl + 100, 2 * pl))
            seeder.seed(seed_store(content))
            fetch.add_peer(*seeder.listen_address)
            async with asyncio.timeout(WAIT_S):
                got = await reader
            assert got == data[15 * pl + 100 : 17 * pl + 100]
            with pytest.raises(LocalProtocolError):
                await fetch.read(len(data) - 10, 20)
            async with asyncio.timeout(WAIT_S):
                await fetch.completed()

    run(main())


def test_one_seeder_many_leechers_found_through_the_embedded_tracker(content, tmp_path):
    async def main():
        server = TrackerServer()
        await server.start("127.0.0.1", 0)
        try:
            async with SwarmNode() as seeder:
                seeder.announce_to(seeder.seed(seed_store(content)), server.url)
                async with AsyncExitStack() as stack:
                    nodes = [await stack.enter_async_context(SwarmNode(SwarmSettings(tracker_min_interval_s=0.2)))
                             for _ in range(4)]
                    fetches = []
                    for i, node in enumerate(nodes):
                        fetch = node.fetch(content.torrent.info_hash, tmp_path / f"l{i}")
                        node.announce_to(fetch, server.url)
                        fetches.append(fetch)
                    async with asyncio.timeout(WAIT_S):
                        paths = await asyncio.gather(*(f.completed() for f in fetches))
                    for path in paths:
                        assert path.read_bytes() == content.ciphertext_path.read_bytes()
        finally:
            await server.close()

    run(main())


def test_garbage_and_strangers_do_not_disturb_a_seeder(content, tmp_path):
    async def main():
        async with SwarmNode() as seeder, SwarmNode() as leecher:
            seeder.seed(seed_store(content))
            host, port = seeder.listen_address
            for junk in (b"\x00" * 100, b"\x13BitTorrent protocol" + bytes(8) + b"z" * 40, b"GET / HTTP/1.0\r\n\r\n" * 4):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(junk)
                async with asyncio.timeout(WAIT_S):
                    assert await reader.read() == b""  # closed on us
                writer.close()
            fetch = leecher.fetch(content.torrent, tmp_path)
            fetch.add_peer(host, port)
            async with asyncio.timeout(WAIT_S):
                await fetch.completed()
            assert seeder.internal_errors == 0

    run(main())


def test_tracker_protocol_and_refusals():
    state = tracker_client.TrackerState()
    ih = b"i" * 20
    first = tracker_client.parse_announce_response(state.announce({"info_hash": ih, "peer_id": b"a" * 20, "port": b"1000", "left": b"0"}, "127.0.0.1", 0.0))
    assert first.peers == []
    second = tracker_client.parse_announce_response(state.announce({"info_hash": ih, "peer_id": b"b" * 20, "port": b"2000", "left": b"5"}, "127.0.0.1", 1.0))
    assert second.peers == [("127.0.0.1", 1000)] and second.complete == 1 and second.incomplete == 1
    with pytest.raises(TrackerError, match="refused"):
        tracker_client.parse_announce_response(state.announce({"info_hash": b"short"}, "127.0.0.1", 0.0))
    with pytest.raises(TrackerError):
        tracker_client.parse_announce_response(b"d8:intervali10e5:peers5:abcdee")
    late = state.announce({"info_hash": ih, "peer_id": b"c" * 20, "port": b"3000"}, "127.0.0.1", 10_000.0)
    assert tracker_client.parse_announce_response(late).peers == []  # a and b expired


def test_an_unreachable_tracker_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main():
        with pytest.raises(TrackerError, match="cannot reach"):
            await tracker_client.announce(f"http://127.0.0.1:{port}/announce", b"i" * 32, b"p" * 20, 1, timeout_s=2)

    run(main())
