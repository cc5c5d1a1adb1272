"""Social: a signed feed of content cards on Nostr.

    events        NIP-01 serialization, ids, BIP-340 signatures, strict parsing
    kinds         cards (NIP-94), comments (NIP-22), reactions (NIP-25), reposts (NIP-18),
                  profiles with a wallet binding, follow lists, relay lists (NIP-65), views
    protocol      the relay protocol as a sans-IO state machine
    relay_client  asyncio transport for it: one relay, or a pool
    embedded_relay  the `nostr-relay` server in a child process, on loopback
    index         SQLite index: verification gate, FTS5 search, counts, follows, rate limit
    previews      thumbnails and clips (PyAV, Pillow); blobs: SHA-256-named store, server, fetch

Imports nothing of Veilstream but `identity` (whose `Identity` signs) and `errors`.
"""

from veilstream.social.errors import InvalidEvent, SocialError
from veilstream.social.events import Event, NostrKey, compute_event_id, parse_verified, sign_event, verify_event
from veilstream.social.index import FeedIndex, IngestResult, RateLimit
from veilstream.social.kinds import ContentCard, EventRef, PreviewRef, Profile

__all__ = [
    "ContentCard", "Event", "EventRef", "FeedIndex", "IngestResult", "InvalidEvent", "NostrKey",
    "PreviewRef", "Profile", "RateLimit", "SocialError", "compute_event_id", "parse_verified",
    "sign_event", "verify_event",
]
