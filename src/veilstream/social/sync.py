"""Moving the feed between relays and the local index: publish, and catch up."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from veilstream.social import kinds
from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.index import FeedIndex, IngestReport
from veilstream.social.relay_client import PublishOutcome, RelayPool

log = logging.getLogger(__name__)

CARD_FILTER_LIMIT = 500
IDS_PER_FILTER = 200  # relays cap filter sizes; ask about cards in chunks
ENGAGEMENT_KINDS = [kinds.REACTION, kinds.REPOST, kinds.GENERIC_REPOST, kinds.COMMENT, kinds.VIEW]


async def publish(pool: RelayPool, index: FeedIndex, event: Event) -> list[PublishOutcome]:
    """Index our own event (through the same gate as everyone's), then send it to the relays."""
    result = index.ingest(event)
    if not result.accepted and result.reason != "duplicate":
        raise SocialError(f"the local index refused the event: {result.reason}")
    return await pool.publish_or_raise(event)


def card_filter(since: int | None = None, authors: Iterable[str] | None = None, limit: int = CARD_FILTER_LIMIT) -> dict:
    query: dict = {"kinds": [kinds.CARD], "#L": [kinds.LABEL_NAMESPACE], "limit": limit}
    if since:
        query["since"] = since
    if authors is not None:
        query["authors"] = list(authors)
    return query


def engagement_filters(card_ids: list[str], since: int | None = None) -> list[dict]:
    filters = []
    for start in range(0, len(card_ids), IDS_PER_FILTER):
        chunk = card_ids[start:start + IDS_PER_FILTER]
        by_e = {"kinds": ENGAGEMENT_KINDS, "#e": chunk}
        by_root = {"kinds": [kinds.COMMENT], "#E": chunk}  # NIP-22 replies name the card only as root
        if since:
            by_e["since"] = by_root["since"] = since
        filters.extend([by_e, by_root])
    return filters


async def sync(
    pool: RelayPool,
    index: FeedIndex,
    *,
    me: str | None = None,
    since: int | None = None,
    authors: Iterable[str] | None = None,
) -> IngestReport:
    """Fetch cards, their engagement, their authors' profiles, and our own lists; index all."""
    report = IngestReport()

    async def take(filters: list[dict]) -> None:
        events, _ = await pool.fetch(filters)
        batch = index.ingest_many(events)
        report.by_reason.update(batch.by_reason)

    personal = []
    if me:
        personal.append({"kinds": [kinds.FOLLOW_LIST, kinds.RELAY_LIST, kinds.PROFILE], "authors": [me]})
    await take([card_filter(since, authors), *personal])
    card_ids = index.card_ids()[:2_000]
    if card_ids:
        filters = engagement_filters(card_ids, since)
        for start in range(0, len(filters), 10):
            await take(filters[start:start + 10])
    authors_seen = sorted({row.pubkey for row in index.feed(limit=500)})
    if authors_seen:
        await take([{"kinds": [kinds.PROFILE], "authors": authors_seen}])
    log.info("sync: %s", dict(report.by_reason))
    return report
