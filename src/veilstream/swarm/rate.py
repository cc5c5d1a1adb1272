"""Rate limits without IO: a token bucket per limit (upload or download; the node's, shared
by every content, or one content's own), and a `Throttle` over the buckets a flow of bytes
passes through.

A bucket fills at `rate_bytes_s` up to `burst_bytes`; bytes that go take their tokens.
The core asks `allowance(now)` (how many bytes may go now), spends what it sends, and,
when a block must wait, `ready_at(n, now)`: when there will be room for `n` bytes, so the
transport sets one timer instead of polling. Nothing is ever granted on credit, and a
bucket starts full, so the bytes granted from its start to `t` never exceed
`burst_bytes + rate_bytes_s × t`. A rate of 0 is no limit: everything may go, nothing is
counted.

    node = RateLimits(upload_bytes_s=256 * 1024)      # the node's, shared
    content = RateLimits()                            # one content's own (no limit)
    upload = Throttle(content.upload, node.upload)
    if upload.allowance(now) >= 16384: upload.spend(16384, now)
    else: wake = upload.ready_at(16384, now)
"""

from __future__ import annotations

import sys

from veilstream.swarm.errors import LocalProtocolError

UNLIMITED = 0  # a rate of 0 bytes/s: no limit
NO_LIMIT_ALLOWANCE = sys.maxsize  # what an unlimited throttle allows: more than any write
# A bucket holds a quarter second of its rate: enough that a limited flow is not cut into
# tiny writes and wake-ups, small enough that the first second of a transfer is not a burst
# far above the limit (libtorrent hands out bandwidth in similar slices of its tick).
BURST_S = 0.25
# ...and at least one block: blocks (16 KiB, BEP 3) go whole, so a limit below 16 KiB/s
# still lets one go now and then instead of none ever.
MIN_BURST_BYTES = 16 * 1024


def check_rate(name: str, value: object) -> int:
    """`value` as a rate in bytes/s, or a `LocalProtocolError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{name} = {value!r}: a rate is a whole number of bytes/s, 0 for no limit")
    return value


class TokenBucket:
    """One limit: `rate_bytes_s` (0: none) with room for `burst_bytes` at once."""

    __slots__ = ("rate_bytes_s", "burst_bytes", "_tokens", "_at")

    def __init__(self, rate_bytes_s: int = UNLIMITED, now: float = 0.0) -> None:
        self.rate_bytes_s = UNLIMITED
        self.burst_bytes = 0
        self._tokens = 0.0
        self._at = now
        self.set_rate(rate_bytes_s, now)

    @property
    def limited(self) -> bool:
        return self.rate_bytes_s > 0

    def set_rate(self, rate_bytes_s: int, now: float) -> None:
        """A new limit from `now` on (0: none). What the old one had saved up is kept, up to
        the new burst; a bucket that had no limit starts full."""
        rate = check_rate("rate_bytes_s", rate_bytes_s)
        was_limited = self.limited
        if was_limited:
            self._refill(now)
        self.rate_bytes_s = rate
        self.burst_bytes = max(MIN_BURST_BYTES, int(rate * BURST_S)) if rate else 0
        self._tokens = min(self._tokens, float(self.burst_bytes)) if was_limited else float(self.burst_bytes)
        self._at = max(self._at, now)

    def _refill(self, now: float) -> None:
        if now > self._at:  # a clock that steps back grants nothing
            self._tokens = min(float(self.burst_bytes), self._tokens + (now - self._at) * self.rate_bytes_s)
            self._at = now

    def allowance(self, now: float) -> int:
        """How many bytes may go now."""
        if not self.limited:
            return NO_LIMIT_ALLOWANCE
        self._refill(now)
        return int(self._tokens)

    def spend(self, n: int, now: float) -> None:
        """`n` bytes went (at most the allowance: nothing goes on credit)."""
        if not self.limited or n <= 0:
            return
        self._refill(now)
        if n > self._tokens:
            raise LocalProtocolError(f"{n} bytes spent with only {int(self._tokens)} allowed")
        self._tokens -= n

    def grant(self, wanted: int, now: float) -> int:
        """As many of `wanted` bytes as may go now, spent."""
        granted = min(wanted, self.allowance(now))
        self.spend(granted, now)
        return granted

    def ready_at(self, n: int, now: float) -> float:
        """When `n` bytes may go (at most a burst is ever waited for): `now` if they may already."""
        if not self.limited:
            return now
        self._refill(now)
        missing = min(n, self.burst_bytes) - self._tokens
        return now if missing <= 0 else now + missing / self.rate_bytes_s


class RateLimits:
    """An upload and a download limit, set together (a node's, or one content's)."""

    __slots__ = ("upload", "download")

    def __init__(self, upload_bytes_s: int = UNLIMITED, download_bytes_s: int = UNLIMITED, now: float = 0.0) -> None:
        self.upload = TokenBucket(upload_bytes_s, now)
        self.download = TokenBucket(download_bytes_s, now)

    def set(self, *, upload: int | None = None, download: int | None = None, now: float) -> None:
        """New limits in bytes/s (0: none; None: unchanged), checked both before either applies."""
        if upload is not None:
            check_rate("upload", upload)
        if download is not None:
            check_rate("download", download)
        if upload is not None:
            self.upload.set_rate(upload, now)
        if download is not None:
            self.download.set_rate(download, now)

    @property
    def rates(self) -> tuple[int, int]:
        """(upload, download) in bytes/s, 0 for none."""
        return self.upload.rate_bytes_s, self.download.rate_bytes_s


class Throttle:
    """The buckets one flow of bytes passes through: bytes go only if every one has room,
    and take their tokens from each."""

    __slots__ = ("buckets",)

    def __init__(self, *buckets: TokenBucket) -> None:
        self.buckets = buckets

    @property
    def limited(self) -> bool:
        for bucket in self.buckets:
            if bucket.rate_bytes_s:
                return True
        return False

    def allowance(self, now: float) -> int:
        return min((b.allowance(now) for b in self.buckets), default=NO_LIMIT_ALLOWANCE)

    def spend(self, n: int, now: float) -> None:
        if n > self.allowance(now):
            raise LocalProtocolError(f"{n} bytes spent beyond the allowance")
        for bucket in self.buckets:
            bucket.spend(n, now)

    def ready_at(self, n: int, now: float) -> float:
        return max((b.ready_at(n, now) for b in self.buckets), default=now)
