"""Cards as the node uses them: the vault's feed index, a session with the relays, finding
a card by id or prefix, the content a card points at (for `veil play`), and the view
event a viewer leaves after watching.

The index lives in `$VEIL_HOME/social/index.sqlite3`; refusals and relay trouble are
logged to `$VEIL_HOME/social/social.log`, never over a command's output.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

from veilstream.node.relays import resolve_relays, social_home
from veilstream.social import kinds
from veilstream.social.errors import SocialError
from veilstream.social.events import Event, NostrSigner
from veilstream.social.index import FeedIndex
from veilstream.social.relay_client import RelayPool
from veilstream.social.sync import card_filter, publish

T = TypeVar("T")
log = logging.getLogger("veilstream.social.cards")

# A view is a courtesy to the creator: it may cost `veil play` a few seconds, never a failure.
VIEW_DEADLINE_S = 5.0
VIEW_OPEN_TIMEOUT_S = 2.0
VIEW_REPLY_TIMEOUT_S = 3.0
VIEW_RELAY_WAIT_S = 2.0  # for another command's relay to make way
CARDS_PER_CONTENT_LOOKUP = 20


class UnknownCard(SocialError):
    """No card by that id or prefix, in the index or on the relays."""


def open_index(home: Path) -> FeedIndex:
    return FeedIndex(social_home(home) / "index.sqlite3")


def log_to_file(home: Path) -> Path:
    path = social_home(home) / "social.log"
    logger = logging.getLogger("veilstream.social")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return path


def with_pool(
    home: Path,
    relays: list[str],
    work: Callable[[RelayPool, FeedIndex], Awaitable[T]],
    *,
    on_wait: Callable[[str], None] | None = None,
    **relay_options: float,
) -> T:
    """Run `work` with a pool on the command's relays and the vault's index; both closed after."""
    log_to_file(home)
    with ExitStack() as stack:
        urls = resolve_relays(home, relays, stack, on_wait=on_wait)
        index = stack.enter_context(open_index(home))

        async def go() -> T:
            async with RelayPool(urls, **relay_options) as pool:
                return await work(pool, index)

        return asyncio.run(go())


def check_card_ref(text: str) -> str:
    """A card id or prefix as given, checked before any relay is asked: 8–64 hex digits."""
    ref = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", ref):
        raise SocialError(f"{text!r} is not a card id (8–64 hex digits)")
    return ref


def _event_id(text: str, original: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise SocialError(f"{original!r} is not an event id (64 hex digits)")
    return text


async def find_event(pool: RelayPool, index: FeedIndex, id_or_prefix: str) -> Event:
    """An event by id, or a card by a unique prefix: from the index, else the relays (then indexed).

    A prefix the index does not know is looked for among the relays' recent cards: relays
    match only whole ids.
    """
    text = id_or_prefix.strip().lower()
    if len(text) < 64:
        row = index.card(text)  # checks the prefix's shape, refuses an ambiguous one
        if row is None:
            events, _ = await pool.fetch([card_filter()])
            index.ingest_many(events)
            row = index.card(text)
        if row is None:
            raise UnknownCard(f"no card starting {text!r} in the local index or on the relays")
        text = row.id
    event_id = _event_id(text, id_or_prefix)
    event = index.event(event_id)
    if event is None:
        events, _ = await pool.fetch([{"ids": [event_id]}])
        for raw in events:
            if index.ingest(raw).reason in ("stored", "duplicate"):
                event = index.event(event_id)
    if event is None:
        raise UnknownCard(f"event {event_id[:16]}… is on none of the relays")
    return event


async def find_card(pool: RelayPool, index: FeedIndex, id_or_prefix: str) -> Event:
    event = await find_event(pool, index, id_or_prefix)
    if event.kind != kinds.CARD:
        raise UnknownCard(f"event {event.id[:16]}… is not a card (kind {event.kind})")
    return event


def resolve_card(home: Path, card_ref: str, relays: list[str]) -> str:
    """The magnet a card points at (its content id if it carries none), for `veil play CARD`.

    `card_ref` is a card id or a unique prefix of 8+ hex digits, found in the index or on
    the relays; raises `UnknownCard` (or `SocialError` for an ambiguous or malformed one).
    """
    with open_index(home) as index:
        row = index.card(check_card_ref(card_ref))
    if row is not None:
        return row.card.magnet or row.card.content_id

    async def look_up(pool: RelayPool, index: FeedIndex) -> str:
        card = kinds.ContentCard.from_event(await find_card(pool, index, card_ref))
        return card.magnet or card.content_id

    return with_pool(home, relays, look_up)


async def _card_to_view(pool: RelayPool, index: FeedIndex, content_id: str, card_id: str | None) -> Event | None:
    if card_id:
        return await find_card(pool, index, card_id)
    if not index.cards_of_content(content_id):
        events, _ = await pool.fetch([{"kinds": [kinds.CARD], "#i": [content_id], "limit": CARDS_PER_CONTENT_LOOKUP}])
        index.ingest_many(events)
    cards = index.cards_of_content(content_id)
    # The oldest card: most likely the creator's own, posted when the content was published.
    return index.event(cards[0]) if cards else None


def publish_view(
    home: Path, identity: NostrSigner, content_id: str, relays: list[str], *, card_id: str | None = None
) -> None:
    """Tell the feed `identity` watched `content_id`: a view (kind 1065) of its card.

    Best effort and bounded: within about `VIEW_DEADLINE_S`, and a relay that is down, slow
    or refusing costs a line in `social.log`, never an exception. `card_id` names the card
    when the play started from one; else the content's oldest known card is viewed.
    """
    content_id = content_id.strip().lower()
    try:
        log_to_file(home)
        with ExitStack() as stack:
            urls = resolve_relays(home, relays, stack, wait_s=VIEW_RELAY_WAIT_S, startup_timeout_s=VIEW_DEADLINE_S)
            index = stack.enter_context(open_index(home))

            async def go() -> None:
                async with asyncio.timeout(VIEW_DEADLINE_S):
                    async with RelayPool(urls, open_timeout=VIEW_OPEN_TIMEOUT_S, reply_timeout=VIEW_REPLY_TIMEOUT_S) as pool:
                        card = await _card_to_view(pool, index, content_id, card_id)
                        if card is None:
                            log.info("view of %s… not published: no card points at it", content_id[:16])
                            return
                        await publish(pool, index, kinds.build_view(identity, kinds.EventRef.of(card)))
                        log.info("view of card %s… published", card.id[:16])

            asyncio.run(go())
    except (SocialError, OSError, TimeoutError) as exc:
        log.warning("view of %s… not published: %s", content_id[:16], exc or "timed out")
