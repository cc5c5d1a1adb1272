"""Browser sessions of the node's own user: how the web app, which cannot read the API
token file, acts for the user — and why no other page in the same browser can.

The user unlocks the app with the vault's passphrase (`POST /api/v1/session`); the node
answers with a session cookie that is `HttpOnly` (no script reads it) and
`SameSite=Strict` (no other site's request carries it), and a CSRF token that the app sends
back in `X-CSRF-Token` with every request that changes anything: a cookie alone never
spends. Sessions live in the node's memory only (a restart ends them), end after
`session_idle_s` without use and `session_max_s` after the unlock, and at most
`sessions_kept` exist (the oldest goes first).

Guessing the passphrase is slow twice over: each try is a full key derivation (argon2id, as
an unlock), tries go one at a time, and after `unlock_free_failures` failures in a row each
further try waits twice as long as the one before (up to `unlock_max_delay_s`), answered
`429` with `Retry-After` — even a right passphrase, until the wait is over. A success resets
the count.

Cookies are not kept apart by port, so two nodes of one machine (two vaults) name their
cookie after their port: neither's replaces the other's.

This module is the sans-IO core (ids, times, counts); routes/session.py and the API's guard
move the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_name(port: int) -> str:
    return f"veil_session_{port}"


@dataclass
class Session:
    csrf: str
    opened_at: float
    last_seen: float


class Sessions:
    """The open sessions, by a hash of their cookie (the cookie itself is not kept)."""

    def __init__(self, *, idle_s: float, max_s: float, kept: int) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.kept = kept
        self._open: OrderedDict[bytes, Session] = OrderedDict()

    def open(self, now: float) -> tuple[str, Session]:
        """A new session: its cookie value and its state (with the CSRF token)."""
        cookie = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), opened_at=now, last_seen=now)
        self._open[_key(cookie)] = session
        while len(self._open) > self.kept:
            self._open.popitem(last=False)
        return cookie, session

    def find(self, cookie: str | None, now: float) -> Session | None:
        """The live session of `cookie` (its use noted), or None."""
        if not cookie:
            return None
        key = _key(cookie)
        session = self._open.get(key)
        if session is None:
            return None
        if now - session.last_seen > self.idle_s or now - session.opened_at > self.max_s:
            del self._open[key]
            return None
        session.last_seen = now
        return session

    def close(self, cookie: str | None) -> None:
        if cookie:
            self._open.pop(_key(cookie), None)

    def __len__(self) -> int:
        return len(self._open)


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


class UnlockThrottle:
    """Failed unlocks in a row: the first `free_failures` cost nothing more; each one after
    makes the next try wait `base_delay_s`, doubled each time, at most `max_delay_s`."""

    def __init__(self, *, free_failures: int, base_delay_s: float = 1.0, max_delay_s: float) -> None:
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.failures = 0
        self._next_try_at = 0.0

    def wait_s(self, now: float) -> float:
        """How long before the next try may be made (0: now)."""
        return max(0.0, self._next_try_at - now)

    def failed(self, now: float) -> None:
        self.failures += 1
        over = self.failures - self.free_failures
        if over > 0:
            self._next_try_at = now + min(self.max_delay_s, self.base_delay_s * 2 ** (over - 1))

    def succeeded(self) -> None:
        self.failures = 0
        self._next_try_at = 0.0


def _key(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()
