"""Building and reading each kind: what we publish passes our own reader, and others' tags read."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilstream.social import kinds
from veilstream.social.errors import InvalidEvent
from veilstream.social.events import NostrKey, sign_event

CONTENT_ID = "c0" * 32


def card(**overrides) -> kinds.ContentCard:
    fields = dict(
        content_id=CONTENT_ID, title="Night Train", description="A film about trains.", tags=("Film", "#trains"),
        mime="video/mp4", duration_s=93.5, magnet="magnet:?xt=urn:btmh:1220" + CONTENT_ID,
        price_per_slice_wei=10**12, seeder_share_bps=2_000, size_bytes=123_456, slice_count=3,
        previews=(kinds.PreviewRef("ab" * 32, "image/jpeg", "thumbnail", 1234),),
        blob_servers=("http://127.0.0.1:9000",),
    )
    fields.update(overrides)
    return kinds.ContentCard(**fields)


def test_card_round_trips_with_normalized_tags():
    event = kinds.build_card(NostrKey(), card())
    assert event.kind == kinds.CARD
    read = kinds.ContentCard.from_event(event)
    assert read == card(tags=("film", "trains"))
    assert ["L", "veilstream"] in [list(t) for t in event.tags]
    assert event.first_tag("alt")[1] == "Veilstream content: Night Train"


@given(title=st.text(min_size=1, max_size=80).filter(str.strip), description=st.text(max_size=200))
def test_any_titled_card_round_trips(title, description):
    event = kinds.build_card(NostrKey(), card(title=title, description=description, tags=()))
    read = kinds.ContentCard.from_event(event)
    assert (read.title, read.description) == (title.strip(), description)


@pytest.mark.parametrize(
    "tags",
    [
        [["title", "x"]],  # no content id
        [["i", "zz"], ["title", "x"]],
        [["i", CONTENT_ID]],  # no title
        [["i", CONTENT_ID], ["title", "x"], ["terms", "1"]],
        [["i", CONTENT_ID], ["title", "x"], ["terms", "1", "10001"]],
        [["i", CONTENT_ID], ["title", "x"], ["duration", "nan"]],
        [["i", CONTENT_ID], ["title", "x"], ["preview", "ab", "image/jpeg", "thumbnail", "1"]],
    ],
)
def test_malformed_cards_are_refused(tags):
    with pytest.raises(InvalidEvent) as refused:
        kinds.ContentCard.from_event(sign_event(NostrKey(), kinds.CARD, "", tags))
    assert refused.value.reason == "malformed-card"


def test_comment_reaction_repost_view_point_at_the_card():
    author, fan = NostrKey(), NostrKey()
    posted = kinds.build_card(author, card())
    root = kinds.EventRef.of(posted, "ws://127.0.0.1:1")
    comment = kinds.build_comment(fan, root, "great")
    assert kinds.comment_root(comment) == posted.id and kinds.comment_parent(comment) == posted.id
    assert comment.first_tag("K") == ("K", "1063") and comment.first_tag("P") == ("P", author.nostr_pubkey)
    reply = kinds.build_comment(author, root, "thanks", parent=kinds.EventRef.of(comment))
    assert kinds.comment_root(reply) == posted.id and kinds.comment_parent(reply) == comment.id
    assert reply.first_tag("k") == ("k", "1111")
    reaction = kinds.build_reaction(fan, root)
    assert reaction.kind == 7 and kinds.reaction_target(reaction) == posted.id
    repost = kinds.build_repost(fan, posted)
    assert repost.kind == kinds.GENERIC_REPOST and json.loads(repost.content)["id"] == posted.id
    assert kinds.repost_target(repost) == posted.id
    view = kinds.build_view(fan, root)
    assert view.kind == kinds.VIEW and view.tag_values("e") == [posted.id]
    with pytest.raises(InvalidEvent):
        kinds.build_comment(fan, root, "   ")


def test_profile_binds_the_wallet(identity):
    event = kinds.build_profile(identity, name="Ada", about="films", wallet=identity.wallet)
    profile = kinds.Profile.from_event(event)
    assert profile.wallet_address == identity.wallet_address
    assert profile.wallet_verified(identity.nostr_pubkey)
    # The same binding claimed by another Nostr key does not verify: it names the first key.
    assert not profile.wallet_verified(NostrKey().nostr_pubkey)
    # A wallet address copied without its owner's signature does not verify.
    forged = kinds.Profile(name="Eve", wallet_address=identity.wallet_address, wallet_signature="00" * 65)
    assert not forged.wallet_verified(identity.nostr_pubkey)
    assert not kinds.Profile(wallet_address=identity.wallet_address, wallet_signature="zz").wallet_verified("a" * 64)


def test_profile_content_from_strangers_is_read_defensively():
    for content in ["not json", "[1]"]:
        with pytest.raises(InvalidEvent):
            kinds.Profile.from_event(sign_event(NostrKey(), 0, content))
    odd = kinds.Profile.from_event(sign_event(NostrKey(), 0, '{"name": 5, "about": "hi"}'))
    assert odd.name == "" and odd.about == "hi"


def test_follow_and_relay_lists():
    me, a, b = NostrKey(), NostrKey(), NostrKey()
    follows = kinds.build_follow_list(me, [a.nostr_pubkey, b.nostr_pubkey, a.nostr_pubkey])
    assert kinds.followed_pubkeys(follows) == [a.nostr_pubkey, b.nostr_pubkey]
    with pytest.raises(InvalidEvent):
        kinds.build_follow_list(me, ["npub-not-hex"])
    entries = [
        kinds.RelayListEntry("wss://a.example"),
        kinds.RelayListEntry("ws://127.0.0.1:7447", write=False),
        kinds.RelayListEntry("wss://w.example", read=False),
    ]
    relays = kinds.build_relay_list(me, entries)
    assert [list(t) for t in relays.tags] == [
        ["r", "wss://a.example"], ["r", "ws://127.0.0.1:7447", "read"], ["r", "wss://w.example", "write"]
    ]
    assert kinds.relay_list_entries(relays) == entries
    with pytest.raises(InvalidEvent):
        kinds.build_relay_list(me, [kinds.RelayListEntry("http://x")])
