"""Merkle trees: BEP 52 layout, proofs that verify only for the right leaf."""

import os
from hashlib import sha256

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilstream.content import merkle

leaves_st = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


@given(leaves_st, st.data())
def test_proofs_verify(leaves, data):
    index = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    root = merkle.root(leaves)
    merkle.verify_proof(leaves[index], index, merkle.proof(leaves, index), root, len(leaves))


@given(leaves_st, st.data())
def test_a_proof_fails_for_another_leaf_or_position(leaves, data):
    index = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    root, path = merkle.root(leaves), merkle.proof(leaves, index)
    with pytest.raises(merkle.MerkleError):
        merkle.verify_proof(sha256(leaves[index]).digest(), index, path, root, len(leaves))
    if len(leaves) > 1:
        other = (index + 1) % len(leaves)
        if leaves[other] != leaves[index]:
            with pytest.raises(merkle.MerkleError):
                merkle.verify_proof(leaves[index], other, path, root, len(leaves))
    with pytest.raises(merkle.MerkleError):
        merkle.verify_proof(leaves[index], index, path[:-1] if path else [bytes(32)], root, len(leaves))


def test_padding_uses_zero_subtrees():
    a, b, c = (sha256(bytes([i])).digest() for i in range(3))
    left = sha256(a + b).digest()
    right = sha256(c + merkle.ZERO_LEAF).digest()
    assert merkle.root([a, b, c]) == sha256(left + right).digest()


@given(st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=merkle.BLOCK_SIZE * 3))
def test_piece_layer_root_equals_root_over_all_blocks(pieces, tail):
    """BEP 52: the pieces root is the root of the whole block tree, whichever way it is computed."""
    piece_length = 2 * merkle.BLOCK_SIZE
    data = os.urandom((pieces - 1) * piece_length + max(1, tail % piece_length or piece_length))
    if len(data) <= piece_length:
        return
    piece_hashes = [merkle.piece_hash(data[i : i + piece_length], piece_length) for i in range(0, len(data), piece_length)]
    assert merkle.pieces_root(piece_hashes, piece_length, len(data)) == merkle.root(merkle.block_hashes(data))


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=130), st.data())
def test_range_proofs_verify_and_stay_small(leaves, data):
    first = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    end = data.draw(st.integers(min_value=first + 1, max_value=len(leaves)))
    root = merkle.root(leaves)
    path = merkle.range_proof(leaves, first, end)
    width = merkle.next_power_of_two(len(leaves))
    assert len(path) <= 2 * max(1, width.bit_length() - 1)
    merkle.verify_range_proof(leaves[first:end], first, path, root, len(leaves))


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=130), st.data())
def test_a_built_tree_gives_the_root_and_the_proofs_of_a_fresh_computation(leaves, data):
    tree = merkle.MerkleTree(leaves)
    assert tree.root == merkle.root(leaves)
    first = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    end = data.draw(st.integers(min_value=first + 1, max_value=len(leaves)))
    width = merkle.next_power_of_two(len(leaves))
    padded = leaves + [merkle.ZERO_LEAF] * (width - len(leaves))
    fresh = [merkle.root(padded[j << h : (j + 1) << h]) for h, j in merkle.outside_subtrees(first, end, width)]
    assert tree.range_proof(first, end) == fresh


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=70, unique=True), st.data())
def test_range_proofs_fail_for_altered_leaves_or_positions(leaves, data):
    first = data.draw(st.integers(min_value=0, max_value=len(leaves) - 2))
    end = data.draw(st.integers(min_value=first + 1, max_value=len(leaves) - 1))
    root, path = merkle.root(leaves), merkle.proof(leaves, 0) and merkle.range_proof(leaves, first, end)
    altered = list(leaves[first:end])
    altered[-1] = sha256(altered[-1]).digest()
    with pytest.raises(merkle.MerkleError):
        merkle.verify_range_proof(altered, first, path, root, len(leaves))
    with pytest.raises(merkle.MerkleError):
        merkle.verify_range_proof(leaves[first + 1 : end + 1], first, path, root, len(leaves))


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=300), st.integers(min_value=0, max_value=3))
def test_streaming_root_equals_the_batch_root(leaves, leaf_height):
    streaming = merkle.StreamingRoot(leaf_height)
    for leaf in leaves:
        streaming.push(leaf)
    assert streaming.root() == merkle.root(leaves, pad_height=leaf_height)
