"""`play --out`: plaintext written in order, kept when a run stops, resumed by the next run,
and never written over a file (or a device) it did not start."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from veilstream.vault import OutputExists, ResumableOutput, StorageError

CID = "ab" * 32
SLICE = b"x" * 1000


def slices(n: int, start: int = 0) -> list[bytes]:
    return [bytes([i % 251]) * 1000 for i in range(start, n)]


def test_a_stopped_output_is_kept_and_resumed(tmp_path):
    target, record = tmp_path / "movie.mp4", tmp_path / "vault" / "rec.json"
    output = ResumableOutput.open(target, record, CID)
    assert output.start_slice == 0 and output.resumable
    for i, data in enumerate(slices(4)):
        output.write(i, data)
    output.close()  # Ctrl-C, a budget out, a full disk: what was written stays
    assert target.read_bytes() == b"".join(slices(4))

    again = ResumableOutput.open(target, record, CID)
    assert again.start_slice == 4 and again.bytes_written == 4000
    for i, data in enumerate(slices(6, 4), start=4):
        again.write(i, data)
    again.finish()
    again.close()
    assert target.read_bytes() == b"".join(slices(6)) and not record.exists()


def test_bytes_the_record_does_not_vouch_for_are_written_again(tmp_path):
    target, record = tmp_path / "movie.mp4", tmp_path / "rec.json"
    output = ResumableOutput.open(target, record, CID)
    output.write(0, SLICE)
    output.checkpoint()
    output.write(1, b"half a slice")  # then kill -9: no checkpoint, no close
    output._handle.flush()
    assert target.stat().st_size == 1000 + 12

    resumed = ResumableOutput.open(target, record, CID)
    assert resumed.start_slice == 1 and target.stat().st_size == 1000  # cut back to what the record vouches for
    resumed.close()


def test_someone_elses_file_is_never_overwritten_without_force(tmp_path):
    target, record = tmp_path / "notes.txt", tmp_path / "rec.json"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExists, match="--force"):
        ResumableOutput.open(target, record, CID)
    assert target.read_bytes() == b"precious"
    # a finished output of the same content is not resumed either (its record is gone)
    done = tmp_path / "done.mp4"
    output = ResumableOutput.open(done, record, CID)
    output.write(0, SLICE)
    output.finish()
    output.close()
    with pytest.raises(OutputExists):
        ResumableOutput.open(done, record, CID)
    replaced = ResumableOutput.open(done, record, CID, replace=True)
    assert replaced.start_slice == 0 and done.stat().st_size == 0
    replaced.close()


def test_a_record_of_another_file_or_content_resumes_nothing(tmp_path):
    target, record = tmp_path / "movie.mp4", tmp_path / "rec.json"
    output = ResumableOutput.open(target, record, CID)
    output.write(0, SLICE)
    output.close()
    with pytest.raises(OutputExists):
        ResumableOutput.open(target, record, "cd" * 32)  # same file, other content
    target.unlink()
    target.write_bytes(b"a new file in its place")  # another inode
    with pytest.raises(OutputExists):
        ResumableOutput.open(target, record, CID)
    record.write_text("{not json")
    with pytest.raises(OutputExists):
        ResumableOutput.open(target, record, CID)


def test_a_fifo_is_written_to_and_never_replaced(tmp_path):
    fifo, record = tmp_path / "pipe", tmp_path / "rec.json"
    os.mkfifo(fifo)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(fifo.read_bytes()))
    reader.start()
    output = ResumableOutput.open(fifo, record, CID)
    assert not output.resumable
    for i, data in enumerate(slices(3)):
        output.write(i, data)
    output.finish()
    output.close()
    reader.join(timeout=10)
    assert bytes(received) == b"".join(slices(3))
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not record.exists()


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(StorageError, match="is a directory"):
        ResumableOutput.open(tmp_path, tmp_path / "rec.json", CID)


def test_a_full_disk_keeps_what_was_written_and_says_so(small_disk, tmp_path):
    target, record = small_disk.path / "movie.mp4", tmp_path / "rec.json"
    output = ResumableOutput.open(target, record, CID)
    small_disk.fill(leave_bytes=64 * 1024)
    big = b"y" * 16384
    with pytest.raises(StorageError, match="disk full .* bytes are kept; free some space"):
        for i in range(100):
            output.write(i, big)
            output.checkpoint()
    output.close()
    small_disk.free()
    kept = ResumableOutput.open(target, record, CID)
    assert kept.start_slice > 0 and target.read_bytes() == big * kept.start_slice
    kept.close()
