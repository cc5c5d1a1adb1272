"""Credit windows: nobody loses more than the window to a counterparty that stops paying."""

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from veilstream.chain.cheque import ChequeDomain
from veilstream.market.credit import KeyAgentAccount, SeederAccount
from veilstream.market.errors import PaymentRefused

PRICE = 1_000
SEEDER = Account.create().address
OTHER_SEEDER = Account.create().address


@pytest.fixture
def seeder_book(domain, viewer, content_id):
    return SeederAccount(viewer.address, content_id, PRICE, 2, domain.verify, seeder=SEEDER)


@pytest.fixture
def agent_book(domain, viewer, content_id):
    return KeyAgentAccount(viewer.address, content_id, PRICE, 2, domain.verify)


def test_a_viewer_that_never_pays_gets_exactly_the_window(seeder_book):
    served = 0
    while seeder_book.may_serve_next():
        seeder_book.record_served()
        served += 1
    assert served == 2
    with pytest.raises(PaymentRefused):
        seeder_book.record_served()


def test_each_cheque_unlocks_one_more_slice(seeder_book, sign):
    for _ in range(2):
        seeder_book.record_served()
    for n in range(1, 20):
        assert not seeder_book.may_serve_next()
        assert seeder_book.accept(sign(SEEDER, n * PRICE))
        seeder_book.record_served()
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
    assert agent_book.may_release(range(0, 2))
    assert not agent_book.may_release(range(0, 3))
    agent_book.accept(sign(SEEDER, 3 * PRICE))
    agent_book.accept(sign(OTHER_SEEDER, 2 * PRICE))
    assert agent_book.paid_wei == 5 * PRICE
    agent_book.record_release(range(0, 7))
    with pytest.raises(PaymentRefused, match="need more payment"):
        agent_book.record_release(range(7, 8))
    agent_book.record_release(range(3, 6))  # already released: costs nothing more
    assert len(agent_book.released) == 7


@settings(max_examples=80)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3)), max_size=60))
def test_unpaid_value_never_exceeds_the_window(steps):
    """Whatever a viewer does — pay, skip, overpay, replay — a seeder that follows
    `may_serve_next` is never owed more than the window."""
    domain = ChequeDomain(5, "0x" + "22" * 20)
    viewer = Account.from_key(b"\x07" * 32)
    book = SeederAccount(viewer.address, b"\x03" * 32, PRICE, 2, domain.verify, seeder=SEEDER)
    from veilstream.chain.cheque import Cheque

    paid = 0
    for wants_slice, payment in steps:
        if payment:
            paid += payment * PRICE // 2
            try:
                book.accept(domain.sign(viewer, Cheque(viewer.address, b"\x03" * 32, SEEDER, paid)))
            except PaymentRefused:
                pass
        if wants_slice and book.may_serve_next():
            book.record_served()
        assert book.owed_wei <= 2 * PRICE
