"""Market wire messages: round trips, and hostile bytes cost only a protocol error."""

import os

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from veilstream.content import bencode
from veilstream.market import messages as m
from veilstream.market.errors import MarketProtocolError
from veilstream.market.key_session import KeyDelivery, ViewerKeySession


def examples(sign):
    offer = ViewerKeySession(Account.create().key, os.urandom(32), 10**9).offer
    return [
        m.TermsMessage(10**15, 2_000, os.urandom(20), 2, 31337, os.urandom(20), True),
        m.TermsMessage(0, 0, os.urandom(20), 0, 1, os.urandom(20), False),
        m.ChequeMessage(sign(Account.create().address, 12345)),
        m.SessionMessage(offer),
        m.KeyRequest(3, 9),
        m.SealedKeys(0, 1, os.urandom(500), os.urandom(65)),
        m.GrantClaim((0,)),
        m.GrantClaim(tuple(range(1, 65))),
        m.MarketRefusal(m.RefusalCode.PAYMENT_NEEDED, "pay for slice 4 first"),
    ]


def test_round_trip(sign):
    for message in examples(sign):
        assert m.decode(m.encode(message)) == message


def test_cheque_messages_are_the_canonical_bencoding(sign):
    message = m.ChequeMessage(sign(Account.create().address, 12345))
    assert m.encode(message) == bencode.encode({b"v": m.VERSION, b"t": b"cheque", b"c": message.cheque.to_bytes()})


def test_delivery_round_trip():
    delivery = KeyDelivery(4, 12, ((2, 1, os.urandom(32)), (3, 1, os.urandom(32))), (os.urandom(32),) * 3, os.urandom(32))
    assert m.decode_delivery(m.encode_delivery(delivery)) == delivery


@pytest.mark.parametrize("body", [
    {b"v": 2, b"t": b"key_request", b"first": 0, b"end": 1},
    {b"v": 1, b"t": b"nonsense"},
    {b"v": 1, b"t": b"key_request", b"first": 5, b"end": 5},
    {b"v": 1, b"t": b"key_request", b"first": -1, b"end": 5},
    {b"v": 1, b"t": b"cheque", b"c": b"short"},
    {b"v": 1, b"t": b"session", b"content": b"x" * 32, b"key": b"k" * 31, b"exp": 1, b"sig": b"s" * 65},
    {b"v": 1, b"t": b"keys", b"first": 0, b"end": 1, b"sealed": b"x" * (m.MAX_SEALED_BYTES + 1)},
    {b"v": 1, b"t": b"grants", b"ids": []},
    {b"v": 1, b"t": b"grants", b"ids": list(range(65))},
    {b"v": 1, b"t": b"grants", b"ids": [-1]},
    {b"v": 1, b"t": b"grants", b"ids": [b"1"]},
    {b"v": 1, b"t": b"grants"},
])
def test_malformed_messages_are_protocol_errors(body):
    with pytest.raises(MarketProtocolError):
        m.decode(bencode.encode(body))


@given(st.binary(max_size=400))
def test_fuzz_decode_raises_only_protocol_errors(data):
    try:
        m.decode(data)
    except MarketProtocolError:
        pass


@given(st.binary(max_size=400))
def test_fuzz_decode_delivery_raises_only_protocol_errors(data):
    try:
        m.decode_delivery(data)
    except MarketProtocolError:
        pass


@given(st.data())
def test_fuzz_mutated_valid_messages(data):
    from veilstream.chain.cheque import Cheque, ChequeDomain

    domain = ChequeDomain(1, "0x" + "33" * 20)
    wallet = Account.from_key(b"\x05" * 32)
    sign = lambda seeder, amount: domain.sign(wallet, Cheque(wallet.address, b"\x01" * 32, seeder, amount))  # noqa: E731
    message = data.draw(st.sampled_from(examples(sign)))
    raw = bytearray(m.encode(message))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        m.decode(bytes(raw))
    except MarketProtocolError:
        pass


def test_hostile_delivery_integers_do_not_allocate():
    body = {b"first": 0, b"end": 1, b"nodes": [[0, 0, 10**15]], b"proof": [10**15]}
    with pytest.raises(MarketProtocolError):
        m.decode_delivery(bencode.encode(body))
