"""Every tunable of the social layer, in one frozen structure (after libtorrent's
settings_pack): units are in the names, defaults are what the `veil` commands use.

What defines a valid event or card is *not* here: those limits (events.MAX_EVENT_BYTES,
kinds.MAX_TITLE, ...) are protocol constants beside the code that enforces them, the same
on every node, so that a card one node accepts is a card every node accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from veilstream.social.errors import SocialError

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class SocialSettings:
    # -- talking to relays (relay_client, protocol) -------------------------------------
    relay_open_timeout_s: float = 5.0  # a WebSocket handshake (websockets waits 10 s; a relay that slow is no use)
    relay_reply_timeout_s: float = 10.0  # for an OK to a publish or EOSE to a fetch: busy public relays answer in seconds
    relay_close_timeout_s: float = 2.0  # for the relay's close frame as we hang up (websockets waits 10 s)
    relay_event_budget: int = 10_000  # events per subscription before it is closed as a flood; a sync asks for far fewer
    relay_max_violations: int = 50  # protocol violations before we hang up: a few are noise, a stream of them hostile
    relay_retry_first_s: float = 0.5  # a node tries a relay that is down again after this, doubling each time ...
    relay_retry_max_s: float = 30.0  # ... up to this: a relay back up is found within half a minute

    # -- the local index (index) ----------------------------------------------------------
    max_future_s: int = 15 * 60  # clocks drift; an event from further ahead is refused (nostr-relay's is_recent: 1 h)
    rate_limit_events: int = 60  # per author per window of event time: one a second on average; 0: no limit
    rate_limit_window_s: int = 60  # the rate limit counts in windows of `created_at` time, not of arrival
    min_pow_bits: int = 0  # NIP-13 difficulty asked of every event; 0, as most relays: the rate limit guards
    rate_limit_cache_windows: int = 50_000  # (author, window) counts kept in memory; a dropped one costs a query
    ingest_batch_events: int = 2_000  # events per transaction in a bulk ingest: a commit per event would dominate
    index_cache_bytes: int = 64 * MIB  # SQLite's page cache: the id and FTS indexes stay hot
    index_mmap_bytes: int = 256 * MIB  # SQLite reads the index through mmap up to this size
    search_max_words: int = 16  # words of a search that count: each costs an FTS lookup, no title needs more

    # -- catching up with relays (sync) ---------------------------------------------------
    sync_card_limit: int = 500  # the `limit` of a sync's card filter: a page of the newest cards per relay
    sync_ids_per_filter: int = 200  # card ids per engagement filter: relays cap filter sizes, so ask in chunks
    sync_filters_per_request: int = 10  # filters per REQ: relays cap these too
    sync_engagement_cards: int = 2_000  # the newest cards whose reactions, comments, reposts and views a sync asks for
    sync_profile_cards: int = 500  # a sync fetches the profiles of the authors of this many newest cards
    # A node catches up from the newest event it took, less this: events a relay stored late
    # (clocks drift, relays relay) still come; what comes twice is a duplicate, dropped.
    feed_catch_up_overlap_s: int = 120
    feed_cursor_flush_s: float = 1.0  # the feed cursor is written at most this often (and at stop)
    feed_resubscribe_delay_s: float = 1.0  # new cards are followed (engagement, authors) after this pause, in one go

    # -- preview blobs (blobs) ------------------------------------------------------------
    max_blob_bytes: int = 64 * MIB  # far above any preview we make (a clip is < 1 MiB); stops a server that never ends
    blob_fetch_timeout_s: float = 10.0  # for a blob server's answer (urllib's timeout, per socket operation)
    blob_request_timeout_s: float = 10.0  # our blob server waits this long for a request's head
    blob_request_head_bytes: int = 8 * KIB  # a blob request is a line; nginx's default header buffer is 8 KiB

    # -- the embedded relay (embedded_relay) ----------------------------------------------
    # The child migrates its schema and loads SQLAlchemy first: seconds on a laptop, tens of
    # seconds on a loaded 2-core CI machine.
    relay_startup_timeout_s: float = 60.0
    relay_stop_timeout_s: float = 10.0  # after its stdin closes, the child has this long to exit before it is killed
    relay_listen_backlog: int = 512  # clients wait here while the child starts (Linux caps it at net.core.somaxconn)
    relay_max_content_chars: int = 60_000  # nostr-relay checks content length; our own frame limit is 64 KiB
    relay_subscription_limit: int = 64  # open subscriptions per connection (nostr-relay's default is 32)
    relay_max_filter_limit: int = 10_000  # the largest `limit` served (nostr-relay's default 6000): relay_event_budget
    relay_idle_timeout_s: float = 3_600.0  # nostr-relay's message_timeout: a silent connection is closed (its default 1800)
    relay_concurrent_adds: int = 2  # nostr-relay's num_concurrent_adds; SQLite takes one writer at a time anyway

    # -- previews made at publish time (previews) -----------------------------------------
    preview_video_clip_s: float = 10.0  # a video's free clip: enough to judge it, too little to be the content
    preview_audio_clip_s: float = 30.0  # audio is judged by its first half minute, a music shop's usual sample
    preview_thumbnail_px: int = 640  # a thumbnail fits this square: a feed card shows it smaller, sharp on dense screens
    preview_image_px: int = 1024  # an image's preview fits this square
    preview_thumbnail_at_fraction: float = 0.1  # the thumbnail frame is this far into a video, past fades from black ...
    preview_thumbnail_at_most_s: float = 5.0  # ... but no later than this
    preview_clip_max_height_px: int = 480  # clips are scaled down to 480p at most: small, still watchable
    preview_clip_max_fps: int = 30  # frame rates above this are dropped to it
    preview_clip_video_bitrate_bps: int = 400_000  # H.264 at 480p: ~0.5 MB for a 10 s clip
    preview_clip_audio_bitrate_bps: int = 64_000  # AAC stereo at this rate is fine for a sample
    preview_audio_rate_hz: int = 44_100  # CD rate, which AAC encoders and every browser take
    preview_jpeg_quality: int = 82  # Pillow's scale is 0-95 (default 75); past ~85 files grow fast for little to see

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            what, allows = _RULES.get(item.name) or (_SECONDS if item.name.endswith("_s") else _COUNT)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not allows(value):
                raise SocialError(f"{item.name} must be {what}")

    def but(self, **changes) -> SocialSettings:
        """A copy with `changes` applied (CLI flags override the defaults this way)."""
        return replace(self, **changes)


def _whole(value: float) -> bool:
    return isinstance(value, int)


# What each setting allows: (said in the error, test). By default a name ending in `_s` is a
# positive number of seconds and any other a positive whole number.
_SECONDS = ("a positive number of seconds", lambda v: v > 0)
_COUNT = ("a positive whole number", lambda v: _whole(v) and v > 0)
_RULES = {
    "rate_limit_window_s": ("a positive whole number of seconds", lambda v: _whole(v) and v > 0),
    "rate_limit_events": ("a whole number, 0 or more (0: no rate limit)", lambda v: _whole(v) and v >= 0),
    "min_pow_bits": ("a whole number of bits from 0 to 256", lambda v: _whole(v) and 0 <= v <= 256),
    "preview_thumbnail_at_fraction": ("a number from 0 to 1", lambda v: 0 <= v <= 1),
    "preview_thumbnail_at_most_s": ("a number of seconds, 0 or more", lambda v: v >= 0),
    "preview_jpeg_quality": ("a whole number from 1 to 95 (Pillow's scale)", lambda v: _whole(v) and 1 <= v <= 95),
}
