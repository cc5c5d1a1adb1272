"""Every tunable of the swarm layer, in one frozen structure (after libtorrent's
settings_pack): units are in the names, defaults are what `veil seed`/`veil fetch` use.

Limits that protect us from hostile peers are *not* here: they are protocol constants
beside the code that enforces them (wire.py, peer.py, verify.py, swarm.py, ...), each
with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from veilstream.swarm.errors import SwarmError

KIB = 1024
MIB = 1024 * KIB


class SwarmSettingsError(SwarmError):
    """A swarm setting that cannot be used."""

    exit_code = 2


@dataclass(frozen=True)
class SwarmSettings:
    # -- listening and connecting --------------------------------------------------
    listen_host: str = "127.0.0.1"  # loopback unless told otherwise: a node is private by default
    listen_port: int = 0  # 0: the OS picks a free port
    max_peers_per_content: int = 60  # libtorrent's connections_limit is 200 per session
    # Connections of the whole node, every content's and those still in their handshake:
    # an incoming one past it is closed at once, an outgoing one not started (libtorrent's
    # connections_limit, 200).
    max_connections: int = 200

    # -- rate limits (bytes/s, the whole node: every content shares them; 0: no limit) ----
    upload_rate_limit: int = 0  # blocks we send (libtorrent's upload_rate_limit)
    download_rate_limit: int = 0  # blocks we ask for: requests are paced, as libtorrent does
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 10.0

    # -- choking (upload side) -------------------------------------------------------
    upload_slots: int = 8  # libtorrent's unchoke_slots_limit default
    choke_interval_s: float = 10.0  # BEP 3 reference client rechokes every 10 s
    optimistic_unchoke_interval_s: float = 30.0  # BEP 3: optimistic unchoke rotates every 30 s

    # -- requesting (download side) ------------------------------------------------
    request_queue_depth_blocks: int = 512  # blocks in flight per peer; 8 MiB covers loopback's bandwidth-delay product
    request_timeout_s: float = 20.0  # a block not answered by then is re-requested elsewhere
    endgame_duplicate_requests: int = 2  # at most this many peers asked for one block (endgame, late window blocks)
    endgame: bool = True  # once all is asked for, idle peers duplicate outstanding requests
    whole_pieces_per_peer: bool = False  # a piece's blocks go to one peer (a paying viewer pays per piece)
    sequential: bool = False  # past the streaming window, pieces in order instead of rarest first
    metadata_request_timeout_s: float = 10.0

    # -- streaming -----------------------------------------------------------------
    stream_window_bytes: int = 8 * MIB  # pieces this far past the playback position get deadlines
    deadline_rerequest_s: float = 2.0  # a window block late by this much is also asked of another peer
    fast_peer_rate_fraction: float = 0.5  # peers slower than this share of the best one get no window pieces

    # -- connection upkeep -----------------------------------------------------------
    keepalive_interval_s: float = 60.0  # BEP 3: keep-alives are sent about every two minutes; we halve it
    peer_idle_timeout_s: float = 180.0  # BEP 3: connections silent for two minutes may be dropped; we allow three
    tick_interval_s: float = 0.25  # how often timers (timeouts, rechoke, deadlines) run

    # -- verifying ---------------------------------------------------------------------
    # Threads that hash bulk pieces beside the event loop; 0: the loop hashes each block
    # as it arrives (still hot in the cache). Measured on 2 cores, 1 GiB over loopback:
    # threads had to win the GIL back after every 16 KiB block, pieces queued for hashing
    # by the hundred (each holding its buffer), and the download ran ~20% slower.
    hash_threads: int = 0

    # -- storage -----------------------------------------------------------------------
    read_cache_pieces: int = 8  # whole pieces kept in memory while serving them block by block
    # While a player reads, pieces just written stay in memory up to this much: it asks for
    # each piece soon after it verifies (a paying player may wait a little for the piece's
    # key), and an O_DIRECT write leaves nothing in the page cache (reading back from disk
    # cost half the time of a 512 MiB stream on the test VM). A store nobody reads keeps none.
    recent_pieces_kept_bytes: int = 32 * MIB
    resume_save_interval_s: float = 1.0  # the resume bitfield is persisted at most this often
    write_buffer_high_bytes: int = 8 * MIB  # stop serving a peer whose socket buffer holds this much
    write_buffer_low_bytes: int = 2 * MIB

    # -- discovery -----------------------------------------------------------------------
    tracker_timeout_s: float = 10.0
    tracker_min_interval_s: float = 5.0  # never re-announce faster than this, whatever a tracker says
    tracker_default_interval_s: float = 1800.0  # BEP 3 trackers commonly answer 30 min
    tracker_numwant: int = 50
    dht_enabled: bool = False
    dht_port: int = 0
    dht_query_timeout_s: float = 2.0
    dht_lookup_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("upload_rate_limit", "download_rate_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SwarmSettingsError(f"{name} = {value!r} is not allowed: it must be a whole number of "
                                         "bytes/s, 0 for no limit")
        for name in ("max_connections", "max_peers_per_content"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SwarmSettingsError(f"{name} = {value!r} is not allowed: it must be a whole number, 1 or more")

    def but(self, **changes) -> SwarmSettings:
        """A copy with `changes` applied (CLI flags override the defaults this way)."""
        return replace(self, **changes)
