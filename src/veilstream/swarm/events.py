"""The swarm's event vocabulary: what the protocol core reports to the application.

Small immutable records, as h11's `_events.py`: `Swarm.take_events` returns them, and a
`Transfer` hands each one to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass

from veilstream.content import Torrent
from veilstream.swarm.errors import SwarmError

@dataclass(frozen=True)
class PieceVerified:
    index: int
    senders: tuple[int, ...] = ()  # connections that delivered its blocks, most bytes first
    bytes_by_sender: tuple[tuple[int, int], ...] = ()  # (conn, bytes of this piece it delivered)


@dataclass(frozen=True)
class PeerReady:
    """A peer finished its BEP 10 handshake: these are the extensions it speaks."""

    conn: int
    address: tuple[str, int]
    extensions: frozenset[str]


@dataclass(frozen=True)
class MetadataReceived:
    torrent: Torrent


@dataclass(frozen=True)
class DownloadComplete:
    pass


@dataclass(frozen=True)
class PeerDropped:
    conn: int
    address: tuple[str, int]
    reason: str
    banned: bool


@dataclass(frozen=True)
class ExtensionMessageReceived:
    conn: int
    name: str
    payload: bytes


@dataclass(frozen=True)
class SwarmFailed:
    error: SwarmError


SwarmEvent = (PieceVerified | MetadataReceived | DownloadComplete | PeerDropped | ExtensionMessageReceived | SwarmFailed
              | PeerReady)
