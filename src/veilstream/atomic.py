"""Crash-safe file replacement, for every layer: write a temporary file beside the target,
fsync it, rename it over the target, fsync the directory. A reader sees the old file or the
new one, never a part; a crash leaves at most a hidden `.name.*.tmp` beside it.

It raises the OSError it meets; each layer says what that means to its user (the vault's
`StorageError`, the swarm's storage errors, ...).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# Below this much free space a failed write is put down to a full disk: SQLite reports
# ENOSPC on its shared-memory file as a plain "disk I/O error", and needs 32 KiB for it.
NEARLY_FULL_BYTES = 1 << 20


def disk_is_full(path: Path) -> bool:
    """Whether the file system holding `path` has (next to) no space left for us."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(target: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file that replaces `target` (with `mode`) only if the block finishes without error."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `target` with `data` in one rename, durable before it returns."""
    with replacing(target, mode) as handle:
        handle.write(data)
