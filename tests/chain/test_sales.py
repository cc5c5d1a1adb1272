"""AccessSales: buy a range, the key agent posts the sealed key, or the buyer is refunded."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from veilstream.chain import ContractRevert, GrantState

from .conftest import PRICE_PER_SLICE, SEEDER_SHARE_BPS, SLICE_COUNT, World, fake_info

SEALED = b"\x01" * 80
MODE_REFUND = 3


def range_price(count: int, price: int = PRICE_PER_SLICE, share: int = SEEDER_SHARE_BPS) -> int:
    return price * count * (10_000 - share) // 10_000


def sales_earnings(world: World, address: str) -> int:
    return world.base._view(world.base.sales.functions.earnings(address))


# -- unauthorized or out-of-state key postings -----------------------------------------------


def test_only_the_contents_key_agent_may_post_a_key(chain: World):
    grant = chain.viewer.buy(chain.content_id, 0, 10)
    for intruder in (chain.stranger, chain.creator, chain.viewer, chain.seeder):
        with pytest.raises(ContractRevert, match="only the content's key agent"):
            intruder.post_key(grant, SEALED)
    assert chain.base.grant(grant).state == GrantState.OPEN


def test_a_key_is_posted_once_and_never_for_an_unknown_grant(chain: World):
    grant = chain.viewer.buy(chain.content_id, 0, 10)
    chain.agent.post_key(grant, SEALED)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.agent.post_key(grant, SEALED)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.agent.post_key(grant + 1, SEALED)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.agent.post_key(0, SEALED)


def test_a_key_after_the_deadline_is_refused_and_the_buyer_is_refunded(chain: World):
    grant_id = chain.viewer.buy(chain.content_id, 5, 20)
    grant = chain.base.grant(grant_id)
    with pytest.raises(ContractRevert, match="deadline not reached"):
        chain.viewer.refund(grant_id)
    chain.advance(chain.settings.key_deadline_s + 1)
    with pytest.raises(ContractRevert, match="deadline has passed"):
        chain.agent.post_key(grant_id, SEALED)
    with pytest.raises(ContractRevert, match="only the buyer"):
        chain.stranger.refund(grant_id)
    receipt = chain.viewer.refund(grant_id)
    assert receipt.named("Refunded")[0].args["amount"] == grant.amount == range_price(20)
    assert chain.base.grant(grant_id).state == GrantState.REFUNDED
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.viewer.refund(grant_id)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.agent.post_key(grant_id, SEALED)
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


def test_an_issued_grant_cannot_be_refunded(chain: World):
    grant_id = chain.viewer.buy(chain.content_id, 0, 1)
    chain.agent.post_key(grant_id, SEALED)
    chain.advance(chain.settings.key_deadline_s + 1)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.viewer.refund(grant_id)


def test_a_replaced_key_agent_can_no_longer_post(chain: World):
    grant_id = chain.viewer.buy(chain.content_id, 0, 1)
    chain.creator.set_key_agent(chain.content_id, chain.seeder2.address)
    with pytest.raises(ContractRevert, match="only the content's key agent"):
        chain.agent.post_key(grant_id, SEALED)
    chain.seeder2.post_key(grant_id, SEALED)


@pytest.mark.parametrize("size", [0, 4097])
def test_empty_or_oversized_keys_are_refused(chain: World, size: int):
    grant_id = chain.viewer.buy(chain.content_id, 0, 1)
    with pytest.raises(ContractRevert):
        chain.agent.post_key(grant_id, b"\x02" * size)


def test_reentering_refund_is_refused(chain: World, attacker):
    price = range_price(3)
    chain.send(chain.stranger, attacker.functions.buy(chain.content_id, 0, 3), value=price)
    chain.advance(chain.settings.key_deadline_s + 1)
    chain.send(chain.stranger, attacker.functions.set_mode(MODE_REFUND, False))
    chain.send(chain.stranger, attacker.functions.refund())
    assert attacker.functions.reentry_attempts().call() == 1
    assert attacker.functions.reentry_succeeded().call() is False
    assert attacker.functions.received().call() == price
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


# -- buying ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [-1, 1])
def test_the_buyer_must_send_exactly_the_price(chain: World, delta: int):
    with pytest.raises(ContractRevert, match="value is not the price"):
        chain.viewer.buy(chain.content_id, 0, 10, value=range_price(10) + delta)


def test_a_price_change_makes_a_stale_purchase_revert_instead_of_overcharging(chain: World):
    quote = chain.viewer.quote(chain.content_id, 0, 10)
    chain.creator.set_terms(chain.content_id, price_per_slice=PRICE_PER_SLICE * 2, seeder_share_bps=SEEDER_SHARE_BPS)
    with pytest.raises(ContractRevert, match="value is not the price"):
        chain.viewer.buy(chain.content_id, 0, 10, value=quote)


@pytest.mark.parametrize(
    ("first", "count"),
    [(0, 0), (SLICE_COUNT, 1), (SLICE_COUNT - 1, 2), (1, SLICE_COUNT), (2**256 - 1, 1), (1, 2**256 - 1)],
)
def test_ranges_outside_the_content_are_refused(chain: World, first: int, count: int):
    with pytest.raises(ContractRevert, match="range|empty"):
        chain.viewer.buy(chain.content_id, first, count, value=0)


def test_unknown_content_cannot_be_bought(chain: World):
    with pytest.raises(ContractRevert, match="unknown content"):
        chain.viewer.buy(keccak(b"nothing"), 0, 1, value=0)


def test_a_sale_pays_the_creator_its_share_once_the_key_is_issued(chain: World):
    viewer, agent, creator = chain.viewer, chain.agent, chain.creator
    grant_id = viewer.buy(chain.content_id, 100, 50)
    grant = chain.base.grant(grant_id)
    assert (grant.buyer, grant.first_slice, grant.slice_count) == (viewer.address, 100, 50)
    assert grant.amount == range_price(50)
    assert grant.deadline >= chain.base.timestamp() + chain.settings.key_deadline_s - 1
    assert sales_earnings(chain, creator.address) == 0  # held until the key comes

    receipt = agent.post_key(grant_id, SEALED)
    issued = receipt.named("KeyIssued")[0].args
    assert issued == {"grant_id": grant_id, "content_id": chain.content_id, "buyer": viewer.address, "sealed_key": SEALED}
    assert chain.base.grant(grant_id).state == GrantState.ISSUED
    assert creator.earnings() == range_price(50)
    assert creator.claim() == range_price(50)
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


def test_the_whole_content_at_the_largest_price_does_not_overflow(chain: World):
    info, cid = fake_info(chain.creator.address, b"expensive")
    price, count = 2**128 - 1, 2**32
    chain.creator.register(info, price_per_slice=price, seeder_share_bps=1, slice_count=count)
    assert chain.viewer.quote(cid, 0, count) == price * count * 9_999 // 10_000


def test_free_content_records_a_grant_for_nothing(chain: World):
    info, cid = fake_info(chain.creator.address, b"free")
    chain.creator.register(info, price_per_slice=0, seeder_share_bps=0, slice_count=3, key_agent=chain.agent.address)
    grant_id = chain.viewer.buy(cid, 0, 3)
    assert chain.base.grant(grant_id).amount == 0
    chain.advance(chain.settings.key_deadline_s + 1)
    assert chain.viewer.refund(grant_id).named("Refunded")[0].args["amount"] == 0
