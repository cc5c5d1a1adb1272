"""The cheques this node holds: the latest one per (viewer, content, seeder), in SQLite.

A payee keeps the cheques it received until it cashes them (`pending`, then
`ChainClient.cash`); a viewer keeps the ones it signed, to know what it owes. Only the
latest cheque of a relationship matters, since amounts are cumulative, so recording an
older one is a no-op. A received cheque is verified before it is stored; each row keeps when
its latest cheque was recorded (`history`).
"""

from __future__ import annotations

import errno
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from veilstream.atomic import disk_is_full
from veilstream.chain.cheque import ChequeDomain, SignedCheque
from veilstream.chain.errors import ChainError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cheques (
    chain_id   INTEGER NOT NULL,
    wallet     TEXT    NOT NULL,
    direction  TEXT    NOT NULL,
    viewer     TEXT    NOT NULL,
    content_id BLOB    NOT NULL,
    seeder     TEXT    NOT NULL,
    amount     TEXT    NOT NULL,  -- decimal: amounts reach 2**256
    signature  BLOB    NOT NULL,
    recorded_at REAL,  -- unix s; NULL in rows of a ledger older than the column
    PRIMARY KEY (chain_id, wallet, direction, viewer, content_id, seeder)
)
"""


class Direction(StrEnum):
    RECEIVED = "received"
    ISSUED = "issued"


@dataclass(frozen=True)
class PendingCheque:
    signed: SignedCheque
    uncashed: int


@dataclass(frozen=True)
class RecordedCheque:
    signed: SignedCheque
    direction: Direction
    recorded_at: float | None


class ChequeLedger:
    def __init__(self, path: Path) -> None:
        path = self.path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(cheques)")}
            if "recorded_at" not in columns:  # a ledger from before histories
                self._db.execute("ALTER TABLE cheques ADD COLUMN recorded_at REAL")
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc, "is unreadable") from None

    def _error(self, exc: sqlite3.Error | OSError, what: str) -> ChainError:
        full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or getattr(exc, "errno", None) == errno.ENOSPC
        full = full or disk_is_full(self.path.parent)
        if full:
            return ChainError(f"no space left on the disk of the cheque ledger {self.path}: {what.removeprefix('is ')}; "
                              "free some space and run the command again")
        return ChainError(f"cheque ledger {self.path} {what}: {exc}")

    def close(self) -> None:
        self._db.close()

    def record(self, domain: ChequeDomain, signed: SignedCheque, direction: Direction) -> bool:
        """Keep `signed` if it is newer than what is held; returns whether it was kept.
        Raises ChequeError if the signature is not the viewer's for this domain."""
        domain.verify(signed)
        c = signed.cheque
        key = (domain.chain_id, domain.wallet, str(direction), c.viewer, c.content_id, c.seeder)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT amount FROM cheques WHERE chain_id=? AND wallet=? AND direction=? "
                "AND viewer=? AND content_id=? AND seeder=?",
                key,
            ).fetchone()
            if row is not None and int(row[0]) >= c.cumulative_amount:
                self._db.execute("COMMIT")
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO cheques (chain_id, wallet, direction, viewer, content_id, seeder, amount, "
                "signature, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, str(c.cumulative_amount), signed.signature, time.time()),
            )
            self._db.execute("COMMIT")
            return True
        except BaseException as exc:
            if self._db.in_transaction:  # SQLite may have rolled back itself (a full disk does)
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "cannot be written: the cheque was not recorded") from None
            raise

    def latest(self, domain: ChequeDomain, direction: Direction) -> list[SignedCheque]:
        try:
            rows = self._db.execute(
                "SELECT viewer, content_id, seeder, amount, signature FROM cheques "
                "WHERE chain_id=? AND wallet=? AND direction=? ORDER BY viewer, content_id, seeder",
                (domain.chain_id, domain.wallet, str(direction)),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot be read") from None
        from veilstream.chain.cheque import Cheque

        return [SignedCheque(Cheque(v, bytes(cid), s, int(a)), bytes(sig)) for v, cid, s, a, sig in rows]

    def history(self, domain: ChequeDomain) -> list[RecordedCheque]:
        """The latest cheque of every relationship, both ways, newest first."""
        rows = self._db.execute(
            "SELECT direction, viewer, content_id, seeder, amount, signature, recorded_at FROM cheques "
            "WHERE chain_id=? AND wallet=? ORDER BY recorded_at IS NULL, recorded_at DESC, rowid DESC",
            (domain.chain_id, domain.wallet),
        ).fetchall()
        from veilstream.chain.cheque import Cheque

        return [RecordedCheque(SignedCheque(Cheque(v, bytes(cid), s, int(a)), bytes(sig)), Direction(d), at)
                for d, v, cid, s, a, sig, at in rows]

    def pending(self, client) -> list[PendingCheque]:
        """Received cheques worth more than what has been cashed from them on chain."""
        out = []
        for signed in self.latest(client.cheque_domain, Direction.RECEIVED):
            c = signed.cheque
            uncashed = c.cumulative_amount - client.cashed(c.viewer, c.content_id, c.seeder)
            if uncashed > 0:
                out.append(PendingCheque(signed, uncashed))
        return out
