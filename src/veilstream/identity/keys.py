"""The keys of one user, all derived from one mnemonic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from functools import cached_property

import coincurve
from bip32 import BIP32
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey as X25519PrivateKey

from veilstream.errors import VeilError
from veilstream.identity.mnemonic import seed_from_mnemonic, validate_mnemonic

WALLET_PATH = "m/44'/60'/0'/0/0"  # BIP-44, Ethereum's coin type
NOSTR_PATH = "m/44'/1237'/0'/0/0"  # NIP-06
if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

X25519_INFO = b"veilstream/x25519/v1"
CREATOR_SEED_INFO = b"veilstream/creator-seed/v1"


class IdentityError(VeilError):
    """No identity, or one that cannot be used as asked."""


def _hkdf(seed: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"veilstream", info=info).derive(seed)


def evm_address_of_key(private_key: bytes) -> str:
    """The address of a secp256k1 private key."""
    return evm_address(coincurve.PrivateKey(private_key).public_key.format(compressed=False)[1:])


def evm_address(public_key_xy: bytes) -> str:
    """EIP-55 checksummed address of a 64-byte uncompressed secp256k1 public key."""
    from eth_hash.auto import keccak

    lower = keccak(public_key_xy)[-20:].hex()
    nibbles = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(n, 16) >= 8 else c for c, n in zip(lower, nibbles))


@dataclass(frozen=True)
class Identity:
    """Every key of one user. Secrets are kept out of repr so they never reach a log."""

    mnemonic: str = field(repr=False)
    wallet_key: bytes = field(repr=False)
    nostr_key: bytes = field(repr=False)
    x25519_key: bytes = field(repr=False)
    creator_seed: bytes = field(repr=False)

    @classmethod
    def from_mnemonic(cls, words: str, passphrase: str = "") -> Identity:
        phrase = validate_mnemonic(words)
        seed = seed_from_mnemonic(phrase, passphrase)
        tree = BIP32.from_seed(seed)
        return cls(
            mnemonic=phrase,
            wallet_key=tree.get_privkey_from_path(WALLET_PATH),
            nostr_key=tree.get_privkey_from_path(NOSTR_PATH),
            x25519_key=_hkdf(seed, X25519_INFO),
            creator_seed=_hkdf(seed, CREATOR_SEED_INFO),
        )

    @cached_property
    def wallet(self) -> LocalAccount:
        from eth_account import Account  # imported on use: it costs ~0.4 s at start-up

        return Account.from_key(self.wallet_key)

    @cached_property
    def wallet_address(self) -> str:
        """EIP-55 checksummed EVM address (computed here: eth_account costs ~0.4 s to import)."""
        return evm_address(coincurve.PublicKey.from_secret(self.wallet_key).format(compressed=False)[1:])

    @cached_property
    def nostr_pubkey(self) -> str:
        """BIP-340 x-only public key, hex, as Nostr uses it."""
        return coincurve.PublicKeyXOnly.from_secret(self.nostr_key).format().hex()

    @cached_property
    def x25519_private(self) -> X25519PrivateKey:
        return X25519PrivateKey(self.x25519_key)

    @property
    def x25519_public(self) -> bytes:
        return bytes(self.x25519_private.public_key)

    def sign_nostr(self, message32: bytes) -> bytes:
        """BIP-340 Schnorr signature over a 32-byte message (a Nostr event id)."""
        return coincurve.PrivateKey(self.nostr_key).sign_schnorr(message32)

    def public_summary(self) -> dict[str, str]:
        return {
            "wallet_address": self.wallet_address,
            "nostr_pubkey": self.nostr_pubkey,
            "x25519_public": self.x25519_public.hex(),
        }
