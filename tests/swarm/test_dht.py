"""BEP 5 DHT: the KRPC core answers and validates; a handful of nodes on loopback let a
leecher find a seeder with no tracker at all."""

import asyncio

from veilstream.content import bencode
from veilstream.swarm import SwarmNode, SwarmSettings, run
from veilstream.swarm.dht import DhtCore, DhtNode, pack_nodes, unpack_nodes
from veilstream.swarm.storage import PieceStore

from .conftest import WAIT_S

A = ("127.0.0.1", 7001)


def ask(core, method, args, address=A, now=0.0):
    message = {b"t": b"aa", b"y": b"q", b"q": method, b"a": {b"id": b"q" * 20, **args}}
    answer, _ = core.receive(bencode.encode(message), address, now)
    return bencode.decode(answer)


def test_get_peers_then_announce_with_its_token_then_get_peers_finds_it():
    core = DhtCore()
    first = ask(core, b"get_peers", {b"info_hash": b"h" * 20})
    assert b"values" not in first[b"r"]
    token = first[b"r"][b"token"]
    assert ask(core, b"announce_peer", {b"info_hash": b"h" * 20, b"port": 6881, b"token": token})[b"y"] == b"r"
    again = ask(core, b"get_peers", {b"info_hash": b"h" * 20}, address=("127.0.0.1", 7002))
    assert again[b"r"][b"values"] == [bytes([127, 0, 0, 1]) + (6881).to_bytes(2, "big")]


def test_announces_with_a_wrong_token_or_junk_are_refused_or_dropped():
    core = DhtCore()
    assert ask(core, b"announce_peer", {b"info_hash": b"h" * 20, b"port": 1, b"token": b"forged!!"})[b"y"] == b"e"
    assert ask(core, b"find_node", {b"target": b"short"})[b"y"] == b"e"
    assert ask(core, b"bogus", {})[b"e"][0] == 204
    for junk in (b"", b"d1:t", b"x" * 3000, bencode.encode([1, 2])):
        assert core.receive(junk, A, 0.0) == (None, None)
    assert not core.peers


def test_replies_are_matched_to_our_queries_only():
    core = DhtCore()
    tid, _ = core.query(b"ping", {}, A, 0.0)
    reply = {b"t": tid, b"y": b"r", b"r": {b"id": b"n" * 20}}
    assert core.receive(bencode.encode(reply), ("127.0.0.1", 9), 0.0)[1] is None  # wrong sender
    tid, _ = core.query(b"ping", {}, A, 0.0)
    reply[b"t"] = tid
    assert core.receive(bencode.encode(reply), A, 0.0)[1].node_id == b"n" * 20
    assert core.receive(bencode.encode(reply), A, 0.0)[1] is None  # only once


def test_compact_nodes_round_trip():
    nodes = [(b"a" * 20, ("127.0.0.1", 1)), (b"b" * 20, ("10.0.0.2", 65535))]
    assert unpack_nodes(pack_nodes(nodes)) == nodes


def test_a_leecher_finds_a_seeder_through_the_dht_alone(content, tmp_path):
    settings = SwarmSettings(dht_enabled=True, tracker_min_interval_s=0.2)

    async def main():
        routers = [DhtNode(settings) for _ in range(4)]
        for router in routers:
            await router.start("127.0.0.1", 0)
        try:
            entry = routers[0].address
            for router in routers[1:]:
                await router.bootstrap([entry])
            async with SwarmNode(settings) as seeder, SwarmNode(settings) as leecher:
                assert await seeder.dht.bootstrap([entry]) >= 1
                assert await leecher.dht.bootstrap([entry]) >= 1
                seeder.discover_via_dht(seeder.seed(PieceStore.for_seeding(content.torrent, content.ciphertext_path)))
                fetch = leecher.fetch(content.torrent.info_hash, tmp_path)
                leecher.discover_via_dht(fetch)
                async with asyncio.timeout(WAIT_S):
                    path = await fetch.completed()
                assert path.read_bytes() == content.ciphertext_path.read_bytes()
        finally:
            for router in routers:
                router.close()

    run(main())


def test_a_lookup_among_silent_nodes_ends_at_its_deadline_and_the_node_goes_on(content, tmp_path):
    """16 nodes that never answer and a lookup deadline shorter than one query's: the lookup
    returns what it found (nothing), the node keeps looking, and the fetch still completes
    from a peer given afterwards. (A TimeoutError escaping the lookup used to end the node.)"""
    import socket

    settings = SwarmSettings(dht_enabled=True, dht_query_timeout_s=5.0, dht_lookup_timeout_s=0.3,
                             tracker_min_interval_s=0.05)
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    for sock in silent:
        sock.bind(("127.0.0.1", 0))

    async def main():
        async with SwarmNode(SwarmSettings()) as seeder, SwarmNode(settings) as leecher:
            seeder.seed(PieceStore.for_seeding(content.torrent, content.ciphertext_path))
            for n, sock in enumerate(silent):
                leecher.dht.core.add_node(bytes([n + 1]) * 20, sock.getsockname(), 0.0)
            fetch = leecher.fetch(content.torrent.info_hash, tmp_path)
            leecher.discover_via_dht(fetch)
            async with asyncio.timeout(WAIT_S):
                while await leecher.dht_lookup_finished() < 2:  # two lookups ran out of time; the loop goes on
                    pass
            fetch.add_peer(*seeder.listen_address)
            async with asyncio.timeout(WAIT_S):
                path = await fetch.completed()
            assert path.read_bytes() == content.ciphertext_path.read_bytes()

    try:
        run(main())
    finally:
        for sock in silent:
            sock.close()
