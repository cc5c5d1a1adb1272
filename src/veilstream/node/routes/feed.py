"""The feed: cards (all, or by the people followed; newest or most engaged; searched), a
card with its comments; posting a card for a content the vault holds, reacting,
commenting, reposting, following; the user's profile and identity.

What the user does is signed with the vault's Nostr key, put in the local index, and
published through the node's feed keeper to the relays connected now: each relay's
outcome comes back (a relay that is down is refused at once, a slow one within the reply
timeout); when none takes the event the answer is 503 naming each relay's reason.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from veilstream.content import parse_content_id
from veilstream.node import cards
from veilstream.node.cards import (
    UnknownCard,
    card_details,
    card_of_held_content,
    check_card_ref,
    find_card,
    indexed_card_document,
    npub,
    parse_pubkey,
)
from veilstream.social import kinds
from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.relay_client import PublishOutcome
from veilstream.social.sync import engagement_filters

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

MAX_COMMENT_CHARS = 20_000  # a long comment still fits one event (events.MAX_EVENT_BYTES) with its tags
MAX_REACTION_CHARS = 64  # '+', '-' or an emoji (NIP-25); a few code points, with modifiers
MAX_PAGE = 200
MAX_SEARCH_CHARS = 500
# What the index keeps of a profile (FeedIndex stores name, about and picture cut to these).
MAX_NAME_CHARS, MAX_ABOUT_CHARS, MAX_PICTURE_CHARS = 200, 2000, 500
EVENT_ID = r"^[0-9a-f]{64}$"


def _pubkey(value: str) -> str:
    try:
        return parse_pubkey(value)
    except SocialError as exc:
        raise ValueError(str(exc)) from None


def _has_text(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} cannot be empty")
    return value


class CardPost(BaseModel):
    content: str = Field(description="Content id (64 hex) or magnet of a content this vault holds")
    title: str = Field(max_length=kinds.MAX_TITLE)
    description: str = Field("", max_length=kinds.MAX_DESCRIPTION)
    tags: list[str] = Field(default_factory=list, max_length=kinds.MAX_CARD_TAGS)
    previews: bool = Field(True, description="Make previews (thumbnail, clip) from the content, served at /<sha256>")
    blob_servers: list[str] = Field(default_factory=list, max_length=8, description="HTTP servers holding the previews")

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _has_text(value, "a card's title")

    @field_validator("blob_servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value


class Reaction(BaseModel):
    emoji: str = Field("+", min_length=1, max_length=MAX_REACTION_CHARS, description="'+' (like), '-' or an emoji")

    @field_validator("emoji")
    @classmethod
    def _emoji(cls, value: str) -> str:
        return _has_text(value, "a reaction")


class Comment(BaseModel):
    text: str = Field(max_length=MAX_COMMENT_CHARS)
    reply_to: str | None = Field(None, pattern=EVENT_ID, description="Id of the comment on this card it answers")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _has_text(value, "a comment")


class Follow(BaseModel):
    pubkey: str = Field(description="Nostr public key, 64 hex digits or npub1…")

    @field_validator("pubkey")
    @classmethod
    def _key(cls, value: str) -> str:
        return _pubkey(value)


class ProfileChange(BaseModel):
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    about: str | None = Field(None, max_length=MAX_ABOUT_CHARS)
    picture: str | None = Field(None, max_length=MAX_PICTURE_CHARS, description="An http(s) URL, or '' for none")

    @field_validator("picture")
    @classmethod
    def _picture(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://\S+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


def relay_outcomes(outcomes: list[PublishOutcome]) -> list[dict[str, Any]]:
    return [{"relay": o.relay, "accepted": o.accepted, "message": o.message} for o in outcomes]


def published(event: Event, outcomes: list[PublishOutcome]) -> dict[str, Any]:
    return {"event_id": event.id, "relays": relay_outcomes(outcomes)}


def router(node: Node) -> APIRouter:
    api = APIRouter()
    keeper = node.feed
    index, pool, identity = keeper.index, keeper.pool, node.identity
    me = identity.nostr_pubkey

    def person(pubkey: str) -> dict[str, Any]:
        return {"pubkey": pubkey, "npub": npub(pubkey), "profile": index.profile(pubkey)}

    @api.get("/feed")
    async def feed(
        tab: Literal["all", "following"] = "all",
        sort: Literal["new", "top"] = "new",
        q: str | None = Query(None, max_length=MAX_SEARCH_CHARS, description="Words that must all appear (word* for a prefix)"),
        limit: int = Query(30, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
        before: str | None = Query(None, pattern=EVENT_ID, description="A card id: the cards older than it (sort=new)"),
    ) -> dict[str, Any]:
        """Cards from the local index, kept in sync with the relays by the node."""
        if before is not None:
            if sort != "new":
                raise SocialError("`before` pages the newest-first feed; page sort=top with `offset`")
            if index.card(before) is None:
                raise UnknownCard(f"before: no card {before[:16]}… in the index")
        authors = index.following(me) if tab == "following" else None
        if authors == []:
            return {"cards": [], "next": None, "note": "you follow no one yet: POST /api/v1/follows"}
        rows = index.feed(search=q or None, authors=authors, order="top" if sort == "top" else "time",
                          limit=limit, offset=offset, before=before)
        following = None
        if len(rows) == limit:
            following = {"before": rows[-1].id} if sort == "new" else {"offset": offset + limit}
        return {"cards": [indexed_card_document(index, row) for row in rows], "next": following}

    @api.get("/cards/{card_id}")
    async def card(card_id: str) -> dict[str, Any]:
        """A card whole: terms, previews, counts, and its comments (replies name their parent).
        A card the index does not hold is looked for on the relays."""
        ref = check_card_ref(card_id)
        row = index.card(ref)
        if row is None:
            event = await find_card(pool, index, ref)
            fetched, _ = await pool.fetch(engagement_filters([event.id]))
            for raw in fetched:
                keeper.ingest(raw)
            keeper.follow_new_cards()
            ref = event.id
        return card_details(index, ref)

    @api.post("/cards", status_code=201)
    async def post_card(body: CardPost) -> dict[str, Any]:
        """Publish the card of a content this vault holds (what `veil post` does): its terms,
        metadata and magnet, and previews made now from the content."""
        cid = parse_content_id(body.content)
        if cid not in node.roles and all(held.content_id != cid for held in node.vault.contents()):
            raise UnknownCard(f"this node does not hold {cid[:16]}…: a card is posted for a content the vault holds")
        made = await asyncio.to_thread(card_of_held_content, node.vault, cid, body.title,
                                       description=body.description, tags=tuple(body.tags),
                                       with_previews=body.previews, blob_servers=tuple(body.blob_servers))
        event = kinds.build_card(identity, made)
        outcomes = await keeper.publish(event)
        return {**published(event, outcomes), "card": card_details(index, event.id)}

    @api.post("/cards/{card_id}/reactions", status_code=201)
    async def react(card_id: str, body: Reaction) -> dict[str, Any]:
        event, outcomes = await cards.react(pool, index, identity, check_card_ref(card_id), body.emoji, keeper.publish)
        return published(event, outcomes)

    @api.post("/cards/{card_id}/comments", status_code=201)
    async def comment(card_id: str, body: Comment) -> dict[str, Any]:
        """Comment on a card, or (`reply_to`) answer a comment on it (NIP-22)."""
        event, outcomes = await cards.comment(pool, index, identity, check_card_ref(card_id), body.text,
                                              body.reply_to, keeper.publish)
        return published(event, outcomes)

    @api.post("/cards/{card_id}/reposts", status_code=201)
    async def repost(card_id: str) -> dict[str, Any]:
        event, outcomes = await cards.repost(pool, index, identity, check_card_ref(card_id), keeper.publish)
        return published(event, outcomes)

    @api.post("/follows", status_code=201)
    async def follow(body: Follow) -> dict[str, Any]:
        """Follow someone: publishes the user's whole follow list (NIP-02)."""
        outcomes, following = await cards.change_follows(pool, index, identity, follow=[body.pubkey],
                                                         publish=keeper.publish)
        return {"following": following, "relays": relay_outcomes(outcomes)}

    @api.delete("/follows/{pubkey}")
    async def unfollow(pubkey: str) -> dict[str, Any]:
        outcomes, following = await cards.change_follows(pool, index, identity, unfollow=[parse_pubkey(pubkey)],
                                                         publish=keeper.publish)
        return {"following": following, "relays": relay_outcomes(outcomes)}

    @api.get("/following")
    async def following() -> dict[str, Any]:
        return {"following": [person(pubkey) for pubkey in index.following(me)]}

    @api.get("/profile")
    async def profile(pubkey: str | None = Query(None, description="Whose (default: the user's own)")) -> dict[str, Any]:
        target = parse_pubkey(pubkey) if pubkey else me
        if index.profile(target) is None:
            for raw in (await pool.fetch([{"kinds": [kinds.PROFILE], "authors": [target]}]))[0]:
                keeper.ingest(raw)
        return person(target)

    @api.put("/profile")
    async def update_profile(body: ProfileChange) -> dict[str, Any]:
        """Change the user's name, about or picture (the others stay); the profile carries the
        wallet address, bound by the wallet's signature."""
        if body.name is None and body.about is None and body.picture is None:
            raise SocialError("give at least one of name, about, picture")
        outcomes = await cards.update_profile(pool, index, identity, name=body.name, about=body.about,
                                              picture=body.picture, publish=keeper.publish)
        return {**person(me), "relays": relay_outcomes(outcomes)}

    @api.get("/identity")
    async def who() -> dict[str, Any]:
        """The user's Nostr key (hex and npub) and wallet address."""
        return {"nostr_pubkey": me, "npub": npub(me), "wallet_address": node.wallet_address}

    return api
