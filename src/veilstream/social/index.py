"""The local feed index: verified events in SQLite, with search and engagement counts.

Every event from outside passes the same gate, cheapest check first: size and shape,
duplicate, kind, clock, id and signature, proof of work, rate limit, kind-specific shape.
A refused event is logged with its reason and changes nothing; `ingest` never raises on
bad input. Counts are kept on the card row, updated in the same transaction as the event
that changes them, so a card arriving after its reactions (relays send in any order) gets
its counts computed from what is already stored.

Rate limit: at most `max_events` per pubkey per `window_s` of the events' own
`created_at` time. Counting in event time rather than arrival time keeps the index a
function of the event set (any order, any restart gives the same result) and lets a
history sync through without a flood getting in.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veilstream.social import kinds
from veilstream.social.errors import InvalidEvent, SocialError
from veilstream.social.events import (
    MAX_EVENT_BYTES,
    Event,
    committed_pow_bits,
    event_from_dict,
    parse_event_json,
    verify_event,
)
from veilstream.social.settings import SocialSettings

log = logging.getLogger(__name__)

ROWID_TIME_SHIFT = 20  # created_at (< 2^42 for any accepted card) · 2^20 stays inside SQLite's 63 bits
SCHEMA_VERSION = 1

# A comment is worth more attention than a reaction, a repost more than a comment.
ENGAGEMENT_WEIGHTS = {"reactions": 1, "comments": 2, "reposts": 3, "views": 1}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, pubkey TEXT NOT NULL, kind INTEGER NOT NULL,
    created_at INTEGER NOT NULL, json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_author ON events (pubkey, created_at);
-- A card's rowid is created_at · 2^20 + a few bits of its id, so rowid order is time order
-- and a search can walk the FTS index newest-first and stop after one page.
CREATE TABLE IF NOT EXISTS cards (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, pubkey TEXT NOT NULL,
    created_at INTEGER NOT NULL, content_id TEXT NOT NULL, title TEXT NOT NULL,
    description TEXT NOT NULL, tags TEXT NOT NULL, mime TEXT NOT NULL, duration REAL,
    magnet TEXT NOT NULL, price_per_slice_wei TEXT NOT NULL, seeder_share_bps INTEGER NOT NULL,
    previews TEXT NOT NULL,
    chain_status INTEGER,  -- NULL: not checked; 1: registered on chain by this author; 0: mismatch
    reactions INTEGER NOT NULL DEFAULT 0, comments INTEGER NOT NULL DEFAULT 0,
    reposts INTEGER NOT NULL DEFAULT 0, views INTEGER NOT NULL DEFAULT 0,
    engagement INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cards_by_engagement ON cards (engagement);  -- ties: rowid, i.e. time
CREATE INDEX IF NOT EXISTS cards_by_author ON cards (pubkey);
CREATE INDEX IF NOT EXISTS cards_by_content ON cards (content_id);
CREATE VIRTUAL TABLE IF NOT EXISTS cards_fts USING fts5 (
    title, description, tags, content='cards', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2'
);
-- One reaction, repost and view counted per (card, person); a dislike ('-') is kept, not counted.
CREATE TABLE IF NOT EXISTS engagement (
    card_id TEXT NOT NULL, what TEXT NOT NULL, pubkey TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (card_id, what, pubkey)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS comments (
    id TEXT PRIMARY KEY, card_id TEXT NOT NULL, parent_id TEXT NOT NULL, pubkey TEXT NOT NULL,
    created_at INTEGER NOT NULL, content TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS comments_by_card ON comments (card_id, created_at);
CREATE TABLE IF NOT EXISTS replaceable (
    pubkey TEXT NOT NULL, kind INTEGER NOT NULL, created_at INTEGER NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (pubkey, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS follows (
    follower TEXT NOT NULL, followee TEXT NOT NULL, PRIMARY KEY (follower, followee)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    pubkey TEXT PRIMARY KEY, name TEXT NOT NULL, about TEXT NOT NULL, picture TEXT NOT NULL,
    wallet_address TEXT NOT NULL, wallet_verified INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_lists (
    pubkey TEXT NOT NULL, url TEXT NOT NULL, read INTEGER NOT NULL, write INTEGER NOT NULL,
    PRIMARY KEY (pubkey, url)
) WITHOUT ROWID;
"""

_NOT_FAULTS = frozenset({"stored", "duplicate", "stale-replaceable"})
_COUNT_COLUMN = {"reaction": "reactions", "repost": "reposts", "view": "views"}


@dataclass(frozen=True)
class RateLimit:
    max_events: int = SocialSettings.rate_limit_events
    window_s: int = SocialSettings.rate_limit_window_s

    @classmethod
    def of(cls, settings: SocialSettings) -> RateLimit | None:
        """The rate limit `settings` ask for (None: `rate_limit_events` is 0, no limit)."""
        if settings.rate_limit_events == 0:
            return None
        return cls(settings.rate_limit_events, settings.rate_limit_window_s)


_FROM_SETTINGS: Any = object()  # a keyword argument not given: its value comes from `settings`


@dataclass(frozen=True)
class IngestResult:
    accepted: bool
    reason: str  # "stored", or why the event was refused
    event_id: str | None = None


@dataclass
class IngestReport:
    by_reason: Counter = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        return self.by_reason["stored"]

    @property
    def refused(self) -> int:
        """Events turned away for a fault (not the harmless duplicates and superseded lists)."""
        return sum(n for reason, n in self.by_reason.items() if reason not in _NOT_FAULTS)


@dataclass(frozen=True)
class CardRow:
    id: str
    pubkey: str
    created_at: int
    card: kinds.ContentCard
    reactions: int
    comments: int
    reposts: int
    views: int
    chain_status: bool | None
    author_name: str = ""


@dataclass(frozen=True)
class CommentRow:
    id: str
    card_id: str
    parent_id: str
    pubkey: str
    created_at: int
    content: str


class FeedIndex:
    """SQLite (WAL) index of the feed. One instance per thread.

    `rate_limit` (None: no limit) and `min_pow_bits` override `settings`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        settings: SocialSettings = SocialSettings(),
        rate_limit: RateLimit | None = _FROM_SETTINGS,
        min_pow_bits: int | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        clock=time.time,
    ) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings if min_pow_bits is None else settings.but(min_pow_bits=min_pow_bits)
        self.rate_limit = RateLimit.of(self.settings) if rate_limit is _FROM_SETTINGS else rate_limit
        self.min_pow_bits = self.settings.min_pow_bits
        self.max_event_bytes = max_event_bytes
        self._clock = clock
        self._window_counts: OrderedDict[tuple[str, int], int] = OrderedDict()
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.execute(f"PRAGMA cache_size=-{self.settings.index_cache_bytes // 1024}")  # negative: in KiB
            self._db.execute(f"PRAGMA mmap_size={self.settings.index_mmap_bytes}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise SocialError(f"cannot open the feed index at {path}: {exc}") from exc
        self._in_batch = False

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeedIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- ingest ----------------------------------------------------------------------------

    def ingest(self, raw: str | bytes | dict | Event) -> IngestResult:
        """Verify and index one event from anywhere. Never raises on bad input."""
        try:
            event = self._parse(raw)
        except InvalidEvent as exc:
            log.info("refused event: %s", exc)
            return IngestResult(False, exc.reason)
        # Text that parsed and verifies is stored as received: re-encoding it would cost time
        # and change nothing a reader can check.
        text = raw if isinstance(raw, str) else None
        if self._in_batch:
            return self._admit(event, text)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = self._admit(event, text)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._forget_window_counts()
                raise
        except sqlite3.Error as exc:
            raise SocialError(f"the feed index cannot store events ({exc}): disk full or locked?") from exc
        return result

    def ingest_many(self, raws: Iterable[str | bytes | dict | Event], batch: int | None = None) -> IngestReport:
        """Ingest in transactions of `batch` events (default: the settings' `ingest_batch_events`)."""
        batch = self.settings.ingest_batch_events if batch is None else batch
        report = IngestReport()
        pending = 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_batch = True
            try:
                for raw in raws:
                    report.by_reason[self.ingest(raw).reason] += 1
                    pending += 1
                    if pending >= batch:
                        self._db.execute("COMMIT")
                        self._db.execute("BEGIN IMMEDIATE")
                        pending = 0
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._forget_window_counts()
                raise
            finally:
                self._in_batch = False
        except sqlite3.Error as exc:
            raise SocialError(f"the feed index cannot store events ({exc}): disk full or locked?") from exc
        return report

    def _parse(self, raw: str | bytes | dict | Event) -> Event:
        if isinstance(raw, Event):
            return raw
        if isinstance(raw, dict):
            return event_from_dict(raw)
        if isinstance(raw, (str, bytes)):
            return parse_event_json(raw, self.max_event_bytes)
        raise InvalidEvent("malformed-event", f"cannot read an event from {type(raw).__name__}")

    def _refuse(self, event: Event, reason: str, detail: str = "") -> IngestResult:
        log.info("refused event %s from %s…: %s%s", event.id[:16], event.pubkey[:16], reason, f" ({detail})" if detail else "")
        return IngestResult(False, reason, event.id)

    def _admit(self, event: Event, text: str | None) -> IngestResult:
        db = self._db
        if db.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone():
            return IngestResult(False, "duplicate", event.id)
        if event.kind not in kinds.KNOWN_KINDS:
            return self._refuse(event, "unknown-kind", str(event.kind))
        if event.created_at > self._clock() + self.settings.max_future_s:
            return self._refuse(event, "from-the-future", str(event.created_at))
        try:
            verify_event(event)
        except InvalidEvent as exc:
            return self._refuse(event, exc.reason)
        if self.min_pow_bits and committed_pow_bits(event) < self.min_pow_bits:
            return self._refuse(event, "insufficient-pow", f"needs {self.min_pow_bits} bits")
        if self.rate_limit is not None and not self._within_rate(event):
            return self._refuse(event, "rate-limited")
        try:
            stored = self._store_by_kind(event)
        except InvalidEvent as exc:
            self._uncount_rate(event)
            return self._refuse(event, exc.reason, exc.detail)
        if not stored:
            self._uncount_rate(event)
            return IngestResult(False, "stale-replaceable", event.id)
        db.execute(
            "INSERT INTO events (id, pubkey, kind, created_at, json) VALUES (?, ?, ?, ?, ?)",
            (event.id, event.pubkey, event.kind, event.created_at, text or event.to_json()),
        )
        return IngestResult(True, "stored", event.id)

    def _within_rate(self, event: Event) -> bool:
        limit = self.rate_limit
        window = event.created_at // limit.window_s
        key = (event.pubkey, window)
        count = self._window_counts.get(key)
        if count is None:
            start = window * limit.window_s
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE pubkey = ? AND created_at >= ? AND created_at < ?",
                (event.pubkey, start, start + limit.window_s),
            ).fetchone()
        else:
            self._window_counts.move_to_end(key)
        if count >= limit.max_events:
            self._window_counts[key] = count
            return False
        self._window_counts[key] = count + 1
        if len(self._window_counts) > self.settings.rate_limit_cache_windows:  # a cache of the table
            self._window_counts.popitem(last=False)
        return True

    def _uncount_rate(self, event: Event) -> None:
        if self.rate_limit is not None:
            key = (event.pubkey, event.created_at // self.rate_limit.window_s)
            if key in self._window_counts:
                self._window_counts[key] -= 1

    def _forget_window_counts(self) -> None:
        self._window_counts.clear()  # they may count rolled-back events; the table is the truth

    def _store_by_kind(self, event: Event) -> bool:
        """Store what `event` means. Each branch reads and checks the event before its first
        write, so a refusal (`InvalidEvent`) leaves nothing behind in the open transaction."""
        kind = event.kind
        if kind == kinds.CARD:
            self._store_card(event)
        elif kind == kinds.REACTION:
            target = kinds.reaction_target(event)
            if target is None:
                raise InvalidEvent("malformed-reaction", "no 'e' tag")
            self._count(target, "dislike" if event.content == "-" else "reaction", event)
        elif kind in (kinds.REPOST, kinds.GENERIC_REPOST):
            target = kinds.repost_target(event)
            if target is None:
                raise InvalidEvent("malformed-repost", "no 'e' tag")
            self._count(target, "repost", event)
        elif kind == kinds.VIEW:
            target = kinds.repost_target(event)
            if target is None:
                raise InvalidEvent("malformed-view", "no 'e' tag")
            self._count(target, "view", event)
        elif kind == kinds.COMMENT:
            self._store_comment(event)
        elif kind in kinds.REPLACEABLE_KINDS:
            return self._store_replaceable(event)
        return True

    def _store_card(self, event: Event) -> None:
        card = kinds.ContentCard.from_event(event)
        db = self._db
        previews = json.dumps([p.__dict__ for p in card.previews], separators=(",", ":")) if card.previews else "[]"
        tags_text = " ".join(card.tags)
        rowid = (event.created_at << ROWID_TIME_SHIFT) | int(event.id[:5], 16)
        while True:
            try:
                db.execute(
                    "INSERT INTO cards (rowid, id, pubkey, created_at, content_id, title, description, tags, mime,"
                    " duration, magnet, price_per_slice_wei, seeder_share_bps, previews)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rowid, event.id, event.pubkey, event.created_at, card.content_id, card.title,
                        card.description, tags_text, card.mime, card.duration_s, card.magnet,
                        str(card.price_per_slice_wei), card.seeder_share_bps, previews,
                    ),
                )
                break
            except sqlite3.IntegrityError:
                rowid += 1  # two cards in one second sharing 20 id bits: take the next slot
        db.execute(
            "INSERT INTO cards_fts (rowid, title, description, tags) VALUES (?, ?, ?, ?)",
            (rowid, card.title, card.description, tags_text),
        )
        counts = dict(
            db.execute("SELECT what, COUNT(*) FROM engagement WHERE card_id = ? GROUP BY what", (event.id,)).fetchall()
        )
        (comments,) = db.execute("SELECT COUNT(*) FROM comments WHERE card_id = ?", (event.id,)).fetchone()
        if counts or comments:
            self._set_counts(
                event.id, counts.get("reaction", 0), comments, counts.get("repost", 0), counts.get("view", 0)
            )

    def _set_counts(self, card_id: str, reactions: int, comments: int, reposts: int, views: int) -> None:
        weights = ENGAGEMENT_WEIGHTS
        engagement = (
            reactions * weights["reactions"] + comments * weights["comments"]
            + reposts * weights["reposts"] + views * weights["views"]
        )
        self._db.execute(
            "UPDATE cards SET reactions = ?, comments = ?, reposts = ?, views = ?, engagement = ? WHERE id = ?",
            (reactions, comments, reposts, views, engagement, card_id),
        )

    def _count(self, card_id: str, what: str, event: Event) -> None:
        if len(card_id) != 64:
            raise InvalidEvent("malformed-target", "the referenced id is not an event id")
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO engagement (card_id, what, pubkey, event_id) VALUES (?, ?, ?, ?)",
            (card_id, what, event.pubkey, event.id),
        )
        column = _COUNT_COLUMN.get(what)
        if cursor.rowcount and column:
            weight = ENGAGEMENT_WEIGHTS[column]
            self._db.execute(
                f"UPDATE cards SET {column} = {column} + 1, engagement = engagement + ? WHERE id = ?",
                (weight, card_id),
            )

    def _store_comment(self, event: Event) -> None:
        root = kinds.comment_root(event)
        if root is None or len(root) != 64:
            raise InvalidEvent("malformed-comment", "no root 'E' tag")
        parent = kinds.comment_parent(event) or root
        self._db.execute(
            "INSERT INTO comments (id, card_id, parent_id, pubkey, created_at, content) VALUES (?, ?, ?, ?, ?, ?)",
            (event.id, root, parent, event.pubkey, event.created_at, event.content),
        )
        self._db.execute(
            "UPDATE cards SET comments = comments + 1, engagement = engagement + ? WHERE id = ?",
            (ENGAGEMENT_WEIGHTS["comments"], root),
        )

    def _store_replaceable(self, event: Event) -> bool:
        """NIP-01: the newest wins; on a tie, the lowest id."""
        db = self._db
        head = db.execute(
            "SELECT created_at, event_id FROM replaceable WHERE pubkey = ? AND kind = ?", (event.pubkey, event.kind)
        ).fetchone()
        if head is not None and not (event.created_at > head[0] or (event.created_at == head[0] and event.id < head[1])):
            return False
        if event.kind == kinds.PROFILE:
            profile = kinds.Profile.from_event(event)
        elif event.kind == kinds.FOLLOW_LIST:
            followees = kinds.followed_pubkeys(event)
        else:
            relays = kinds.relay_list_entries(event)
        if head is not None:
            db.execute("DELETE FROM events WHERE id = ?", (head[1],))
        db.execute(
            "INSERT OR REPLACE INTO replaceable (pubkey, kind, created_at, event_id) VALUES (?, ?, ?, ?)",
            (event.pubkey, event.kind, event.created_at, event.id),
        )
        if event.kind == kinds.PROFILE:
            db.execute(
                "INSERT OR REPLACE INTO profiles VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.pubkey, profile.name[:200], profile.about[:2000], profile.picture[:500],
                    profile.wallet_address, int(profile.wallet_verified(event.pubkey)),
                ),
            )
        elif event.kind == kinds.FOLLOW_LIST:
            db.execute("DELETE FROM follows WHERE follower = ?", (event.pubkey,))
            db.executemany(
                "INSERT INTO follows (follower, followee) VALUES (?, ?)", ((event.pubkey, f) for f in followees)
            )
        else:
            db.execute("DELETE FROM relay_lists WHERE pubkey = ?", (event.pubkey,))
            db.executemany(
                "INSERT OR REPLACE INTO relay_lists VALUES (?, ?, ?, ?)",
                ((event.pubkey, r.url, int(r.read), int(r.write)) for r in relays),
            )
        return True

    # --- chain hook --------------------------------------------------------------------------

    def mark_chain_status(self, card_id: str, registered_by_author: bool) -> None:
        """Record what the chain said of a card (its hash registered with the content, by its author)."""
        self._db.execute("UPDATE cards SET chain_status = ? WHERE id = ?", (int(registered_by_author), card_id))

    # --- queries -----------------------------------------------------------------------------

    def feed(
        self,
        search: str | None = None,
        authors: Iterable[str] | None = None,
        order: str = "time",
        limit: int = 50,
        offset: int = 0,
        before: str | None = None,
    ) -> list[CardRow]:
        """Cards, newest first (`order="time"`) or most engaged first (`order="top"`).

        With `search`, only cards matching every word (in title, description or tags) count;
        `order="relevance"` ranks them by BM25. `before` (a card id) keeps only cards older
        than that card: the next page of a newest-first feed, stable while cards arrive.
        """
        if order not in ("time", "top", "relevance"):
            raise SocialError(f"unknown order {order!r}: use time or top")
        where, params = [], []
        source = "cards c"
        older = "rowid < (SELECT rowid FROM cards WHERE id = ?)"
        if search:
            query = fts_query(search, self.settings.search_max_words)
            if query is None:
                return []
            if order == "time" and authors is None:
                # Newest-first is rowid order: FTS5 walks its index backwards and stops at one page.
                source = (
                    f"(SELECT rowid FROM cards_fts WHERE cards_fts MATCH ?{' AND ' + older if before else ''}"
                    " ORDER BY rowid DESC LIMIT ? OFFSET ?) hit JOIN cards c ON c.rowid = hit.rowid"
                )
                params.extend([query, *([before] if before else []), limit, offset])
                before, offset = None, 0  # the page is cut inside
            else:
                source = "cards_fts JOIN cards c ON c.rowid = cards_fts.rowid"
                where.append("cards_fts MATCH ?")
                params.append(query)
        if before:
            where.append("c." + older)
            params.append(before)
        if authors is not None:
            author_list = list(authors)
            if not author_list:
                return []
            where.append(f"c.pubkey IN ({','.join('?' * len(author_list))})")
            params.extend(author_list)
        order_by = {
            "time": "c.rowid DESC",
            "top": "c.engagement DESC, c.rowid DESC",
            "relevance": "cards_fts.rank, c.rowid DESC" if search else "c.rowid DESC",
        }[order]
        sql = (
            "SELECT c.id, c.pubkey, c.created_at, c.content_id, c.title, c.description, c.tags, c.mime,"
            " c.duration, c.magnet, c.price_per_slice_wei, c.seeder_share_bps, c.previews, c.reactions,"
            " c.comments, c.reposts, c.views, c.chain_status, p.name"
            f" FROM {source} LEFT JOIN profiles p ON p.pubkey = c.pubkey"
            f" {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY {order_by} LIMIT ? OFFSET ?"
        )
        params.extend([limit, offset])
        try:
            rows = self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise SocialError(f"search failed: {exc}") from exc
        return [_card_row(row) for row in rows]

    def card(self, id_or_prefix: str) -> CardRow | None:
        """A card by id, or by a unique prefix of at least 8 hex digits."""
        prefix = id_or_prefix.lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
            raise SocialError(f"{id_or_prefix!r} is not a card id (8–64 hex digits)")
        rows = self._db.execute(
            "SELECT c.id, c.pubkey, c.created_at, c.content_id, c.title, c.description, c.tags, c.mime,"
            " c.duration, c.magnet, c.price_per_slice_wei, c.seeder_share_bps, c.previews, c.reactions,"
            " c.comments, c.reposts, c.views, c.chain_status, p.name"
            " FROM cards c LEFT JOIN profiles p ON p.pubkey = c.pubkey WHERE c.id >= ? AND c.id < ? LIMIT 2",
            (prefix, prefix + "g"),
        ).fetchall()
        if len(rows) > 1:
            raise SocialError(f"{id_or_prefix!r} matches more than one card; give more digits")
        return _card_row(rows[0]) if rows else None

    def event(self, event_id: str) -> Event | None:
        row = self._db.execute("SELECT json FROM events WHERE id = ?", (event_id,)).fetchone()
        return parse_event_json(row[0], max_bytes=10 * self.max_event_bytes) if row else None

    def comments(self, card_id: str) -> list[CommentRow]:
        rows = self._db.execute(
            "SELECT id, card_id, parent_id, pubkey, created_at, content FROM comments"
            " WHERE card_id = ? ORDER BY created_at, id",
            (card_id,),
        ).fetchall()
        return [CommentRow(*row) for row in rows]

    def following(self, pubkey: str) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT followee FROM follows WHERE follower = ? ORDER BY followee", (pubkey,))]

    def profile(self, pubkey: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT name, about, picture, wallet_address, wallet_verified FROM profiles WHERE pubkey = ?", (pubkey,)
        ).fetchone()
        if row is None:
            return None
        return {"name": row[0], "about": row[1], "picture": row[2], "wallet_address": row[3], "wallet_verified": bool(row[4])}

    def relay_list(self, pubkey: str) -> list[kinds.RelayListEntry]:
        rows = self._db.execute("SELECT url, read, write FROM relay_lists WHERE pubkey = ? ORDER BY url", (pubkey,))
        return [kinds.RelayListEntry(url, bool(read), bool(write)) for url, read, write in rows]

    def cards_of_content(self, content_id: str) -> list[str]:
        """The ids of the cards pointing at a content, oldest first."""
        rows = self._db.execute("SELECT id FROM cards WHERE content_id = ? ORDER BY rowid", (content_id.lower(),))
        return [r[0] for r in rows]

    def card_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM cards ORDER BY rowid DESC")]

    def stats(self) -> dict[str, int]:
        out = {}
        for table in ("events", "cards", "comments", "engagement", "follows", "profiles"):
            (out[table],) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return out

    def consistency_problems(self) -> list[str]:
        """Every way the derived tables disagree with the events; empty when the index is sound."""
        problems = []
        (integrity,) = self._db.execute("PRAGMA integrity_check").fetchone()
        if integrity != "ok":
            problems.append(f"sqlite: {integrity}")
        try:
            self._db.execute("INSERT INTO cards_fts (cards_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            problems.append(f"fts: {exc}")
        rows = self._db.execute(
            "SELECT c.id, c.reactions, c.comments, c.reposts, c.views,"
            " (SELECT COUNT(*) FROM engagement e WHERE e.card_id = c.id AND e.what = 'reaction'),"
            " (SELECT COUNT(*) FROM comments m WHERE m.card_id = c.id),"
            " (SELECT COUNT(*) FROM engagement e WHERE e.card_id = c.id AND e.what = 'repost'),"
            " (SELECT COUNT(*) FROM engagement e WHERE e.card_id = c.id AND e.what = 'view')"
            " FROM cards c"
        ).fetchall()
        for row in rows:
            if tuple(row[1:5]) != tuple(row[5:9]):
                problems.append(f"card {row[0][:16]}: counts {row[1:5]} but events say {row[5:9]}")
        orphans = self._db.execute(
            "SELECT COUNT(*) FROM cards WHERE id NOT IN (SELECT id FROM events WHERE kind = ?)", (kinds.CARD,)
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} cards without their event")
        return problems


def _card_row(row: tuple) -> CardRow:
    card = kinds.ContentCard(
        content_id=row[3],
        title=row[4],
        description=row[5],
        tags=tuple(row[6].split()),
        mime=row[7],
        duration_s=row[8],
        magnet=row[9],
        price_per_slice_wei=int(row[10]),
        seeder_share_bps=row[11],
        previews=tuple(kinds.PreviewRef(**p) for p in json.loads(row[12])),
    )
    chain = None if row[17] is None else bool(row[17])
    return CardRow(row[0], row[1], row[2], card, row[13], row[14], row[15], row[16], chain, row[18] or "")


_WORD = re.compile(r"(\w+)(\*?)", re.UNICODE)


def fts_query(text: str, max_words: int = SocialSettings.search_max_words) -> str | None:
    """A user's words as a safe FTS5 query: every word must match; `word*` matches a prefix.

    Quoting each word keeps FTS5 syntax (AND, NEAR, column filters) out of user hands.
    Prefixes are opt-in: a short prefix can expand to thousands of terms and make a search
    a hundred times slower than whole words.
    """
    words = _WORD.findall(text)[:max_words]
    if not words:
        return None
    return " ".join(f'"{word}"{star}' for word, star in words)
