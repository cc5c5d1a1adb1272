"""Bencoding: round trips, and only canonical bytes are accepted."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilstream.content import bencode

values = st.recursive(
    st.integers(min_value=-(2**80), max_value=2**80) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@given(values)
def test_round_trip(value):
    assert bencode.decode(bencode.encode(value)) == value


@given(values)
def test_encoding_is_canonical(value):
    data = bencode.encode(value)
    assert bencode.encode(bencode.decode(data)) == data


@pytest.mark.parametrize("bad", [
    b"", b"i01e", b"i-0e", b"i-e", b"ie", b"i1", b"03:abc", b"3:ab", b"l", b"d", b"d1:a",
    b"d1:bi1e1:ai2ee",  # unsorted keys
    b"d1:ai1e1:ai2ee",  # duplicate key
    b"di1ei2ee",  # non-string key
    b"i1ei2e",  # trailing value
    b"x", b"-1:a", b"l" * 100 + b"e" * 100,  # too deep
    b"i" + b"9" * 100 + b"e",  # absurd integer
])
def test_non_canonical_or_broken_input_is_refused(bad):
    with pytest.raises(bencode.BencodeError):
        bencode.decode(bad)


@settings(max_examples=int(os.environ.get("VEIL_FUZZ_EXAMPLES", "400")))
@given(st.binary(max_size=200))
def test_fuzz_decoder_only_raises_bencode_error(data):
    try:
        bencode.decode(data)
    except bencode.BencodeError:
        pass


@given(values, st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_fuzz_mutated_encodings(value, position, byte):
    data = bytearray(bencode.encode(value))
    data[position % len(data)] = byte
    try:
        decoded = bencode.decode(bytes(data))
    except bencode.BencodeError:
        return
    assert bencode.encode(decoded) == bytes(data)  # anything accepted is canonical
