"""Moving the feed between relays and the local index: publish, and catch up."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from veilstream.social import kinds
from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.index import FeedIndex, IngestReport
from veilstream.social.relay_client import PublishOutcome, RelayPool
from veilstream.social.settings import SocialSettings

log = logging.getLogger(__name__)

ENGAGEMENT_KINDS = [kinds.REACTION, kinds.REPOST, kinds.GENERIC_REPOST, kinds.COMMENT, kinds.VIEW]


async def publish(pool: RelayPool, index: FeedIndex, event: Event) -> list[PublishOutcome]:
    """Index our own event (through the same gate as everyone's), then send it to the relays."""
    result = index.ingest(event)
    if not result.accepted and result.reason != "duplicate":
        raise SocialError(f"the local index refused the event: {result.reason}")
    return await pool.publish_or_raise(event)


def card_filter(
    since: int | None = None, authors: Iterable[str] | None = None, limit: int = SocialSettings.sync_card_limit
) -> dict:
    query: dict = {"kinds": [kinds.CARD], "#L": [kinds.LABEL_NAMESPACE], "limit": limit}
    if since:
        query["since"] = since
    if authors is not None:
        query["authors"] = list(authors)
    return query


def engagement_filters(
    card_ids: list[str], since: int | None = None, ids_per_filter: int = SocialSettings.sync_ids_per_filter
) -> list[dict]:
    filters = []
    for start in range(0, len(card_ids), ids_per_filter):
        chunk = card_ids[start:start + ids_per_filter]
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
    settings: SocialSettings | None = None,
) -> IngestReport:
    """Fetch cards, their engagement, their authors' profiles, and our own lists; index all.
    The sizes of what is asked come from `settings` (default: the pool's)."""
    settings = pool.settings if settings is None else settings
    report = IngestReport()

    async def take(filters: list[dict]) -> None:
        events, _ = await pool.fetch(filters)
        batch = index.ingest_many(events)
        report.by_reason.update(batch.by_reason)

    personal = []
    if me:
        personal.append({"kinds": [kinds.FOLLOW_LIST, kinds.RELAY_LIST, kinds.PROFILE], "authors": [me]})
    await take([card_filter(since, authors, settings.sync_card_limit), *personal])
    card_ids = index.card_ids()[:settings.sync_engagement_cards]
    if card_ids:
        filters = engagement_filters(card_ids, since, settings.sync_ids_per_filter)
        per_request = settings.sync_filters_per_request
        for start in range(0, len(filters), per_request):
            await take(filters[start:start + per_request])
    authors_seen = sorted({row.pubkey for row in index.feed(limit=settings.sync_profile_cards)})
    if authors_seen:
        await take([{"kinds": [kinds.PROFILE], "authors": authors_seen}])
    log.info("sync: %s", dict(report.by_reason))
    return report
