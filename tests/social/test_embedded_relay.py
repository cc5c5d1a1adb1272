"""The embedded relay owns its store alone, says where it listens, and keeps our secrets."""

import asyncio
import os
from pathlib import Path

import pytest

from veilstream.social import kinds
from veilstream.social.embedded_relay import EmbeddedRelay, RelayOwner, RelayStoreBusy, store_owner
from veilstream.social.events import NostrKey
from veilstream.social.relay_client import RelayPool


def test_one_relay_owns_a_store_and_the_next_one_finds_its_events(tmp_path):
    store = tmp_path / "relay"
    author = NostrKey()
    card = kinds.build_card(author, kinds.ContentCard(content_id="ab" * 32, title="kept"))
    assert store_owner(store) is None
    with EmbeddedRelay(store, shared=True) as first:
        assert store_owner(store) == RelayOwner(first.url, pid=os.getpid(), shared=True)
        second = EmbeddedRelay(store)
        with pytest.raises(RelayStoreBusy, match="in use by the relay at " + first.url) as busy:
            second.start()
        assert busy.value.owner.url == first.url
        assert second._process is None  # refused before anything was written or spawned

        async def post() -> None:
            async with RelayPool([first.url]) as pool:
                await pool.publish_or_raise(card)

        asyncio.run(post())
    assert store_owner(store) is None
    assert not (store / "owner.json").exists()

    with EmbeddedRelay(store) as again:
        async def read() -> list:
            async with RelayPool([again.url]) as pool:
                events, _ = await pool.fetch([{"ids": [card.id]}])
                return events

        assert [e["id"] for e in asyncio.run(read())] == [card.id]
        assert store_owner(store).shared is False


def test_the_relay_process_does_not_inherit_the_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_PASSPHRASE", "hunter2 of the vault")
    monkeypatch.setenv("VEIL_SOMETHING_ELSE", "x")
    with EmbeddedRelay(tmp_path / "relay") as running:
        environment = Path(f"/proc/{running._process.pid}/environ").read_bytes()
    assert b"hunter2" not in environment and b"VEIL_" not in environment
    assert b"PATH=" in environment
