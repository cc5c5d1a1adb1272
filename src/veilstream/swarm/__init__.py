"""The swarm layer: a BitTorrent-compatible peer protocol (BEP 3, 9, 10, 52) with a
sans-IO core, an asyncio transport, a streaming piece picker, verified piece storage,
HTTP tracker client and server (BEP 3/23) and a DHT node (BEP 5).

    wire.py         message vocabulary, framing and parsing
    connection.py   one connection's protocol state (handshake, flags, ordering)
    extensions.py   BEP 10 handshake and extension registry; BEP 9 metadata messages
    hashes.py       BEP 52 hash requests: answering and checking
    picker.py       which block next: deadlines, rarest first, endgame
    events.py       the core's event vocabulary, delivered to every subscriber
    swarm.py        the protocol core for one content across its peers
    storage.py      verified pieces on disk, resumable
    node.py         asyncio transport: sockets, timers, tasks; a `Transfer` per content
    tracker.py      HTTP tracker client and embedded tracker
    dht.py          BEP 5 DHT node
    settings.py     every tunable, one frozen dataclass

Only verified ciphertext moves through here; no key is ever needed.
"""

from veilstream.swarm.errors import (
    FetchError,
    ListenError,
    LocalProtocolError,
    RemoteProtocolError,
    PieceStorageError,
    SwarmError,
    TrackerError,
)
from veilstream.swarm.events import (
    DownloadComplete,
    ExtensionMessageReceived,
    MetadataReceived,
    PeerDropped,
    PeerReady,
    PieceVerified,
    SwarmEvent,
    SwarmFailed,
)
from veilstream.swarm.extensions import UT_METADATA, ExtensionRegistry
from veilstream.swarm.node import SwarmNode, Transfer, run
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStore
from veilstream.swarm.swarm import Swarm
from veilstream.swarm.tracker import TrackerServer, TrackerState

__all__ = [
    "DownloadComplete", "ExtensionMessageReceived", "ExtensionRegistry", "FetchError", "ListenError",
    "LocalProtocolError", "MetadataReceived", "PeerDropped", "PeerReady", "PieceStorageError", "PieceStore",
    "PieceVerified", "RemoteProtocolError", "Swarm", "SwarmError", "SwarmEvent", "SwarmFailed", "SwarmNode",
    "SwarmSettings", "TrackerError", "TrackerServer", "TrackerState", "Transfer", "UT_METADATA", "run",
]
