"""From a card to `veil play` and back: the content a card points at, and the view a viewer
leaves, counted in everyone's feed; a relay that is down or silent never fails a play."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from cli_harness import PASS, new_vault, veil
from veilstream.node.cards import VIEW_DEADLINE_S, UnknownCard, publish_view, resolve_card
from veilstream.social import kinds
from veilstream.social.embedded_relay import EmbeddedRelay
from veilstream.social.errors import SocialError
from veilstream.social.relay_client import RelayPool
from veilstream.vault import Vault

MAGNET = "magnet:?xt=urn:btmh:1220" + "c0" * 32 + "&dn=veil-movie&x.pe=127.0.0.1:6881"


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    with EmbeddedRelay(tmp_path_factory.mktemp("relay")) as running:
        yield running


def unlocked(path: Path):
    new_vault(path)
    return Vault.open(path).unlock(PASS)


def post(relay, identity, content_id: str, title: str, magnet: str = MAGNET):
    card = kinds.build_card(identity, kinds.ContentCard(content_id=content_id, title=title, magnet=magnet,
                                                        price_per_slice_wei=10**12, seeder_share_bps=2000))

    async def send() -> None:
        async with RelayPool([relay.url]) as pool:
            await pool.publish_or_raise(card)

    asyncio.run(send())
    return card


def feed_json(home: Path, relay) -> dict:
    result = veil(home, "feed", "--json", "--relay", relay.url, passphrase=None)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_resolve_card_finds_the_magnet_in_the_index_or_on_the_relays(tmp_path, relay):
    creator, viewer = unlocked(tmp_path / "creator"), unlocked(tmp_path / "viewer")
    card = post(relay, creator.identity(), "c0" * 32, "Movie")
    # The viewer's index has never seen the card: by prefix it is found among the relays' cards.
    assert resolve_card(viewer.home, card.id[:10], [relay.url]) == MAGNET
    assert resolve_card(viewer.home, card.id, []) == MAGNET  # now indexed: no relay needed
    other = post(relay, creator.identity(), "c1" * 32, "Without magnet", magnet="")
    assert resolve_card(tmp_path / "fresh", other.id.upper(), [relay.url]) == "c1" * 32

    with pytest.raises(UnknownCard, match="no card starting '00000000'"):
        resolve_card(viewer.home, "00000000", [relay.url])
    with pytest.raises(UnknownCard, match="on none of the relays"):
        resolve_card(viewer.home, "ab" * 32, [relay.url])
    with pytest.raises(SocialError, match="not a card id"):
        resolve_card(viewer.home, "movie", [relay.url])
    comment = kinds.build_comment(creator.identity(), kinds.EventRef.of(card), "a comment, not a card")
    asyncio.run(_send(relay, comment))
    with pytest.raises(UnknownCard, match="is not a card"):
        resolve_card(viewer.home, comment.id, [relay.url])


async def _send(relay, event) -> None:
    async with RelayPool([relay.url]) as pool:
        await pool.publish_or_raise(event)


def test_a_view_after_a_play_is_counted_once_per_viewer_in_the_feed(tmp_path, relay):
    creator, viewer = unlocked(tmp_path / "creator"), unlocked(tmp_path / "viewer")
    content_id = "d0" * 32
    card = post(relay, creator.identity(), content_id, "Watched")
    publish_view(viewer.home, viewer.identity(), content_id, [relay.url])
    publish_view(viewer.home, viewer.identity(), content_id, [relay.url])  # watched twice: one viewer
    (shown,) = [c for c in feed_json(creator.home, relay)["cards"] if c["id"] == card.id]
    assert shown["counts"]["views"] == 1


def test_a_view_names_the_card_the_play_started_from(tmp_path, relay):
    creator, viewer = unlocked(tmp_path / "creator"), unlocked(tmp_path / "viewer")
    content_id = "d1" * 32
    post(relay, creator.identity(), content_id, "First card")
    second = post(relay, creator.identity(), content_id, "Second card")
    publish_view(viewer.home, viewer.identity(), content_id.upper(), [relay.url], card_id=second.id[:12])
    views = {c["title"]: c["counts"]["views"] for c in feed_json(creator.home, relay)["cards"]}
    assert views["Second card"] == 1 and views["First card"] == 0


def test_a_view_never_fails_nor_stalls_a_play(tmp_path, relay):
    viewer = unlocked(tmp_path / "viewer")
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections into its backlog and never answers
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        for url in (f"ws://127.0.0.1:{silent.getsockname()[1]}", f"ws://127.0.0.1:{closed.getsockname()[1]}"):
            started = time.monotonic()
            publish_view(viewer.home, viewer.identity(), "e0" * 32, [url])
            assert time.monotonic() - started < VIEW_DEADLINE_S + 1
    # A content no card points at: nothing to view, nothing raised.
    publish_view(viewer.home, viewer.identity(), "e1" * 32, [relay.url])
    log = (viewer.home / "social" / "social.log").read_text()
    assert "no relay reachable" in log and "no card points at it" in log
