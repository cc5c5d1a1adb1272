"""The vault's crash-safe writes (veilstream.atomic's), their failures said as `StorageError`."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from veilstream.atomic import replacing
from veilstream.errors import VeilError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
class StorageError(VeilError):
    """The disk refused a write (full, read-only, permission); nothing was changed."""


def user_file_mode() -> int:
    """The mode a new file of the user's gets under their umask (0644 under 022, 0600 under
    077): for what the user asked to have written, such as decrypted output."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def describe_os_error(exc: OSError, target: Path) -> str:
    if exc.errno in DISK_FULL_ERRNOS:
        return f"disk full while writing {target}; nothing was changed"
    return f"cannot write {target}: {exc.strerror or exc}"


@contextmanager
def atomic_writer(target: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a file that replaces `target` only if the block finishes without error."""
    try:
        with replacing(target, mode) as handle:
            yield handle
    except OSError as exc:
        raise StorageError(describe_os_error(exc, Path(target))) from None


def write_atomic(target: Path, data: bytes, mode: int = 0o600) -> None:
    with atomic_writer(target, mode) as handle:
        handle.write(data)
