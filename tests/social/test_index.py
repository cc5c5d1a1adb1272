"""The local index: what gets in, what it counts, how it searches and orders."""

import json
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilstream.social import kinds
from veilstream.social.events import NostrKey, sign_event
from veilstream.social.index import FeedIndex, RateLimit, fts_query

NOW = 1_750_000_000


def make_card(author, title, description="", tags=(), created_at=NOW, content_id=None):
    content_id = content_id or random.randbytes(32).hex()
    return kinds.build_card(
        author,
        kinds.ContentCard(content_id=content_id, title=title, description=description, tags=tuple(tags)),
        created_at=created_at,
    )


@pytest.fixture
def index(tmp_path):
    with FeedIndex(tmp_path / "index.sqlite3", clock=lambda: NOW) as opened:
        yield opened


def test_counts_reactions_comments_reposts_views_once_per_person(index):
    author, fans = NostrKey(), [NostrKey() for _ in range(3)]
    card = make_card(author, "Night Train")
    ref = kinds.EventRef.of(card)
    assert index.ingest(card).accepted
    for fan in fans:
        assert index.ingest(kinds.build_reaction(fan, ref, created_at=NOW)).accepted
        assert index.ingest(kinds.build_view(fan, ref, created_at=NOW)).accepted
    # A second reaction or view by the same person is stored but not counted again.
    assert index.ingest(kinds.build_reaction(fans[0], ref, "🔥", created_at=NOW + 1)).accepted
    assert index.ingest(kinds.build_view(fans[0], ref, created_at=NOW + 1)).accepted
    assert index.ingest(kinds.build_reaction(author, ref, "-", created_at=NOW)).accepted  # a dislike
    comment = kinds.build_comment(fans[1], ref, "lovely", created_at=NOW)
    assert index.ingest(comment).accepted
    assert index.ingest(kinds.build_comment(author, ref, "thanks", kinds.EventRef.of(comment), created_at=NOW + 1)).accepted
    assert index.ingest(kinds.build_repost(fans[2], card, created_at=NOW)).accepted
    row = index.card(card.id)
    assert (row.reactions, row.comments, row.reposts, row.views) == (3, 2, 1, 3)
    assert [c.content for c in index.comments(card.id)] == ["lovely", "thanks"]
    assert index.consistency_problems() == []


def test_duplicates_are_not_counted_twice(index):
    card = make_card(NostrKey(), "x")
    reaction = kinds.build_reaction(NostrKey(), kinds.EventRef.of(card), created_at=NOW)
    assert index.ingest(card).reason == "stored"
    assert index.ingest(card.to_json()).reason == "duplicate"
    assert index.ingest(reaction).reason == "stored"
    assert index.ingest(json.loads(reaction.to_json())).reason == "duplicate"
    assert index.card(card.id).reactions == 1


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32))
def test_counts_do_not_depend_on_arrival_order(tmp_path_factory, seed):
    rng = random.Random(seed)
    authors = [NostrKey() for _ in range(3)]
    cards = [make_card(rng.choice(authors), f"card {i}", created_at=NOW - i) for i in range(3)]
    events = list(cards)
    for _ in range(12):
        fan, target = NostrKey(), kinds.EventRef.of(rng.choice(cards))
        maker = rng.choice([kinds.build_reaction, kinds.build_view, lambda f, t, created_at: kinds.build_comment(f, t, "c", created_at=created_at)])
        events.append(maker(fan, target, created_at=NOW))
    orders = [list(events), rng.sample(events, len(events))]
    summaries = []
    for order in orders:
        with FeedIndex(tmp_path_factory.mktemp("order") / "i.sqlite3", clock=lambda: NOW) as index:
            report = index.ingest_many(order)
            assert report.stored == len(events)
            assert index.consistency_problems() == []
            summaries.append({r.id: (r.reactions, r.comments, r.views) for r in index.feed(limit=10)})
    assert summaries[0] == summaries[1]


def test_search_orders_and_following(index):
    alice, bob, me = NostrKey(), NostrKey(), NostrKey()
    old = make_card(alice, "Crème brûlée at home", "a dessert film", ["cooking"], created_at=NOW - 100)
    new = make_card(bob, "Trains at night", "steam engines", ["trains", "night"], created_at=NOW - 10)
    mid = make_card(alice, "Night cooking", "late dinners", ["cooking"], created_at=NOW - 50)
    index.ingest_many([old, new, mid])
    for _ in range(3):
        index.ingest(kinds.build_reaction(NostrKey(), kinds.EventRef.of(old), created_at=NOW))
    assert [r.id for r in index.feed()] == [new.id, mid.id, old.id]
    assert [r.id for r in index.feed(order="top")][0] == old.id
    assert {r.id for r in index.feed(search="night")} == {new.id, mid.id}
    assert [r.id for r in index.feed(search="creme")] == [old.id]  # diacritics folded
    assert [r.id for r in index.feed(search="brû*")] == [old.id]  # a prefix, on request
    assert index.feed(search="brû") == []
    assert [r.id for r in index.feed(search="night", order="top")] == [new.id, mid.id]  # tie: newest first
    assert [r.id for r in index.feed(search="steam", order="relevance")] == [new.id]
    assert [r.id for r in index.feed(search="cooking night")] == [mid.id]  # every word must match
    assert index.feed(search='" OR * NEAR(') == []  # FTS syntax stays text
    assert fts_query("  ") is None
    index.ingest(kinds.build_follow_list(me, [bob.nostr_pubkey], created_at=NOW))
    assert [r.id for r in index.feed(authors=index.following(me.nostr_pubkey))] == [new.id]
    assert index.card(new.id[:10]).card.title == "Trains at night"


def test_replaceable_events_keep_the_newest(index, identity):
    me, a, b = NostrKey(), NostrKey(), NostrKey()
    first = kinds.build_follow_list(me, [a.nostr_pubkey], created_at=NOW - 10)
    second = kinds.build_follow_list(me, [b.nostr_pubkey], created_at=NOW)
    assert index.ingest(second).accepted
    assert index.ingest(first).reason == "stale-replaceable"  # older arrived late
    assert index.following(me.nostr_pubkey) == [b.nostr_pubkey]
    assert index.event(first.id) is None and index.event(second.id) == second
    index.ingest(kinds.build_profile(identity, name="Ada", wallet=identity.wallet, created_at=NOW - 5))
    index.ingest(kinds.build_profile(identity, name="Ada L.", wallet=identity.wallet, created_at=NOW))
    profile = index.profile(identity.nostr_pubkey)
    assert profile["name"] == "Ada L." and profile["wallet_verified"]
    relays = [kinds.RelayListEntry("wss://r.example", write=False)]
    index.ingest(kinds.build_relay_list(me, relays, created_at=NOW))
    assert index.relay_list(me.nostr_pubkey) == relays
    assert index.consistency_problems() == []


def test_bad_input_is_refused_with_a_reason_and_changes_nothing(index, caplog):
    author = NostrKey()
    good = make_card(author, "good")
    forged_id = dict(json.loads(good.to_json()), content="changed")
    other = make_card(author, "other")
    bad_sig = dict(json.loads(other.to_json()), sig=good.sig)
    cases = {
        "malformed-json": '{"id": ',
        "malformed-event": '{"id": 1}',
        "bad-id": json.dumps(forged_id),
        "bad-signature": json.dumps(bad_sig),
        "oversized": sign_event(author, 1063, "x" * 70_000).to_json(),
        "unknown-kind": sign_event(author, 30_402, "classified ad", created_at=NOW),
        "from-the-future": make_card(author, "later", created_at=NOW + 86_400),
        "malformed-card": sign_event(author, kinds.CARD, "no id, no title", created_at=NOW),
        "malformed-reaction": sign_event(author, kinds.REACTION, "+", created_at=NOW),
        "malformed-comment": sign_event(author, kinds.COMMENT, "orphan", [["e", "x"]], created_at=NOW),
        "malformed-target": sign_event(author, kinds.REACTION, "+", [["e", "short"]], created_at=NOW),
        "bad-pubkey": dict(json.loads(good.to_json()), pubkey="f" * 64, id=None),
    }
    # An id that matches but names a pubkey that is no curve point.
    from veilstream.social.events import compute_event_id

    bad_point = cases["bad-pubkey"]
    bad_point["id"] = compute_event_id(bad_point["pubkey"], bad_point["created_at"], bad_point["kind"], bad_point["tags"], bad_point["content"])
    before = index.stats()
    with caplog.at_level(logging.INFO, logger="veilstream.social.index"):
        for reason, raw in cases.items():
            result = index.ingest(raw)
            assert (result.accepted, result.reason) == (False, reason), reason
    assert index.stats() == before
    assert index.consistency_problems() == []
    logged = caplog.text
    for reason in cases:
        assert reason in logged
    assert index.ingest(good).accepted


def test_rate_limit_per_pubkey_in_event_time(tmp_path):
    with FeedIndex(tmp_path / "i.sqlite3", rate_limit=RateLimit(max_events=5, window_s=60), clock=lambda: NOW) as index:
        spammer, normal = NostrKey(), NostrKey()
        window_start = NOW - NOW % 60
        flood = [make_card(spammer, f"spam {i}", created_at=window_start + i % 60) for i in range(20)]
        report = index.ingest_many(flood)
        assert report.stored == 5 and report.by_reason["rate-limited"] == 15
        assert index.ingest(make_card(normal, "hello", created_at=window_start)).accepted  # others unaffected
        assert index.ingest(make_card(spammer, "next minute", created_at=window_start + 60)).accepted
        index.close()
        # The limit is a function of the stored events: a restart does not reset it.
        with FeedIndex(tmp_path / "i.sqlite3", rate_limit=RateLimit(max_events=5, window_s=60), clock=lambda: NOW) as again:
            assert again.ingest(make_card(spammer, "more", created_at=window_start + 1)).reason == "rate-limited"
            assert again.consistency_problems() == []


def test_optional_proof_of_work(tmp_path):
    with FeedIndex(tmp_path / "i.sqlite3", min_pow_bits=8, clock=lambda: NOW) as index:
        author = NostrKey()
        lazy = make_card(author, "no work")
        assert index.ingest(lazy).reason == "insufficient-pow"
        worked = kinds.build_card(author, kinds.ContentCard(content_id="ab" * 32, title="worked"), created_at=NOW, pow_bits=8)
        assert index.ingest(worked).accepted


def test_chain_status_hook(index):
    card = make_card(NostrKey(), "on chain")
    index.ingest(card)
    assert index.card(card.id).chain_status is None
    index.mark_chain_status(card.id, True)
    assert index.card(card.id).chain_status is True
