"""Credit windows: nobody loses more than the window to a counterparty that stops paying,
and nobody extends credit without cover (a lane the chain guarantees)."""

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from veilstream.chain.cheque import ChequeDomain
from veilstream.chain.client import Guarantee
from veilstream.market.credit import KeyAgentAccount, SeederAccount
from veilstream.market.errors import PaymentRefused

PRICE = 1_000
SEEDER = Account.create().address
OTHER_SEEDER = Account.create().address
NOW = 1_700_000_000
LANE = Guarantee(ceiling_wei=1_000 * PRICE, until=NOW + 10_000)  # what the chain promises a payee


@pytest.fixture
def seeder_book(domain, viewer, content_id):
    book = SeederAccount(viewer.address, content_id, PRICE, 2, domain.verify, seeder=SEEDER, margin_s=600)
    book.set_cover(LANE)
    return book


@pytest.fixture
def agent_book(domain, viewer, content_id):
    book = KeyAgentAccount(viewer.address, content_id, PRICE, 2, domain.verify, margin_s=600)
    book.set_cover(SEEDER, LANE)
    book.set_cover(OTHER_SEEDER, LANE)
    return book


def test_a_viewer_that_never_pays_gets_exactly_the_window(seeder_book):
    served = 0
    while seeder_book.may_serve_next(NOW):
        seeder_book.record_served(NOW)
        served += 1
    assert served == 2
    with pytest.raises(PaymentRefused):
        seeder_book.record_served(NOW)


@pytest.mark.parametrize("cover", [None, Guarantee(0, 0), Guarantee(5 * PRICE, NOW + 100)])
def test_no_cover_no_credit(domain, viewer, content_id, sign, cover):
    """No lane, or one too close to its time to cash against: nothing is served, however
    the viewer pays (its cheques would not be sure to be paid)."""
    book = SeederAccount(viewer.address, content_id, PRICE, 2, domain.verify, seeder=SEEDER, margin_s=600)
    if cover is not None:
        book.set_cover(cover)
    book.accept(sign(SEEDER, 3 * PRICE))
    assert not book.may_serve(1, NOW)


def test_credit_stops_at_the_lane(domain, viewer, content_id, sign):
    """Cheques beyond the lane are not sure to be paid: they buy nothing."""
    book = SeederAccount(viewer.address, content_id, PRICE, 2, domain.verify, seeder=SEEDER, margin_s=600)
    book.set_cover(Guarantee(5 * PRICE, NOW + 10_000))
    book.accept(sign(SEEDER, 100 * PRICE))
    served = 0
    while book.may_serve_next(NOW):
        book.record_served(NOW)
        served += 1
    assert served == 5


def test_each_cheque_unlocks_one_more_slice(seeder_book, sign):
    for _ in range(2):
        seeder_book.record_served(NOW)
    for n in range(1, 20):
        assert not seeder_book.may_serve_next(NOW)
        assert seeder_book.accept(sign(SEEDER, n * PRICE))
        seeder_book.record_served(NOW)
    assert seeder_book.owed_wei == 2 * PRICE


def test_replayed_and_stale_cheques_add_nothing(seeder_book, sign):
    first, second = sign(SEEDER, PRICE), sign(SEEDER, 2 * PRICE)
    assert seeder_book.accept(second)
    assert not seeder_book.accept(second)  # replay: harmless, pays nothing more
    with pytest.raises(PaymentRefused, match="stale"):
        seeder_book.accept(first)
    assert seeder_book.paid_wei == 2 * PRICE


@pytest.mark.parametrize("case", ["other seeder", "other content", "other viewer", "other chain", "forged"])
def test_foreign_or_forged_cheques_are_refused(seeder_book, sign, viewer, case):
    stranger = Account.create()
    make = {
        "other seeder": lambda: sign(OTHER_SEEDER, PRICE),
        "other content": lambda: sign(SEEDER, PRICE, content=b"\x01" * 32),
        "other viewer": lambda: sign(SEEDER, PRICE, account=stranger),
        "other chain": lambda: sign(SEEDER, PRICE, on_domain=ChequeDomain(1, "0x" + "11" * 20)),
        "forged": lambda: type(sign(SEEDER, PRICE))(sign(SEEDER, PRICE).cheque, sign(SEEDER, 5 * PRICE).signature),
    }[case]
    with pytest.raises(PaymentRefused):
        seeder_book.accept(make())
    assert seeder_book.paid_wei == 0


def test_key_agent_sums_cheques_over_seeders(agent_book, sign):
    assert agent_book.may_release(range(0, 2), NOW)
    assert not agent_book.may_release(range(0, 3), NOW)
    agent_book.accept(sign(SEEDER, 3 * PRICE))
    agent_book.accept(sign(OTHER_SEEDER, 2 * PRICE))
    assert agent_book.paid_wei == agent_book.counted_wei(NOW) == 5 * PRICE
    agent_book.record_release(range(0, 7), NOW)
    with pytest.raises(PaymentRefused, match="need more payment"):
        agent_book.record_release(range(7, 8), NOW)
    agent_book.record_release(range(3, 6), NOW)  # already released: costs nothing more
    assert len(agent_book.released) == 7


def test_key_agent_counts_cheques_only_up_to_their_payees_lanes(domain, viewer, content_id, sign):
    """A cheque to a payee with no lane (a sock puppet, a throw-away address), or beyond
    its lane, is not sure to be paid: it buys no keys. With no cover at all there is no
    window either."""
    book = KeyAgentAccount(viewer.address, content_id, PRICE, 2, domain.verify, margin_s=600)
    assert not book.may_release(range(0, 1), NOW)
    book.accept(sign(SEEDER, 50 * PRICE))
    book.set_cover(SEEDER, Guarantee(0, 0))
    assert not book.may_release(range(0, 1), NOW)
    book.set_cover(SEEDER, Guarantee(4 * PRICE, NOW + 10_000))
    assert book.counted_wei(NOW) == 4 * PRICE and book.spare_cover_wei(NOW) == 0
    assert book.may_release(range(0, 4), NOW) and not book.may_release(range(0, 5), NOW)
    book.set_cover(OTHER_SEEDER, Guarantee(10 * PRICE, NOW + 10_000))  # an unused lane backs the window
    assert book.may_release(range(0, 6), NOW) and not book.may_release(range(0, 7), NOW)
    assert not book.may_release(range(0, 1), NOW + 10_000 - 600)  # too close to the lanes' time


def test_cheques_naming_an_address_the_chain_never_pays_are_refused(agent_book, sign):
    with pytest.raises(PaymentRefused, match="never pay"):
        agent_book.accept(sign("0x" + "00" * 20, 10 * PRICE))
    assert not agent_book.may_release(range(0, 3), NOW)


@settings(max_examples=80)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3)), max_size=60))
def test_unpaid_value_never_exceeds_the_window(steps):
    """Whatever a viewer does — pay, skip, overpay, replay — a seeder that follows
    `may_serve_next` is never owed more than the window."""
    domain = ChequeDomain(5, "0x" + "22" * 20)
    viewer = Account.from_key(b"\x07" * 32)
    book = SeederAccount(viewer.address, b"\x03" * 32, PRICE, 2, domain.verify, seeder=SEEDER)
    book.set_cover(Guarantee(20 * PRICE, NOW + 10_000))
    from veilstream.chain.cheque import Cheque

    paid = 0
    for wants_slice, payment in steps:
        if payment:
            paid += payment * PRICE // 2
            try:
                book.accept(domain.sign(viewer, Cheque(viewer.address, b"\x03" * 32, SEEDER, paid)))
            except PaymentRefused:
                pass
        if wants_slice and book.may_serve_next(NOW):
            book.record_served(NOW)
        assert book.owed_wei <= 2 * PRICE
        assert book.served_wei <= 20 * PRICE  # never past the lane
