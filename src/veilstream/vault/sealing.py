"""Secrets at rest: a random data key, wrapped under the passphrase with Argon2id.

The vault's secrets are each sealed with the data key (ChaCha20-Poly1305, random nonce,
associated data naming what the blob is, so two sealed files cannot be swapped). Changing
the passphrase re-wraps only the data key.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from veilstream.errors import VeilError

NONCE_SIZE = 12


class VaultError(VeilError):
    """The vault is missing, locked with another passphrase, or damaged."""


class WrongPassphrase(VaultError):
    """The passphrase does not open the vault."""


# What a vault's key file may ask of Argon2id. Below the floor a passphrase falls to a
# cheap guessing attack (OWASP's least: 19 MiB, 2 passes; tests go lower on purpose, hence
# an 8 MiB floor); above the ceiling a hostile key file would exhaust the machine.
MIN_MEMORY_KIB, MAX_MEMORY_KIB = 8 * 1024, 4 * 1024 * 1024
MIN_TIME_COST, MAX_TIME_COST = 1, 64
MAX_PARALLELISM = 64


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: RFC 9106's second recommended option (64 MiB, 3 passes)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2

    def __post_init__(self) -> None:
        if not (MIN_MEMORY_KIB <= self.memory_kib <= MAX_MEMORY_KIB and MIN_TIME_COST <= self.time_cost <= MAX_TIME_COST
                and 1 <= self.parallelism <= MAX_PARALLELISM):
            raise VaultError(f"key derivation cost out of bounds ({self.memory_kib} KiB, {self.time_cost} passes, "
                             f"{self.parallelism} lanes): at least {MIN_MEMORY_KIB} KiB and {MIN_TIME_COST} pass")

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        return hash_secret_raw(
            passphrase.encode(), salt, self.time_cost, self.memory_kib, self.parallelism, 32, Type.ID
        )


@dataclass(frozen=True)
class DataKey:
    key: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_bytes(32))

    def seal(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + ChaCha20Poly1305(self.key).encrypt(nonce, plaintext, purpose.encode())

    def open(self, sealed: bytes, purpose: str) -> bytes:
        try:
            return ChaCha20Poly1305(self.key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], purpose.encode())
        except (InvalidTag, ValueError):
            raise VaultError(f"the vault's {purpose} is damaged or belongs to another vault") from None

    def wrap(self, passphrase: str, params: KdfParams = KdfParams()) -> bytes:
        salt = secrets.token_bytes(16)
        kek = params.derive(passphrase, salt)
        nonce = secrets.token_bytes(NONCE_SIZE)
        wrapped = ChaCha20Poly1305(kek).encrypt(nonce, self.key, b"veilstream data key")
        return json.dumps({
            "kdf": "argon2id",
            "time_cost": params.time_cost,
            "memory_kib": params.memory_kib,
            "parallelism": params.parallelism,
            "salt": salt.hex(),
            "nonce": nonce.hex(),
            "wrapped_key": wrapped.hex(),
        }, indent=2).encode()

    @classmethod
    def unwrap(cls, blob: bytes, passphrase: str) -> DataKey:
        try:
            fields = json.loads(blob)
            if fields["kdf"] != "argon2id":
                raise VaultError(f"unknown key derivation {fields['kdf']!r}")
            params = KdfParams(int(fields["time_cost"]), int(fields["memory_kib"]), int(fields["parallelism"]))
            salt, nonce, wrapped = (bytes.fromhex(fields[k]) for k in ("salt", "nonce", "wrapped_key"))
        except VaultError as exc:
            raise VaultError(f"the vault's key file is refused: {exc}") from None
        except (ValueError, KeyError, TypeError):
            raise VaultError("the vault's key file is damaged") from None
        kek = params.derive(passphrase, salt)
        try:
            return cls(ChaCha20Poly1305(kek).decrypt(nonce, wrapped, b"veilstream data key"))
        except InvalidTag:
            raise WrongPassphrase("wrong passphrase") from None
