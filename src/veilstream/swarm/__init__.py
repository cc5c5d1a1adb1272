"""The swarm layer: a BitTorrent-compatible peer protocol (BEP 3, 9, 10, 52) with a
sans-IO core, an asyncio transport, a streaming piece picker, verified piece storage,
HTTP tracker client and server (BEP 3/23) and a DHT node (BEP 5).

    wire.py          message vocabulary, framing and parsing
    connection.py    one connection's protocol state (handshake, flags, ordering)
    extensions.py    BEP 10 handshake and extension registry; BEP 9 metadata messages
    hashes.py        BEP 52 hash requests: answering and checking
    picker.py        which block next: deadlines, rarest first, endgame
    events.py        the core's event vocabulary, delivered to every subscriber
    peer.py          one connected peer's record: flags, queues, rates, hash budget
    magnet.py        metadata fetch: the info dict (BEP 9), then the piece layer (BEP 52)
    verify.py        piece verification: blocks in; Verified / Bad / NeedBlockHashes out
    choker.py        upload slots: whom to unchoke, choke, optimistically unchoke
    rate.py          rate limits: token buckets, node-wide and per content
    swarm.py         the protocol core for one content across its peers (the coordinator)
    storage.py       the PieceStorage protocol; verified pieces on disk, resumable
    memory_store.py  verified pieces in memory (a PieceStorage for tests and small jobs)
    node.py          asyncio transport: sockets, timers, tasks; a `Transfer` per content
    tracker.py       HTTP tracker client and embedded tracker
    dht.py           BEP 5 DHT: the DhtCore state machine and the asyncio DhtNode
    settings.py      every tunable, one frozen dataclass

Sans-IO (no clock, no sockets, no asyncio): wire.py, connection.py, extensions.py,
hashes.py, picker.py, events.py, peer.py, magnet.py, verify.py, choker.py, rate.py, swarm.py,
memory_store.py, and dht.py's DhtCore. Time comes in as `now`; the only IO the core
reaches is the `PieceStorage` it is given.

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
from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.storage import PieceStorage, PieceStore
from veilstream.swarm.swarm import Swarm
from veilstream.swarm.tracker import TrackerServer, TrackerState

__all__ = [
    "DownloadComplete", "ExtensionMessageReceived", "ExtensionRegistry", "FetchError", "ListenError",
    "LocalProtocolError", "MemoryPieceStore", "MetadataReceived", "PeerDropped", "PeerReady", "PieceStorage",
    "PieceStorageError", "PieceStore", "PieceVerified", "RemoteProtocolError", "Swarm", "SwarmError", "SwarmEvent", "SwarmFailed", "SwarmNode",
    "SwarmSettings", "TrackerError", "TrackerServer", "TrackerState", "Transfer", "UT_METADATA", "run",
]
