"""One connected peer, as the swarm core sees it: the connection's protocol state plus
what the core tracks about it (what it has, what we asked of it, what it asked of us,
how fast it gives and takes, how many hash requests it may still make).

A plain record with a few small helpers that touch only the peer itself; time is always
passed in (`now`), never read.
"""

from __future__ import annotations

from collections import deque

from veilstream.swarm.connection import Phase, PeerConnection
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.extensions import ExtensionHandshake

DEFAULT_PEER_REQQ = 250  # BEP 10: assume this many if a peer does not say (`reqq`)
SNUBBED_QUEUE_DEPTH = 4  # a peer that let a request time out gets few until it delivers again
MAX_UNREQUESTED_BYTES = 16 * 1024 * 1024  # > any queue we keep: blocks cancelled in flight are normal, floods are not
MAX_EARLY_HAVES = 1 << 20  # `have`s remembered before we know the piece count (magnet)
HASH_REQUEST_BURST = 64  # hash requests a peer may make at once...
HASH_REQUEST_RATE_PER_S = 32.0  # ...and per second after that (each may cost us a piece read and hashing)
RATE_SMOOTHING = 0.3  # weight of the newest interval in a peer's moving-average rate


class Peer:
    """Per-connection state: flags (via `wire`), queues, rates, hash-request budget."""

    __slots__ = (
        "conn", "address", "wire", "ext", "has", "early_bitfield", "early_haves", "requests", "uploads",
        "downloaded", "uploaded", "download_rate", "upload_rate", "_dl_mark", "_ul_mark", "connected_at",
        "last_received", "last_sent", "unrequested_bytes", "hash_tokens", "hash_tokens_at", "hash_requests",
        "snubbed",
    )

    def __init__(self, conn: int, address: tuple[str, int], connection: PeerConnection, now: float) -> None:
        self.conn = conn
        self.address = address
        self.wire = connection
        self.ext: ExtensionHandshake | None = None
        self.has: bytearray | None = None
        self.early_bitfield: bytes | None = None
        self.early_haves: set[int] = set()
        self.requests: dict[tuple[int, int], float] = {}  # (piece, begin) → when asked, oldest first
        self.uploads: deque[tuple[int, int, int]] = deque()  # (piece, begin, length) it asked of us
        self.downloaded = self.uploaded = 0
        self.download_rate = self.upload_rate = 0.0  # bytes/s, moving averages
        self._dl_mark = self._ul_mark = 0
        self.connected_at = self.last_received = self.last_sent = now
        self.unrequested_bytes = 0
        self.hash_tokens = float(HASH_REQUEST_BURST)
        self.hash_tokens_at = now
        self.hash_requests: dict[tuple, tuple] = {}  # (base, index, length, proof) → (purpose, detail), when
        self.snubbed = False

    # -- the connection's flags, in BEP 3's words ---------------------------------------------
    @property
    def active(self) -> bool:
        """Handshake done, not closed."""
        return self.wire.phase is Phase.ACTIVE

    @property
    def am_choking(self) -> bool:
        return self.wire.am_choking

    @property
    def peer_interested(self) -> bool:
        return self.wire.peer_interested

    # -- helpers -------------------------------------------------------------------------------
    def queue_depth(self, configured_blocks: int) -> int:
        """How many block requests to keep in flight at this peer."""
        if self.snubbed:
            return SNUBBED_QUEUE_DEPTH
        ext = self.ext
        reqq = ext.request_queue if ext is not None and ext.request_queue else DEFAULT_PEER_REQQ
        return min(configured_blocks, reqq)

    def expired_requests(self, now: float, timeout_s: float) -> list[tuple[int, int]]:
        """Requests asked `timeout_s` or longer ago (oldest first: `requests` keeps ask order)."""
        expired = []
        for key, asked in self.requests.items():
            if now - asked < timeout_s:
                break
            expired.append(key)
        return expired

    def take_hash_token(self, now: float) -> bool:
        """Spend one hash request from the peer's token bucket; False if it has none left."""
        self.hash_tokens = min(HASH_REQUEST_BURST, self.hash_tokens + (now - self.hash_tokens_at) * HASH_REQUEST_RATE_PER_S)
        self.hash_tokens_at = now
        if self.hash_tokens < 1:
            return False
        self.hash_tokens -= 1
        return True

    def update_rates(self, dt: float) -> None:
        """Fold the bytes moved in the last `dt` seconds into the moving averages."""
        dl, ul = self.downloaded - self._dl_mark, self.uploaded - self._ul_mark
        self._dl_mark, self._ul_mark = self.downloaded, self.uploaded
        self.download_rate += RATE_SMOOTHING * (dl / dt - self.download_rate)
        self.upload_rate += RATE_SMOOTHING * (ul / dt - self.upload_rate)

    def count_unrequested(self, length: int) -> None:
        """A block we never asked for (or no longer want) arrived; a flood of them is hostile."""
        self.unrequested_bytes += length
        if self.unrequested_bytes > MAX_UNREQUESTED_BYTES:
            raise RemoteProtocolError("too much data we never asked for")

    def note_early_have(self, index: int) -> None:
        """A `have` before we know the piece count (a magnet): kept to check once we do."""
        if len(self.early_haves) >= MAX_EARLY_HAVES:
            raise RemoteProtocolError("too many have messages")
        self.early_haves.add(index)
