"""Decrypted output written in order as it arrives: playable while it grows, resumable.

A regular file is written in place, slice after slice, and a progress record (kept in the
vault, never beside the user's file) says how many slices of which content it holds. The
record is written only after the bytes it counts are on disk, so after a crash, Ctrl-C or
a full disk the next run with the same target cuts the file back to what the record
vouches for and goes on from there. A device, FIFO or socket is written to as it is and
never replaced or resumed. Nothing here overwrites a file it did not start.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from veilstream.vault.atomic import StorageError, describe_os_error, user_file_mode, write_atomic

RECORD_EVERY_S = 0.5  # how stale the progress record may be: at most this much is written again


class OutputExists(StorageError):
    """The target is a file this vault did not start writing for this content."""


@dataclass
class _Progress:
    content_id: str
    target: str
    device: int
    inode: int
    slices: int
    bytes: int

    @classmethod
    def load(cls, path: Path) -> _Progress | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["content_id"]), str(data["target"]), int(data["device"]), int(data["inode"]),
                       int(data["slices"]), int(data["bytes"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no record, or a damaged one: nothing is resumed


class ResumableOutput:
    """Where `veil play --out` writes: `start_slice` says where this run begins."""

    def __init__(self, handle: BinaryIO, target: Path, record: Path | None, progress: _Progress | None) -> None:
        self._handle = handle
        self.target = target
        self._record = record
        self._progress = progress
        self._recorded_at = time.monotonic()
        self.start_slice = progress.slices if progress else 0
        self.bytes_written = progress.bytes if progress else 0
        self.complete = False

    @classmethod
    def open(cls, target: Path, record: Path, content_id: str, *, replace: bool = False) -> ResumableOutput:
        """Open `target` for the plaintext of `content_id`; `record` is this content's
        progress record in the vault. An unfinished output of the same content resumes;
        any other existing file is refused unless `replace`."""
        target = Path(target).absolute()
        try:
            existing = os.stat(target)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise StorageError(describe_os_error(exc, target)) from None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise StorageError(f"{target} is a directory: give a file name to write to")
        if existing is not None and not stat.S_ISREG(existing.st_mode):  # /dev/null, a FIFO, a terminal
            try:
                return cls(open(target, "wb", buffering=0), target, None, None)  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise StorageError(describe_os_error(exc, target)) from None
        progress = _Progress.load(record)
        resumable = (progress is not None and existing is not None and progress.content_id == content_id
                     and progress.target == str(target) and progress.device == existing.st_dev
                     and progress.inode == existing.st_ino and existing.st_size >= progress.bytes)
        if existing is not None and not resumable and not replace:
            raise OutputExists(f"{target} exists and is not an unfinished output of this content: "
                               "choose another --out, or --force to replace it")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if resumable:
                handle = open(target, "r+b")  # noqa: SIM115 - closed by close()
                handle.truncate(progress.bytes)  # what the record does not vouch for is written again
                handle.seek(progress.bytes)
            else:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, user_file_mode())
                handle = os.fdopen(fd, "wb")
                info = os.fstat(fd)
                progress = _Progress(content_id, str(target), info.st_dev, info.st_ino, 0, 0)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, target)) from None
        output = cls(handle, target, record, progress)
        if not resumable:
            output._save_progress()  # from now on the file is ours to resume
        return output

    @property
    def resumable(self) -> bool:
        return self._record is not None

    def write(self, index: int, plaintext: bytes | memoryview) -> None:
        """Slice `index`'s plaintext, which must be the next one."""
        if self._progress is not None and index != self._progress.slices:
            raise ValueError(f"slice {index} written out of order (expected {self._progress.slices})")
        try:
            self._handle.write(plaintext)
        except OSError as exc:
            raise StorageError(self._failed_write(exc)) from None
        self.bytes_written += len(plaintext)
        if self._progress is not None:
            self._progress.slices = index + 1
            if time.monotonic() - self._recorded_at >= RECORD_EVERY_S:
                self.checkpoint()

    def checkpoint(self) -> None:
        """Put what was written on disk, then say so in the record."""
        if self._progress is None:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise StorageError(self._failed_write(exc)) from None
        self._progress.bytes = self.bytes_written
        self._save_progress()

    def finish(self) -> None:
        """Every slice is written: the file is whole and no longer resumable."""
        self.checkpoint()
        self.complete = True
        if self._record is not None:
            self._record.unlink(missing_ok=True)

    def close(self) -> None:
        """Keep what was written (and, unless finished, the record to resume it)."""
        try:
            if not self.complete:
                self.checkpoint()
        except StorageError:
            pass  # a full disk: the record still vouches for what was on disk before
        finally:
            try:
                self._handle.close()
            except OSError:
                pass

    def _save_progress(self) -> None:
        assert self._record is not None and self._progress is not None
        write_atomic(self._record, json.dumps(self._progress.__dict__).encode())
        self._recorded_at = time.monotonic()

    def _failed_write(self, exc: OSError) -> str:
        kept = self._progress.bytes if self._progress is not None else self.bytes_written
        message = describe_os_error(exc, self.target).split(";")[0]
        if self.resumable:
            return f"{message}: {kept:,} bytes are kept; free some space and run the same command to go on"
        return message

