"""SHA-256 Merkle trees: BEP 52's tree over 16 KiB blocks, and the key-commitment tree.

Both are binary trees whose leaf count is padded to a power of two with zero leaves
(32 zero bytes), as BEP 52 fixes; a padded subtree's root is precomputed per height.
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import sha256

from veilstream.content.keytree import range_cover  # the same dyadic cover as the key tree

BLOCK_SIZE = 16 * 1024  # BEP 52 leaf size
HASH_SIZE = 32
ZERO_LEAF = bytes(HASH_SIZE)


class MerkleError(ValueError):
    """A hash, proof or layer does not match its root."""


def _parent(left: bytes, right: bytes) -> bytes:
    return sha256(left + right).digest()


@lru_cache(maxsize=64)
def zero_root(height: int) -> bytes:
    """Root of a subtree of 2**height zero leaves."""
    node = ZERO_LEAF
    for _ in range(height):
        node = _parent(node, node)
    return node


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def root(hashes: list[bytes], width: int | None = None, pad_height: int = 0) -> bytes:
    """Root over `hashes` padded to `width` (a power of two, default the next one) with the
    roots of zero subtrees of height `pad_height` (the level these hashes sit at)."""
    width = next_power_of_two(len(hashes)) if width is None else width
    if width & (width - 1) or width < len(hashes):
        raise ValueError("width must be a power of two ≥ the number of hashes")
    layer = list(hashes)
    height = pad_height
    while width > 1:
        if len(layer) % 2:
            layer.append(zero_root(height))
        layer = [_parent(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
        width //= 2
        height += 1
    return layer[0] if layer else zero_root(height)


def block_hashes(data: bytes | memoryview) -> list[bytes]:
    view = memoryview(data)
    return [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def piece_hash(piece: bytes | memoryview, piece_length: int) -> bytes:
    """BEP 52 piece-layer hash: root of the piece's blocks, padded to a full piece."""
    return root(block_hashes(piece), piece_length // BLOCK_SIZE)


def pieces_root(piece_hashes: list[bytes], piece_length: int, file_length: int) -> bytes:
    """BEP 52 `pieces root` of a file from its piece-layer hashes.

    A file of at most one piece has no piece layer; pass its single piece hash computed
    by `small_file_root` instead."""
    blocks_per_piece = piece_length // BLOCK_SIZE
    if file_length <= piece_length:
        raise ValueError("a file of one piece has no piece layer; use small_file_root")
    return root(piece_hashes, pad_height=blocks_per_piece.bit_length() - 1)


def small_file_root(data: bytes | memoryview) -> bytes:
    """BEP 52 root of a file no longer than one piece: blocks padded to a power of two."""
    return root(block_hashes(data))


def proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root (zero-padded tree)."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)
    layer = list(leaves) + [ZERO_LEAF] * (next_power_of_two(len(leaves)) - len(leaves))
    path = []
    while len(layer) > 1:
        path.append(layer[index ^ 1])
        layer = [_parent(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
        index //= 2
    return path


def root_from_proof(leaf: bytes, index: int, path: list[bytes]) -> bytes:
    node = leaf
    for sibling in path:
        node = _parent(sibling, node) if index & 1 else _parent(node, sibling)
        index //= 2
    return node


def verify_proof(leaf: bytes, index: int, path: list[bytes], expected_root: bytes, leaf_count: int) -> None:
    """Raise `MerkleError` unless `path` proves `leaf` at `index` under `expected_root`."""
    depth = (next_power_of_two(leaf_count) - 1).bit_length()
    if not 0 <= index < leaf_count or len(path) != depth:
        raise MerkleError("proof has the wrong shape for this tree")
    if root_from_proof(leaf, index, path) != expected_root:
        raise MerkleError(f"proof for leaf {index} does not reach the root")


def outside_subtrees(first: int, end: int, width: int) -> list[tuple[int, int]]:
    """(height, index) of the maximal subtrees covering [0, first) and [end, width)."""
    depth = width.bit_length() - 1
    outside = []
    if first > 0:
        outside += range_cover(0, first, depth)
    if end < width:
        outside += range_cover(end, width, depth)
    return outside


class MerkleTree:
    """Every level of a zero-padded tree, built once: for a prover answering many range
    proofs over the same leaves (a key agent), each proof is then a lookup, not a rebuild."""

    def __init__(self, leaves: list[bytes]) -> None:
        if not leaves:
            raise ValueError("a tree needs at least one leaf")
        self.leaf_count = len(leaves)
        self.width = next_power_of_two(len(leaves))
        layer = list(leaves) + [ZERO_LEAF] * (self.width - len(leaves))
        self.levels = [layer]
        while len(layer) > 1:
            layer = [_parent(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
            self.levels.append(layer)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def range_proof(self, first: int, end: int) -> list[bytes]:
        """The roots of the subtrees outside [first, end): with the leaves inside, they
        rebuild the root. At most 2·log2(width) hashes, however long the range."""
        if not 0 <= first < end <= self.leaf_count:
            raise IndexError(f"range [{first}, {end}) outside {self.leaf_count} leaves")
        return [self.levels[h][j] for h, j in outside_subtrees(first, end, self.width)]


def range_proof(leaves: list[bytes], first: int, end: int) -> list[bytes]:
    """`MerkleTree(leaves).range_proof(first, end)`, for a single proof."""
    if not 0 <= first < end <= len(leaves):
        raise IndexError(f"range [{first}, {end}) outside {len(leaves)} leaves")
    return MerkleTree(leaves).range_proof(first, end)


def verify_range_proof(range_leaves: list[bytes], first: int, path: list[bytes], expected_root: bytes, leaf_count: int) -> None:
    """Raise `MerkleError` unless `range_leaves` sit at [first, first + len) under the root."""
    end = first + len(range_leaves)
    if not range_leaves or not 0 <= first < end <= leaf_count:
        raise MerkleError("range proof has the wrong shape for this tree")
    width = next_power_of_two(leaf_count)
    outside = outside_subtrees(first, end, width)
    if len(path) != len(outside):
        raise MerkleError("range proof has the wrong number of hashes")
    depth = width.bit_length() - 1
    nodes = {(h, j): digest for (h, j), digest in zip(outside, path)}
    inside = range_cover(first, end, depth)
    for h, j in inside:  # roots of the inside subtrees, from the leaves given
        nodes[(h, j)] = root(range_leaves[(j << h) - first : ((j + 1) << h) - first])
    for height in range(depth):
        level = sorted(j for (h, j) in nodes if h == height)
        for j in level:
            if (height, j) not in nodes:
                continue
            sibling = (height, j ^ 1)
            if sibling not in nodes:
                raise MerkleError("range proof is missing a hash")
            left, right = (j, j ^ 1) if j % 2 == 0 else (j ^ 1, j)
            nodes[(height + 1, j // 2)] = _parent(nodes.pop((height, left)), nodes.pop((height, right)))
    if nodes.get((depth, 0)) != expected_root:
        raise MerkleError("range proof does not reach the root")


class StreamingRoot:
    """The root of a zero-padded tree whose leaves arrive one at a time, in O(log n) memory:
    a stack of the roots of complete subtrees, merged as they pair up."""

    def __init__(self, leaf_height: int = 0) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, root), heights strictly decreasing
        self._leaf_height = leaf_height
        self.count = 0

    def push(self, leaf: bytes) -> None:
        height, node = self._leaf_height, leaf
        while self._stack and self._stack[-1][0] == height:
            node = _parent(self._stack.pop()[1], node)
            height += 1
        self._stack.append((height, node))
        self.count += 1

    def root(self) -> bytes:
        """Root over the leaves pushed so far, padded to the next power of two."""
        if not self._stack:
            return zero_root(self._leaf_height)
        height, node = self._stack[-1]
        for below_height, below in reversed(self._stack[:-1]):
            while height < below_height:  # pad the right part up to its left neighbour
                node = _parent(node, zero_root(height))
                height += 1
            node = _parent(below, node)
            height += 1
        target = self._leaf_height + (next_power_of_two(self.count) - 1).bit_length()
        while height < target:
            node = _parent(node, zero_root(height))
            height += 1
        return node
