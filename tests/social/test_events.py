"""NIP-01 serialization, ids and signatures, held against nostr-sdk (rust-nostr)."""

import json

import nostr_sdk
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilstream.social.errors import InvalidEvent
from veilstream.social.events import (
    NostrKey,
    committed_pow_bits,
    compute_event_id,
    leading_zero_bits,
    parse_event_json,
    parse_verified,
    serialize_for_id,
    sign_event,
    verify_event,
)

# Characters where serializers disagree: every C0 control, DEL, quotes, backslash, the
# JSON-escapable-in-JS separators, a BOM, combining marks, astral-plane emoji, RTL marks.
AWKWARD = "".join(chr(c) for c in range(0x20)) + '\x7f"\\/\u2028\u2029\ufeff\u0301\u200f😀𝄞\U0010fffd'
awkward_text = st.text(alphabet=st.sampled_from(AWKWARD) | st.characters(codec="utf-8"), max_size=40)
tags_strategy = st.lists(st.lists(awkward_text, min_size=1, max_size=4), max_size=5)
KEYS = [nostr_sdk.Keys.generate() for _ in range(3)]


def sdk_tags(tags):
    return [nostr_sdk.Tag.parse(tag) for tag in tags]


@given(
    key_index=st.integers(0, 2),
    created_at=st.integers(0, 2**40),
    kind=st.integers(0, 65_535),
    tags=tags_strategy,
    content=awkward_text,
)
def test_ids_equal_nostr_sdk(key_index, created_at, kind, tags, content):
    keys = KEYS[key_index]
    pubkey = keys.public_key().to_hex()
    ours = compute_event_id(pubkey, created_at, kind, tags, content)
    theirs = nostr_sdk.EventId.compute(
        keys.public_key(), nostr_sdk.Timestamp.from_secs(created_at), nostr_sdk.Kind(kind), sdk_tags(tags), content
    )
    assert ours == theirs.to_hex()


@given(kind=st.integers(0, 65_535), tags=tags_strategy, content=awkward_text)
def test_our_events_verify_in_nostr_sdk_and_round_trip(kind, tags, content):
    key = NostrKey()
    event = sign_event(key, kind, content, tags, created_at=1_700_000_000)
    foreign = nostr_sdk.Event.from_json(event.to_json())
    assert foreign.verify()
    assert foreign.id().to_hex() == event.id
    assert foreign.content() == content
    assert [t.to_vec() for t in foreign.tags()] == [list(t) for t in event.tags]
    assert parse_verified(event.to_json()) == event
    assert parse_verified(foreign.as_json()) == event  # their serialization of our event reads back equal


@given(tags=tags_strategy, content=awkward_text)
def test_nostr_sdk_events_verify_here(tags, content):
    keys = KEYS[0]
    foreign = nostr_sdk.EventBuilder(nostr_sdk.Kind(1), content).tags(sdk_tags(tags)).finalize(keys)
    event = parse_verified(foreign.as_json())
    assert event.id == foreign.id().to_hex()
    assert event.content == content


def test_serializer_escapes_like_the_ecosystem():
    # NIP-01's named escapes are short; other controls are \u00XX in lower case; DEL,
    # U+2028 and non-ASCII are verbatim. json.dumps' default (ensure_ascii) would differ.
    body = serialize_for_id("a" * 64, 1, 1, [], '\n"\\\r\t\b\f\x00\x1f\x7f\u2028é😀')
    assert body.endswith('"\\n\\"\\\\\\r\\t\\b\\f\\u0000\\u001f\x7f\u2028é😀"]'.encode())
    assert json.dumps("é") != json.dumps("é", ensure_ascii=False)


def test_identity_signs_events_that_verify(identity):
    event = sign_event(identity, 1, "hello", [["t", "x"]])
    assert event.pubkey == identity.nostr_pubkey
    verify_event(event)
    assert nostr_sdk.Event.from_json(event.to_json()).verify()


def test_tampering_is_caught():
    key = NostrKey()
    event = sign_event(key, 1, "original")
    data = json.loads(event.to_json())
    for field, value in [("content", "changed"), ("created_at", 5), ("kind", 2), ("tags", [["x"]])]:
        forged = dict(data, **{field: value})
        with pytest.raises(InvalidEvent) as refused:
            parse_verified(json.dumps(forged))
        assert refused.value.reason == "bad-id"
    other = sign_event(NostrKey(), 1, "original", created_at=event.created_at)
    swapped_sig = dict(data, sig=other.sig)
    with pytest.raises(InvalidEvent) as refused:
        parse_verified(json.dumps(swapped_sig))
    assert refused.value.reason == "bad-signature"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{", "malformed-json"),
        ("[]", "malformed-event"),
        ('{"id": "x"}', "malformed-event"),
        ("NaN", "malformed-json"),
        ('"\\ud800"', "malformed-event"),
        ("[" * 5000 + "]" * 5000, "malformed-event"),
    ],
)
def test_malformed_json_is_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as refused:
        parse_event_json(raw)
    assert refused.value.reason == reason


def test_nesting_deeper_than_the_parser_recurses_is_refused():
    with pytest.raises(InvalidEvent) as refused:
        parse_event_json("[" * 30_000 + "]" * 30_000)
    # Whether json gives up by recursion depends on the interpreter's limit; either way it is refused.
    assert refused.value.reason in ("malformed-json", "malformed-event")


def test_field_types_are_strict():
    event = sign_event(NostrKey(), 1, "x")
    good = json.loads(event.to_json())
    for field, value in [
        ("created_at", True), ("created_at", 1.5), ("created_at", -1), ("kind", 70_000), ("kind", "1"),
        ("pubkey", good["pubkey"].upper()), ("id", good["id"][:-1]), ("sig", 7), ("tags", [[1]]),
        ("tags", "t"), ("content", None),
    ]:
        with pytest.raises(InvalidEvent) as refused:
            parse_event_json(json.dumps(dict(good, **{field: value})))
        assert refused.value.reason == "malformed-event", (field, value)


def test_lone_surrogates_cannot_make_an_id():
    event = json.loads(sign_event(NostrKey(), 1, "x").to_json())
    event["content"] = "\ud800"
    with pytest.raises(InvalidEvent) as refused:
        parse_verified(json.dumps(event))
    assert refused.value.reason == "invalid-utf8"


def test_oversized_events_are_refused_before_parsing():
    big = sign_event(NostrKey(), 1, "x" * 70_000)
    with pytest.raises(InvalidEvent) as refused:
        parse_event_json(big.to_json())
    assert refused.value.reason == "oversized"


def test_proof_of_work_is_mined_and_committed():
    key = NostrKey()
    event = sign_event(key, 1, "work", pow_bits=10)
    verify_event(event)
    assert leading_zero_bits(event.id) >= 10
    assert committed_pow_bits(event) == 10  # capped at the committed target, even if luckier
    sdk_event = nostr_sdk.Event.from_json(event.to_json())
    assert nostr_sdk.get_leading_zero_bits(sdk_event.id().as_bytes()) == leading_zero_bits(event.id)
    assert committed_pow_bits(sign_event(key, 1, "none")) == 0
