"""The GGM key tree: a range's cover opens exactly that range, with few keys."""

import math
import os

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from veilstream.content.keytree import (
    SequentialLeafKeys,
    TreeNode,
    key_for_leaf,
    leaf_keys_from_nodes,
    nodes_for_range,
    range_cover,
    tree_depth,
)

ROOT = TreeNode(10, 0, os.urandom(32))


@st.composite
def ranges(draw):
    n = draw(st.integers(min_value=1, max_value=1024))
    first = draw(st.integers(min_value=0, max_value=n - 1))
    end = draw(st.integers(min_value=first + 1, max_value=n))
    return n, first, end


@given(ranges())
def test_every_leaf_in_range_is_derivable_and_correct(r):
    n, first, end = r
    root = TreeNode(tree_depth(n), 0, ROOT.key)
    opened = leaf_keys_from_nodes(nodes_for_range(root, first, end))
    assert set(opened) == set(range(first, end))
    for leaf in (first, end - 1, (first + end) // 2):
        assert opened[leaf] == root.leaf_key(leaf)


@given(ranges())
def test_no_leaf_outside_the_range_is_derivable(r):
    n, first, end = r
    root = TreeNode(tree_depth(n), 0, ROOT.key)
    nodes = nodes_for_range(root, first, end)
    for leaf in range(n):
        if not first <= leaf < end:
            assert key_for_leaf(nodes, leaf) is None
    outside = {root.leaf_key(i) for i in range(n) if not first <= i < end}
    assert not outside & {node.key for node in nodes}
    assert not outside & set(leaf_keys_from_nodes(nodes).values())


@given(ranges())
def test_cover_is_small(r):
    n, first, end = r
    depth = tree_depth(n)
    cover = range_cover(first, end, depth)
    assert len(cover) <= max(1, 2 * math.ceil(math.log2(n))) if n > 1 else len(cover) == 1
    assert sum(1 << h for h, _ in cover) == end - first


def test_the_whole_tree_is_one_node():
    assert range_cover(0, 1024, 10) == [(10, 0)]


@given(st.lists(st.integers(min_value=0, max_value=1023), max_size=50))
def test_sequential_keys_match_direct_derivation(leaves):
    walker = SequentialLeafKeys(ROOT)
    for leaf in sorted(leaves) + leaves:
        assert walker.key(leaf) == ROOT.leaf_key(leaf)


@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=2000))
def test_empty_or_out_of_tree_ranges_are_refused(first, end):
    assume(not 0 <= first < end <= 1024)
    with pytest.raises(ValueError):
        range_cover(first, end, 10)


def test_a_node_cannot_derive_outside_its_subtree():
    node = ROOT.descendant(3, 5)
    with pytest.raises(ValueError):
        node.descendant(0, 0)
    with pytest.raises(ValueError):
        node.descendant(4, 2)  # an ancestor
