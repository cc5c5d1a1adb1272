"""The node's feed, kept in sync with the user's relays for as long as the node runs.

`FeedKeeper` keeps every relay connected (`social.relay_client.StandingPool`: a relay that
is down or drops is tried again with backoff, and its state is in `veil status`) and holds
subscriptions open on each: new cards, their engagement (reactions, comments, reposts,
views), their authors' profiles, and the user's own lists. Whatever arrives goes through
the vault's feed index (`$VEIL_HOME/social/index.sqlite3`), which refuses what is malformed
or forged; refusals are counted by reason, never raised.

A restart (even after `kill -9`) catches up from a cursor per relay in
`$VEIL_HOME/node/feed-cursor.json`: the `created_at` of the newest event taken from that
relay, less an overlap (`SocialSettings.feed_catch_up_overlap_s`), written atomically at
most every `feed_cursor_flush_s` and at stop. It moves only past events already in the
index, and only once every subscription of a relay has had its stored events, so nothing
between the old cursor and the new one is skipped.

Others hear of new events through `subscribe(fn)` (the API's live stream uses it); the
API publishes the user's events through `publish`, to the relays connected now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from veilstream.atomic import replace_file
from veilstream.node.cards import open_index
from veilstream.node.relays import configured_relays, port_listening, relay_port, resolve_relays, shared_relay_dir
from veilstream.social import kinds
from veilstream.social.embedded_relay import EmbeddedRelay, store_owner
from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.index import FeedIndex, IngestResult
from veilstream.social.protocol import EndOfStoredEvents, EventReceived, SubscriptionClosed
from veilstream.social.relay_client import PublishOutcome, RelayConnection, StandingPool
from veilstream.social.settings import SocialSettings
from veilstream.social.sync import card_filter, engagement_filters

log = logging.getLogger("veilstream.node.feed")

CURSOR_FILE = Path("node") / "feed-cursor.json"
_HELD = ("stored", "duplicate")  # an event the index holds once ingested


KIND_NAMES = {kinds.CARD: "card", kinds.REACTION: "reaction", kinds.COMMENT: "comment", kinds.REPOST: "repost",
              kinds.GENERIC_REPOST: "repost", kinds.VIEW: "view", kinds.PROFILE: "profile",
              kinds.FOLLOW_LIST: "follow list", kinds.RELAY_LIST: "relay list"}


def live_summary(event: Event) -> dict[str, Any]:
    """What the node's live stream says of a new feed event: enough for a client to know
    what to fetch again (`/cards/{about}` for engagement, the card itself for a card)."""
    about = next((tag[1] for tag in event.tags if len(tag) > 1 and tag[0] in ("e", "E")), None)
    return {"event_id": event.id, "kind": KIND_NAMES.get(event.kind, str(event.kind)), "author": event.pubkey,
            "created_at": event.created_at, "about": event.id if event.kind == kinds.CARD else about}


class FeedCursor:
    """Per relay, the `since` a (re)connection catches up from; kept in one JSON file."""

    def __init__(self, path: Path, overlap_s: int, clock=time.time) -> None:
        self.path = path
        self.overlap_s = overlap_s
        self._clock = clock
        self._since: dict[str, int] = {}
        self._dirty = False
        try:
            data = json.loads(path.read_text())
            relays = data.get("relays", {}) if isinstance(data, dict) else {}
            self._since = {url: since for url, since in relays.items()
                           if isinstance(url, str) and isinstance(since, int) and not isinstance(since, bool)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("%s is unreadable (%s): the feed catches up from the start", path, exc)

    def since(self, url: str) -> int | None:
        return self._since.get(url)

    def advance(self, url: str, newest_created_at: int) -> None:
        """The relay's events up to `newest_created_at` are in the index. An event dated
        ahead of our clock moves the cursor no further than now."""
        since = min(newest_created_at, int(self._clock())) - self.overlap_s
        if since > self._since.get(url, 0):
            self._since[url] = since
            self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        try:
            replace_file(self.path, json.dumps({"relays": self._since}).encode(), mode=0o600)
        except OSError as exc:  # a full disk: the next flush tries again; a restart repeats a little more
            self._dirty = True
            log.warning("the feed cursor cannot be written to %s: %s", self.path, exc)

    def document(self) -> dict[str, int]:
        return dict(self._since)


class _CatchUp:
    """One relay's subscriptions of one generation: the cursor moves only once all of them
    have sent their stored events (EOSE); live events after that move it at once."""

    def __init__(self, subscriptions: int) -> None:
        self.waiting = subscriptions
        self.newest = 0

    @property
    def complete(self) -> bool:
        return self.waiting == 0


class FeedKeeper:
    """Keeps the vault's feed index in sync with `urls` until cancelled (see the module)."""

    def __init__(self, home: Path, index: FeedIndex, me: str, urls: list[str], *,
                 settings: SocialSettings = SocialSettings(), clock=time.time,
                 local_relay: tuple[Path, int] | None = None) -> None:
        self.index = index
        self.me = me
        self.settings = settings
        self.pool = StandingPool(urls, settings=settings, clock=clock)
        self.cursor = FeedCursor(Path(home) / CURSOR_FILE, settings.feed_catch_up_overlap_s, clock)
        self.ingested: Counter = Counter()  # ingest results by reason, every relay together
        self._listeners: list[Callable[[Event], None]] = []
        self._followers: set[asyncio.Event] = set()  # one per open follow: set when new cards want following
        self._local_relay = local_relay  # (store, port) of the machine's local relay, when that is the feed's relay
        self._hosted: EmbeddedRelay | None = None  # the local relay, started here after its owner went

    @classmethod
    def open(cls, home: Path, me: str, settings: SocialSettings, stack: ExitStack) -> FeedKeeper:
        """The keeper of the vault at `home`, on its relays: the configured list, else the
        machine's local relay (started now, shared, for as long as `stack` is open, when none
        runs). The index closes with `stack`."""
        urls = resolve_relays(home, [], stack, shared=True)
        index = stack.enter_context(open_index(home))
        port = relay_port()
        local = (shared_relay_dir(), port) if urls == [f"ws://127.0.0.1:{port}"] and not configured_relays(home) else None
        return cls(home, index, me, urls, settings=settings, local_relay=local)

    # -- for others ---------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener(event)` with every event newly stored in the index (from a relay or
        published here), in the event loop, as it is stored: it must not block. Returns the
        callable that stops it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def publish(self, event: Event) -> list[PublishOutcome]:
        """Index the user's event (through the gate everyone's passes), then send it to every
        relay connected now: one outcome per relay (the down ones refused at once); raises
        `RelaysRefused` when none took it (it stays in the index)."""
        result = self.ingest(event)
        if result.reason not in _HELD:
            raise SocialError(f"the local index refused the event: {result.reason}")
        return await self.pool.publish_or_raise(event)

    def ingest(self, raw: dict | Event) -> IngestResult:
        """One event into the index, counted; listeners hear of it if it is new."""
        result = self.index.ingest(raw)
        self.ingested[result.reason] += 1
        if result.accepted:
            event = raw if isinstance(raw, Event) else self.index.event(result.event_id)
            if event is not None:
                if event.kind == kinds.CARD:
                    self.follow_new_cards()
                for listener in list(self._listeners):
                    listener(event)
        return result

    def follow_new_cards(self) -> None:
        """The index holds cards the subscriptions do not follow yet: renew them (soon)."""
        for follower in self._followers:
            follower.set()

    def status(self) -> dict[str, Any]:
        refused = {reason: n for reason, n in self.ingested.items() if reason not in (*_HELD, "stale-replaceable")}
        return {"relays": self.pool.status(), "events_stored": self.ingested["stored"],
                "events_refused": sum(refused.values()), "refused_by_reason": refused, "cursor": self.cursor.document()}

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow every relay until cancelled; the cursor is written on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.pool.run(self._follow), name="feed-relays")
                group.create_task(self._flush_cursor(), name="feed-cursor")
                if self._local_relay is not None:
                    group.create_task(self._stand_in_for_the_local_relay(*self._local_relay), name="feed-local-relay")
        finally:
            self.cursor.flush()
            if self._hosted is not None:
                self._hosted.stop()

    async def _stand_in_for_the_local_relay(self, store: Path, port: int) -> None:
        """The machine's local relay may be another process's (another node's, `veil relay`):
        when that process has gone and nobody took its place, this node runs it, on the same
        store and port, so that the feed goes on (the standing relay reconnects by itself)."""
        relay = self.pool.relays[f"ws://127.0.0.1:{port}"]
        while self._hosted is None:
            await asyncio.sleep(self.settings.relay_retry_max_s)
            if relay.state.connected or store_owner(store) is not None or port_listening(port):
                continue
            hosted = EmbeddedRelay(store, port=port, shared=True, settings=self.settings)
            try:
                hosted.start()  # listening when it returns: the reconnection waits in its backlog
            except SocialError as exc:  # another process was quicker
                log.info("the local relay is someone else's again: %s", exc)
                continue
            self._hosted = hosted
            log.warning("the machine's local relay had stopped: this node runs it now at %s", hosted.url)

    async def _flush_cursor(self) -> None:
        while True:
            await asyncio.sleep(self.settings.feed_cursor_flush_s)
            self.cursor.flush()

    async def _follow(self, url: str, connection: RelayConnection) -> str:
        """Subscriptions on one connection, renewed when new cards want following; returns
        why the connection is no more use (lost, or the relay closed a subscription)."""
        since = self.cursor.since(url)
        log.info("relay %s: following the feed %s", url, f"since {since}" if since else "from the start")
        while True:
            changed = asyncio.Event()
            self._followers.add(changed)
            try:
                ended = await self._listen(url, connection, changed)
            finally:
                self._followers.discard(changed)
            if ended is not None:
                return ended
            await asyncio.sleep(self.settings.feed_resubscribe_delay_s)  # more cards may come: follow them in one go

    async def _listen(self, url: str, connection: RelayConnection, changed: asyncio.Event) -> str | None:
        requests = self._requests(self.cursor.since(url))
        catch_up = _CatchUp(len(requests))
        async with asyncio.TaskGroup() as group:
            takes = [group.create_task(self._take(url, connection, filters, catch_up)) for filters in requests]
            watch = group.create_task(changed.wait())
            done, _ = await asyncio.wait([*takes, watch], return_when=asyncio.FIRST_COMPLETED)
            for task in (*takes, watch):
                task.cancel()
        ended = [task.result() for task in takes if task in done and not task.cancelled()]
        return ended[0] if ended else None

    def _requests(self, since: int | None) -> list[list[dict]]:
        """The REQs that follow the feed from `since`: cards and the user's own lists first,
        then the known cards' engagement and their authors' profiles, a few filters a REQ."""
        settings = self.settings
        personal = {"kinds": [kinds.FOLLOW_LIST, kinds.RELAY_LIST, kinds.PROFILE], "authors": [self.me]}
        requests = [[card_filter(since, limit=settings.sync_card_limit), personal]]
        card_ids = self.index.card_ids()[:settings.sync_engagement_cards]
        following = engagement_filters(card_ids, since, settings.sync_ids_per_filter) if card_ids else []
        authors = sorted({row.pubkey for row in self.index.feed(limit=settings.sync_profile_cards)})
        if authors:
            following.append({"kinds": [kinds.PROFILE], "authors": authors, **({"since": since} if since else {})})
        per_request = settings.sync_filters_per_request
        requests += [following[i:i + per_request] for i in range(0, len(following), per_request)]
        return requests

    async def _take(self, url: str, connection: RelayConnection, filters: list[dict], catch_up: _CatchUp) -> str:
        """Ingest what one subscription brings: its stored events at EOSE, in one go, then each
        live event as it comes. Returns why the subscription ended."""
        stored: list[dict] = []
        live = False
        subscription = connection.subscribe(filters, self.settings.relay_event_budget)
        try:
            async for item in subscription:  # the connection's end comes as a SubscriptionClosed, or:
                if isinstance(item, EventReceived):
                    if live:
                        self._take_live(url, item.event, catch_up)
                    else:
                        stored.append(item.event)
                elif isinstance(item, EndOfStoredEvents):
                    for raw in stored:
                        catch_up.newest = max(catch_up.newest, self._held_at(raw))
                    stored, live = [], True
                    catch_up.waiting -= 1
                    if catch_up.complete and catch_up.newest:
                        self.cursor.advance(url, catch_up.newest)
                elif isinstance(item, SubscriptionClosed):
                    return item.message or "the relay closed the subscription"
        except (OSError, ConnectionClosed) as exc:  # gone as the REQ went out
            return f"relay {exc}"
        except SocialError as exc:  # the index cannot store (a full disk): later, from the cursor, it may
            log.warning("feed from %s paused: %s", url, exc)
            return str(exc)
        finally:
            await subscription.aclose()
        return "the subscription ended"

    def _take_live(self, url: str, raw: dict, catch_up: _CatchUp) -> None:
        created_at = self._held_at(raw)
        if catch_up.complete:
            if created_at:
                self.cursor.advance(url, created_at)
        else:
            catch_up.newest = max(catch_up.newest, created_at)

    def _held_at(self, raw: dict) -> int:
        """Ingest `raw`; the `created_at` the index holds for it (0: refused). A duplicate's
        time is read back from the index: a relay could pair a known id with any time."""
        result = self.ingest(raw)
        if result.reason == "stored":
            return int(raw["created_at"]) if isinstance(raw, dict) else raw.created_at
        if result.reason == "duplicate" and result.event_id:
            held = self.index.event(result.event_id)
            return held.created_at if held is not None else 0
        return 0
