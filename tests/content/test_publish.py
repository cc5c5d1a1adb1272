"""Publish → torrent → open: every size and layout round-trips; tampering is caught."""

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veilstream.content import (
    CipherSuite,
    ContentKeys,
    DecryptionError,
    IntegrityError,
    KeyRing,
    PublishError,
    PublishOptions,
    Terms,
    Torrent,
    TorrentError,
    WrongKeyError,
    decrypt_to,
    publish_file,
)
from veilstream.content.crypto import TAG_SIZE
from veilstream.content.keytree import nodes_for_range
from veilstream.content.unseal import verify_slice_key
from veilstream.content import merkle
from veilstream.content.crypto import key_commitment

SMALL = 16 * 1024


def publish_bytes(tmp: Path, creator, data: bytes, **opts) -> tuple:
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "input.bin"
    src.write_bytes(data)
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    return publish_file(src, out, creator, PublishOptions(**opts)), src


def ring_of(published) -> KeyRing:
    return KeyRing((published.keys.tree_root,), published.keys.metadata_key)


def decrypt(published, ciphertext=None) -> bytes:
    buffer = io.BytesIO()
    decrypt_to(published.torrent, ciphertext or published.ciphertext_path, ring_of(published), buffer)
    return buffer.getvalue()


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    size=st.one_of(st.integers(min_value=1, max_value=6 * SMALL), st.sampled_from([SMALL - 16, SMALL - 15, 2 * (SMALL - 16), SMALL, 1])),
    suite=st.sampled_from(list(CipherSuite)),
)
def test_round_trip_any_size(tmp_path_factory, creator, size, suite):
    tmp = tmp_path_factory.mktemp("rt")
    data = os.urandom(size)
    published, _ = publish_bytes(tmp, creator, data, slice_size=SMALL, suite=suite)
    torrent = published.torrent
    assert torrent.piece_count == -(-size // (SMALL - TAG_SIZE))
    assert published.ciphertext_path.stat().st_size == size + TAG_SIZE * torrent.piece_count
    assert decrypt(published) == data
    reloaded = Torrent.load(published.torrent_path)
    assert reloaded == torrent and reloaded.content_id == torrent.content_id
    for i in range(torrent.piece_count):
        offset, length = torrent.manifest.slice_range(i)
        with open(published.ciphertext_path, "rb") as f:
            f.seek(offset)
            assert torrent.verify_piece(i, f.read(length))


@given(
    price=st.integers(min_value=0, max_value=2**256 - 1),
    share=st.integers(min_value=0, max_value=10_000),
    trackers=st.lists(st.text(min_size=1, max_size=30), max_size=3),
)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_manifest_round_trips_through_the_torrent(tmp_path_factory, creator, price, share, trackers):
    tmp = tmp_path_factory.mktemp("mf")
    published, _ = publish_bytes(tmp, creator, b"m" * 40_000, slice_size=SMALL,
                                 terms=Terms(price, share), trackers=tuple(trackers))
    again = Torrent.from_bytes(published.torrent.to_bytes())
    assert again.manifest == published.torrent.manifest
    assert again.manifest.terms == Terms(price, share)
    assert again.trackers == tuple(trackers)
    assert again.manifest.creator_address.hex() == creator.wallet_address[2:].lower()
    meta = again.manifest.metadata(published.keys.metadata_key)
    assert (meta.name, meta.size, meta.mime_type) == ("input.bin", 40_000, "application/octet-stream")


def test_the_ciphertext_and_torrent_reveal_no_plaintext(tmp_path, creator):
    data = b"A very recognisable plaintext line.\n" * 2000
    published, _ = publish_bytes(tmp_path, creator, data, slice_size=SMALL)
    blob = published.ciphertext_path.read_bytes() + published.torrent_path.read_bytes()
    assert b"recognisable" not in blob and b"input.bin" not in blob


def test_keys_derive_from_the_creator_seed_and_salt(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(50_000), slice_size=SMALL)
    m = published.torrent.manifest
    assert ContentKeys.derive(creator.creator_seed, m.salt, m.slice_count) == published.keys


def test_publishing_twice_gives_different_ids_and_keys(tmp_path, creator):
    data = os.urandom(20_000)
    a, _ = publish_bytes(tmp_path / "a", creator, data, slice_size=SMALL)
    b, _ = publish_bytes(tmp_path / "b", creator, data, slice_size=SMALL)
    assert a.torrent.content_id != b.torrent.content_id
    assert a.keys.tree_root.key != b.keys.tree_root.key


def test_a_tampered_ciphertext_byte_is_caught_before_decryption(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(100_000), slice_size=SMALL)
    raw = bytearray(published.ciphertext_path.read_bytes())
    raw[3 * SMALL + 5] ^= 0x01
    published.ciphertext_path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="slice 3"):
        decrypt(published)


def test_a_truncated_ciphertext_is_refused(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(100_000), slice_size=SMALL)
    with open(published.ciphertext_path, "r+b") as f:
        f.truncate(50_000)
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(published)


def test_a_wrong_key_is_refused_before_any_output(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(100_000), slice_size=SMALL)
    other = ContentKeys.derive(os.urandom(32), published.torrent.manifest.salt, published.torrent.piece_count)
    out = io.BytesIO()
    with pytest.raises(WrongKeyError):
        decrypt_to(published.torrent, published.ciphertext_path, KeyRing((other.tree_root,)), out)
    assert out.getvalue() == b""


def test_single_delivered_keys_are_checked_against_commitments(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(100_000), slice_size=SMALL)
    root, n = published.keys.tree_root, published.torrent.piece_count
    commitments = [key_commitment(root.leaf_key(i)) for i in range(n)]
    for i in range(n):
        verify_slice_key(published.torrent, i, root.leaf_key(i), merkle.proof(commitments, i))
    with pytest.raises(WrongKeyError):
        verify_slice_key(published.torrent, 1, root.leaf_key(2), merkle.proof(commitments, 1))


def test_a_range_ring_decrypts_only_its_range(tmp_path, creator):
    published, _ = publish_bytes(tmp_path, creator, os.urandom(100_000), slice_size=SMALL)
    ring = KeyRing(tuple(nodes_for_range(published.keys.tree_root, 1, 4)))
    assert ring.slice_key(2) == published.keys.tree_root.leaf_key(2)
    with pytest.raises(DecryptionError, match="not bought"):
        ring.slice_key(4)
    with pytest.raises(DecryptionError, match="only part"):
        decrypt_to(published.torrent, published.ciphertext_path, ring, io.BytesIO())


@pytest.mark.parametrize("case", ["missing", "empty", "directory"])
def test_unpublishable_input_is_refused_clearly(tmp_path, creator, case):
    src = tmp_path / "input"
    if case == "empty":
        src.write_bytes(b"")
    elif case == "directory":
        src.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PublishError, match={"missing": "no such file", "empty": "empty", "directory": "directory"}[case]):
        publish_file(src, out, creator)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("size", [1000, 15 * 1024, 3 << 20, 32 << 20])
def test_bad_slice_sizes_are_refused(tmp_path, creator, size):
    src = tmp_path / "in"
    src.write_bytes(b"x")
    with pytest.raises(TorrentError, match="power of two"):
        publish_file(src, tmp_path, creator, PublishOptions(slice_size=size))


def test_terms_are_validated():
    from veilstream.content import ManifestError

    with pytest.raises(ManifestError):
        Terms(seeder_share_bps=10_001)
    with pytest.raises(ManifestError):
        Terms(price_per_slice_wei=-1)


def test_range_deliveries_are_checked_against_commitments(tmp_path, creator):
    from veilstream.content.unseal import all_commitments, verify_range_keys

    published, _ = publish_bytes(tmp_path, creator, os.urandom(300_000), slice_size=SMALL)
    root, torrent = published.keys.tree_root, published.torrent
    leaves = all_commitments(root, torrent.piece_count)
    for first, end in [(0, torrent.piece_count), (3, 9), (5, 6), (torrent.piece_count - 2, torrent.piece_count)]:
        nodes = nodes_for_range(root, first, end)
        keys = verify_range_keys(torrent, nodes, merkle.range_proof(leaves, first, end))
        assert keys == {i: root.leaf_key(i) for i in range(first, end)}
    forged = nodes_for_range(ContentKeys.derive(os.urandom(32), torrent.manifest.salt, torrent.piece_count).tree_root, 3, 9)
    with pytest.raises(WrongKeyError):
        verify_range_keys(torrent, forged, merkle.range_proof(leaves, 3, 9))
    with pytest.raises(WrongKeyError):  # a gap
        verify_range_keys(torrent, nodes_for_range(root, 3, 5) + nodes_for_range(root, 6, 9), merkle.range_proof(leaves, 3, 9))
