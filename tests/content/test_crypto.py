"""Slice AEAD: opens only with the right key, salt and index."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilstream.content.crypto import TAG_SIZE, CipherSuite, DecryptionError, open_slice, seal_slice

SUITES = list(CipherSuite)


@pytest.mark.parametrize("suite", SUITES)
@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=2**40))
def test_round_trip(suite, plaintext, index):
    key, salt = os.urandom(32), os.urandom(16)
    sealed = seal_slice(suite, key, salt, index, plaintext)
    assert len(sealed) == len(plaintext) + TAG_SIZE
    assert open_slice(suite, key, salt, index, sealed) == plaintext


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_key_salt_index_or_a_flipped_bit_fail(suite):
    key, salt, plaintext = os.urandom(32), os.urandom(16), os.urandom(1000)
    sealed = seal_slice(suite, key, salt, 7, plaintext)
    attempts = {
        "key": (os.urandom(32), salt, 7, sealed),
        "salt": (key, os.urandom(16), 7, sealed),
        "index": (key, salt, 8, sealed),
        "bit": (key, salt, 7, bytes([sealed[0] ^ 1]) + sealed[1:]),
        "tag": (key, salt, 7, sealed[:-1] + bytes([sealed[-1] ^ 0x80])),
        "truncated": (key, salt, 7, sealed[:-1]),
    }
    for name, args in attempts.items():
        with pytest.raises(DecryptionError):
            open_slice(suite, *args)


def test_suites_produce_different_ciphertexts():
    key, salt = os.urandom(32), os.urandom(16)
    a, b = (seal_slice(s, key, salt, 0, b"x" * 64) for s in SUITES)
    assert a != b
