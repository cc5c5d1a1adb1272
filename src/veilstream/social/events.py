"""NIP-01 events: canonical serialization, ids, BIP-340 signatures, strict parsing.

The id is SHA-256 over the UTF-8 of `[0,pubkey,created_at,kind,tags,content]` written as
compact JSON. NIP-01 names the escapes `\\n \\" \\\\ \\r \\t \\b \\f`; for the other control
characters every major implementation (rust-nostr's serde_json, nostr-tools'
JSON.stringify) writes `\\u00XX` in lower case and leaves everything else, including
U+007F, U+2028 and all non-ASCII, verbatim. `json.dumps(..., ensure_ascii=False)` escapes
exactly that set the same way; its default (`ensure_ascii=True`) would escape all non-ASCII
and give ids no one else computes. The property tests hold our ids equal to nostr-sdk's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from typing import Any, Protocol

import coincurve

from veilstream.social.errors import InvalidEvent

MAX_EVENT_BYTES = 64 * 1024  # far above any card or comment we make; bounds hostile input
MAX_TAGS = 2_000
MAX_TAG_ITEMS = 64
MAX_CREATED_AT = 2**53  # beyond any real clock, and still exact in every JSON parser
MAX_KIND = 65_535

_HEX = frozenset("0123456789abcdef")

Tags = tuple[tuple[str, ...], ...]


class NostrSigner(Protocol):
    """What signs events: `veilstream.identity.Identity`, or a bare `NostrKey`."""

    @property
    def nostr_pubkey(self) -> str: ...

    def sign_nostr(self, message32: bytes) -> bytes: ...


class NostrKey:
    """A Nostr key pair without the rest of an identity (bots, tests, benchmarks)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._private = coincurve.PrivateKey(secret) if secret else coincurve.PrivateKey()
        self.nostr_pubkey = coincurve.PublicKeyXOnly.from_secret(self._private.secret).format().hex()

    def sign_nostr(self, message32: bytes) -> bytes:
        return self._private.sign_schnorr(message32)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: Tags
    content: str
    sig: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(tag) for tag in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def tag_values(self, name: str) -> list[str]:
        """The first value of every tag called `name`, in order."""
        return [tag[1] for tag in self.tags if len(tag) > 1 and tag[0] == name]

    def first_tag(self, name: str) -> tuple[str, ...] | None:
        for tag in self.tags:
            if tag and tag[0] == name:
                return tag
        return None


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: Tags | list, content: str) -> bytes:
    """The exact bytes NIP-01 hashes into an event id."""
    text = json.dumps(
        [0, pubkey, created_at, kind, tags, content], ensure_ascii=False, separators=(",", ":")
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a "\ud800" escape
        raise InvalidEvent("invalid-utf8", "text is not valid Unicode") from exc


def compute_event_id(pubkey: str, created_at: int, kind: int, tags: Tags | list, content: str) -> str:
    return sha256(serialize_for_id(pubkey, created_at, kind, tags, content)).hexdigest()


def parse_count(text: str, max_digits: int = 30) -> int | None:
    """A non-negative decimal integer from a tag value, or None.

    `str.isdigit` alone is not enough: it accepts '²' and other Unicode digits that `int`
    refuses, and `int` refuses strings over 4,300 digits; both would escape as exceptions.
    """
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def leading_zero_bits(event_id: str) -> int:
    """NIP-13 difficulty of an id."""
    value = int(event_id, 16)
    return 256 - value.bit_length()


def sign_event(
    signer: NostrSigner,
    kind: int,
    content: str = "",
    tags: list[list[str]] | Tags = (),
    created_at: int | None = None,
    pow_bits: int = 0,
) -> Event:
    """Build and sign an event; with `pow_bits`, mine a NIP-13 nonce tag first."""
    frozen_tags: Tags = tuple(tuple(str(item) for item in tag) for tag in tags)
    created = int(time.time()) if created_at is None else created_at
    pubkey = signer.nostr_pubkey
    _check_fields(pubkey, created, kind, frozen_tags, content)
    if pow_bits > 0:
        frozen_tags, event_id = _mine(pubkey, created, kind, frozen_tags, content, pow_bits)
    else:
        event_id = compute_event_id(pubkey, created, kind, frozen_tags, content)
    sig = signer.sign_nostr(bytes.fromhex(event_id)).hex()
    return Event(event_id, pubkey, created, kind, frozen_tags, content, sig)


def _mine(pubkey: str, created_at: int, kind: int, tags: Tags, content: str, bits: int) -> tuple[Tags, str]:
    base = tuple(tag for tag in tags if not tag or tag[0] != "nonce")
    nonce = 0
    while True:
        candidate = base + (("nonce", str(nonce), str(bits)),)
        event_id = compute_event_id(pubkey, created_at, kind, candidate, content)
        if leading_zero_bits(event_id) >= bits:
            return candidate, event_id
        nonce += 1


def committed_pow_bits(event: Event) -> int:
    """NIP-13: the difficulty an event proves, capped by the target its nonce tag commits to.

    Without the commitment a spammer's lucky low-effort ids would count as deliberate work.
    """
    nonce = event.first_tag("nonce")
    target = parse_count(nonce[2]) if nonce is not None and len(nonce) >= 3 else None
    if target is None:
        return 0
    return min(leading_zero_bits(event.id), target)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event_json(raw: str | bytes, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse one event from JSON text; checks shape and limits, not id or signature."""
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > {max_bytes}")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent("malformed-json", str(exc)[:120]) from None
    return event_from_dict(data)


def event_from_dict(data: Any) -> Event:
    """An `Event` from decoded JSON; every field is type- and range-checked."""
    if not isinstance(data, dict):
        raise InvalidEvent("malformed-event", "an event is a JSON object")
    try:
        event_id, pubkey, created_at = data["id"], data["pubkey"], data["created_at"]
        kind, raw_tags, content, sig = data["kind"], data["tags"], data["content"], data["sig"]
    except KeyError as exc:
        raise InvalidEvent("malformed-event", f"missing field {exc.args[0]!r}") from None
    if not _is_hex(event_id, 64):
        raise InvalidEvent("malformed-event", "id is not 64 lowercase hex digits")
    if not _is_hex(sig, 128):
        raise InvalidEvent("malformed-event", "sig is not 128 lowercase hex digits")
    if not isinstance(raw_tags, list) or len(raw_tags) > MAX_TAGS:
        raise InvalidEvent("malformed-event", f"tags must be a list of at most {MAX_TAGS}")
    tags = []
    for tag in raw_tags:
        if not isinstance(tag, list) or len(tag) > MAX_TAG_ITEMS or not all(type(v) is str for v in tag):
            raise InvalidEvent("malformed-event", "each tag is a short list of strings")
        tags.append(tuple(tag))
    frozen_tags = tuple(tags)
    _check_fields(pubkey, created_at, kind, frozen_tags, content)
    return Event(event_id, pubkey, created_at, kind, frozen_tags, content, sig)


def _check_fields(pubkey: Any, created_at: Any, kind: Any, tags: Tags, content: Any) -> None:
    if not _is_hex(pubkey, 64):
        raise InvalidEvent("malformed-event", "pubkey is not 64 lowercase hex digits")
    if type(created_at) is not int or not 0 <= created_at <= MAX_CREATED_AT:
        raise InvalidEvent("malformed-event", "created_at is not a timestamp")
    if type(kind) is not int or not 0 <= kind <= MAX_KIND:
        raise InvalidEvent("malformed-event", f"kind must be an integer 0–{MAX_KIND}")
    if type(content) is not str:
        raise InvalidEvent("malformed-event", "content is not a string")


def _is_hex(value: Any, length: int) -> bool:
    return type(value) is str and len(value) == length and _HEX.issuperset(value)


@lru_cache(maxsize=16_384)
def _xonly_key(pubkey: str) -> coincurve.PublicKeyXOnly:
    return coincurve.PublicKeyXOnly(bytes.fromhex(pubkey))


def verify_event(event: Event) -> None:
    """Raise `InvalidEvent` unless the id matches the content and the signature is the author's."""
    expected = compute_event_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    if expected != event.id:
        raise InvalidEvent("bad-id", f"id {event.id[:16]}… does not hash the event")
    try:
        key = _xonly_key(event.pubkey)
    except ValueError:
        raise InvalidEvent("bad-pubkey", "pubkey is not a point on secp256k1") from None
    if not key.verify(bytes.fromhex(event.sig), bytes.fromhex(event.id)):
        raise InvalidEvent("bad-signature", f"signature on {event.id[:16]}… does not verify")


def parse_verified(raw: str | bytes | dict, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse and verify in one step: the way every event from outside enters."""
    event = event_from_dict(raw) if isinstance(raw, dict) else parse_event_json(raw, max_bytes)
    verify_event(event)
    return event
