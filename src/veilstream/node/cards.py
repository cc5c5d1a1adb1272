"""Cards as the node uses them: the vault's feed index, a session with the relays, finding
a card by id or prefix, the content a card points at (for `veil play`), and the view
event a viewer leaves after watching; and what the CLI and the API share: the card of a
content the vault holds (with its previews), a card as a JSON document, public keys.

The index lives in `$VEIL_HOME/social/index.sqlite3`; refusals and relay trouble are
logged to `$VEIL_HOME/social/social.log`, never over a command's output.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from veilstream.node.relays import resolve_relays, social_home
from veilstream.node.units import format_ether
from veilstream.social import kinds
from veilstream.social.blobs import BlobStore
from veilstream.social.errors import SocialError
from veilstream.social.events import Event, NostrSigner
from veilstream.social.index import CardRow, FeedIndex
from veilstream.social.relay_client import PublishOutcome, RelayPool
from veilstream.social.sync import card_filter, publish

T = TypeVar("T")
# Sends the user's event: the CLI indexes it and publishes it on its pool (`sync.publish`),
# the node through its feed keeper (`FeedKeeper.publish`).
Publish = Callable[[Event], Awaitable[list[PublishOutcome]]]
log = logging.getLogger("veilstream.social.cards")

# A view is a courtesy to the creator: it may cost `veil play` a few seconds, never a failure.
VIEW_DEADLINE_S = 5.0
VIEW_OPEN_TIMEOUT_S = 2.0
VIEW_REPLY_TIMEOUT_S = 3.0
VIEW_RELAY_WAIT_S = 2.0  # for another command's relay to make way
CARDS_PER_CONTENT_LOOKUP = 20


class UnknownCard(SocialError):
    """No card by that id or prefix, in the index or on the relays."""

    http_status = 404


def open_index(home: Path) -> FeedIndex:
    return FeedIndex(social_home(home) / "index.sqlite3")


def blob_store(home: Path) -> BlobStore:
    """The vault's public blobs (previews), which the node serves at `/<sha256>`."""
    return BlobStore(social_home(home) / "blobs")


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


# --- what the CLI and the API share ---------------------------------------------------------


def parse_pubkey(text: str) -> str:
    """A Nostr public key as 64 lower-case hex digits, from hex or `npub1…`."""
    value = text.strip()
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    if value.startswith("npub1"):
        import nostr_sdk

        try:
            return nostr_sdk.PublicKey.parse(value).to_hex()
        except Exception:  # nostr_sdk raises its own error types for bad bech32
            pass
    raise SocialError(f"{text!r} is not a Nostr public key (64 hex digits or npub1…)")


def npub(pubkey: str) -> str:
    import nostr_sdk

    return nostr_sdk.PublicKey.parse(pubkey).to_bech32()


def card_for_content(
    content_id: str,
    magnet: str,
    price_per_slice_wei: int,
    seeder_share_bps: int,
    duration_s: float | None,
    mime: str,
    title: str,
    description: str = "",
    tags: tuple[str, ...] = (),
    size_bytes: int | None = None,
    previews: tuple[kinds.PreviewRef, ...] = (),
    blob_servers: tuple[str, ...] = (),
    slice_count: int | None = None,
) -> kinds.ContentCard:
    """The card for a content, from explicit fields: the seam between the content layer and the feed."""
    return kinds.ContentCard(
        content_id=content_id, title=title, description=description, tags=tags, mime=mime,
        duration_s=duration_s, magnet=magnet, price_per_slice_wei=price_per_slice_wei,
        seeder_share_bps=seeder_share_bps, size_bytes=size_bytes, previews=previews, blob_servers=blob_servers,
        slice_count=slice_count,
    )


def previews_for(vault, content_id: str, source: Path | None, mime: str,
                 step: Callable[[str], AbstractContextManager] = lambda what: nullcontext()
                 ) -> tuple[kinds.PreviewRef, ...]:
    """Previews of a content the vault holds, kept in its blob store: made from `source` (the
    plaintext file) or from the content decrypted with the vault's keys. `step(what)` wraps
    each long step (the CLI shows a spinner)."""
    from veilstream.content import decrypt_to
    from veilstream.social.previews import make_previews, store_previews

    store = blob_store(vault.home)
    if source is not None:
        return tuple(store_previews(make_previews(source, mime or None), store))
    torrent = vault.torrent(content_id)
    ring = vault.keyring(content_id)
    suffix = Path(torrent.name).suffix if "." in torrent.name else ""
    with tempfile.TemporaryDirectory(prefix="veil-preview-") as scratch:
        plain = Path(scratch) / f"plain{suffix}"
        with step("decrypting for previews…"), plain.open("wb") as handle:
            decrypt_to(torrent, vault.ciphertext_path(content_id), ring, handle)
        with step("making previews…"):
            return tuple(store_previews(make_previews(plain, mime or None), store))


def card_of_held_content(
    vault,
    content_id: str,
    title: str,
    *,
    description: str = "",
    tags: tuple[str, ...] = (),
    with_previews: bool = True,
    source: Path | None = None,
    blob_servers: tuple[str, ...] = (),
    step: Callable[[str], AbstractContextManager] = lambda what: nullcontext(),
) -> kinds.ContentCard:
    """The card `veil post` (and `POST /api/v1/cards`) publishes for a content the unlocked
    `vault` holds: its terms, metadata and magnet, and previews made now."""
    torrent = vault.torrent(content_id)
    manifest = torrent.manifest
    ring = vault.keyring(content_id)
    meta = manifest.metadata(ring.metadata_key) if ring.metadata_key else None
    mime = meta.mime_type if meta else ""
    previews = previews_for(vault, content_id, source, mime, step) if with_previews else ()
    return card_for_content(
        content_id=content_id,
        magnet=torrent.magnet,
        price_per_slice_wei=manifest.terms.price_per_slice_wei,
        seeder_share_bps=manifest.terms.seeder_share_bps,
        duration_s=meta.duration_s if meta else None,
        mime=mime,
        title=title,
        description=description,
        tags=tags,
        size_bytes=meta.size if meta else None,
        previews=previews,
        blob_servers=blob_servers,
        slice_count=torrent.piece_count,
    )


def _ether(wei: int) -> str:
    return format_ether(wei).removesuffix(" ETH")


def card_document(row: CardRow, full: kinds.ContentCard | None = None) -> dict[str, Any]:
    """What a script needs of a card; amounts in wei as decimal strings (they exceed a double)."""
    card = full or row.card
    price = card.price_per_slice_wei
    total = price * card.slice_count if card.slice_count is not None else None
    servers = list(card.blob_servers)
    return {
        "id": row.id,
        "pubkey": row.pubkey,
        "author_name": row.author_name,
        "created_at": row.created_at,
        "title": card.title,
        "description": card.description,
        "tags": list(card.tags),
        "mime": card.mime,
        "duration_s": card.duration_s,
        "size_bytes": card.size_bytes,
        "slice_count": card.slice_count,
        "content_id": card.content_id,
        "magnet": card.magnet,
        "price_per_slice_wei": str(price),
        "price_per_slice_eth": _ether(price),
        "total_wei": None if total is None else str(total),
        "total_eth": None if total is None else _ether(total),
        "seeder_share_bps": card.seeder_share_bps,
        "seeder_part_per_slice_wei": str(price * card.seeder_share_bps // 10_000),
        "previews": [
            {**preview.__dict__, "urls": [f"{server.rstrip('/')}/{preview.sha256}" for server in servers]}
            for preview in card.previews
        ],
        "blob_servers": servers,
        "counts": {"reactions": row.reactions, "comments": row.comments, "reposts": row.reposts, "views": row.views},
        "chain_status": row.chain_status,
    }


def indexed_card_document(index: FeedIndex, row: CardRow) -> dict[str, Any]:
    """`card_document` with what only the event carries (sizes, slice count, blob servers)."""
    event = index.event(row.id)
    return card_document(row, kinds.ContentCard.from_event(event) if event else None)


def card_details(index: FeedIndex, card_id: str) -> dict[str, Any]:
    """A card's document with its comments, oldest first (replies name their parent)."""
    row = index.card(card_id)
    if row is None:
        raise UnknownCard(f"no card {card_id[:16]}… in the local index")
    document = indexed_card_document(index, row)

    def name_of(pubkey: str) -> str:
        profile = index.profile(pubkey)
        return profile["name"] if profile else ""

    document["comments"] = [
        {
            "id": c.id, "parent_id": c.parent_id, "pubkey": c.pubkey, "author_name": name_of(c.pubkey),
            "created_at": c.created_at, "text": c.content,
        }
        for c in index.comments(row.id)
    ]
    return document


async def react(pool: RelayPool, index: FeedIndex, identity: NostrSigner, card_ref: str, emoji: str,
                publish: Publish) -> tuple[Event, list[PublishOutcome]]:
    """React to an event (NIP-25), found by id or card prefix."""
    target = await find_event(pool, index, card_ref)
    event = kinds.build_reaction(identity, kinds.EventRef.of(target), emoji)
    return event, await publish(event)


async def comment(pool: RelayPool, index: FeedIndex, identity: NostrSigner, card_ref: str, text: str,
                  reply_to: str | None, publish: Publish) -> tuple[Event, list[PublishOutcome]]:
    """Comment on a card, or reply to a comment on it (NIP-22)."""
    root = await find_event(pool, index, card_ref)
    parent = await find_event(pool, index, reply_to) if reply_to else None
    if parent is not None and parent.id != root.id and (parent.kind != kinds.COMMENT
                                                        or kinds.comment_root(parent) != root.id):
        raise SocialError(f"{parent.id[:16]}… is not a comment on {root.id[:16]}…: a reply answers a comment "
                          "on the same card")
    event = kinds.build_comment(identity, kinds.EventRef.of(root), text, kinds.EventRef.of(parent) if parent else None)
    return event, await publish(event)


async def repost(pool: RelayPool, index: FeedIndex, identity: NostrSigner, card_ref: str,
                 publish: Publish) -> tuple[Event, list[PublishOutcome]]:
    """Repost an event (NIP-18), the first relay named as where it is found."""
    target = await find_event(pool, index, card_ref)
    event = kinds.build_repost(identity, target, pool.urls[0])
    return event, await publish(event)


async def change_follows(pool: RelayPool, index: FeedIndex, identity: NostrSigner, *, follow: list[str] = (),
                         unfollow: list[str] = (), publish: Publish) -> tuple[list[PublishOutcome], list[str]]:
    """Publish the user's whole follow list (NIP-02) with `follow` added and `unfollow`
    taken out; returns the outcomes and whom the user follows now."""
    me = identity.nostr_pubkey
    # Catch up with our own list first: it may have been changed from another device.
    events, _ = await pool.fetch([{"kinds": [kinds.FOLLOW_LIST], "authors": [me]}])
    index.ingest_many(events)
    current = index.following(me)
    updated = [p for p in dict.fromkeys([*current, *follow]) if p not in unfollow]
    outcomes = await publish(kinds.build_follow_list(identity, updated))
    return outcomes, updated


async def update_profile(pool: RelayPool, index: FeedIndex, identity, *, name: str | None, about: str | None,
                         picture: str | None, publish: Publish) -> list[PublishOutcome]:
    """Publish the user's profile (kind 0, the wallet bound by its signature) with the fields
    given changed and the others as the relays last had them; then the relay list (NIP-65)."""
    me = identity.nostr_pubkey
    events, _ = await pool.fetch([{"kinds": [kinds.PROFILE], "authors": [me]}])
    index.ingest_many(events)
    old = index.profile(me) or {}
    event = kinds.build_profile(
        identity,
        name=name if name is not None else old.get("name", ""),
        about=about if about is not None else old.get("about", ""),
        picture=picture if picture is not None else old.get("picture", ""),
        wallet=identity.wallet,
    )
    outcomes = await publish(event)
    relay_list = kinds.build_relay_list(identity, [kinds.RelayListEntry(url) for url in pool.urls])
    await pool.publish(relay_list)  # NIP-65: where to find us; best effort
    index.ingest(relay_list)
    return outcomes
