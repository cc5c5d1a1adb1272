"""ContentRegistry: unique ids, creator-only changes, every change an event, and a
time-locked seeder share."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from veilstream.chain import ContractRevert

from .conftest import PRICE_PER_SLICE, SEEDER_SHARE_BPS, SLICE_COUNT, TEST_COMMITMENTS, World, fake_info

MILLI = 10**15


@pytest.mark.parametrize("who", ["stranger", "agent", "seeder", "viewer"])
def test_only_the_creator_changes_a_record(chain: World, who: str):
    intruder = getattr(chain, who)
    cid = chain.content_id
    with pytest.raises(ContractRevert, match="only the creator"):
        intruder.set_terms(cid, price_per_slice=1, seeder_share_bps=10_000)
    with pytest.raises(ContractRevert, match="only the creator"):
        intruder.set_key_agent(cid, intruder.address)
    with pytest.raises(ContractRevert, match="only the creator"):
        intruder.set_card(cid, bytes(32))
    record = chain.base.content(cid)
    assert (record.price_per_slice, record.seeder_share_bps, record.key_agent) == (
        PRICE_PER_SLICE,
        SEEDER_SHARE_BPS,
        chain.agent.address,
    )


def test_changes_to_unknown_content_are_refused(chain: World):
    with pytest.raises(ContractRevert, match="unknown content"):
        chain.creator.set_terms(keccak(b"nope"), price_per_slice=1, seeder_share_bps=1)


def test_ids_are_unique(chain: World):
    info, cid = fake_info(chain.creator.address, b"veilstream test content", TEST_COMMITMENTS.root)
    assert cid == chain.content_id
    with pytest.raises(ContractRevert, match="already registered"):
        chain.creator.register(info, price_per_slice=1, seeder_share_bps=0, slice_count=1)


def test_a_squatter_cannot_register_a_creators_content(chain: World):
    """The attack: a squatter registers a creator's content id first, collects every
    payment, and the creator's own registration reverts. Now the registry reads the
    creator out of the manifest and takes the registration from that address only."""
    info, cid = fake_info(chain.seeder.address, b"a creator's new video")
    for squatter in (chain.stranger, chain.agent, chain.viewer):
        with pytest.raises(ContractRevert, match="only the manifest's creator"):
            squatter.register(info, price_per_slice=1, seeder_share_bps=0, slice_count=1, key_agent=squatter.address)
    assert chain.base.content(cid) is None
    chain.seeder.register(info, price_per_slice=5, seeder_share_bps=100, slice_count=9)
    record = chain.base.content(cid)
    assert record.creator == chain.seeder.address
    assert record.key_root == keccak(b"key root a creator's new video")


def test_a_forged_manifest_position_is_refused(chain: World):
    """The squatter points the contract at bytes it chose: a name that spells out a
    manifest naming itself. The id is then another content's (the info differs), and a
    pointer into the real info dict that is not the manifest fails the marker."""
    info, _ = fake_info(chain.creator.address, b"real")
    with pytest.raises(ContractRevert, match="no manifest at that offset"):
        chain.stranger._send(chain.stranger.registry.functions.register(
            info, 0, chain.stranger.address, 1, 0, 1, bytes(32)))
    with pytest.raises(ContractRevert):
        chain.stranger._send(chain.stranger.registry.functions.register(
            info, len(info) - 10, chain.stranger.address, 1, 0, 1, bytes(32)))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("seeder_share_bps", 10_001, "seeder share above"),
        ("slice_count", 0, "slice count is zero"),
        ("slice_count", 2**32 + 1, "slice count too large"),
        ("price_per_slice", 2**128, "price per slice too large"),
        ("key_agent", "0x" + "00" * 20, "zero address"),
    ],
)
def test_registration_bounds(chain: World, field: str, value, reason: str):
    args = {
        "price_per_slice": 1,
        "seeder_share_bps": 0,
        "slice_count": 1,
        "key_agent": chain.agent.address,
    }
    args[field] = value
    info, _ = fake_info(chain.creator.address, b"bounds")
    with pytest.raises(ContractRevert, match=reason):
        chain.creator.register(info, **args)


def test_every_change_is_an_event(chain: World):
    cid = chain.content_id
    start = chain.base.block_number() + 1
    chain.creator.set_terms(cid, price_per_slice=7, seeder_share_bps=SEEDER_SHARE_BPS)
    chain.creator.set_key_agent(cid, chain.seeder2.address)
    chain.creator.set_card(cid, keccak(b"new card"))
    chain.creator.set_terms(cid, price_per_slice=7, seeder_share_bps=0)
    page = chain.base.events(start)
    assert [e.name for e in page.events] == [
        "PriceChanged",
        "KeyAgentChanged",
        "CardChanged",
        "SeederShareScheduled",
    ]
    assert all(e.args["content_id"] == cid for e in page.events)
    record = chain.base.content(cid)
    assert (record.price_per_slice, record.key_agent, record.card_hash) == (7, chain.seeder2.address, keccak(b"new card"))


def test_a_cut_in_the_seeder_share_waits_so_seeders_can_cash_first(chain: World):
    cid = chain.content_id
    served = chain.viewer.sign_cheque(cid, chain.seeder.address, 10 * MILLI)
    receipt = chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=0)
    effective_at = receipt.named("SeederShareScheduled")[0].args["effective_at"]
    record = chain.base.content(cid)
    assert record.seeder_share_bps == SEEDER_SHARE_BPS
    assert (record.scheduled_seeder_share_bps, record.share_effective_at) == (0, effective_at)

    # The seeder cashes inside the window under the terms it served under.
    result = chain.seeder.cash([served])
    assert result.cashed[0].args["seeder_part"] == 10 * MILLI * SEEDER_SHARE_BPS // 10_000

    chain.advance(chain.settings.terms_delay_s)
    assert chain.base.content(cid).seeder_share_bps == 0
    later = chain.viewer.sign_cheque(cid, chain.seeder.address, 20 * MILLI)
    assert chain.seeder.cash([later]).cashed[0].args["seeder_part"] == 0


def test_rescheduling_keeps_a_share_that_already_took_effect(chain: World):
    cid = chain.content_id
    chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=3_000)
    chain.advance(chain.settings.terms_delay_s)
    chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=9_000)
    record = chain.base.content(cid)
    assert record.seeder_share_bps == 3_000
    assert record.scheduled_seeder_share_bps == 9_000
    # Setting the share in force again cancels what was scheduled.
    chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=3_000)
    chain.advance(chain.settings.terms_delay_s)
    assert chain.base.content(cid).seeder_share_bps == 3_000


def test_a_registered_record_reads_back(chain: World):
    record = chain.base.content(chain.content_id)
    assert record.creator == chain.creator.address
    assert record.slice_count == SLICE_COUNT
    assert record.card_hash == keccak(b"card")
    assert chain.base.content(keccak(b"unknown")) is None


def test_cancelling_a_scheduled_share_is_an_event(chain: World):
    """Watchers (seeders about to cash before a cut) learn that a change they wait for
    was dropped."""
    cid = chain.content_id
    chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=500)
    receipt = chain.creator.set_terms(cid, price_per_slice=PRICE_PER_SLICE, seeder_share_bps=SEEDER_SHARE_BPS)
    assert [e.name for e in receipt.events] == ["SeederShareCancelled"]
    assert receipt.events[0].args["seeder_share_bps"] == SEEDER_SHARE_BPS
    assert chain.base.content(cid).scheduled_seeder_share_bps is None
