"""Verified pieces on disk: only written once verified, resumable, re-verified on resume,
atomic resume state, and clear errors."""

import os
import resource
import signal
import subprocess
import sys

import pytest

from veilstream.swarm.errors import PieceStorageError
from veilstream.swarm.events import PeerDropped
from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.node import new_peer_id
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.storage import PieceStore, bits_to_bytes, bytes_to_bits
from veilstream.swarm.swarm import Swarm

from .conftest import ciphertext, connect, seeder_core


def test_bitfield_conversion_round_trips_and_rejects_spare_bits():
    have = bytearray([1, 0, 1, 1, 0, 0, 0, 0, 1, 1])
    raw = bits_to_bytes(have)
    assert raw == bytes([0b10110000, 0b11000000])
    assert bytes_to_bits(raw, 10) == have
    assert bytes_to_bits(bytes([0b10110000, 0b11100000]), 10) is None
    assert bytes_to_bits(raw, 17) is None


def piece(content, index):
    pl = content.torrent.piece_length
    return content.ciphertext_path.read_bytes()[index * pl : (index + 1) * pl]


def test_a_resumed_download_keeps_only_pieces_that_still_verify(content, tmp_path):
    store = PieceStore.for_download(content.torrent, tmp_path)
    for index in (0, 3, 4):
        store.write_verified_piece(index, piece(content, index))
    store.save_resume()
    store.close()
    # damage piece 3 on disk behind the store's back
    part = tmp_path / (content.torrent.name + ".part")
    with open(part, "r+b") as f:
        f.seek(3 * content.torrent.piece_length + 5)
        f.write(b"\xff\xfe")
    again = PieceStore.for_download(content.torrent, tmp_path)
    assert [i for i, h in enumerate(again.have) if h] == [0, 4]
    again.close()


def test_a_run_that_died_before_its_first_resume_save_keeps_what_it_wrote(content, tmp_path):
    """kill -9 within a second of the first pieces: on disk, but named in no resume file."""
    store = PieceStore.for_download(content.torrent, tmp_path)
    for index in (1, 2):
        store.write_verified_piece(index, piece(content, index))
    store.drain()  # written; no resume save yet, and the process dies without closing
    assert not (tmp_path / (content.torrent.name + ".resume")).exists()
    again = PieceStore.for_download(content.torrent, tmp_path)
    assert [i for i, h in enumerate(again.have) if h] == [1, 2]  # each re-verified; the holes hashed never
    again.close()
    store.close()


def test_a_torn_or_foreign_resume_file_starts_over(content, tmp_path):
    store = PieceStore.for_download(content.torrent, tmp_path)
    store.write_verified_piece(1, piece(content, 1))
    store.save_resume()
    store.close()
    (tmp_path / (content.torrent.name + ".resume")).write_bytes(b"d7:versioni1e")  # truncated
    assert PieceStore.for_download(content.torrent, tmp_path).have_count == 0


def test_marked_pieces_are_unverified_until_checked(content, tmp_path):
    """A resume file claiming everything (say, forged) marks nothing that does not verify."""
    store = PieceStore.for_download(content.torrent, tmp_path)
    store.have[:] = bytes([1]) * content.torrent.piece_count  # pretend
    store._resume_dirty = True
    store.save_resume()
    store.close()
    assert PieceStore.for_download(content.torrent, tmp_path).have_count == 0


def test_finish_moves_the_part_file_into_place(content, tmp_path):
    store = PieceStore.for_download(content.torrent, tmp_path)
    for index in range(content.torrent.piece_count):
        store.write_verified_piece(index, piece(content, index))
    path = store.finish()
    assert path == tmp_path / content.torrent.name
    assert path.read_bytes() == content.ciphertext_path.read_bytes()
    assert not (tmp_path / (content.torrent.name + ".resume")).exists()
    assert store.read(10, 100) == content.ciphertext_path.read_bytes()[10:110]
    store.close()
    # opening again finds it complete
    assert PieceStore.for_download(content.torrent, tmp_path).complete


@pytest.mark.parametrize("direct_io", [True, False])
def test_pieces_written_from_piece_buffers_read_back_identical(content, tmp_path, monkeypatch, direct_io):
    """Pieces go to disk with O_DIRECT from page-aligned buffers where the filesystem
    allows it, buffered where it does not (tmpfs); either way the file ends identical."""
    if not direct_io:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    torrent, data = content.torrent, content.ciphertext_path.read_bytes()
    pl = torrent.piece_length
    store = PieceStore.for_download(torrent, tmp_path)
    for index in reversed(range(torrent.piece_count)):  # any order, as the picker goes
        size = store.piece_size(index)
        buffer = store.piece_buffer(size)
        buffer[:size] = data[index * pl : index * pl + size]
        store.write_verified_piece(index, buffer)
    assert store.read(0, len(data)) == data  # from memory or from disk, wherever it is
    assert store.finish().read_bytes() == data
    store.close()


def test_seeding_a_corrupt_file_offers_only_good_pieces(content, tmp_path):
    bad = tmp_path / content.torrent.name
    raw = bytearray(content.ciphertext_path.read_bytes())
    raw[2 * content.torrent.piece_length] ^= 1
    bad.write_bytes(bytes(raw))
    store = PieceStore.for_seeding(content.torrent, bad)
    assert store.have_count == content.torrent.piece_count - 1 and not store.have[2]
    assert store.read_block(2, 0, 16384) is None


def test_seeding_the_wrong_file_is_a_clear_error(content, tmp_path):
    (tmp_path / "x").write_bytes(b"short")
    with pytest.raises(PieceStorageError, match="not this content"):
        PieceStore.for_seeding(content.torrent, tmp_path / "x")
    with pytest.raises(PieceStorageError, match="no ciphertext"):
        PieceStore.for_seeding(content.torrent, tmp_path / "missing")


def test_a_full_disk_is_reported_not_crashed(content, tmp_path):
    """With the file-size limit below the ciphertext (EFBIG, like ENOSPC), the store says
    so clearly. Run in a child so the limit binds nobody else."""
    code = (
        "import sys, pathlib\n"
        "from veilstream.content import Torrent\n"
        "from veilstream.swarm.storage import PieceStore\n"
        "from veilstream.swarm.errors import PieceStorageError\n"
        "t = Torrent.load(pathlib.Path(sys.argv[1]))\n"
        "try:\n"
        "    PieceStore.for_download(t, pathlib.Path(sys.argv[2]))\n"
        "except PieceStorageError as e:\n"
        "    print('ERR', e)\n"
    )

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    done = subprocess.run([sys.executable, "-c", code, str(content.torrent_path), str(tmp_path / "dl")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ERR disk full")


@pytest.mark.parametrize("player_reads", [True, False])
def test_a_player_gets_pieces_it_reads_from_memory_once_written(content, tmp_path, player_reads):
    """While a player reads a store as it fills, written pieces stay in memory for it (an
    O_DIRECT write leaves nothing in the page cache); a store nobody reads recycles them."""
    torrent, data = content.torrent, content.ciphertext_path.read_bytes()
    pl = torrent.piece_length
    store = PieceStore.for_download(torrent, tmp_path)
    if player_reads:
        store.keep_recent_pieces(SwarmSettings().recent_pieces_kept_bytes)
    reads_from_disk = []
    real_pread = os.pread
    store_fd = store._fd

    def pread(fd, size, offset):
        if fd == store_fd:
            reads_from_disk.append(offset // pl)
        return real_pread(fd, size, offset)

    full = [i for i in range(torrent.piece_count) if store.piece_size(i) == pl]
    for index in full:
        buffer = store.piece_buffer(pl)
        buffer[:pl] = data[index * pl : (index + 1) * pl]
        store.write_verified_piece(index, buffer)
    while store._writes:
        store._writes.popleft().result()  # every write has landed
    os.pread, original = pread, os.pread
    try:
        views = {index: bytes(store.piece_view(index)) for index in full}
    finally:
        os.pread = original
    assert all(views[i] == data[i * pl : (i + 1) * pl] for i in full)  # right bytes either way
    assert (reads_from_disk == []) == player_reads
    store.close()


# -- the protocol core over the disk store (the core's own tests use a MemoryPieceStore) --


def test_the_core_writes_only_verified_pieces_to_disk_and_finishes_a_magnet_fetch(content, tmp_path):
    """A seeder that lies in every piece is banned with not one of its bytes on disk; an
    honest one then completes the fetch, which the core placed with `open_store`."""
    torrent = content.torrent
    leecher = Swarm(torrent.info_hash, peer_id=new_peer_id(), open_store=lambda t: PieceStore.for_download(t, tmp_path))
    lies = bytearray(ciphertext(content))
    for index in range(torrent.piece_count):
        lies[index * torrent.piece_length] ^= 0xFF
    liar = Swarm(torrent.info_hash, peer_id=new_peer_id(), torrent=torrent,
                 store=MemoryPieceStore(torrent, lies, bytearray([1]) * torrent.piece_count))
    connect(leecher, liar).pump()
    dropped = [e for e in leecher.take_events() if isinstance(e, PeerDropped)]
    assert dropped and dropped[0].banned and "bad block" in dropped[0].reason
    assert leecher.store.have_count == 0
    part = (tmp_path / (torrent.name + ".part")).read_bytes()
    assert part == bytes(len(part))  # not one unverified byte on disk
    connect(leecher, seeder_core(content), conn_a=2).pump()
    assert leecher.finished
    assert leecher.store.finish().read_bytes() == content.ciphertext_path.read_bytes()
    leecher.store.close()
