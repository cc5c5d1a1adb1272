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
    with pytest.raises(TorrentError, match="manifest"):
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


@pytest.fixture(scope="module")
def torrent_bytes(tmp_path_factory):
    from veilstream.identity import Identity

    tmp = tmp_path_factory.mktemp("fz")
    (tmp / "in.bin").write_bytes(os.urandom(100_000))
    (tmp / "out").mkdir()
    creator = Identity.from_mnemonic("leader monkey parrot ring guide accident before fence cannon height naive bean")
    return publish_file(tmp / "in.bin", tmp / "out", creator, PublishOptions(slice_size=16 * 1024)).torrent_path.read_bytes()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=8),
       st.integers(min_value=0))
def test_fuzz_torrent_parser_mutations(torrent_bytes, edits, cut):
    """Any mutation of a valid torrent is either refused with TorrentError or parses into a
    torrent that re-encodes to exactly the bytes given (so its id is what it claims)."""
    data = bytearray(torrent_bytes)
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data[: len(data) - cut % 50])
    try:
        torrent = Torrent.from_bytes(data)
    except TorrentError:
        return
    assert Torrent.from_bytes(torrent.to_bytes()).content_id == torrent.content_id
