"""Who a user is: one BIP-39 mnemonic and every key derived from it.

    mnemonic ──BIP-39──▶ seed ──BIP-32 m/44'/60'/0'/0/0 ──▶ EVM wallet key
                              ├─BIP-32 m/44'/1237'/0'/0/0 ─▶ Nostr key (NIP-06)
                              ├─HKDF "veilstream/x25519/v1" ─▶ X25519 key (keys sealed to us)
                              └─HKDF "veilstream/creator-seed/v1" ─▶ creator seed (content master keys)
"""

from veilstream.identity.keys import Identity, IdentityError
from veilstream.identity.mnemonic import (
    combine_shares,
    generate_mnemonic,
    split_into_shares,
    validate_mnemonic,
)

__all__ = [
    "Identity",
    "IdentityError",
    "combine_shares",
    "generate_mnemonic",
    "split_into_shares",
    "validate_mnemonic",
]
