"""Identity: derivations match published vectors; secrets stay out of reprs."""

import itertools

import pytest
from mnemonic import Mnemonic

from veilstream.identity import Identity, combine_shares, generate_mnemonic, split_into_shares, validate_mnemonic
from veilstream.identity.mnemonic import MnemonicError

NIP06_VECTORS = [  # from NIP-06 itself
    ("leader monkey parrot ring guide accident before fence cannon height naive bean",
     "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a",
     "17162c921dc4d2518f9a101db33695df1afb56ab82f5ff3e5da6eec3ca5cd917"),
    ("what bleak badge arrange retreat wolf trade produce cricket blur garlic valid proud rude strong choose busy staff weather area salt hollow arm fade",
     "c15d739894c81a2fcfd3a2df85a0d2c0dbc47a280d092799f144d73d7ae78add",
     "d41b22899549e1f3d335a31002cfd382174006e166d3e658e3a5eecdb6463573"),
]


@pytest.mark.parametrize("words,private,public", NIP06_VECTORS)
def test_nostr_key_follows_nip06(words, private, public):
    identity = Identity.from_mnemonic(words)
    assert identity.nostr_key.hex() == private
    assert identity.nostr_pubkey == public


def test_wallet_key_follows_bip44_ethereum_path():
    # The default account of Hardhat and anvil: m/44'/60'/0'/0/0 of the "test … junk" mnemonic.
    identity = Identity.from_mnemonic("test test test test test test test test test test test junk")
    assert identity.wallet_key.hex() == "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    assert identity.wallet_address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_bip39_seed_matches_trezor_vector():
    from veilstream.identity.mnemonic import seed_from_mnemonic

    words = " ".join(["abandon"] * 11 + ["about"])
    assert seed_from_mnemonic(words, "TREZOR").hex() == (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
    )


def test_every_key_is_distinct_and_deterministic():
    words = generate_mnemonic()
    a, b = Identity.from_mnemonic(words), Identity.from_mnemonic(words)
    assert a == b
    secrets = {a.wallet_key, a.nostr_key, a.x25519_key, a.creator_seed}
    assert len(secrets) == 4
    assert Identity.from_mnemonic(generate_mnemonic()).creator_seed != a.creator_seed


def test_repr_never_shows_secrets():
    identity = Identity.from_mnemonic(generate_mnemonic())
    text = repr(identity) + str(identity)
    for secret in (identity.mnemonic.split()[0], identity.wallet_key.hex(), identity.creator_seed.hex()):
        assert secret not in text


def test_nostr_signature_verifies():
    import coincurve

    identity = Identity.from_mnemonic(generate_mnemonic())
    message = bytes(range(32))
    signature = identity.sign_nostr(message)
    assert coincurve.PublicKeyXOnly(bytes.fromhex(identity.nostr_pubkey)).verify(signature, message)


def test_x25519_key_seals_to_this_identity():
    from nacl.public import PrivateKey, SealedBox

    identity = Identity.from_mnemonic(generate_mnemonic())
    sealed = SealedBox(PrivateKey(identity.x25519_key).public_key).encrypt(b"slice key")
    assert SealedBox(identity.x25519_private).decrypt(sealed) == b"slice key"


@pytest.mark.parametrize("bad,reason", [
    ("", "has 12, 15, 18, 21 or 24 words"),
    ("abandon " * 11 + "zzzz", "not a BIP-39 word"),
    ("abandon " * 12, "checksum"),
])
def test_bad_mnemonics_are_refused_with_a_reason(bad, reason):
    with pytest.raises(MnemonicError, match=reason):
        Identity.from_mnemonic(bad)


def test_mnemonic_is_normalized():
    words = generate_mnemonic()
    assert validate_mnemonic("  " + words.upper().replace(" ", "   ") + "\n") == words


def test_any_three_of_five_shares_recover_the_mnemonic():
    words = generate_mnemonic()
    shares = split_into_shares(words, 3, 5)
    assert len(set(shares)) == 5
    for trio in itertools.combinations(shares, 3):
        assert combine_shares(list(trio)) == words
    assert Mnemonic("english").check(combine_shares(shares[1:4]))


def test_two_shares_are_not_enough():
    shares = split_into_shares(generate_mnemonic(), 3, 5)
    with pytest.raises(MnemonicError):
        combine_shares(shares[:2])


def test_a_corrupted_share_is_refused():
    shares = split_into_shares(generate_mnemonic(), 3, 5)
    words = shares[0].split()
    words[5] = "academic" if words[5] != "academic" else "acid"
    with pytest.raises(MnemonicError):
        combine_shares([" ".join(words)] + shares[1:3])


@pytest.mark.parametrize("threshold,count", [(0, 5), (6, 5), (1, 3), (3, 17)])
def test_impossible_share_schemes_are_refused(threshold, count):
    with pytest.raises(MnemonicError):
        split_into_shares(generate_mnemonic(), threshold, count)


def test_a_mistyped_word_is_not_echoed():
    """A mistyped word is most of a secret word; the error names its position only."""
    from veilstream.identity.mnemonic import MnemonicError, validate_mnemonic

    with pytest.raises(MnemonicError) as caught:
        validate_mnemonic("abandon " * 11 + "zebrx")
    assert "zebrx" not in str(caught.value) and "word 12" in str(caught.value)
