"""Anchor roots, and reading events with a cursor."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from veilstream.chain import AnchorKind, ContractRevert

from .conftest import World


def test_anchors_count_per_poster_and_kind(chain: World):
    a, b = keccak(b"head 1"), keccak(b"head 2")
    assert chain.agent.anchor(AnchorKind.AUDIT_LOG, a) == 1
    assert chain.agent.anchor(AnchorKind.AUDIT_LOG, b) == 2
    assert chain.agent.anchor(AnchorKind.FEED_BATCH, a) == 1
    assert chain.stranger.anchor(AnchorKind.AUDIT_LOG, a) == 1
    assert chain.base.latest_anchor(chain.agent.address, AnchorKind.AUDIT_LOG) == (b, 2)
    assert chain.base.latest_anchor(chain.seeder.address, AnchorKind.AUDIT_LOG) == (bytes(32), 0)


def test_a_zero_root_is_refused(chain: World):
    with pytest.raises(ContractRevert, match="root is zero"):
        chain.agent.anchor(AnchorKind.AUDIT_LOG, bytes(32))


def test_the_event_cursor_returns_each_event_once_in_order(chain: World):
    first = chain.base.events()
    names = [e.name for e in first.events]
    assert names[0] == "ContentRegistered" and names.count("Deposited") == 2

    assert chain.base.events(first.cursor).events == []
    chain.agent.anchor(AnchorKind.AUDIT_LOG, keccak(b"x"))
    chain.viewer.deposit(5)
    page = chain.base.events(first.cursor)
    assert [e.name for e in page.events] == ["Anchored", "Deposited"]
    assert page.events[1].args == {"viewer": chain.viewer.address, "amount": 5, "balance": chain.viewer.deposit_of()}
    assert [(e.block_number, e.log_index) for e in page.events] == sorted(
        (e.block_number, e.log_index) for e in page.events
    )
    assert chain.base.events(page.cursor).events == []
    only = chain.base.events(first.cursor, names={"Deposited"})
    assert [e.contract for e in only.events] == ["Wallet"]
