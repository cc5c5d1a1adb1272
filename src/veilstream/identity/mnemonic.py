"""BIP-39 mnemonics and their SLIP-39 Shamir backup shares.

A SLIP-39 share set splits the mnemonic's *entropy*, so recovering from shares gives back
the very same words and therefore the very same keys.
"""

from __future__ import annotations

import shamir_mnemonic
from mnemonic import Mnemonic

from veilstream.errors import VeilError

MNEMONIC_STRENGTH_BITS = 256  # 24 words: 32 bytes of entropy, the largest SLIP-39 secret
MAX_SHARES = 16  # SLIP-39 allows at most 16 members per group


class MnemonicError(VeilError):
    """A mnemonic or a backup share is malformed, or the shares do not combine."""


_wordlist = Mnemonic("english")


def generate_mnemonic() -> str:
    return _wordlist.generate(strength=MNEMONIC_STRENGTH_BITS)


def normalize(words: str) -> str:
    return " ".join(words.lower().split())


def validate_mnemonic(words: str) -> str:
    """Return the normalized mnemonic, or raise `MnemonicError` saying what is wrong."""
    phrase = normalize(words)
    count = len(phrase.split())
    if count not in (12, 15, 18, 21, 24):
        raise MnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words; this one has {count}")
    unknown = [n for n, w in enumerate(phrase.split(), start=1) if w not in _wordlist.wordlist]
    if unknown:
        # The position only: a mistyped word is still most of a secret word, and errors end
        # up on screens and in logs.
        raise MnemonicError(f"word {unknown[0]} of the mnemonic is not a BIP-39 word")
    if not _wordlist.check(phrase):
        raise MnemonicError("the mnemonic's checksum does not match: a word is wrong or out of order")
    return phrase


def seed_from_mnemonic(words: str, passphrase: str = "") -> bytes:
    return Mnemonic.to_seed(validate_mnemonic(words), passphrase)


def split_into_shares(words: str, threshold: int, count: int) -> list[str]:
    """SLIP-39 shares of the mnemonic's entropy: any `threshold` of `count` recover it."""
    if not 1 <= threshold <= count <= MAX_SHARES:
        raise MnemonicError(f"need 1 ≤ threshold ≤ shares ≤ {MAX_SHARES}, got {threshold}-of-{count}")
    if threshold == 1 and count > 1:
        raise MnemonicError("a 1-of-N backup would just copy the secret N times; use a threshold ≥ 2")
    entropy = _wordlist.to_entropy(validate_mnemonic(words))
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, count)], bytes(entropy))
    return groups[0]


def combine_shares(shares: list[str]) -> str:
    """Recover the BIP-39 mnemonic from SLIP-39 shares."""
    try:
        entropy = shamir_mnemonic.combine_mnemonics([normalize(s) for s in shares])
    except shamir_mnemonic.MnemonicError as exc:
        raise MnemonicError(f"the shares do not recover a secret: {exc}") from None
    return _wordlist.to_mnemonic(entropy)
