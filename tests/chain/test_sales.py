"""AccessSales: buy a range, the key agent posts the keys sealed to the buyer's one-time key
(checked against the registered key root as it posts), the buyer may prove a bad delivery
within the dispute window and is refunded, else the creator is credited; no key by the
deadline, and the buyer takes the payment back. Hostile paths first."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_hash.auto import keccak

from veilstream.chain import ContractRevert, DeliveryNode, GrantState, SealedDelivery
from veilstream.market.access import BadDelivery, OneTimeKey, dispute_delivery, open_delivery, seal_delivery

from .conftest import (
    PRICE_PER_SLICE,
    SEEDER_SHARE_BPS,
    SLICE_COUNT,
    TEST_COMMITMENTS,
    TEST_KEYS,
    World,
    fake_info,
)

MODE_REFUND = 3
META_KEY = keccak(b"metadata key")


def range_price(count: int, price: int = PRICE_PER_SLICE, share: int = SEEDER_SHARE_BPS) -> int:
    return price * count * (10_000 - share) // 10_000


def sales_earnings(world: World, address: str) -> int:
    return world.base._view(world.base.sales.functions.earnings(address))


def buy(chain: World, first: int, count: int, key: OneTimeKey | None = None, buyer=None) -> tuple[int, OneTimeKey]:
    key = key or OneTimeKey.generate()
    return (buyer or chain.viewer).buy(chain.content_id, first, count, key.public), key


def sealed(chain: World, grant_id: int, key: OneTimeKey) -> SealedDelivery:
    """What an honest key agent posts for the grant."""
    return seal_delivery(TEST_KEYS, TEST_COMMITMENTS, META_KEY, chain.base.grant(grant_id), key.public)


def with_bad_key(delivery: SealedDelivery, position: int | None = None) -> tuple[SealedDelivery, int]:
    """The same delivery with one node's (sealed) key flipped: its root stands, its key lies."""
    nodes = list(delivery.nodes)
    position = position if position is not None else next(i for i, n in enumerate(nodes) if n.inside)
    node = nodes[position]
    nodes[position] = replace(node, sealed_key=bytes([node.sealed_key[0] ^ 1]) + node.sealed_key[1:])
    return replace(delivery, nodes=tuple(nodes)), position


# -- unauthorized or out-of-state key postings -----------------------------------------------


def test_only_the_contents_key_agent_may_post_a_key(chain: World):
    grant, key = buy(chain, 0, 10)
    for intruder in (chain.stranger, chain.creator, chain.viewer, chain.seeder):
        with pytest.raises(ContractRevert, match="only the content's key agent"):
            intruder.post_key(grant, sealed(chain, grant, key))
    assert chain.base.grant(grant).state == GrantState.OPEN


def test_a_key_is_posted_once_and_never_for_an_unknown_grant(chain: World):
    grant, key = buy(chain, 0, 10)
    delivery = sealed(chain, grant, key)
    chain.agent.post_key(grant, delivery)
    for grant_id in (grant, grant + 1, 0):
        with pytest.raises(ContractRevert, match="grant is not open"):
            chain.agent.post_key(grant_id, delivery)


def test_a_key_after_the_deadline_is_refused_and_the_buyer_is_refunded(chain: World):
    grant_id, key = buy(chain, 5, 20)
    grant = chain.base.grant(grant_id)
    with pytest.raises(ContractRevert, match="deadline not reached"):
        chain.viewer.refund(grant_id)
    chain.advance(chain.settings.key_deadline_s + 1)
    with pytest.raises(ContractRevert, match="deadline has passed"):
        chain.agent.post_key(grant_id, sealed(chain, grant_id, key))
    with pytest.raises(ContractRevert, match="only the buyer"):
        chain.stranger.refund(grant_id)
    receipt = chain.viewer.refund(grant_id)
    assert receipt.named("Refunded")[0].args["amount"] == grant.amount == range_price(20)
    assert chain.base.grant(grant_id).state == GrantState.REFUNDED
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.viewer.refund(grant_id)
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


def test_an_issued_grant_cannot_be_refunded_by_the_deadline_path(chain: World):
    grant_id, key = buy(chain, 0, 1)
    chain.agent.post_key(grant_id, sealed(chain, grant_id, key))
    chain.advance(chain.settings.key_deadline_s + 1)
    with pytest.raises(ContractRevert, match="grant is not open"):
        chain.viewer.refund(grant_id)


def test_a_replaced_key_agent_can_no_longer_post(chain: World):
    grant_id, key = buy(chain, 0, 1)
    chain.creator.set_key_agent(chain.content_id, chain.seeder2.address)
    with pytest.raises(ContractRevert, match="only the content's key agent"):
        chain.agent.post_key(grant_id, sealed(chain, grant_id, key))
    chain.seeder2.post_key(grant_id, sealed(chain, grant_id, key))


# -- what the agent may post: checked against the registered key root ---------------------------


def _tamper(delivery: SealedDelivery, how: str) -> SealedDelivery:
    nodes = list(delivery.nodes)
    inside = next(i for i, n in enumerate(nodes) if n.inside)
    outside = next(i for i, n in enumerate(nodes) if not n.inside)
    if how == "any bytes":  # the old contract took any bytes as the key
        return SealedDelivery(b"\x02" + bytes(32), (), bytes(32))
    if how == "a wrong root":
        nodes[inside] = replace(nodes[inside], root=keccak(b"not the root"))
    elif how == "a node missing":
        del nodes[outside]
    elif how == "out of order":
        nodes[inside], nodes[outside] = nodes[outside], nodes[inside]
    elif how == "a key outside the range":
        nodes[outside] = replace(nodes[outside], sealed_key=keccak(b"leaked"))
    elif how == "an outside node posing as inside":
        nodes[outside] = replace(nodes[outside], inside=True)
    return replace(delivery, nodes=tuple(nodes))


@pytest.mark.parametrize("how", ["any bytes", "a wrong root", "a node missing", "out of order",
                                 "a key outside the range", "an outside node posing as inside"])
def test_a_delivery_that_does_not_rebuild_the_key_root_is_refused(chain: World, how: str):
    grant_id, key = buy(chain, 100, 50)
    with pytest.raises(ContractRevert):
        chain.agent.post_key(grant_id, _tamper(sealed(chain, grant_id, key), how))
    assert chain.base.grant(grant_id).state == GrantState.OPEN


def test_a_key_node_opening_more_than_4096_slices_is_refused(chain: World):
    """A dispute re-derives every slice key under a node; a node above MAX_NODE_HEIGHT
    would be too costly to dispute, so it may not be posted (the agent splits it)."""
    info, cid = fake_info(chain.creator.address, b"big", bytes(32))
    chain.creator.register(info, price_per_slice=1, seeder_share_bps=0, slice_count=2**14,
                           key_agent=chain.agent.address)
    key = OneTimeKey.generate()
    grant_id = chain.viewer.buy(cid, 0, 2**13, key.public)
    node = DeliveryNode(13, 0, bytes(32), keccak(b"k"), True)
    rest = DeliveryNode(13, 1, bytes(32), bytes(32), False)
    with pytest.raises(ContractRevert, match="more than MAX_NODE_LEAVES"):
        chain.agent.post_key(grant_id, SealedDelivery(b"\x02" + bytes(32), (node, rest), bytes(32)))


# -- disputes: a bad delivery is refunded, a good one is paid --------------------------------------


def test_the_buyer_opens_an_honest_delivery_and_the_creator_is_paid_after_the_window(chain: World):
    grant_id, key = buy(chain, 100, 50)
    assert sales_earnings(chain, chain.creator.address) == 0
    chain.agent.post_key(grant_id, sealed(chain, grant_id, key))
    grant, delivery = chain.base.grant(grant_id), chain.base.delivery(grant_id)
    ring = open_delivery(key.secret, grant, delivery, None)
    for index in (100, 125, 149):
        assert ring.slice_key(index) == TEST_KEYS.leaf_key(index)
    assert sales_earnings(chain, chain.creator.address) == 0  # held for the dispute window
    with pytest.raises(ContractRevert, match="still open"):
        chain.stranger.settle(grant_id)
    with pytest.raises(ContractRevert, match="delivered key is good"):
        chain.viewer.dispute(grant_id, key.secret, delivery, next(i for i, n in enumerate(delivery.nodes) if n.inside))
    chain.advance(chain.settings.dispute_window_s + 1)
    chain.stranger.settle(grant_id)  # anyone may settle once the window is over
    assert chain.base.grant(grant_id).state == GrantState.SETTLED
    assert chain.creator.claim() == range_price(50)
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


def test_a_buyer_that_confirms_pays_the_creator_at_once(chain: World):
    grant_id, key = buy(chain, 0, 7)
    chain.agent.post_key(grant_id, sealed(chain, grant_id, key))
    with pytest.raises(ContractRevert, match="only the buyer"):
        chain.stranger.confirm(grant_id)
    chain.viewer.confirm(grant_id)
    assert sales_earnings(chain, chain.creator.address) == range_price(7)
    with pytest.raises(ContractRevert, match="not issued"):
        chain.viewer.dispute(grant_id, key.secret, chain.base.delivery(grant_id), 0)


@pytest.mark.parametrize("range_", [(0, 1), (100, 50), (3, 997)])
def test_bad_keys_are_proven_on_chain_and_the_buyer_is_refunded(chain: World, range_):
    """The attack: AccessSales paid the creator for whatever bytes the agent posted. Now a
    node key that does not open its committed subtree is proven bad in a dispute."""
    first, count = range_
    grant_id, key = buy(chain, first, count)
    bad, position = with_bad_key(sealed(chain, grant_id, key))
    chain.agent.post_key(grant_id, bad)  # its roots are right: only the sealed key lies
    grant, delivery = chain.base.grant(grant_id), chain.base.delivery(grant_id)
    with pytest.raises(BadDelivery) as caught:
        open_delivery(key.secret, grant, delivery, None)
    assert caught.value.position == position
    refunded = dispute_delivery(chain.viewer, key.secret, caught.value)
    assert refunded == range_price(count)
    assert chain.base.grant(grant_id).state == GrantState.REFUNDED
    chain.advance(chain.settings.dispute_window_s + 1)
    with pytest.raises(ContractRevert, match="not issued"):
        chain.stranger.settle(grant_id)
    assert sales_earnings(chain, chain.creator.address) == 0
    assert chain.base.balance(chain.base.deployment.access_sales) == 0


def test_a_dispute_needs_the_buyer_its_secret_the_posted_delivery_and_the_window(chain: World):
    grant_id, key = buy(chain, 10, 20)
    bad, position = with_bad_key(sealed(chain, grant_id, key))
    chain.agent.post_key(grant_id, bad)
    delivery = chain.base.delivery(grant_id)
    with pytest.raises(ContractRevert, match="only the buyer"):
        chain.stranger.dispute(grant_id, key.secret, delivery, position)
    with pytest.raises(ContractRevert, match="one-time key"):
        chain.viewer.dispute(grant_id, OneTimeKey.generate().secret, delivery, position)
    with pytest.raises(ContractRevert, match="not the delivery"):
        chain.viewer.dispute(grant_id, key.secret, sealed(chain, grant_id, key), position)
    outside = next(i for i, n in enumerate(delivery.nodes) if not n.inside)
    with pytest.raises(ContractRevert, match="carries no key"):
        chain.viewer.dispute(grant_id, key.secret, delivery, outside)
    chain.advance(chain.settings.dispute_window_s + 1)
    with pytest.raises(ContractRevert, match="window has passed"):
        chain.viewer.dispute(grant_id, key.secret, delivery, position)


def test_a_delivery_sealed_to_another_key_is_refunded(chain: World):
    """An agent that seals to a key of its choosing (not the buyer's one-time key) gives
    the buyer nothing it can open: the dispute unseals with the buyer's key and fails."""
    grant_id, key = buy(chain, 0, 16)
    chain.agent.post_key(grant_id, sealed(chain, grant_id, OneTimeKey.generate()))
    grant, delivery = chain.base.grant(grant_id), chain.base.delivery(grant_id)
    with pytest.raises(BadDelivery) as caught:
        open_delivery(key.secret, grant, delivery, None)
    assert dispute_delivery(chain.viewer, key.secret, caught.value) == range_price(16)


def test_reentering_refund_is_refused(chain: World, attacker):
    price = range_price(3)
    chain.send(chain.stranger, attacker.functions.buy(chain.content_id, 0, 3, OneTimeKey.generate().public),
               value=price)
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
        chain.viewer.buy(chain.content_id, 0, 10, OneTimeKey.generate().public, value=range_price(10) + delta)


def test_a_price_change_makes_a_stale_purchase_revert_instead_of_overcharging(chain: World):
    quote = chain.viewer.quote(chain.content_id, 0, 10)
    chain.creator.set_terms(chain.content_id, price_per_slice=PRICE_PER_SLICE * 2, seeder_share_bps=SEEDER_SHARE_BPS)
    with pytest.raises(ContractRevert, match="value is not the price"):
        chain.viewer.buy(chain.content_id, 0, 10, OneTimeKey.generate().public, value=quote)


@pytest.mark.parametrize(
    ("first", "count"),
    [(0, 0), (SLICE_COUNT, 1), (SLICE_COUNT - 1, 2), (1, SLICE_COUNT), (2**256 - 1, 1), (1, 2**256 - 1)],
)
def test_ranges_outside_the_content_are_refused(chain: World, first: int, count: int):
    with pytest.raises(ContractRevert, match="range|empty|at most"):
        chain.viewer.buy(chain.content_id, first, count, OneTimeKey.generate().public, value=0)


def test_unknown_content_cannot_be_bought(chain: World):
    with pytest.raises(ContractRevert, match="unknown content"):
        chain.viewer.buy(keccak(b"nothing"), 0, 1, OneTimeKey.generate().public, value=0)


def test_a_one_time_key_is_64_bytes(chain: World):
    with pytest.raises(ContractRevert, match="64 bytes"):
        chain.viewer.buy(chain.content_id, 0, 1, b"\x01" * 33)


def test_the_largest_purchase_at_the_largest_price_does_not_overflow(chain: World):
    info, cid = fake_info(chain.creator.address, b"expensive")
    price, count = 2**128 - 1, 2**32
    chain.creator.register(info, price_per_slice=price, seeder_share_bps=1, slice_count=count)
    most = 65536  # AccessSales.MAX_GRANT_SLICES
    assert chain.viewer.quote(cid, count - most, most) == price * most * 9_999 // 10_000
    with pytest.raises(ContractRevert, match="at most"):
        chain.viewer.quote(cid, 0, most + 1)


def test_free_content_records_a_grant_for_nothing(chain: World):
    info, cid = fake_info(chain.creator.address, b"free")
    chain.creator.register(info, price_per_slice=0, seeder_share_bps=0, slice_count=3, key_agent=chain.agent.address)
    grant_id = chain.viewer.buy(cid, 0, 3, OneTimeKey.generate().public)
    assert chain.base.grant(grant_id).amount == 0
    chain.advance(chain.settings.key_deadline_s + 1)
    assert chain.viewer.refund(grant_id).named("Refunded")[0].args["amount"] == 0
