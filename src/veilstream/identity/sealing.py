"""Sealing to a key and recovering a signer, hard to misuse: callers seal, open, sign and
recover; ephemeral keys, nonces, key derivation and masks stay inside this module, and a
failure is a typed exception, never `None` or `False`.

Three tools, each with the one wire format it has always had:

- **Sealed boxes** to an X25519 key (`seal_to`, `open_sealed`): libsodium's
  `crypto_box_seal` (a fresh ephemeral key per box; X25519, XSalsa20-Poly1305), with its
  nonce BLAKE2b-192(ephemeral ‖ recipient) keyed with the `context`. The empty context is
  therefore `crypto_box_seal` byte for byte (`LEGACY_CONTEXT`, for formats that predate
  contexts and bind what the box is for otherwise); any other context makes another nonce,
  so a box opens under its own context only.
- **Recoverable secp256k1 signatures** over a 32-byte digest (`sign_digest`,
  `recover_signer`): r ‖ s ‖ recovery id (0 or 1), as libsecp256k1 makes them (RFC 6979,
  low s); the signer comes back as its EIP-55 address.
- **Words sealed to a secp256k1 key** so that a contract can unseal them with `ecrecover`
  (`WordSealer`, `WordOpener`): the secret is the address of e·B = b·E, and word i is
  masked with keccak256(0¹² ‖ secret ‖ context ‖ i). The masks carry no tag — a contract
  cannot afford one — so what the words open must be checked by the caller (access sales
  check them against the content's key commitments, AccessSales.vy rebuilds the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import coincurve
import nacl.bindings
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b

from veilstream.errors import VeilError
from veilstream.identity.keys import evm_address

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGNATURE_BYTES = 65  # r ‖ s ‖ recovery id
DIGEST_BYTES = 32
X25519_KEY_BYTES = 32
WORD_BYTES = 32
MAX_CONTEXT_BYTES = 64  # the context keys BLAKE2b, whose keys are at most 64 bytes
LEGACY_CONTEXT = b""  # crypto_box_seal unchanged: only for formats that bind their purpose otherwise
_EPHEMERAL_BYTES = nacl.bindings.crypto_box_PUBLICKEYBYTES
_NONCE_BYTES = nacl.bindings.crypto_box_NONCEBYTES
_BOX_OVERHEAD = nacl.bindings.crypto_box_SEALBYTES  # the ephemeral key and the tag


class SealingError(VeilError):
    """A sealed box does not open (wrong key, wrong context, tampered or truncated), or a
    key is not one anything can be sealed to."""


class SignatureError(VeilError):
    """A signature that is malformed or recovers to no key."""


# -- sealed boxes (X25519) -------------------------------------------------------------

@dataclass(frozen=True)
class SealingKey:
    """The private half of an X25519 key that boxes are sealed to; `public` is what a
    sender needs. The secret is kept out of repr so it never reaches a log."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != X25519_KEY_BYTES:
            raise ValueError(f"an X25519 secret is {X25519_KEY_BYTES} bytes, not {len(self.secret)}")

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(nacl.bindings.crypto_box_keypair()[1])

    @cached_property
    def public(self) -> bytes:
        return nacl.bindings.crypto_scalarmult_base(self.secret)


def _box_nonce(ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"a sealing context is at most {MAX_CONTEXT_BYTES} bytes")
    return blake2b(ephemeral + recipient, digest_size=_NONCE_BYTES, key=context, encoder=RawEncoder)


def seal_to(public_key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """`plaintext` sealed to the X25519 `public_key`, for `context` only (what the box is
    for: a short domain label). Only the key's holder opens it; the sender cannot."""
    if len(public_key) != X25519_KEY_BYTES:
        raise SealingError(f"an X25519 public key is {X25519_KEY_BYTES} bytes, not {len(public_key)}")
    ephemeral, ephemeral_secret = nacl.bindings.crypto_box_keypair()
    nonce = _box_nonce(ephemeral, public_key, context)
    try:
        return ephemeral + nacl.bindings.crypto_box_easy(plaintext, nonce, public_key, ephemeral_secret)
    except CryptoError:  # a low-order point: no secret can be agreed with it
        raise SealingError("not a public key anything can be sealed to") from None


def open_sealed(private_key: SealingKey, sealed: bytes, *, context: bytes) -> bytes:
    """The plaintext of a box sealed to `private_key` for `context`; raises `SealingError`
    if it was sealed to another key or context, or altered."""
    if len(sealed) < _BOX_OVERHEAD:
        raise SealingError("a sealed box too short to be one")
    ephemeral = sealed[:_EPHEMERAL_BYTES]
    nonce = _box_nonce(ephemeral, private_key.public, context)
    try:
        return nacl.bindings.crypto_box_open_easy(sealed[_EPHEMERAL_BYTES:], nonce, ephemeral, private_key.secret)
    except CryptoError:
        raise SealingError("the sealed box does not open: another key or context, or altered") from None


# -- recoverable signatures (secp256k1) ------------------------------------------------

def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """A recoverable signature (r ‖ s ‖ recovery id) by a secp256k1 key over a 32-byte
    digest, which is signed as is (hash and domain-separate before)."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a signed digest is {DIGEST_BYTES} bytes, not {len(digest)}")
    return coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The EIP-55 address of the key that made `signature` over `digest`; raises
    `SignatureError` if the signature is malformed or recovers to no key. (Any signature
    that recovers names *some* key: compare the address with the one expected.)"""
    if len(signature) != SIGNATURE_BYTES or len(digest) != DIGEST_BYTES:
        raise SignatureError(f"a signature is {SIGNATURE_BYTES} bytes over a {DIGEST_BYTES}-byte digest")
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except Exception:  # noqa: BLE001 - coincurve raises plain Exception (ValueError today) on a bad signature
        raise SignatureError("the signature recovers to no key") from None
    return evm_address(public.format(compressed=False)[1:])


# -- words sealed to a secp256k1 key, as a contract unseals them -----------------------

def generate_secp256k1_secret() -> int:
    """A fresh secp256k1 secret, as an integer (what a contract's dispute takes)."""
    return int.from_bytes(coincurve.PrivateKey().secret, "big")


def secp256k1_public_key(secret: int) -> bytes:
    """The 64-byte uncompressed public key (x ‖ y) of a secp256k1 secret."""
    return coincurve.PrivateKey(secret.to_bytes(32, "big")).public_key.format(compressed=False)[1:]


def _shared_address(secret: int, public: coincurve.PublicKey) -> bytes:
    """The address (20 bytes) of secret·public: the secret both sides derive."""
    point = public.multiply(secret.to_bytes(32, "big")).format(compressed=False)[1:]
    return bytes.fromhex(evm_address(point)[2:])


def _mask(shared: bytes, context: int, index: int) -> bytes:
    from eth_hash.auto import keccak  # imported on use, as in identity.keys: it costs at start-up

    return keccak(bytes(12) + shared + context.to_bytes(32, "big") + index.to_bytes(32, "big"))


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != WORD_BYTES:
        raise ValueError(f"a sealed word is {WORD_BYTES} bytes, not {len(a)}")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(WORD_BYTES, "big")


class WordSealer:
    """Seals 32-byte words to a 64-byte secp256k1 public key, for one `context` (a 256-bit
    number such as a grant id), each under its own index. The ephemeral key is made here;
    `ephemeral_key` (33 bytes, compressed) goes to the recipient with the words. Its x is
    below the group order, as a contract reading it as an `ecrecover` r needs.

    Raises ValueError if `public_key` is not a point. An index seals one word only: two
    words under one mask would give away their XOR."""

    def __init__(self, public_key: bytes, *, context: int) -> None:
        recipient = coincurve.PublicKey(b"\x04" + public_key)
        while True:
            ephemeral = coincurve.PrivateKey()
            compressed = ephemeral.public_key.format(compressed=True)
            if int.from_bytes(compressed[1:], "big") < SECP256K1_N:
                break
        self.ephemeral_key = compressed
        self._shared = _shared_address(int.from_bytes(ephemeral.secret, "big"), recipient)
        self._context = context
        self._sealed: set[int] = set()

    def seal(self, index: int, word: bytes) -> bytes:
        if index in self._sealed:
            raise ValueError(f"word {index} is sealed already: an index seals one word")
        self._sealed.add(index)
        return _xor(word, _mask(self._shared, self._context, index))


class WordOpener:
    """The recipient's side of `WordSealer`: words sealed for `context` to the public key
    of `secret`, with the sender's `ephemeral_key`.

    An ephemeral key that is not a point does not raise: the words are opened with the zero
    address as the secret, as the contract unseals them, so that what they open fails the
    caller's check and can be proven bad on chain. Nothing here can tell a right word from
    a wrong one; the caller's commitments do."""

    def __init__(self, secret: int, ephemeral_key: bytes, *, context: int) -> None:
        try:
            self._shared = _shared_address(secret, coincurve.PublicKey(ephemeral_key))
        except ValueError:
            self._shared = bytes(20)
        self._context = context

    def open(self, index: int, sealed: bytes) -> bytes:
        return _xor(sealed, _mask(self._shared, self._context, index))
