"""Limits on real sockets, 127.0.0.1: a node's upload and download limits and a content's own
hold a transfer to at least size ÷ limit (lower bounds only: how fast things go is the
benchmark's business), a limit changed while bytes flow takes effect at once, and a node
at its connection limit closes a newcomer while the peers it has go on."""

import asyncio
import logging
import time

from veilstream.swarm import PeerDropped, PeerReady, SwarmNode, SwarmSettings, run
from veilstream.swarm.storage import PieceStore

from .conftest import WAIT_S

KIB = 1024
SLACK = 0.8  # a bound is 0.8 × size / limit: the bucket starts with a burst, clocks differ a little


def seed_store(published):
    return PieceStore.for_seeding(published.torrent, published.ciphertext_path)


async def fetch_timed(leecher: SwarmNode, published, directory, seeder: SwarmNode) -> float:
    fetch = leecher.fetch(published.torrent, directory)
    started = time.monotonic()
    fetch.add_peer(*seeder.listen_address)
    async with asyncio.timeout(WAIT_S):
        path = await fetch.completed()
    took = time.monotonic() - started
    assert path.read_bytes() == published.ciphertext_path.read_bytes()
    return took


def test_the_seeders_upload_limit_holds_the_transfer_to_size_over_limit(content, tmp_path):
    limit = 256 * KIB
    assert content.torrent.length > 1024 * KIB

    async def main():
        async with SwarmNode(SwarmSettings(upload_rate_limit=limit)) as seeder, SwarmNode() as leecher:
            seeder.seed(seed_store(content))
            cpu = time.process_time()
            took = await fetch_timed(leecher, content, tmp_path, seeder)
            assert took >= SLACK * content.torrent.length / limit
            assert seeder.rate_limits == (limit, 0)
            # the waiting is timers, not a loop that spins: the process mostly sleeps
            assert time.process_time() - cpu < 0.5 * took

    run(main())


def test_the_leechers_download_limit_paces_its_requests(content, tmp_path):
    limit = 256 * KIB

    async def main():
        async with SwarmNode() as seeder, SwarmNode(SwarmSettings(download_rate_limit=limit)) as leecher:
            seeder.seed(seed_store(content))
            took = await fetch_timed(leecher, content, tmp_path, seeder)
            assert took >= SLACK * content.torrent.length / limit

    run(main())


def test_a_contents_own_limit_holds_beside_an_unlimited_node(content, tmp_path):
    limit = 256 * KIB

    async def main():
        async with SwarmNode() as seeder, SwarmNode() as leecher:
            seeded = seeder.seed(seed_store(content))
            seeded.set_rate_limits(upload=limit)
            assert seeded.rate_limits == (limit, 0) and seeder.rate_limits == (0, 0)
            took = await fetch_timed(leecher, content, tmp_path, seeder)
            assert took >= SLACK * content.torrent.length / limit

    run(main())


def test_a_content_limit_set_before_the_transfer_exists_applies_when_it_is_added(content, tmp_path):
    limit = 256 * KIB

    async def main():
        async with SwarmNode() as seeder, SwarmNode() as leecher:
            seeder.set_content_rate_limits(content.torrent.info_hash, upload=limit)
            assert seeder.seed(seed_store(content)).rate_limits == (limit, 0)
            took = await fetch_timed(leecher, content, tmp_path, seeder)
            assert took >= SLACK * content.torrent.length / limit

    run(main())


async def first_piece(fetch) -> int:
    """Wait for the first verified piece; how many bytes are still to come."""
    async with asyncio.timeout(WAIT_S):
        await fetch.wait_for_piece(0)
    return fetch.torrent.length - fetch.have_bytes


def test_a_limit_lifted_while_bytes_flow_lets_the_rest_go_sooner_than_the_old_limit_could(content, tmp_path):
    old = 64 * KIB

    async def main():
        async with SwarmNode(SwarmSettings(upload_rate_limit=old)) as seeder, SwarmNode() as leecher:
            seeder.seed(seed_store(content))
            fetch = leecher.fetch(content.torrent, tmp_path)
            fetch.add_peer(*seeder.listen_address)
            left = await first_piece(fetch)
            assert left > content.torrent.length // 2
            lifted = time.monotonic()
            seeder.set_rate_limits(upload=0)
            async with asyncio.timeout(WAIT_S):
                await fetch.completed()
            # under the old limit the rest needed left / old seconds at least
            assert time.monotonic() - lifted < 0.5 * left / old

    run(main())


def test_a_limit_lowered_while_bytes_flow_holds_the_rest_to_the_new_limit(content, tmp_path):
    new = 256 * KIB

    async def main():
        async with SwarmNode() as seeder, SwarmNode(SwarmSettings(download_rate_limit=1024 * KIB)) as leecher:
            seeder.seed(seed_store(content))
            fetch = leecher.fetch(content.torrent, tmp_path)
            fetch.add_peer(*seeder.listen_address)
            await first_piece(fetch)
            lowered = time.monotonic()
            leecher.set_rate_limits(download=new)
            # what was asked before the change may still arrive at the old pace: count from there
            in_flight = sum(len(peer.requests) for peer in fetch.swarm.peers.values()) * 16 * KIB
            asked_before = fetch.swarm.downloaded_bytes + in_flight
            async with asyncio.timeout(WAIT_S):
                await fetch.completed()
            rest = content.torrent.length - asked_before
            assert rest > 0
            assert time.monotonic() - lowered >= SLACK * rest / new

    run(main())


def test_a_node_at_its_connection_limit_closes_a_third_peer_and_the_first_two_go_on(content, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="veilstream.swarm")

    async def main():
        # the upload limit keeps the first two transferring while the third knocks
        async with (SwarmNode(SwarmSettings(max_connections=2, upload_rate_limit=1024 * KIB)) as seeder,
                    SwarmNode() as first, SwarmNode() as second, SwarmNode() as third):
            seeder.seed(seed_store(content))
            fetches = []
            for i, node in enumerate((first, second)):
                fetch = node.fetch(content.torrent, tmp_path / f"l{i}")
                ready = asyncio.Event()
                fetch.subscribe(lambda event, ready=ready: ready.set() if isinstance(event, PeerReady) else None)
                fetch.add_peer(*seeder.listen_address)
                async with asyncio.timeout(WAIT_S):
                    await ready.wait()
                fetches.append(fetch)
            assert seeder.connection_count == 2
            knocking = third.fetch(content.torrent, tmp_path / "l2")
            closed = asyncio.Event()
            knocking.subscribe(lambda event: closed.set() if isinstance(event, PeerDropped) else None)
            knocking.add_peer(*seeder.listen_address)
            async with asyncio.timeout(WAIT_S):
                await closed.wait()
            assert seeder.refused_connections == 1 and knocking.have_bytes == 0
            async with asyncio.timeout(WAIT_S):
                for fetch in fetches:
                    path = await fetch.completed()
                    assert path.read_bytes() == content.ciphertext_path.read_bytes()
            assert seeder.internal_errors == 0

    run(main())
    refusals = [r for r in caplog.records if "refused a connection" in r.getMessage()]
    assert refusals and refusals[0].levelno == logging.DEBUG and "max_connections 2" in refusals[0].getMessage()


def test_a_node_at_its_connection_limit_starts_no_outgoing_connection(content, one_piece_content, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="veilstream.swarm")

    async def main():
        async with SwarmNode() as seeder, SwarmNode(SwarmSettings(max_connections=1)) as leecher:
            seeder.seed(seed_store(content))
            seeder.seed(seed_store(one_piece_content))
            fetch = leecher.fetch(content.torrent, tmp_path / "a")
            fetch.add_peer(*seeder.listen_address)
            assert leecher.connection_count == 1  # counted from the moment it is started
            other = leecher.fetch(one_piece_content.torrent, tmp_path / "b")
            other.add_peer(*seeder.listen_address)
            assert leecher.connection_count == 1 and not other.addresses
            async with asyncio.timeout(WAIT_S):
                await fetch.completed()

    run(main())
    assert any("not connecting" in r.getMessage() and "max_connections 1" in r.getMessage() for r in caplog.records)
