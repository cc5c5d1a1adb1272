"""BEP 52 hash requests: answering them from what we hold, and checking the answers.

Layers are numbered from the leaves: layer 0 holds one SHA-256 per 16 KiB block (padded
with zero hashes to a power of two), layer `piece_level` is the piece layer, layer
`num_layers` is the file's `pieces root`. A request names a base layer, a run of
`length` hashes in it starting at `index`, and `proof_layers`; the answer is those
hashes followed by the uncle hashes that chain their subtree root to the layer
`base + proof_layers + 1` (libtorrent's layout: uncles start at the subtree's own
sibling, one per layer).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from hashlib import sha256

from veilstream.content.merkle import BLOCK_SIZE, block_hashes, next_power_of_two, root, zero_root
from veilstream.content.torrent import Torrent
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.wire import MAX_HASHES_PER_MESSAGE, HashRequest

PIECE_LAYER_CHUNK = 512  # hashes per piece-layer request, as libtorrent asks and expects
BLOCK_HASH_CACHE_PIECES = 64  # pieces whose block hashes we keep to answer layer-0 requests


def log2(n: int) -> int:
    return n.bit_length() - 1


class TreeShape:
    """Sizes of one file's Merkle tree."""

    def __init__(self, length: int, piece_length: int) -> None:
        self.length = length
        self.piece_length = piece_length
        self.blocks_per_piece = piece_length // BLOCK_SIZE
        self.piece_level = log2(self.blocks_per_piece)
        self.block_count = -(-length // BLOCK_SIZE)
        self.piece_count = -(-length // piece_length)
        self.leaf_width = next_power_of_two(self.block_count)
        self.num_layers = log2(self.leaf_width)  # the root sits at this layer

    def layer_width(self, layer: int) -> int:
        return self.leaf_width >> layer

    def check_request(self, base: int, index: int, length: int, proof_layers: int) -> bool:
        """True when a hash request is well-formed for this tree (libtorrent's rules)."""
        return (
            0 <= base < self.num_layers
            and 0 < length <= MAX_HASHES_PER_MESSAGE
            and length & (length - 1) == 0
            and index >= 0
            and index % length == 0
            and index + length <= self.layer_width(base)
            and 0 <= proof_layers < self.num_layers - base
        )


class HashServer:
    """Answers hash requests for one torrent. Nodes at or above the piece layer come from
    the torrent's piece layer; nodes below need the piece's data (`read_piece`)."""

    def __init__(self, torrent: Torrent, read_piece: Callable[[int], bytes | None]) -> None:
        self.torrent = torrent
        self.shape = TreeShape(torrent.length, torrent.piece_length)
        self._read_piece = read_piece
        self._block_cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self._upper: list[list[bytes]] | None = None  # layers piece_level.. of a multi-piece file

    def _upper_layers(self) -> list[list[bytes]]:
        if self._upper is None:
            shape = self.shape
            layer = [self.torrent.piece_hash(i) for i in range(shape.piece_count)]
            layer += [zero_root(shape.piece_level)] * (shape.layer_width(shape.piece_level) - len(layer))
            layers = [layer]
            while len(layer) > 1:
                layer = [sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
                layers.append(layer)
            self._upper = layers
        return self._upper

    def _piece_blocks(self, piece: int) -> list[bytes] | None:
        if piece in self._block_cache:
            self._block_cache.move_to_end(piece)
            return self._block_cache[piece]
        data = self._read_piece(piece)
        if data is None:
            return None
        hashes = block_hashes(data)
        self._block_cache[piece] = hashes
        if len(self._block_cache) > BLOCK_HASH_CACHE_PIECES:
            self._block_cache.popitem(last=False)
        return hashes

    def node(self, layer: int, index: int) -> bytes | None:
        shape = self.shape
        first_leaf = index << layer
        if first_leaf >= shape.block_count:
            return zero_root(layer)  # entirely padding
        if shape.piece_count > 1 and layer >= shape.piece_level:
            return self._upper_layers()[layer - shape.piece_level][index]
        if shape.piece_count == 1 and layer == shape.num_layers:
            return self.torrent.pieces_root
        span = shape.blocks_per_piece if shape.piece_count > 1 else shape.leaf_width
        piece = first_leaf // span
        blocks = self._piece_blocks(piece)
        if blocks is None:
            return None
        start = first_leaf - piece * span
        return root(blocks[start : start + (1 << layer)], 1 << layer)

    def answer(self, request: HashRequest) -> bytes | None:
        """The `hashes` payload for `request`, or None to reject it."""
        shape = self.shape
        if request.pieces_root != self.torrent.pieces_root:
            return None
        base, index, length, proof_layers = request.base_layer, request.index, request.length, request.proof_layers
        if not shape.check_request(base, index, length, proof_layers):
            return None
        out = []
        for i in range(index, index + length):
            node = self.node(base, i)
            if node is None:
                return None
            out.append(node)
        for step in range(log2(length), proof_layers + 1):
            sibling = self.node(base + step, (index >> step) ^ 1)
            if sibling is None:
                return None
            out.append(sibling)
        return b"".join(out)


def chain_root(hashes: bytes, base: int, index: int, length: int, proof_layers: int) -> bytes:
    """The node that a `hashes` answer proves: the subtree root of the base-layer hashes,
    chained through the uncles. Raises `RemoteProtocolError` on a malformed answer."""
    uncles = max(0, proof_layers - log2(length) + 1)
    if length <= 0 or length & (length - 1) or len(hashes) != 32 * (length + uncles):
        raise RemoteProtocolError("hashes answer has the wrong number of hashes")
    leaves = [hashes[i : i + 32] for i in range(0, 32 * length, 32)]
    node = root(leaves, length)
    position = index >> log2(length)
    for k in range(uncles):
        uncle = hashes[32 * (length + k) : 32 * (length + k + 1)]
        node = sha256(uncle + node).digest() if position & 1 else sha256(node + uncle).digest()
        position >>= 1
    return node


def piece_layer_requests(shape: TreeShape, pieces_root: bytes) -> list[HashRequest]:
    """The requests that fetch a whole piece layer, each proven up to the file root."""
    width = shape.layer_width(shape.piece_level)
    proof = shape.num_layers - shape.piece_level - 1
    chunk = min(PIECE_LAYER_CHUNK, width)
    return [HashRequest(pieces_root, shape.piece_level, i, chunk, proof) for i in range(0, shape.piece_count, chunk)]


def block_layer_request(shape: TreeShape, pieces_root: bytes, piece: int) -> HashRequest:
    """The request for piece `piece`'s block hashes, proven up to the piece hash."""
    bpp = shape.blocks_per_piece if shape.piece_count > 1 else shape.leaf_width
    return HashRequest(pieces_root, 0, piece * bpp, bpp, max(0, log2(bpp) - 1))


def piece_root_from_block_hashes(hashes: list[bytes], shape: TreeShape) -> bytes:
    """The hash a piece's block hashes must reach: its piece-layer hash, or for a
    single-piece file the pieces root (padded to the file's leaf width, not a piece)."""
    width = shape.blocks_per_piece if shape.piece_count > 1 else shape.leaf_width
    return root(hashes, width)
