"""Cheques off chain: EIP-712 signing with eth-account, fast verification that accepts
exactly what the contract accepts, and the wire format."""

from __future__ import annotations

import os

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from veilstream.chain import Cheque, ChequeDomain, ChequeError, SignedCheque, content_id_bytes
from veilstream.chain.cheque import EIP712_TYPES, SECP256K1_N, WIRE_BYTES

VIEWER = Account.from_key(b"\x11" * 32)
OTHER = Account.from_key(b"\x22" * 32)
SEEDER = "0x" + "ab" * 20
DOMAIN = ChequeDomain(31337, "0x" + "cd" * 20)
CID = bytes(range(32))


def cheque(amount: int = 1000, **changes) -> Cheque:
    fields = {"viewer": VIEWER.address, "content_id": CID, "seeder": SEEDER, "cumulative_amount": amount}
    fields.update(changes)
    return Cheque(**fields)


def test_the_digest_is_eip712_as_eth_account_computes_it():
    c = cheque(123456789)
    message = encode_typed_data(
        domain_data=DOMAIN.typed_domain(), message_types=EIP712_TYPES, message_data=c.typed_message()
    )
    assert DOMAIN.digest(c) == _hash_eip191_message(message)


def test_a_signed_cheque_verifies_and_round_trips():
    signed = DOMAIN.sign(VIEWER, cheque())
    DOMAIN.verify(signed)
    assert DOMAIN.recover(signed) == VIEWER.address
    wire = signed.to_bytes()
    assert len(wire) == WIRE_BYTES
    assert SignedCheque.from_bytes(wire) == signed
    assert SignedCheque.from_json(signed.to_json()) == signed


def test_only_the_viewer_may_sign():
    with pytest.raises(ChequeError, match="only the viewer"):
        DOMAIN.sign(OTHER, cheque())


@pytest.mark.parametrize(
    "domain",
    [ChequeDomain(31338, DOMAIN.wallet), ChequeDomain(31337, "0x" + "ce" * 20)],
    ids=["other chain", "other wallet"],
)
def test_a_cheque_from_another_domain_does_not_verify(domain: ChequeDomain):
    with pytest.raises(ChequeError):
        domain.verify(DOMAIN.sign(VIEWER, cheque()))


@given(
    field=st.sampled_from(["viewer", "content_id", "seeder", "cumulative_amount"]),
    data=st.data(),
)
def test_changing_any_signed_field_breaks_the_signature(field, data):
    signed = DOMAIN.sign(VIEWER, cheque(10**18))
    replacement = {
        "viewer": OTHER.address,
        "content_id": data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != CID)),
        "seeder": "0x" + data.draw(st.binary(min_size=20, max_size=20)).hex(),
        "cumulative_amount": data.draw(st.integers(0, 2**256 - 1).filter(lambda n: n != 10**18)),
    }[field]
    if field == "seeder" and replacement.lower() == SEEDER:
        return
    forged = SignedCheque(cheque(10**18, **{field: replacement}), signed.signature)
    assert not DOMAIN.is_valid(forged)


@given(st.binary(min_size=65, max_size=65))
def test_random_signatures_never_verify(signature):
    assert not DOMAIN.is_valid(SignedCheque(cheque(), signature))


def test_the_malleable_twin_and_bad_v_are_refused_like_the_contract_does():
    signed = DOMAIN.sign(VIEWER, cheque())
    s = int.from_bytes(signed.s, "big")
    twin = SignedCheque(signed.cheque, signed.r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signed.v]))
    # The twin is a genuine signature by the same key: only the low-s rule refuses it.
    twin_key = coincurve.PublicKey.from_signature_and_message(
        twin.signature[:64] + bytes([twin.v - 27]), DOMAIN.digest(twin.cheque), hasher=None
    )
    assert twin_key.format(compressed=False) == coincurve.PrivateKey(VIEWER.key).public_key.format(compressed=False)
    with pytest.raises(ChequeError, match="malleable"):
        DOMAIN.verify(twin)
    for v in (0, 1, 29, 255):
        with pytest.raises(ChequeError, match="invalid v"):
            DOMAIN.verify(SignedCheque(signed.cheque, signed.signature[:64] + bytes([v])))


@pytest.mark.parametrize(
    "changes",
    [
        {"cumulative_amount": -1},
        {"cumulative_amount": 2**256},
        {"cumulative_amount": True},
        {"content_id": b"\x00" * 31},
        {"content_id": "zz" * 32},
        {"seeder": "0x1234"},
        {"viewer": "not an address"},
    ],
)
def test_malformed_cheques_are_refused(changes):
    with pytest.raises(ChequeError):
        cheque(**changes)


def test_malformed_wire_and_json_are_refused():
    with pytest.raises(ChequeError):
        SignedCheque.from_bytes(os.urandom(WIRE_BYTES - 1))
    with pytest.raises(ChequeError):
        SignedCheque.from_json({"viewer": VIEWER.address})
    with pytest.raises(ChequeError):
        SignedCheque(cheque(), b"\x00" * 64)


def test_content_ids_parse_from_hex_or_bytes():
    assert content_id_bytes(CID.hex()) == CID
    assert content_id_bytes("0x" + CID.hex()) == CID
    assert content_id_bytes(CID) == CID


def test_fast_signing_equals_eth_accounts_typed_data_signature():
    from eth_account import Account as _Account

    from veilstream.chain.cheque import Cheque as _Cheque
    from veilstream.chain.cheque import ChequeDomain as _Domain

    domain = _Domain(31337, "0x" + "ab" * 20)
    for i in range(20):
        account = _Account.create()
        cheque = _Cheque(account.address, bytes([i]) * 32, _Account.create().address, 10**15 * (i + 1))
        fast, reference = domain.sign(account, cheque), domain.sign_with_eth_account(account, cheque)
        assert fast == reference
        domain.verify(fast)



def test_every_new_embedded_chain_has_its_own_cheque_domain():
    """Fixed deployer keys gave every embedded chain and devnet the same Wallet address,
    so a cheque signed on one was paid on another. Each chain now deploys from an
    account of its own."""
    from veilstream.chain import ChainClient

    domains = []
    for _ in range(2):
        with ChainClient.embedded(None) as chain:
            domains.append(chain.cheque_domain)
    assert domains[0].wallet != domains[1].wallet
    viewer = Account.create()
    signed = domains[0].sign(viewer, Cheque(viewer.address, bytes(range(32)), Account.create().address, 10))
    with pytest.raises(ChequeError):
        domains[1].verify(signed)
