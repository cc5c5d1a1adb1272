"""The key agent's audit log: every key release, hash-chained, append-only.

Each entry commits to the previous entry's hash, so the head hash commits to the whole
history; the agent anchors the head on chain now and then (the `Anchor` contract), after
which no past release can be hidden or rewritten without the anchor disagreeing. Entries
are JSON lines, fsynced before a release is acknowledged; a torn last line left by a crash
(never acknowledged) is dropped when the log is opened.

A log cut short at a line boundary, or an older copy restored, reads as a valid shorter
history: only something outside it can tell. So a log is opened against the latest head
anchored on chain (`anchored_head`) and refused if that head is not in it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

from veilstream.market.errors import MarketError

GENESIS = bytes(32)


# An append needs its bytes and the new length on disk, not the file's times: fdatasync
# gives that at about 40% of fsync's cost here (a key agent syncs once per release).
_sync_data = getattr(os, "fdatasync", os.fsync)


class AuditLogError(MarketError):
    """The audit log on disk does not verify: it was edited or damaged."""


PAID_BY_CHEQUES = "cheques"  # released against the viewer's cheques (its books must cover it)
PAID_BY_GRANT = "grant"  # released for an on-chain purchase


@dataclass(frozen=True)
class Release:
    viewer: str
    content_id: str
    first: int
    end: int
    paid_wei: int
    at: float
    paid_by: str = PAID_BY_CHEQUES


def _entry_hash(previous: bytes, seq: int, release: Release) -> bytes:
    body = json.dumps({"seq": seq, **asdict(release)}, sort_keys=True, separators=(",", ":")).encode()
    return sha256(previous + body).digest()


class AuditLog:
    def __init__(self, path: Path, anchored_head: bytes | None = None) -> None:
        self.path = Path(path)
        self.head = GENESIS
        self.count = 0
        self._by_viewer: dict[tuple[str, str], list[Release]] = {}  # (viewer, content id hex) → its releases
        self._heads: set[bytes] = {GENESIS}
        self._load()
        if anchored_head is not None and anchored_head not in self._heads:
            raise AuditLogError(
                f"audit log {self.path} is behind its on-chain anchor ({anchored_head.hex()[:16]}… is not in it): "
                "it was cut short or an older copy was restored; restore the newest copy before selling keys")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        good_bytes = 0
        for line in complete:
            try:
                entry = json.loads(line)
                release = Release(**{k: entry[k] for k in Release.__dataclass_fields__})
                seq, recorded = entry["seq"], bytes.fromhex(entry["hash"])
            except (ValueError, KeyError, TypeError):
                raise AuditLogError(f"audit log {self.path} entry {self.count} is malformed") from None
            if seq != self.count or _entry_hash(self.head, seq, release) != recorded:
                raise AuditLogError(f"audit log {self.path} breaks its hash chain at entry {self.count}")
            self.head, self.count = recorded, self.count + 1
            self._heads.add(recorded)
            self._index(release)
            good_bytes += len(line) + 1
        if torn:  # a crash mid-append: that release was never acknowledged
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)
                os.fsync(f.fileno())

    def append(self, viewer: str, content_id: str, first: int, end: int, paid_wei: int,
               paid_by: str = PAID_BY_CHEQUES) -> bytes:
        """Record a release durably; return the new head."""
        release = Release(viewer, content_id, first, end, paid_wei, time.time(), paid_by)
        digest = _entry_hash(self.head, self.count, release)
        line = json.dumps({"seq": self.count, **asdict(release), "hash": digest.hex()}, sort_keys=True)
        end = self._file.tell()
        try:
            self._file.write(line.encode() + b"\n")
            self._file.flush()
            _sync_data(self._file.fileno())
        except OSError as exc:  # a full disk, say: the entry is not half kept, and no key goes out without it
            for undo in (self._file.close, lambda: os.truncate(self.path, end)):
                try:
                    undo()  # closing drops what the buffer still holds (its flush fails as well)
                except OSError:
                    pass
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the log's life
            raise AuditLogError(f"audit log {self.path} cannot be written ({exc.strerror or exc}): no key is "
                                "released without its entry") from None
        self.head, self.count = digest, self.count + 1
        self._heads.add(digest)
        self._index(release)
        return digest

    def _index(self, release: Release) -> None:
        self._by_viewer.setdefault((release.viewer, release.content_id), []).append(release)

    def releases_to(self, viewer: str, content_id: str) -> list[Release]:
        """Every release to `viewer` for `content_id` (hex), oldest first."""
        return self._by_viewer.get((viewer, content_id), [])

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_bytes().splitlines() if line]

    def close(self) -> None:
        self._file.close()
