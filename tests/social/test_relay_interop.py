"""Interop with real Nostr software on loopback: the `nostr-relay` server (a Python relay we
did not write) and nostr-sdk (rust-nostr, a client we did not write)."""

import asyncio
from datetime import timedelta

import nostr_sdk

from veilstream.identity import Identity, generate_mnemonic
from veilstream.social import kinds
from veilstream.social.events import NostrKey
from veilstream.social.index import FeedIndex
from veilstream.social.relay_client import RelayPool
from veilstream.social.sync import publish, sync

FETCH_TIMEOUT = timedelta(seconds=10)


async def foreign_client(url: str) -> nostr_sdk.Client:
    client = nostr_sdk.Client()
    await client.add_relay(nostr_sdk.RelayUrl.parse(url))
    await client.connect()
    return client


def test_foreign_client_reads_our_cards_and_we_count_its_reactions(relay, tmp_path):
    # an identity of its own: the relay is shared by the process's tests, and the foreign
    # client is asked for every comment of this author
    identity = Identity.from_mnemonic(generate_mnemonic())

    async def scenario():
        index = FeedIndex(tmp_path / "index.sqlite3")
        content_id = "5e" * 32
        async with RelayPool([relay.url]) as pool:
            card = kinds.build_card(
                identity,
                kinds.ContentCard(
                    content_id=content_id, title="Ünïcode \"title\" \x07", description="line 1\nline 2 \u2028 😀",
                    tags=("interop",), mime="video/mp4", duration_s=12.0, price_per_slice_wei=1000,
                    seeder_share_bps=1500,
                ),
            )
            comment = kinds.build_comment(identity, kinds.EventRef.of(card, relay.url), "first!\t\"quoted\"")
            profile = kinds.build_profile(identity, name="Interop", wallet=identity.wallet)
            for event in (card, comment, profile):
                outcomes = await publish(pool, index, event)
                assert [o.accepted for o in outcomes] == [True], outcomes

        # The foreign client finds our card by its label, and our comment by its root tag.
        client = await foreign_client(relay.url)
        fans = [nostr_sdk.Keys.generate() for _ in range(3)]
        try:
            label = nostr_sdk.Filter.from_json('{"kinds": [1063], "#L": ["veilstream"]}')
            found = await client.fetch_events(nostr_sdk.ReqTarget.auto([label]), FETCH_TIMEOUT)
            theirs = [e for e in found if e.id().to_hex() == card.id]
            assert len(theirs) == 1
            their_card = theirs[0]
            assert their_card.verify()
            assert their_card.author().to_hex() == identity.nostr_pubkey
            assert their_card.content() == card.content
            their_tags = [t.to_vec() for t in their_card.tags()]
            assert ["i", content_id] in their_tags and ["title", "Ünïcode \"title\" \x07"] in their_tags

            comments = await client.fetch_events(
                nostr_sdk.ReqTarget.auto([nostr_sdk.Filter().kind(nostr_sdk.Kind(kinds.COMMENT)).author(
                    nostr_sdk.PublicKey.parse(identity.nostr_pubkey))]),
                FETCH_TIMEOUT,
            )
            assert [c.id().to_hex() for c in comments] == [comment.id]
            assert comments[0].verify() and comments[0].content() == "first!\t\"quoted\""

            # Foreign reactions, built the foreign way (their tag encoding, their signatures).
            for fan in fans:
                reaction = nostr_sdk.EventBuilder(nostr_sdk.Kind(7), "+").tags(
                    [nostr_sdk.Tag.event(their_card.id()), nostr_sdk.Tag.public_key(their_card.author())]
                ).finalize(fan)
                output = await client.send_event(reaction)
                assert output.success, output.failed
            reply = nostr_sdk.EventBuilder(nostr_sdk.Kind(kinds.COMMENT), "foreign reply").tags([
                nostr_sdk.Tag.parse(["E", card.id, relay.url, identity.nostr_pubkey]),
                nostr_sdk.Tag.parse(["K", str(kinds.CARD)]),
                nostr_sdk.Tag.parse(["e", comment.id, relay.url, identity.nostr_pubkey]),
                nostr_sdk.Tag.parse(["k", str(kinds.COMMENT)]),
            ]).finalize(fans[0])
            assert (await client.send_event(reply)).success
        finally:
            await client.shutdown()

        # A fresh index of ours catches up from the relay and counts what the foreigner did.
        fresh = FeedIndex(tmp_path / "fresh.sqlite3")
        async with RelayPool([relay.url]) as pool:
            report = await sync(pool, fresh, me=identity.nostr_pubkey)
        assert report.refused == 0, report.by_reason
        row = fresh.card(card.id)
        assert row is not None and row.card.title == "Ünïcode \"title\" \x07"
        assert (row.reactions, row.comments) == (3, 2)
        assert sorted(c.content for c in fresh.comments(card.id)) == ["first!\t\"quoted\"", "foreign reply"]
        assert fresh.profile(identity.nostr_pubkey)["wallet_verified"]
        assert row.author_name == "Interop"
        assert fresh.consistency_problems() == []

    asyncio.run(scenario())


def test_the_relay_refuses_what_we_would(relay):
    """The real relay agrees with our verifier: a forged event is refused with a reason."""

    async def scenario():
        event = kinds.build_reaction(NostrKey(), kinds.EventRef("ab" * 32, "cd" * 32, kinds.CARD))
        forged = type(event)(**{**{f: getattr(event, f) for f in event.__slots__}, "content": "-"})
        async with RelayPool([relay.url]) as pool:
            outcomes = await pool.publish(forged)
        assert not outcomes[0].accepted and outcomes[0].message

    asyncio.run(scenario())
