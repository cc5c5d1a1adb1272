"""The event kinds of the feed: how each is built, and how each is read back.

| kind  | what | spec |
|-------|------|------|
| 0     | profile, with the wallet address and the wallet's signature binding it | NIP-01 |
| 3     | follow list | NIP-02 |
| 7     | reaction | NIP-25 |
| 6, 16 | repost (6 for text notes, 16 generic: our cards) | NIP-18 |
| 1063  | content card: file metadata with the content id (a BitTorrent v2 info-hash) | NIP-94 |
| 1111  | comment | NIP-22 |
| 10002 | relay list | NIP-65 |
| 1065  | view: "I watched this card", one counted per viewer | Veilstream |

Readers raise `InvalidEvent` with a reason: they run on input from strangers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.messages import encode_defunct

from veilstream.social.errors import InvalidEvent
from veilstream.social.events import Event, NostrSigner, parse_count, sign_event

PROFILE = 0
FOLLOW_LIST = 3
REPOST = 6
REACTION = 7
GENERIC_REPOST = 16
CARD = 1063
VIEW = 1065
COMMENT = 1111
RELAY_LIST = 10002

KNOWN_KINDS = frozenset({PROFILE, FOLLOW_LIST, REPOST, REACTION, GENERIC_REPOST, CARD, VIEW, COMMENT, RELAY_LIST})
REPLACEABLE_KINDS = frozenset({PROFILE, FOLLOW_LIST, RELAY_LIST})

LABEL_NAMESPACE = "veilstream"  # NIP-32 label: lets a relay filter our cards out of all kind-1063 events
CARD_LABEL = "content-card"

MAX_TITLE = 300
MAX_DESCRIPTION = 20_000
MAX_CARD_TAGS = 32
MAX_TAG_LENGTH = 64
MAX_PREVIEWS = 8
MAX_FOLLOWS = 10_000

_HEX = frozenset("0123456789abcdef")


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and _HEX.issuperset(value)


def normalize_tag(tag: str) -> str:
    """Hashtags compare lower-case, without '#', per NIP-24."""
    return tag.strip().lstrip("#").strip().lower()


# --- content cards -------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewRef:
    """A preview blob named by its SHA-256 (served as `GET /<sha256>`)."""

    sha256: str
    mime: str
    role: str  # "thumbnail", "clip" or "image"
    size: int


@dataclass(frozen=True)
class ContentCard:
    content_id: str
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    mime: str = ""
    duration_s: float | None = None
    magnet: str = ""
    price_per_slice_wei: int = 0
    seeder_share_bps: int = 0
    size_bytes: int | None = None
    previews: tuple[PreviewRef, ...] = ()
    blob_servers: tuple[str, ...] = field(default=())
    slice_count: int | None = None  # what the whole costs: price_per_slice_wei · slice_count

    def to_tags(self) -> list[list[str]]:
        tags = [
            ["L", LABEL_NAMESPACE],
            ["l", CARD_LABEL, LABEL_NAMESPACE],
            ["i", self.content_id],
            ["title", self.title],
            ["alt", f"Veilstream content: {self.title}"],  # NIP-31: what other clients show
            ["terms", str(self.price_per_slice_wei), str(self.seeder_share_bps)],
        ]
        if self.magnet:
            tags.append(["magnet", self.magnet])
        if self.mime:
            tags.append(["m", self.mime])
        if self.duration_s is not None:
            tags.append(["duration", f"{self.duration_s:.3f}"])
        if self.size_bytes is not None:
            tags.append(["size", str(self.size_bytes)])
        if self.slice_count is not None:
            tags.append(["slices", str(self.slice_count)])
        for preview in self.previews:
            tags.append(["preview", preview.sha256, preview.mime, preview.role, str(preview.size)])
            if preview.role in ("thumbnail", "image"):
                tags.append(["thumb", preview.sha256])
        for server in self.blob_servers:
            tags.append(["server", server])
        tags.extend(["t", tag] for tag in self.tags)
        return tags

    @classmethod
    def from_event(cls, event: Event) -> ContentCard:
        if event.kind != CARD:
            raise InvalidEvent("malformed-card", f"kind {event.kind} is not a card")
        first: dict[str, tuple[str, ...]] = {}
        for tag in event.tags:
            if tag and tag[0] not in first:
                first[tag[0]] = tag

        def value(name: str) -> str | None:
            tag = first.get(name)
            return tag[1] if tag is not None and len(tag) > 1 else None

        content_id = value("i")
        if content_id is None or not _is_hex(content_id, 64):
            raise InvalidEvent("malformed-card", "no content id (tag 'i', 64 hex digits)")
        title = value("title") or ""
        if not title.strip() or len(title) > MAX_TITLE:
            raise InvalidEvent("malformed-card", f"a title of 1–{MAX_TITLE} characters is required")
        if len(event.content) > MAX_DESCRIPTION:
            raise InvalidEvent("malformed-card", "description too long")
        terms = first.get("terms")
        price, share = 0, 0
        if terms is not None:
            price = parse_count(terms[1], max_digits=78) if len(terms) >= 3 else None  # 78 digits: a uint256
            share = parse_count(terms[2]) if len(terms) >= 3 else None
            if price is None or share is None or share > 10_000:
                raise InvalidEvent("malformed-card", "terms are [price_per_slice_wei, seeder_share_bps]")
        duration = value("duration")
        duration_s = None
        if duration is not None:
            try:
                duration_s = float(duration)
            except ValueError:
                raise InvalidEvent("malformed-card", "duration is not a number") from None
            if not math.isfinite(duration_s) or duration_s < 0:
                raise InvalidEvent("malformed-card", "duration is not a length of time")
        size = value("size")
        slices = value("slices")
        previews = []
        for tag in event.tags:
            if tag and tag[0] == "preview":
                preview_size = parse_count(tag[4]) if len(tag) >= 5 else None
                if preview_size is None or not _is_hex(tag[1], 64):
                    raise InvalidEvent("malformed-card", "preview is [sha256, mime, role, size]")
                previews.append(PreviewRef(tag[1], tag[2], tag[3], preview_size))
        if len(previews) > MAX_PREVIEWS:
            raise InvalidEvent("malformed-card", "too many previews")
        hashtags = tuple(dict.fromkeys(normalize_tag(t) for t in event.tag_values("t") if normalize_tag(t)))
        if len(hashtags) > MAX_CARD_TAGS or any(len(t) > MAX_TAG_LENGTH for t in hashtags):
            raise InvalidEvent("malformed-card", "too many or too long tags")
        return cls(
            content_id=content_id,
            title=title.strip(),
            description=event.content,
            tags=hashtags,
            mime=value("m") or "",
            duration_s=duration_s,
            magnet=value("magnet") or "",
            price_per_slice_wei=price,
            seeder_share_bps=share,
            size_bytes=parse_count(size) if size is not None else None,
            slice_count=parse_count(slices) if slices is not None else None,
            previews=tuple(previews),
            blob_servers=tuple(event.tag_values("server")),
        )


def build_card(signer: NostrSigner, card: ContentCard, created_at: int | None = None, pow_bits: int = 0) -> Event:
    if not card.title.strip():
        raise InvalidEvent("malformed-card", "a card needs a title")
    card = ContentCard(**{**card.__dict__, "tags": tuple(t for t in (normalize_tag(x) for x in card.tags) if t)})
    event = sign_event(signer, CARD, card.description, card.to_tags(), created_at, pow_bits)
    ContentCard.from_event(event)  # what we publish must pass our own reader
    return event


# --- references between events -------------------------------------------------------------


@dataclass(frozen=True)
class EventRef:
    """Enough of an event to point at it from a comment, reaction, repost or view."""

    id: str
    pubkey: str
    kind: int
    relay_hint: str = ""

    @classmethod
    def of(cls, event: Event, relay_hint: str = "") -> EventRef:
        return cls(event.id, event.pubkey, event.kind, relay_hint)


def build_reaction(signer: NostrSigner, target: EventRef, content: str = "+", created_at: int | None = None) -> Event:
    tags = [["e", target.id, target.relay_hint, target.pubkey], ["p", target.pubkey], ["k", str(target.kind)]]
    return sign_event(signer, REACTION, content, tags, created_at)


def build_comment(
    signer: NostrSigner,
    root: EventRef,
    text: str,
    parent: EventRef | None = None,
    created_at: int | None = None,
) -> Event:
    """NIP-22: upper-case tags name the root (the card), lower-case the direct parent."""
    if not text.strip():
        raise InvalidEvent("malformed-comment", "a comment needs text")
    parent = parent or root
    tags = [
        ["E", root.id, root.relay_hint, root.pubkey],
        ["K", str(root.kind)],
        ["P", root.pubkey],
        ["e", parent.id, parent.relay_hint, parent.pubkey],
        ["k", str(parent.kind)],
        ["p", parent.pubkey],
    ]
    return sign_event(signer, COMMENT, text, tags, created_at)


def build_repost(signer: NostrSigner, target: Event, relay_hint: str = "", created_at: int | None = None) -> Event:
    """NIP-18: the reposted event travels inside, so a client can show it without a lookup."""
    kind = REPOST if target.kind == 1 else GENERIC_REPOST
    tags = [["e", target.id, relay_hint], ["p", target.pubkey], ["k", str(target.kind)]]
    return sign_event(signer, kind, target.to_json(), tags, created_at)


def build_view(signer: NostrSigner, card: EventRef, created_at: int | None = None) -> Event:
    tags = [["e", card.id, card.relay_hint, card.pubkey], ["p", card.pubkey], ["k", str(card.kind)]]
    return sign_event(signer, VIEW, "", tags, created_at)


def reaction_target(event: Event) -> str | None:
    """NIP-25: the reacted-to event is the last `e` tag."""
    targets = event.tag_values("e")
    return targets[-1] if targets else None


def comment_root(event: Event) -> str | None:
    roots = event.tag_values("E")
    return roots[0] if roots else None


def comment_parent(event: Event) -> str | None:
    parents = event.tag_values("e")
    return parents[0] if parents else None


def repost_target(event: Event) -> str | None:
    targets = event.tag_values("e")
    return targets[0] if targets else None


# --- follow and relay lists ----------------------------------------------------------------


def build_follow_list(signer: NostrSigner, pubkeys: Iterable[str], created_at: int | None = None) -> Event:
    unique = list(dict.fromkeys(pubkeys))
    for pubkey in unique:
        if not _is_hex(pubkey, 64):
            raise InvalidEvent("malformed-follow-list", f"{pubkey!r} is not a hex Nostr public key")
    return sign_event(signer, FOLLOW_LIST, "", [["p", pubkey] for pubkey in unique], created_at)


def followed_pubkeys(event: Event) -> list[str]:
    pubkeys = [p for p in event.tag_values("p") if _is_hex(p, 64)]
    if len(pubkeys) > MAX_FOLLOWS:
        raise InvalidEvent("malformed-follow-list", "too many follows")
    return list(dict.fromkeys(pubkeys))


@dataclass(frozen=True)
class RelayListEntry:
    url: str
    read: bool = True
    write: bool = True


def build_relay_list(signer: NostrSigner, relays: Iterable[RelayListEntry], created_at: int | None = None) -> Event:
    tags = []
    for relay in relays:
        if not relay.url.startswith(("ws://", "wss://")):
            raise InvalidEvent("malformed-relay-list", f"{relay.url!r} is not a ws:// or wss:// URL")
        mode = [] if relay.read and relay.write else ["read"] if relay.read else ["write"]
        tags.append(["r", relay.url, *mode])
    return sign_event(signer, RELAY_LIST, "", tags, created_at)


def relay_list_entries(event: Event) -> list[RelayListEntry]:
    entries = []
    for tag in event.tags:
        if len(tag) >= 2 and tag[0] == "r" and tag[1].startswith(("ws://", "wss://")):
            mode = tag[2] if len(tag) > 2 else ""
            entries.append(RelayListEntry(tag[1], read=mode != "write", write=mode != "read"))
    return entries


# --- profiles --------------------------------------------------------------------------------


def wallet_binding_message(nostr_pubkey: str, wallet_address: str) -> str:
    return f"Veilstream: wallet {wallet_address} belongs to Nostr key {nostr_pubkey}"


@dataclass(frozen=True)
class Profile:
    name: str = ""
    about: str = ""
    picture: str = ""
    wallet_address: str = ""
    wallet_signature: str = ""

    def wallet_verified(self, nostr_pubkey: str) -> bool:
        """True when the wallet signed that it belongs to this Nostr key.

        The event's own signature binds the other way (the Nostr key names the wallet), so
        a verified profile proves one person holds both keys.
        """
        if not self.wallet_address or not self.wallet_signature:
            return False
        message = encode_defunct(text=wallet_binding_message(nostr_pubkey, self.wallet_address))
        try:
            recovered = Account.recover_message(message, signature=bytes.fromhex(self.wallet_signature.removeprefix("0x")))
        except Exception:  # eth_account raises several types on garbage; all mean "not verified"
            return False
        return recovered.lower() == self.wallet_address.lower()

    @classmethod
    def from_event(cls, event: Event) -> Profile:
        if event.kind != PROFILE:
            raise InvalidEvent("malformed-profile", f"kind {event.kind} is not a profile")
        try:
            data = json.loads(event.content) if event.content else {}
        except (ValueError, RecursionError):
            raise InvalidEvent("malformed-profile", "content is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidEvent("malformed-profile", "content is not a JSON object")

        def text(key: str) -> str:
            value = data.get(key, "")
            return value if isinstance(value, str) else ""

        return cls(
            name=text("name"),
            about=text("about"),
            picture=text("picture"),
            wallet_address=text("veilstream_wallet"),
            wallet_signature=text("veilstream_wallet_sig"),
        )


def build_profile(
    signer: NostrSigner,
    name: str = "",
    about: str = "",
    picture: str = "",
    wallet=None,
    created_at: int | None = None,
) -> Event:
    """A kind-0 profile; with `wallet` (an eth_account LocalAccount), a signed wallet binding."""
    data: dict[str, str] = {"name": name, "about": about}
    if picture:
        data["picture"] = picture
    if wallet is not None:
        message = encode_defunct(text=wallet_binding_message(signer.nostr_pubkey, wallet.address))
        data["veilstream_wallet"] = wallet.address
        data["veilstream_wallet_sig"] = wallet.sign_message(message).signature.hex().removeprefix("0x")
    content = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return sign_event(signer, PROFILE, content, [], created_at)
