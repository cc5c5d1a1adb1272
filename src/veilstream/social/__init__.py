"""Social: a signed feed of content cards on Nostr.

    settings        SocialSettings: every tunable of the layer (timeouts, budgets, limits, preview sizes)
    errors          SocialError, and InvalidEvent with its machine-friendly reason
    events          NIP-01 serialization, ids, BIP-340 signatures, strict parsing
    kinds           the feed's kinds: cards (NIP-94), comments, reactions, reposts, profiles, lists, views
    protocol        the client side of the relay protocol as a state machine; its output is RelayEvents
    relay_client    asyncio transport for it: one relay (RelayConnection), a pool (RelayPool), or
                    relays kept connected with backoff for a long-running node (StandingPool)
    embedded_relay  the `nostr-relay` server in a child process, on loopback
    index           SQLite index: verification gate, FTS5 search, counts, follows, rate limit
    sync            moving the feed between relays and the index: publish, and catch up
    blobs           SHA-256-named public blobs: a store, a Blossom-style server, a fetcher
    previews        thumbnails and clips made at publish time (PyAV, Pillow)

Sans-IO (no clock, no sockets, no asyncio): protocol, and the plain data of settings and
errors. Pure but for the clock: events and kinds, whose `sign_event` and builders read it
only when given no `created_at`. The rest does IO: relay_client, embedded_relay and sync
(asyncio, sockets, a child process), index (SQLite; its clock is injectable), blobs (files,
HTTP) and previews (files).

Imports nothing of Veilstream but `atomic` and `errors`; `identity.Identity` signs through
the `events.NostrSigner` protocol, without an import.
"""

from veilstream.social.errors import InvalidEvent, SocialError
from veilstream.social.events import Event, NostrKey, compute_event_id, parse_verified, sign_event, verify_event
from veilstream.social.index import FeedIndex, IngestResult, RateLimit
from veilstream.social.kinds import ContentCard, EventRef, PreviewRef, Profile
from veilstream.social.settings import SocialSettings

__all__ = [
    "ContentCard", "Event", "EventRef", "FeedIndex", "IngestResult", "InvalidEvent", "NostrKey",
    "PreviewRef", "Profile", "RateLimit", "SocialError", "SocialSettings", "compute_event_id", "parse_verified",
    "sign_event", "verify_event",
]
