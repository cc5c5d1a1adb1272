"""Slice encryption, hard to misuse: callers seal and open slices; nonces, tags, associated
data and key derivation stay inside this module.

Every slice has its own key (a key-tree leaf), used for exactly one message, so the AEAD
nonce is a constant: uniqueness of (key, nonce) comes from the key. The associated data
binds a slice to its content's public salt and to its index, so a slice cannot be moved
to another content or position without failing authentication.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from enum import Enum
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from veilstream.content.keytree import TreeNode, tree_depth
from veilstream.errors import VeilError

TAG_SIZE = 16
SALT_SIZE = 16
_NONCE = bytes(12)  # constant: each key seals one message (see module docstring)
_MASTER_INFO = b"veilstream/content-master/v1"
_COMMITMENT_TAG = b"veilstream/key-commitment/v1"


class CipherSuite(str, Enum):
    AES_256_GCM = "aes-256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"

    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return AESGCM(key) if self is CipherSuite.AES_256_GCM else ChaCha20Poly1305(key)


class DecryptionError(VeilError):
    """A slice or the metadata failed authentication: wrong key or tampered ciphertext."""


@dataclass(frozen=True)
class ContentKeys:
    """The secret keys of one content: the key-tree root and the metadata key."""

    tree_root: TreeNode = field(repr=False)
    metadata_key: bytes = field(repr=False)

    @classmethod
    def derive(cls, creator_seed: bytes, salt: bytes, slice_count: int) -> ContentKeys:
        """The creator's keys for a content: from one seed, nothing to back up per content."""
        master = hmac.digest(creator_seed, _MASTER_INFO + salt, sha256)
        return cls(
            tree_root=TreeNode(tree_depth(slice_count), 0, hmac.digest(master, b"tree", sha256)),
            metadata_key=hmac.digest(master, b"metadata", sha256),
        )


def _slice_ad(salt: bytes, index: int) -> bytes:
    return salt + struct.pack(">Q", index)


def seal_slice(suite: CipherSuite, slice_key: bytes, salt: bytes, index: int, plaintext: bytes | memoryview) -> bytes:
    """Ciphertext ‖ tag of one slice (exactly `len(plaintext) + TAG_SIZE` bytes)."""
    return suite._aead(slice_key).encrypt(_NONCE, plaintext, _slice_ad(salt, index))


def seal_slice_into(
    suite: CipherSuite, slice_key: bytes, salt: bytes, index: int, plaintext: bytes | memoryview, out: bytearray
) -> memoryview:
    """Like `seal_slice`, into a caller's reusable buffer; returns the sealed part of it."""
    length = len(plaintext) + TAG_SIZE
    view = memoryview(out)[:length]
    suite._aead(slice_key).encrypt_into(_NONCE, plaintext, _slice_ad(salt, index), view)
    return view


def open_slice(suite: CipherSuite, slice_key: bytes, salt: bytes, index: int, ciphertext: bytes | memoryview) -> bytes:
    try:
        return suite._aead(slice_key).decrypt(_NONCE, ciphertext, _slice_ad(salt, index))
    except InvalidTag:
        raise DecryptionError(f"slice {index} does not decrypt: wrong key or tampered data") from None


def open_slice_into(suite: CipherSuite, slice_key: bytes, salt: bytes, index: int,
                    ciphertext: bytes | memoryview, out: bytearray | memoryview) -> memoryview:
    """`open_slice` into `out` (at least the plaintext's length); returns the plaintext's
    view of it. Nothing is left in `out` when authentication fails."""
    view = memoryview(out)[: len(ciphertext) - 16]
    try:
        suite._aead(slice_key).decrypt_into(_NONCE, ciphertext, _slice_ad(salt, index), view)
    except InvalidTag:
        view[:] = bytes(len(view))  # the library may have written unauthenticated bytes
        raise DecryptionError(f"slice {index} does not decrypt: wrong key or tampered data") from None
    return view


def seal_metadata(suite: CipherSuite, metadata_key: bytes, salt: bytes, plaintext: bytes) -> bytes:
    return suite._aead(metadata_key).encrypt(_NONCE, plaintext, salt + b"metadata")


def open_metadata(suite: CipherSuite, metadata_key: bytes, salt: bytes, ciphertext: bytes) -> bytes:
    try:
        return suite._aead(metadata_key).decrypt(_NONCE, ciphertext, salt + b"metadata")
    except InvalidTag:
        raise DecryptionError("the content's metadata does not decrypt: wrong key") from None


def key_commitment(slice_key: bytes) -> bytes:
    """The public leaf H(K_i) of the key-commitment tree."""
    return sha256(_COMMITMENT_TAG + slice_key).digest()
