"""The social commands as a person uses them, through the real `veil` program and a real relay."""

import json
import os
import re
import socket
from pathlib import Path

import pytest

from cli_harness import assert_clean_failure, content_id_of, veil
from veilstream.social import kinds
from veilstream.social.events import NostrKey

WORDS = "legal winner thank year wave sausage worth useful legal winner thank yellow"


def run(home: Path, *args, env: dict | None = None):
    return veil(home, *args, stdin=WORDS if args[:2] == ("init", "--restore") else None, env=env)


def ok(result):
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("veil-social") / "home"
    ok(run(home, "init", "--restore"))
    return home


def test_post_feed_and_engage(home, relay, media):
    r = ["--relay", relay.url]
    published = ok(run(home, "publish", str(media["video"]), "--slice-size", "64KiB"))
    content_id = content_id_of(published)

    posted = ok(run(home, "post", content_id, "--title", "Colour ramp", "--description", "twelve seconds of colour",
                    "--tag", "Test", "--tag", "colour", *r))
    card_id = re.search(r"card ([0-9a-f]{64})", posted)[1]
    assert "(2 previews)" in posted and relay.url in posted

    # Someone else, elsewhere, reacts: the feed picks it up from the relay.
    import asyncio

    from veilstream.social.relay_client import RelayPool

    async def stranger_reacts():
        async with RelayPool([relay.url]) as pool:
            fans = [NostrKey() for _ in range(2)]
            for fan in fans:
                await pool.publish_or_raise(kinds.build_reaction(fan, kinds.EventRef(card_id, _pubkey(home), kinds.CARD)))

    asyncio.run(stranger_reacts())
    ok(run(home, "react", card_id[:10], *r))
    ok(run(home, "comment", card_id[:10], "lovely colours", *r))
    ok(run(home, "repost", card_id, *r))

    shown = ok(run(home, "feed", *r))
    line = next(line for line in shown.splitlines() if "Colour ramp" in line)
    assert re.search(r"Colour ramp.*│\s*3\s*│\s*1\s*│\s*1\s*│", line), line  # 3 reactions, 1 comment, 1 repost
    assert "Colour ramp" in ok(run(home, "feed", "--search", "colour", "--offline"))
    assert "no cards match" in ok(run(home, "feed", "--search", "nothing-like-this", "--offline"))
    assert "Colour ramp" in ok(run(home, "feed", "--top", "--offline"))

    # The card carries what the content layer knows, and previews a blob store holds.
    card_json = _index_event(home, card_id)
    card = kinds.ContentCard.from_event(card_json)
    assert card.content_id == content_id and card.mime == "video/mp4" and card.magnet.startswith("magnet:")
    assert {p.role for p in card.previews} == {"thumbnail", "clip"}
    for preview in card.previews:
        assert (home / "social" / "blobs" / preview.sha256[:2] / preview.sha256).is_file()


def test_follow_profile_and_following_feed(home, relay):
    r = ["--relay", relay.url]
    followee = NostrKey()
    out = ok(run(home, "follow", followee.nostr_pubkey, *r))
    assert "you follow 1" in out
    assert "you follow no one" not in ok(run(home, "feed", "--following", *r))
    ok(run(home, "follow", followee.nostr_pubkey, "--unfollow", *r))
    assert "you follow no one" in ok(run(home, "feed", "--following", "--offline"))

    shown = ok(run(home, "profile", "--name", "Ada", "--about", "films", *r))
    assert "Ada" in shown and "signed by the wallet" in shown and relay.url in shown
    other = ok(run(home, "profile", followee.nostr_pubkey, *r))
    assert "none published" in other


def test_user_mistakes_are_one_line(home, relay, tmp_path):
    r = ["--relay", relay.url]
    assert_clean_failure(run(home, "react", "nothex", *r), "not a card id")
    assert_clean_failure(run(home, "react", "00000000", *r), "no card starting")
    assert_clean_failure(run(home, "react", "ab" * 32, *r), "none of the relays")
    assert_clean_failure(run(home, "follow", "npub1nonsense", *r), "not a Nostr public key")
    assert_clean_failure(run(home, "feed", "--relay", "http://example.org"), "not a relay URL")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{unused.getsockname()[1]}"
        assert_clean_failure(run(home, "feed", "--relay", dead), "no relay reachable")
    assert_clean_failure(run(home, "post", "ab" * 32, "--title", "x", *r), "not in this vault")
    assert_clean_failure(run(tmp_path / "nobody", "feed", *r), "no vault")
    config = home / "social" / "relays.json"
    config.write_text("{not json")
    try:
        assert_clean_failure(run(home, "feed"), "not a relay list")
    finally:
        config.unlink()


def test_default_relay_is_started_for_the_command(home, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    machine = {"VEIL_RELAY_PORT": str(port), "VEIL_RELAY_DATA": str(tmp_path / "machine-relay")}
    out = ok(run(home, "profile", "--name", "Local", env=machine))
    assert f"ws://127.0.0.1:{port}" in out
    # The relay keeps its data in the machine's store, not the vault: with the local index
    # gone, the next command's new relay process still serves the profile.
    for leftover in (home / "social").glob("index.sqlite3*"):
        leftover.unlink()
    again = ok(run(home, "profile", env=machine))
    assert "Local" in again
    assert (tmp_path / "machine-relay" / "relay.sqlite3").is_file()
    assert not (home / "social" / "relay").exists()


def _publish_small(home: Path, tmp_path: Path, name: str = "noise.bin") -> str:
    movie = tmp_path / name
    movie.write_bytes(os.urandom(200_000))
    published = ok(run(home, "publish", str(movie), "--slice-size", "64KiB", "--price", "1000000000000wei",
                       "--seeder-share", "2500"))
    return content_id_of(published)


def test_card_shows_everything_a_viewer_needs_whole(home, relay, tmp_path):
    r = ["--relay", relay.url]
    content_id = _publish_small(home, tmp_path)
    posted = ok(run(home, "post", content_id, "--title", "Noise", "--description", "four slices of noise",
                    "--tag", "noise", "--no-previews", *r))
    card_id = re.search(r"card ([0-9a-f]{64})", posted)[1]
    fan = NostrKey()

    async def fan_comments():
        from veilstream.social.relay_client import RelayPool

        async with RelayPool([relay.url]) as pool:
            await pool.publish_or_raise(kinds.build_profile(fan, name="Fan"))
            await pool.publish_or_raise(kinds.build_comment(fan, kinds.EventRef(card_id, _pubkey(home), kinds.CARD),
                                                            "best noise I have heard"))
            await pool.publish_or_raise(kinds.build_view(fan, kinds.EventRef(card_id, _pubkey(home), kinds.CARD)))

    import asyncio

    asyncio.run(fan_comments())
    magnet = _index_card(home, card_id).magnet
    assert len(magnet) > 40

    # A narrow terminal's width, and stdout a pipe: every long value still comes out whole.
    shown = ok(run(home, "card", card_id[:10], *r, env={"COLUMNS": "40"}))
    lines = shown.splitlines()
    assert f"magnet       {magnet}" in lines
    assert f"content id   {content_id}" in lines
    assert f"card         {card_id}" in lines
    assert any(line.startswith(f"creator      {_pubkey(home)}") for line in lines)  # and a name, if it has one
    assert "price        0.000001 ETH per slice · 0.000004 ETH for all 4 slices" in lines
    assert any(line.startswith("seeder share 25% (0.00000025 ETH per slice") for line in lines)
    assert "engagement   0 reactions · 1 comment · 0 reposts · 1 view" in lines
    assert "  four slices of noise" in lines
    assert f"  {fan.nostr_pubkey}  (Fan)" in next(line for line in lines if fan.nostr_pubkey in line)
    assert "    best noise I have heard" in lines

    document = json.loads(ok(run(home, "card", card_id, "--json", "--offline", env={"COLUMNS": "40"})))
    assert document["magnet"] == magnet and document["content_id"] == content_id
    assert document["price_per_slice_wei"] == "1000000000000" and document["total_wei"] == "4000000000000"
    assert document["seeder_share_bps"] == 2500 and document["slice_count"] == 4
    assert document["counts"] == {"reactions": 0, "comments": 1, "reposts": 0, "views": 1}
    assert [(c["author_name"], c["text"]) for c in document["comments"]] == [("Fan", "best noise I have heard")]

    cards = json.loads(ok(run(home, "feed", "--json", *r)))["cards"]
    assert {c["id"]: c["magnet"] for c in cards}[card_id] == magnet
    long = ok(run(home, "feed", "--long", "--offline", env={"COLUMNS": "40"})).splitlines()
    assert f"  magnet   {magnet}" in long and f"  content  {content_id}" in long


def test_unknown_cards_are_one_line(home, relay, tmp_path):
    r = ["--relay", relay.url]
    # A malformed id is refused before any relay is started or asked.
    unused_store = {"VEIL_RELAY_DATA": str(tmp_path / "no-relay-here")}
    for command in ("card", "react", "repost"):
        assert_clean_failure(run(home, command, "[/]", env=unused_store), r"'\[/\]' is not a card id")
    assert not (tmp_path / "no-relay-here").exists()
    assert_clean_failure(run(home, "card", "00000000", *r), "no card starting '00000000'")
    assert_clean_failure(run(home, "card", "00000000", "--offline"), "no card starting '00000000' in the local index")
    assert_clean_failure(run(home, "card", "ab" * 32, *r), "none of the relays")
    assert_clean_failure(run(home, "card", "nothex", *r), "not a card id")
    assert_clean_failure(run(home, "card", "[/]", *r), r"'\[/\]' is not a card id")  # text, not markup
    assert_clean_failure(run(home, "card", "ab" * 32, "--json", *r), "none of the relays")


def test_strangers_text_is_shown_as_text(home, tmp_path):
    """Markup or escape sequences in a stranger's card neither break the feed nor reach the terminal."""
    from veilstream.social.index import FeedIndex

    stranger = NostrKey()
    title = "[/] [bold]\x1b]0;pwned\x07\x1b[2J wipe"
    card = kinds.build_card(stranger, kinds.ContentCard(content_id="f0" * 32, title=title,
                                                        description="[red]\x1b[31m red", magnet="magnet:?xt=x"))
    with FeedIndex(home / "social" / "index.sqlite3") as index:
        assert index.ingest(card).accepted
        assert index.ingest(kinds.build_profile(stranger, name="[/]\x1b[5mname")).accepted
    for args in (("feed", "--offline"), ("feed", "--offline", "--long"), ("card", card.id, "--offline")):
        out = ok(run(home, *args))
        assert "\x1b" not in out and "wipe" in out, out
    shown = ok(run(home, "card", card.id, "--offline"))
    assert "[/] [bold]" in shown and "[red]" in shown and "[/]\ufffd[5mname" in shown


def _pubkey(home: Path) -> str:
    return json.loads((home / "identity.json").read_text())["nostr_pubkey"]


def _index_card(home: Path, card_id: str) -> kinds.ContentCard:
    return kinds.ContentCard.from_event(_index_event(home, card_id))


def _index_event(home: Path, event_id: str):
    from veilstream.social.index import FeedIndex

    with FeedIndex(home / "social" / "index.sqlite3") as index:
        return index.event(event_id)
