"""Shared fixtures: small published contents (the 1 GiB case lives in bench/swarm.py)
and a harness that wires two sans-IO `Swarm` cores together in memory, each with a
`MemoryPieceStore` (no disk)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from veilstream.content import PublishOptions, Published, publish_file
from veilstream.identity import Identity
from veilstream.swarm.node import new_peer_id
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.swarm import Swarm

CREATOR_WORDS = "leader monkey parrot ring guide accident before fence cannon height naive bean"
SMALL_PIECE = 64 * 1024
WAIT_S = 30.0  # the longest any loopback test waits on one event


@pytest.fixture(scope="session")
def creator() -> Identity:
    return Identity.from_mnemonic(CREATOR_WORDS)


def publish(root: Path, creator: Identity, size: int, slice_size: int = SMALL_PIECE) -> Published:
    root.mkdir(parents=True, exist_ok=True)
    src = root / "plain.bin"
    src.write_bytes(os.urandom(size))
    out = root / "published"
    out.mkdir()
    return publish_file(src, out, creator, PublishOptions(slice_size=slice_size))


@pytest.fixture(scope="session")
def content(tmp_path_factory, creator) -> Published:
    """~1.3 MB of ciphertext in 21 pieces of 64 KiB (the last one short)."""
    return publish(tmp_path_factory.mktemp("content"), creator, 1_300_000)


@pytest.fixture(scope="session")
def one_piece_content(tmp_path_factory, creator) -> Published:
    return publish(tmp_path_factory.mktemp("one-piece"), creator, 40_000)


@dataclass
class Link:
    """Two cores joined by an in-memory pipe: `a` dialled `b`."""

    a: Swarm
    b: Swarm
    conn_a: int = 1
    conn_b: int = 1
    now: float = 0.0

    def pump(self, limit: int = 100_000) -> None:
        """Deliver bytes both ways until both sides fall silent."""
        for _ in range(limit):
            moved = False
            for src, dst, s_conn, d_conn in ((self.a, self.b, self.conn_a, self.conn_b), (self.b, self.a, self.conn_b, self.conn_a)):
                if s_conn not in src.peers or d_conn not in dst.peers:
                    continue
                chunks = src.output_for(s_conn, 1 << 20)
                if chunks:
                    moved = True
                    dst.data_received(d_conn, b"".join(bytes(c) for c in chunks), self.now)
            if not moved:
                return
        raise AssertionError("the link never fell silent")


def connect(a: Swarm, b: Swarm, conn_a: int = 1, conn_b: int = 1, now: float = 0.0) -> Link:
    a.connection_made(conn_a, ("127.0.0.1", 40000 + conn_b), outbound=True, now=now)
    b.connection_made(conn_b, ("127.0.0.1", 50000 + conn_a), outbound=False, now=now)
    return Link(a, b, conn_a, conn_b, now)


_CIPHERTEXTS: dict[Path, bytes] = {}


def ciphertext(published: Published) -> bytes:
    """The published ciphertext (read once per session)."""
    path = published.ciphertext_path
    if path not in _CIPHERTEXTS:
        _CIPHERTEXTS[path] = path.read_bytes()
    return _CIPHERTEXTS[path]


def seeder_core(published: Published, settings: SwarmSettings = SwarmSettings()) -> Swarm:
    store = MemoryPieceStore.for_seeding(published.torrent, ciphertext(published))
    return Swarm(published.torrent.info_hash, peer_id=new_peer_id(), settings=settings, torrent=published.torrent, store=store)


def leecher_core(published: Published, *, magnet: bool = False, settings: SwarmSettings = SwarmSettings()) -> Swarm:
    torrent = published.torrent
    if magnet:
        return Swarm(torrent.info_hash, peer_id=new_peer_id(), settings=settings, open_store=MemoryPieceStore.for_download)
    return Swarm(torrent.info_hash, peer_id=new_peer_id(), settings=settings, torrent=torrent,
                 store=MemoryPieceStore.for_download(torrent))


async def wait_for(predicate, timeout: float = WAIT_S, what: str = "condition") -> None:
    """Wait until `predicate()` holds, for state owned by another process or thread that
    offers no event to await (a file, a libtorrent session). Not for our own events."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
