"""The node's live state for its clients: one ordered stream of events, resumable, with a
snapshot to fall back on (qBittorrent's `sync/maindata?rid=` pattern).

`EventHub` gives every published event the next id and keeps the last `kept` of them in a
ring. A client that reconnects with the id of the last event it saw gets exactly the events
after it; one whose id is no longer in the ring (or comes from another run of the node)
gets a `resync` event instead: fetch `GET /api/v1/snapshot`, then listen again from the
snapshot's `last_event_id`. A subscriber is a cursor into the ring, not a queue of its own:
one that reads too slowly falls out of the ring, gets a final `resync` and is dropped, so a
stuck client costs no memory and never slows the node. Ids start at the node's start time in
microseconds and grow by one: they increase across restarts too, so an id from an earlier
run is always too old, never mistaken for one of this run.

Every event's data is a JSON object that carries whole figures, not increments, so a client
may see an event twice (after a snapshot) without harm. The kinds:

| kind | when | data |
|---|---|---|
| `status` | the chain stops or starts answering | `{"chain_answers": bool}` |
| `content` | a content is paused, resumed, added or removed | its entry of `status()["contents"]` (`{"content_id", "removed": true}` when gone) |
| `peers` | the peers connected for a content change | `{"content_id", "peers"}` |
| `payment` | cheques accepted for a content this node seeds or sells | `{"direction": "accepted", "content_id", "cheques_accepted", "earned_wei", "keys_released"}` |
| `payment` | cheques signed by one of this node's streams | `{"direction": "signed", "content_id", "paid_wei"}` |
| `payment` | a batch of cheques cashed on chain | `{"direction": "cashed", "batches_cashed", "cashed_wei", "uncashed_wei"}` |
| `stream` | an open stream's figures change (verified, paid, sources, key deliveries...) | `Viewing.stats()`, with `"open": true`; `{"content_id", "open": false}` once stopped |
| `publish` | a publish by upload moves on (a stage begins; its bytes, at most every 0.25 s) | `GET /api/v1/publishes/{id}`'s view: `{"publish_id", "name", "stage": "uploading"/"queued"/"remuxing"/"encrypting"/"seeding"/"done"/"failed", "done_bytes", "total_bytes", "started_at", "result", "error"}` |
| `feed` | a new event is in the feed index (from a relay, or posted here) | `{"event_id", "kind": "card"/"reaction"/"comment"/..., "author", "created_at", "about": the card it is about}` |
| `resync` | the client missed events | `{"reason", "snapshot": "/api/v1/snapshot"}`; it has no id |

Where events come from: `ChangeWatch` compares the node's `status()` at every turn of the
node's poll loop with the turn before and publishes what changed (nothing, when nothing
did); any part of the node may also `publish(kind, data)` when something happens.
`publish` may be called from any thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SNAPSHOT_PATH = "/api/v1/snapshot"
RESYNC = "resync"
TAKEN_AT_ONCE = 100  # events one `take` hands out: one write to a client stays small


@dataclass(frozen=True)
class Event:
    id: int | None  # None: a `resync`, which is not part of the ordered stream
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The event as Server-Sent Events text (one `data:` line: the JSON has no newline)."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


def resync(reason: str) -> Event:
    return Event(None, RESYNC, {"reason": reason, "snapshot": SNAPSHOT_PATH})


class Subscription:
    """One client's place in the hub's stream. `take()` returns the events it has not seen
    (at most `TAKEN_AT_ONCE`); when it returns nothing it calls `wake` once the next event
    is published. `ended` once it was handed a `resync` or the hub closed: the client goes."""

    def __init__(self, hub: EventHub, next_id: int, wake: Callable[[], None], gap: str | None) -> None:
        self._hub = hub
        self._next_id = next_id
        self._wake = wake
        self._gap = gap  # why this subscriber cannot be served in order: it gets a resync
        self._waiting = False
        self.ended = False

    def take(self) -> list[Event]:
        return self._hub._take(self)

    def close(self) -> None:
        self._hub._forget(self)


class EventHub:
    def __init__(self, kept: int, first_id: int = 1) -> None:
        if kept < 1:
            raise ValueError("an event hub keeps at least one event")
        self.kept = kept
        self._ring: list[Event | None] = [None] * kept  # event i sits at i % kept
        self._first_id = first_id
        self._last_id = first_id - 1
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self.closed = False

    @property
    def last_id(self) -> int:
        """The id of the last event published (one less than the first id before any)."""
        return self._last_id

    def _oldest_kept(self) -> int:
        return max(self._first_id, self._last_id - self.kept + 1)

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        if kind == RESYNC:
            raise ValueError("resync is the hub's own event")
        with self._lock:
            event = Event(self._last_id + 1, kind, data)
            self._ring[event.id % self.kept] = event
            self._last_id = event.id
            woken = [s for s in self._subscribers if s._waiting]
            for subscriber in woken:
                subscriber._waiting = False
        for subscriber in woken:
            subscriber._wake()
        return event

    def subscribe(self, wake: Callable[[], None], after: int | None = None) -> Subscription:
        """A subscriber to the events after id `after` (a client's Last-Event-ID), or to
        those published from now on."""
        with self._lock:
            gap = None
            if after is None:
                after = self._last_id
            elif after > self._last_id:
                gap = f"event {after} is not from this run of the node (its last event is {self._last_id})"
            elif after + 1 < self._oldest_kept():
                gap = f"the events after {after} are no longer kept (the oldest kept is {self._oldest_kept()})"
            subscriber = Subscription(self, after + 1, wake, gap)
            if not self.closed:
                self._subscribers.add(subscriber)
            return subscriber

    def close(self) -> None:
        """The node stops: every subscriber ends (after what it has not taken yet)."""
        with self._lock:
            self.closed = True
            subscribers, self._subscribers = self._subscribers, set()
        for subscriber in subscribers:
            subscriber._wake()

    def _take(self, subscriber: Subscription) -> list[Event]:
        with self._lock:
            if subscriber.ended:
                return []
            if subscriber._gap is None and subscriber._next_id < self._oldest_kept():
                subscriber._gap = f"the client read too slowly: {self._last_id - subscriber._next_id + 1} events behind"
            if subscriber._gap is not None:
                subscriber.ended = True
                self._subscribers.discard(subscriber)
                return [resync(subscriber._gap)]
            end = min(self._last_id + 1, subscriber._next_id + TAKEN_AT_ONCE)
            events = [self._ring[i % self.kept] for i in range(subscriber._next_id, end)]
            subscriber._next_id = end
            if not events:
                if self.closed:
                    subscriber.ended = True
                else:
                    subscriber._waiting = True
            return events

    def _forget(self, subscriber: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)
            subscriber.ended = True

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


class ChangeWatch:
    """What changed in the node's `status()` since the last look, as (kind, data) pairs to
    publish. The first look only learns: a client starts from the snapshot."""

    CONTENT_FIELDS = ("paused", "role", "sells_keys")
    PAYMENT_FIELDS = ("cheques_accepted", "earned_wei", "keys_released")

    def __init__(self) -> None:
        self._last: dict[str, Any] | None = None

    def changes(self, status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        last, self._last = self._last, status
        if last is None:
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        if last["chain"]["answers"] != status["chain"]["answers"]:
            out.append(("status", {"chain_answers": status["chain"]["answers"]}))
        out += self._contents(last["contents"], status["contents"])
        out += self._streams(last["streams"], status["streams"])
        before, now = last["chain"], status["chain"]
        if before["batches_cashed"] != now["batches_cashed"] or before["paid_wei"] != now["paid_wei"]:
            out.append(("payment", {"direction": "cashed", "batches_cashed": now["batches_cashed"],
                                    "cashed_wei": now["paid_wei"], "uncashed_wei": now["uncashed_wei"]}))
        return out

    def _contents(self, before_list, now_list):
        before = {c["content_id"]: c for c in before_list}
        now = {c["content_id"]: c for c in now_list}
        for cid in before.keys() - now.keys():
            yield "content", {"content_id": cid, "removed": True}
        for cid, content in now.items():
            old = before.get(cid)
            if old is None or any(old[f] != content[f] for f in self.CONTENT_FIELDS):
                yield "content", content
            if old is not None and old["peers"] != content["peers"]:
                yield "peers", {"content_id": cid, "peers": content["peers"]}
            if old is not None and any(old[f] != content[f] for f in self.PAYMENT_FIELDS):
                yield "payment", {"direction": "accepted", "content_id": cid,
                                  **{f: content[f] for f in self.PAYMENT_FIELDS}}

    @staticmethod
    def _streams(before_list, now_list):
        before = {s["content_id"]: s for s in before_list}
        now = {s["content_id"]: s for s in now_list}
        for cid in before.keys() - now.keys():
            yield "stream", {"content_id": cid, "open": False}
        for cid, stats in now.items():
            old = before.get(cid)
            if old != stats:
                yield "stream", {**stats, "open": True}
            if (old["paid_wei"] if old is not None else 0) != stats["paid_wei"]:  # a new stream may have paid already
                yield "payment", {"direction": "signed", "content_id": cid, "paid_wei": stats["paid_wei"]}


class Live:
    """The node's live state: its event hub, and the watch that feeds it from the poll loop."""

    def __init__(self, kept: int, first_id: int) -> None:
        self.hub = EventHub(kept, first_id)
        self._watch = ChangeWatch()

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        return self.hub.publish(kind, data)

    def look(self, status: dict[str, Any]) -> None:
        """One turn of the poll loop: publish what changed since the last."""
        for kind, data in self._watch.changes(status):
            self.hub.publish(kind, data)
