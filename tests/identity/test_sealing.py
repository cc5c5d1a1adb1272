"""Sealing: a box opens with its key and its context only, and says so when it does not;
signatures name their signer; the wire formats are the ones already on the wire."""

import pytest
from eth_account import Account
from hypothesis import assume, given
from hypothesis import strategies as st
from nacl.public import PrivateKey, SealedBox

from veilstream.identity import (
    LEGACY_CONTEXT,
    SealingError,
    SealingKey,
    SignatureError,
    WordOpener,
    WordSealer,
    open_sealed,
    recover_signer,
    seal_to,
    secp256k1_public_key,
    sign_digest,
)
from veilstream.identity.sealing import SECP256K1_N

KEY = SealingKey(bytes(range(1, 33)))
OTHER_KEY = SealingKey(bytes(range(2, 34)))
plaintexts = st.binary(max_size=300)
contexts = st.binary(max_size=64)
secp256k1_secrets = st.integers(1, SECP256K1_N - 2)  # a secret and the one after it are keys


# -- sealed boxes ----------------------------------------------------------------------

@given(plaintexts, contexts)
def test_a_box_opens_with_its_key_and_context(plaintext, context):
    sealed = seal_to(KEY.public, plaintext, context=context)
    assert open_sealed(KEY, sealed, context=context) == plaintext


@given(plaintexts, contexts)
def test_a_box_does_not_open_with_another_key(plaintext, context):
    sealed = seal_to(KEY.public, plaintext, context=context)
    with pytest.raises(SealingError):
        open_sealed(OTHER_KEY, sealed, context=context)


@given(plaintexts, contexts, st.data())
def test_a_tampered_box_does_not_open(plaintext, context, data):
    sealed = bytearray(seal_to(KEY.public, plaintext, context=context))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SealingError):
        open_sealed(KEY, bytes(sealed), context=context)


@given(plaintexts, contexts, st.integers(1, 48))
def test_a_truncated_box_does_not_open(plaintext, context, cut):
    sealed = seal_to(KEY.public, plaintext, context=context)
    with pytest.raises(SealingError):
        open_sealed(KEY, sealed[:-cut], context=context)


@given(plaintexts, contexts, contexts)
def test_a_box_does_not_open_under_another_context(plaintext, context, other):
    assume(context != other)
    sealed = seal_to(KEY.public, plaintext, context=context)
    with pytest.raises(SealingError):
        open_sealed(KEY, sealed, context=other)


@given(plaintexts)
def test_the_legacy_context_is_libsodiums_sealed_box_both_ways(plaintext):
    nacl_key = PrivateKey(KEY.secret)
    assert KEY.public == bytes(nacl_key.public_key)
    assert SealedBox(nacl_key).decrypt(seal_to(KEY.public, plaintext, context=LEGACY_CONTEXT)) == plaintext
    assert open_sealed(KEY, SealedBox(nacl_key.public_key).encrypt(plaintext), context=LEGACY_CONTEXT) == plaintext


def test_a_box_sealed_before_contexts_still_opens():
    """Made by PyNaCl's SealedBox (a key delivery's format), to KEY."""
    sealed = bytes.fromhex(
        "cbd61bb49f3dad804a07c2c2be0b6a70fdccd31e70f50f0a1b4fd49c2f59030afe401a9b7bf61fd7c5af4e29a63e079be9aaa96a8e9454"
        "4ba51c5673d8221575bc6bed3eb6c15a92e3f6")
    assert open_sealed(KEY, sealed, context=LEGACY_CONTEXT) == b"slice keys, sealed in 2024"


@pytest.mark.parametrize("public", [bytes(32), b"\x01" + bytes(31), bytes(31), bytes(33)])
def test_nothing_is_sealed_to_a_key_that_is_none(public):
    with pytest.raises(SealingError):
        seal_to(public, b"slice keys", context=b"test")


def test_a_context_longer_than_a_blake2b_key_is_a_caller_bug():
    with pytest.raises(ValueError):
        seal_to(KEY.public, b"x", context=bytes(65))


def test_each_box_has_its_own_ephemeral_key_and_secrets_stay_out_of_repr():
    assert seal_to(KEY.public, b"x", context=b"t") != seal_to(KEY.public, b"x", context=b"t")
    assert SealingKey.generate() != SealingKey.generate()
    assert KEY.secret.hex() not in repr(KEY)


# -- signatures ------------------------------------------------------------------------

@given(secp256k1_secrets, st.binary(min_size=32, max_size=32))
def test_a_signature_names_its_signer(secret, digest):
    key = secret.to_bytes(32, "big")
    assert recover_signer(digest, sign_digest(key, digest)) == Account.from_key(key).address


@given(st.binary(min_size=32, max_size=32), st.data())
def test_a_tampered_signature_or_digest_names_no_one_or_someone_else(digest, data):
    key = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    signature = bytearray(sign_digest(key, digest))
    signed = bytearray(digest)
    target = data.draw(st.sampled_from([signature, signed]))
    target[data.draw(st.integers(0, len(target) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        signer = recover_signer(bytes(signed), bytes(signature))
    except SignatureError:
        return
    assert signer != "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_signatures_are_deterministic_and_match_a_fixed_vector():
    key = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    signature = sign_digest(key, bytes(32))
    assert signature.hex() == (
        "b8823364c90ea0d2700d5ad0fe39d16778bc07ce7df4779ff35e4b2660d043cb74a002439225d1d518f9f1cf3db005f5e143196543fd5146"
        "a34bf63f0b810ade00")
    assert recover_signer(bytes(32), signature) == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.mark.parametrize("signature,digest", [(bytes(64), bytes(32)), (bytes(65), bytes(31)), (bytes(65), bytes(32)),
                                              (b"\x01" * 64 + b"\x07", bytes(32))])
def test_malformed_signatures_raise(signature, digest):
    with pytest.raises(SignatureError):
        recover_signer(digest, signature)


# -- words sealed to a secp256k1 key ---------------------------------------------------

@given(secp256k1_secrets, st.integers(0, 2**256 - 1), st.lists(st.binary(min_size=32, max_size=32), max_size=6))
def test_words_open_with_the_key_and_context_they_were_sealed_to(secret, context, words):
    sealer = WordSealer(secp256k1_public_key(secret), context=context)
    sealed = [sealer.seal(i, word) for i, word in enumerate(words)]
    opener = WordOpener(secret, sealer.ephemeral_key, context=context)
    assert [opener.open(i, s) for i, s in enumerate(sealed)] == words
    assert int.from_bytes(sealer.ephemeral_key[1:], "big") < SECP256K1_N  # x reads as an ecrecover r


@given(secp256k1_secrets, st.integers(0, 2**64), st.binary(min_size=32, max_size=32))
def test_words_open_to_something_else_under_another_key_context_or_index(secret, context, word):
    """Masks carry no tag (a contract unseals them): the caller's commitments catch the rest."""
    sealer = WordSealer(secp256k1_public_key(secret), context=context)
    sealed = sealer.seal(0, word)
    assert WordOpener(secret + 1, sealer.ephemeral_key, context=context).open(0, sealed) != word
    assert WordOpener(secret, sealer.ephemeral_key, context=context + 1).open(0, sealed) != word
    assert WordOpener(secret, sealer.ephemeral_key, context=context).open(1, sealed) != word


def test_an_index_seals_one_word():
    sealer = WordSealer(secp256k1_public_key(0x1234), context=7)
    sealer.seal(3, bytes(32))
    with pytest.raises(ValueError, match="sealed already"):
        sealer.seal(3, bytes(range(32)))


def test_words_sealed_to_a_non_point_are_refused_and_a_non_point_ephemeral_opens_as_zero():
    with pytest.raises(ValueError):
        WordSealer(bytes(64), context=1)
    zero_address_mask = bytes.fromhex("652823cf49dc79b1569e9e9c9b9ec3852fec25ab6ff728668f5d3f5296efd1c4")
    assert WordOpener(0x1234, b"\x05" * 33, context=7).open(3, bytes(32)) == zero_address_mask


def test_a_sealed_word_matches_a_fixed_vector():
    """As AccessSales.vy unseals it (the vector was checked against the pre-move code)."""
    ephemeral = bytes.fromhex("03239bfd2cdf69409e43b7f6f41df3c3d6501a835d702a8acf4d17594144f78228")
    sealed = bytes.fromhex("8fd9973973de2d86384d62e1e0a14ecd0e3c027b25bbe14de6a2b4f2006066df")
    assert WordOpener(0x1234, ephemeral, context=7).open(3, sealed) == bytes(range(32))
