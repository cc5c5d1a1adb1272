"""The GGM key tree: one root key opens every slice, any subtree opens a range.

    node(h, j) covers leaves [j·2^h, (j+1)·2^h);  child = HMAC-SHA256(parent, 0x00 | 0x01)

A contiguous range [a, b) is opened by its canonical cover: at most 2·log2(n) nodes whose
subtrees are exactly the range, so a range purchase ships a handful of keys. A node key
reveals its subtree and nothing else (HMAC is a PRF; going up would invert it).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from hashlib import sha256


def _child(parent: bytes, bit: int) -> bytes:
    return hmac.digest(parent, b"\x01" if bit else b"\x00", sha256)


def tree_depth(leaf_count: int) -> int:
    """Height of the smallest tree with at least `leaf_count` leaves."""
    if leaf_count < 1:
        raise ValueError("a key tree has at least one leaf")
    return (leaf_count - 1).bit_length()


@dataclass(frozen=True)
class TreeNode:
    """A key-tree node: its key derives every leaf in [first_leaf, end_leaf)."""

    height: int
    index: int
    key: bytes = field(repr=False)

    @property
    def first_leaf(self) -> int:
        return self.index << self.height

    @property
    def end_leaf(self) -> int:
        return (self.index + 1) << self.height

    def covers(self, leaf: int) -> bool:
        return self.first_leaf <= leaf < self.end_leaf

    def descendant(self, height: int, index: int) -> TreeNode:
        """The node (height, index) inside this subtree."""
        shift = self.height - height
        if shift < 0 or index >> shift != self.index:
            raise ValueError(f"node ({height}, {index}) is not under ({self.height}, {self.index})")
        key = self.key
        for level in range(shift - 1, -1, -1):
            key = _child(key, (index >> level) & 1)
        return TreeNode(height, index, key)

    def leaf_key(self, leaf: int) -> bytes:
        return self.descendant(0, leaf).key


def range_cover(first: int, end: int, depth: int) -> list[tuple[int, int]]:
    """Minimal list of (height, index) nodes whose leaves are exactly [first, end)."""
    if not 0 <= first < end <= 1 << depth:
        raise ValueError(f"range [{first}, {end}) is empty or outside a tree of depth {depth}")
    nodes = []
    while first < end:
        height = (first & -first).bit_length() - 1 if first else depth
        while first + (1 << height) > end:
            height -= 1
        nodes.append((height, first >> height))
        first += 1 << height
    return nodes


def nodes_for_range(root: TreeNode, first: int, end: int) -> list[TreeNode]:
    """The node keys that open slices [first, end), derived from `root`."""
    return [root.descendant(h, j) for h, j in range_cover(first, end, root.height)]


def leaf_keys_from_nodes(nodes: list[TreeNode]) -> dict[int, bytes]:
    """Every leaf key the given nodes open."""
    keys: dict[int, bytes] = {}
    for node in nodes:
        for leaf in range(node.first_leaf, node.end_leaf):
            keys[leaf] = node.leaf_key(leaf)
    return keys


def key_for_leaf(nodes: list[TreeNode], leaf: int) -> bytes | None:
    for node in nodes:
        if node.covers(leaf):
            return node.leaf_key(leaf)
    return None


class SequentialLeafKeys:
    """Leaf keys in order from a root, re-deriving only the part of the path that changes
    (one HMAC per leaf on average instead of `depth`)."""

    def __init__(self, root: TreeNode) -> None:
        self._root = root
        self._path: list[bytes] = [root.key]  # _path[k] = key at height root.height - k
        self._leaf = -1

    def key(self, leaf: int) -> bytes:
        depth = self._root.height
        if self._leaf < 0:
            shared = 0
        else:
            differing = (self._leaf ^ leaf).bit_length()
            shared = depth - differing
        del self._path[shared + 1 :]
        for k in range(shared, depth):
            self._path.append(_child(self._path[k], (leaf >> (depth - 1 - k)) & 1))
        self._leaf = leaf
        return self._path[depth]
