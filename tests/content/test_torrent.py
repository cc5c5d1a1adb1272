"""Torrent files: hostile, truncated and foreign torrents are refused with a reason."""

import os

import libtorrent as lt
import pytest

from veilstream.content import PublishOptions, Torrent, TorrentError, parse_content_id, publish_file
from veilstream.content import bencode


@pytest.fixture
def published(tmp_path, creator):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(200_000))
    out = tmp_path / "out"
    out.mkdir()
    return publish_file(src, out, creator, PublishOptions(slice_size=16 * 1024))


def test_truncated_torrent(published):
    data = published.torrent_path.read_bytes()
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(TorrentError):
            Torrent.from_bytes(data[:cut])


def test_tampered_piece_layer(published):
    top = bencode.decode(published.torrent_path.read_bytes())
    root = next(iter(top[b"piece layers"]))
    layer = bytearray(top[b"piece layers"][root])
    layer[0] ^= 1
    top[b"piece layers"][root] = bytes(layer)
    with pytest.raises(TorrentError, match="does not match"):
        Torrent.from_bytes(bencode.encode(top))


def test_tampered_manifest_changes_the_content_id(published):
    top = bencode.decode(published.torrent_path.read_bytes())
    top[b"info"][b"veilstream"][b"seeder share bps"] = 9999
    forged = Torrent.from_bytes(bencode.encode(top))
    assert forged.content_id != published.torrent.content_id


@pytest.mark.parametrize("field,value", [
    (b"suite", b"rot13"), (b"v", 99), (b"salt", b"short"), (b"slice count", 1), (b"seeder share bps", 10_001),
])
def test_malformed_manifest_fields(published, field, value):
    top = bencode.decode(published.torrent_path.read_bytes())
    top[b"info"][b"veilstream"][field] = value
    with pytest.raises(TorrentError.__mro__[1]):  # ManifestError
        Torrent.from_bytes(bencode.encode(top))


def test_a_foreign_v2_torrent_is_recognised_as_not_ours(tmp_path):
    (tmp_path / "plain.bin").write_bytes(os.urandom(100_000))
    creator = lt.create_torrent(lt.list_files(str(tmp_path / "plain.bin")), 16 * 1024, flags=lt.create_torrent.v2_only)
    lt.set_piece_hashes(creator, str(tmp_path))
    with pytest.raises(TorrentError, match="not a Veilstream one"):
        Torrent.from_bytes(lt.bencode(creator.generate()))


def test_a_v1_torrent_is_refused(tmp_path):
    (tmp_path / "plain.bin").write_bytes(os.urandom(50_000))
    creator = lt.create_torrent(lt.list_files(str(tmp_path / "plain.bin")), 16 * 1024, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(tmp_path))
    with pytest.raises(TorrentError, match="v2"):
        Torrent.from_bytes(lt.bencode(creator.generate()))


@pytest.mark.parametrize("junk", [b"", b"not a torrent", os.urandom(300), b"d4:infoi1ee"])
def test_junk_is_not_a_torrent(junk):
    with pytest.raises(TorrentError):
        Torrent.from_bytes(junk)


def test_content_ids_and_magnets(published):
    cid = published.torrent.content_id
    assert parse_content_id(cid.upper()) == cid
    assert parse_content_id(published.torrent.magnet) == cid
    for bad in ("", "abc", "z" * 64, "magnet:?xt=urn:btih:" + "a" * 40):
        with pytest.raises(TorrentError):
            parse_content_id(bad)
