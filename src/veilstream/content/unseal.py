"""Opening content: verified ciphertext + checked keys → plaintext.

Nothing is decrypted before it is verified: each ciphertext slice against the torrent's
Merkle tree, each key against the manifest's key-commitment root.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from veilstream.content import merkle
from veilstream.content.crypto import DecryptionError, key_commitment, open_slice
from veilstream.content.keytree import SequentialLeafKeys, TreeNode, key_for_leaf
from veilstream.content.manifest import Metadata
from veilstream.content.torrent import Torrent
from veilstream.errors import VeilError


class IntegrityError(VeilError):
    """Ciphertext on disk or from a peer does not match the content's Merkle tree."""


class WrongKeyError(DecryptionError):
    """A key does not match the content's key commitments (a wrong or forged key)."""


@dataclass(frozen=True)
class KeyRing:
    """The key material a node holds for one content: tree nodes (the root for the
    creator, a range cover for a buyer) and, if known, the metadata key."""

    nodes: tuple[TreeNode, ...] = field(repr=False)
    metadata_key: bytes | None = field(default=None, repr=False)

    def slice_key(self, index: int) -> bytes:
        key = key_for_leaf(list(self.nodes), index)
        if key is None:
            raise DecryptionError(f"no key for slice {index}: it was not bought")
        return key


def verify_all_keys(torrent: Torrent, ring: KeyRing) -> list[bytes]:
    """Every slice key, checked at once against the manifest's key-commitment root (the
    ring must open every slice: the creator's root, or a buyer's nodes that cover all)."""
    keys = leaf_keys(ring, torrent.manifest.slice_count)
    if merkle.root([key_commitment(key) for key in keys]) != torrent.manifest.key_root:
        raise WrongKeyError("the keys do not match the content's key commitments: wrong key")
    return keys


def leaf_keys(ring: KeyRing, slice_count: int) -> list[bytes]:
    """The key of every slice from the ring's nodes; says which slices it lacks."""
    keys: list[bytes | None] = [None] * slice_count
    for node in sorted(ring.nodes, key=lambda n: n.end_leaf - n.first_leaf, reverse=True):
        walker = SequentialLeafKeys(node)
        for leaf in range(node.first_leaf, min(node.end_leaf, slice_count)):
            if keys[leaf] is None:
                keys[leaf] = walker.key(leaf - node.first_leaf)
    missing = [i for i, key in enumerate(keys) if key is None]
    if missing:
        held = _ranges([i for i, key in enumerate(keys) if key is not None])
        raise DecryptionError(f"the keys held open only part of this content ({slice_count - len(missing)} of "
                              f"{slice_count} slices{': ' + held if held else ''}): `veil play` or `veil buy` the rest")
    return keys  # type: ignore[return-value]


def _ranges(indices: list[int]) -> str:
    spans, start = [], None
    for a, b in zip(indices, [*indices[1:], None]):
        start = a if start is None else start
        if b != a + 1:
            spans.append(f"[{start}, {a + 1})")
            start = None
    return ", ".join(spans)


def verify_slice_key(torrent: Torrent, index: int, key: bytes, proof: list[bytes]) -> None:
    """Check one delivered slice key against its commitment (proof from the key agent)."""
    try:
        merkle.verify_proof(key_commitment(key), index, proof, torrent.manifest.key_root, torrent.manifest.slice_count)
    except merkle.MerkleError:
        raise WrongKeyError(f"the key for slice {index} does not match its commitment") from None


def open_verified_slice(torrent: Torrent, index: int, ciphertext: bytes | memoryview, key: bytes) -> bytes:
    """Plaintext of slice `index` once its ciphertext matches the Merkle tree."""
    if not torrent.verify_piece(index, ciphertext):
        raise IntegrityError(f"ciphertext slice {index} does not match the content's Merkle tree")
    m = torrent.manifest
    return open_slice(m.suite, key, m.salt, index, ciphertext)


def decrypt_to(
    torrent: Torrent,
    ciphertext_path: Path,
    ring: KeyRing,
    out: BinaryIO,
    progress: Callable[[int], None] | None = None,
) -> Metadata | None:
    """Write the whole plaintext to `out`; return the metadata if the ring can read it."""
    keys = verify_all_keys(torrent, ring)
    manifest = torrent.manifest
    try:
        source = open(ciphertext_path, "rb")
    except OSError as exc:
        raise IntegrityError(f"cannot read the ciphertext {ciphertext_path}: {exc.strerror}") from None
    with source:
        actual = source.seek(0, 2)
        if actual != manifest.ciphertext_length:
            raise IntegrityError(
                f"ciphertext is {actual} bytes; the torrent says {manifest.ciphertext_length}: truncated or foreign file"
            )
        source.seek(0)
        for index in range(manifest.slice_count):
            _, length = manifest.slice_range(index)
            ciphertext = source.read(length)
            plaintext = open_verified_slice(torrent, index, ciphertext, keys[index])
            try:
                out.write(plaintext)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise IntegrityError("disk full while writing the output; nothing was kept") from None
                raise
            if progress:
                progress(len(plaintext))
    return manifest.metadata(ring.metadata_key) if ring.metadata_key else None


def all_commitments(root: TreeNode, slice_count: int) -> list[bytes]:
    """H(K_i) for every slice: the leaves of the key-commitment tree (the key agent's view)."""
    walker = SequentialLeafKeys(root)
    return [key_commitment(walker.key(i)) for i in range(slice_count)]


def verify_range_keys(torrent: Torrent, nodes: list[TreeNode], proof: list[bytes]) -> dict[int, bytes]:
    """Leaf keys opened by `nodes` (a contiguous range), once they match the manifest's
    key-commitment root with `proof` (the roots of the subtrees outside the range)."""
    if not nodes:
        raise WrongKeyError("a key delivery with no keys")
    ordered = sorted(nodes, key=lambda n: n.first_leaf)
    first, end = ordered[0].first_leaf, ordered[-1].end_leaf
    count = torrent.manifest.slice_count
    if any(a.end_leaf != b.first_leaf for a, b in zip(ordered, ordered[1:])) or end > count:
        raise WrongKeyError("delivered key nodes do not form one range inside the content")
    keys = {}
    for node in ordered:
        walker = SequentialLeafKeys(node)
        for leaf in range(node.first_leaf, node.end_leaf):
            keys[leaf] = walker.key(leaf - node.first_leaf)
    try:
        merkle.verify_range_proof([key_commitment(keys[i]) for i in range(first, end)], first, proof,
                                  torrent.manifest.key_root, count)
    except merkle.MerkleError:
        raise WrongKeyError(f"keys for slices [{first}, {end}) do not match their commitments") from None
    return keys
