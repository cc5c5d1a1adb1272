"""Who a user is: one BIP-39 mnemonic and every key derived from it.

    mnemonic ──BIP-39──▶ seed ──BIP-32 m/44'/60'/0'/0/0 ──▶ EVM wallet key
                              ├─BIP-32 m/44'/1237'/0'/0/0 ─▶ Nostr key (NIP-06)
                              ├─HKDF "veilstream/x25519/v1" ─▶ X25519 key (keys sealed to us)
                              └─HKDF "veilstream/creator-seed/v1" ─▶ creator seed (content master keys)

`sealing` is the one face for sealing to a key (X25519 sealed boxes; words a contract
unseals) and for recoverable secp256k1 signatures.
"""

from veilstream.identity.keys import Identity, IdentityError
from veilstream.identity.mnemonic import (
    combine_shares,
    generate_mnemonic,
    split_into_shares,
    validate_mnemonic,
)
from veilstream.identity.sealing import (
    LEGACY_CONTEXT,
    SIGNATURE_BYTES,
    SealingError,
    SealingKey,
    SignatureError,
    WordOpener,
    WordSealer,
    generate_secp256k1_secret,
    open_sealed,
    recover_signer,
    seal_to,
    secp256k1_public_key,
    sign_digest,
)

__all__ = [
    "Identity",
    "IdentityError",
    "LEGACY_CONTEXT",
    "SIGNATURE_BYTES",
    "SealingError",
    "SealingKey",
    "SignatureError",
    "WordOpener",
    "WordSealer",
    "combine_shares",
    "generate_mnemonic",
    "generate_secp256k1_secret",
    "open_sealed",
    "recover_signer",
    "seal_to",
    "secp256k1_public_key",
    "sign_digest",
    "split_into_shares",
    "validate_mnemonic",
]
