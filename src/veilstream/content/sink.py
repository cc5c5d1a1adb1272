"""Writing gigabytes of ciphertext fast and durably, without flooding the page cache.

Where the filesystem allows it, writes use O_DIRECT from page-aligned buffers: the data
goes to the device without a copy into the page cache (measured here: ~2 GB/s and ~0.05 s
of kernel time per GiB, against 0.3–2.6 s for buffered writes into fresh cache pages).
Elsewhere (tmpfs, some network filesystems) writes are buffered, made durable and dropped
from the cache in WRITEBACK_BYTES steps on a helper thread.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

DIRECT_ALIGNMENT = 4096  # O_DIRECT needs offsets, lengths and buffers aligned to the block size
WRITEBACK_BYTES = 64 * 1024 * 1024  # buffered mode: make durable and drop from cache in steps of this


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned, writable buffer (anonymous memory mapping)."""
    return mmap.mmap(-1, size)


class CiphertextSink:
    """An append-only file: `write` views in order, then `finish` makes it all durable."""

    def __init__(self, path: Path) -> None:
        self._direct = hasattr(os, "O_DIRECT")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            self._fd = os.open(path, flags | (os.O_DIRECT if self._direct else 0), 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self._direct:
                raise
            self._direct = False
            self._fd = os.open(path, flags, 0o644)
        self._written = self._flushed = 0
        self._flusher = ThreadPoolExecutor(1) if not self._direct else None
        self._flushing: Future[None] | None = None

    def write(self, data: memoryview) -> None:
        if self._direct and (len(data) % DIRECT_ALIGNMENT or self._written % DIRECT_ALIGNMENT):
            self._leave_direct_mode()  # only the file's last, shorter piece comes here
        try:
            done = os.write(self._fd, data)
        except OSError as exc:
            # Under O_DIRECT the kernel answers EINVAL where a buffered write would say what
            # is wrong (a file-size limit, say): retry buffered to get the real error.
            if not (self._direct and exc.errno == errno.EINVAL):
                raise
            self._leave_direct_mode()
            done = 0
        while done < len(data):  # a short write (disk nearly full): go on unaligned, get the error
            if self._direct:
                self._leave_direct_mode()
            done += os.write(self._fd, data[done:])
        self._written += len(data)
        if not self._direct and self._written - self._flushed >= WRITEBACK_BYTES:
            self._write_back_behind()

    def finish(self) -> None:
        if self._flushing is not None:
            self._flushing.result()
        os.fsync(self._fd)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
        os.close(self._fd)

    def __enter__(self) -> CiphertextSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _leave_direct_mode(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self._direct = False
        self._flusher = self._flusher or ThreadPoolExecutor(1)
        self._flushed = self._written

    def _write_back_behind(self) -> None:
        if self._flushing is not None:
            if not self._flushing.done():
                return  # still flushing the previous step; catch up next time
            self._flushing.result()
        self._flushing = self._flusher.submit(_sync_and_drop, self._fd, self._flushed, self._written - self._flushed)
        self._flushed = self._written


def _sync_and_drop(fd: int, offset: int, length: int) -> None:
    os.fdatasync(fd)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
