"""One writer at a time: advisory locks on files under `<home>/locks/`.

A lock is flock(2) on `<home>/locks/<name>.lock`. The kernel ties it to the open file, so it
goes when its process goes, however that ends (kill -9 too): no lock outlives its holder
and there is nothing stale to clean up. The holder writes who it is (pid, command, since
when) into the file, so that a refusal can name it.

    with hold(home / "locks", "content-3f2a…", "veil play"):
        ...  # no other process holds content-3f2a… meanwhile
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from veilstream.vault.atomic import StorageError, describe_os_error
from veilstream.vault.sealing import VaultError

LOCK_POLL_S = 0.02  # how often a waiting holder tries again: a wallet send holds its lock for milliseconds
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class VaultBusy(VaultError):
    """Another process holds what this one needs; the message names it."""


@contextmanager
def hold(directory: Path, name: str, purpose: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock `name` for the block: at once, or within `wait_s` seconds, else
    `VaultBusy` naming the holder. `purpose` says who holds it (such as "veil play")."""
    if not _NAME.fullmatch(name):
        raise VaultError(f"not a lock's name: {name!r}")
    path = Path(directory) / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, path)) from None
    try:
        deadline = time.monotonic() + wait_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise VaultBusy(f"{_subject(name)} is in use by {_holder(path)}; wait for it or stop it")
            time.sleep(LOCK_POLL_S)
        _write_holder(fd, purpose)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a refusal read later names nobody gone
    finally:
        os.close(fd)  # releases the flock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise StorageError(f"cannot lock a file of the vault: {exc.strerror}") from None
    return True


def _write_holder(fd: int, purpose: str) -> None:
    record = json.dumps({"pid": os.getpid(), "purpose": purpose, "since": time.time()}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
    except OSError:
        pass  # the lock holds all the same; a refusal just cannot name its holder


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_bytes())
        since = time.strftime("%H:%M", time.localtime(float(record["since"])))
        return f"`{record['purpose']}` (pid {int(record['pid'])}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is writing its name right now
        return "another process"


def _subject(name: str) -> str:
    """'content-3f2a…64 hex' → 'content 3f2a1b2c3d4e5f60…'; 'wallet-0xab…' → 'wallet 0xab…'."""
    kind, _, rest = name.partition("-")
    if not rest:
        return {"node": "this vault's node"}.get(name, name)
    return f"{kind} {rest[:16]}…" if len(rest) > 20 else f"{kind} {rest}"
