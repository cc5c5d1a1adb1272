"""A real BitTorrent client (libtorrent 2.1) accepts our torrents and ciphertext (BEP 52)."""

import os
import time

import libtorrent as lt
import pytest

from veilstream.content import PublishOptions, publish_file

CHECK_TIMEOUT_S = 30


def session() -> lt.session:
    return lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })


def check_with_libtorrent(torrent_path, save_path) -> tuple[lt.torrent_status, lt.torrent_info]:
    """Add the torrent, let libtorrent hash-check the file on disk, return its verdict."""
    ses = session()
    info = lt.torrent_info(str(torrent_path))
    params = lt.add_torrent_params()
    params.ti, params.save_path = info, str(save_path)
    handle = ses.add_torrent(params)
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    while time.monotonic() < deadline:
        alert = ses.wait_for_alert(1000)
        for a in ses.pop_alerts() if alert else []:
            if isinstance(a, lt.torrent_checked_alert):
                return handle.status(), info
    raise AssertionError("libtorrent did not finish checking in time")


@pytest.mark.parametrize("size,slice_size", [(3_000_000, 1 << 20), (200_000, 16 * 1024), (5_000, 64 * 1024)])
def test_libtorrent_finds_our_ciphertext_complete(tmp_path, creator, size, slice_size):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    out.mkdir()
    published = publish_file(src, out, creator, PublishOptions(slice_size=slice_size))
    status, info = check_with_libtorrent(published.torrent_path, out)
    assert str(info.info_hashes().v2) == published.torrent.content_id
    assert info.num_pieces() == published.torrent.piece_count
    assert status.is_seeding and status.num_pieces == published.torrent.piece_count
    assert status.errc.value() == 0


def test_libtorrent_rejects_a_tampered_piece(tmp_path, creator):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(100_000))
    out = tmp_path / "out"
    out.mkdir()
    published = publish_file(src, out, creator, PublishOptions(slice_size=16 * 1024))
    raw = bytearray(published.ciphertext_path.read_bytes())
    raw[40_000] ^= 0xFF
    published.ciphertext_path.write_bytes(bytes(raw))
    status, _ = check_with_libtorrent(published.torrent_path, out)
    assert not status.is_seeding
    assert status.num_pieces == published.torrent.piece_count - 1
