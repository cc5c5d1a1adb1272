"""Talking to relays: asyncio moves frames between a WebSocket and a `RelaySession`.

`RelayConnection` is one WebSocket; `RelayPool` opens a few for one command's work;
`StandingPool` keeps every relay of a long-running node connected, reconnecting with
backoff (`Backoff`) whenever one is down, and says how each is doing.

All protocol decisions live in `protocol.RelaySession`; this module only connects, sends,
receives, and turns timeouts and dropped connections into results with reasons.

Failures: the expected ones (a relay down, slow or hanging up, the network failing:
timeouts, OSError, which includes the ConnectionError `_send` raises once a connection is
gone, and websockets' ConnectionClosed) are logged and become results with reasons.
Anything else is a bug and propagates: every task here belongs to a task group whose
owner waits for it, so no failure goes unseen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.protocol import (
    EndOfStoredEvents,
    EventReceived,
    Notice,
    ProtocolViolation,
    PublishAcknowledged,
    RelayEvent,
    RelaySession,
    SubscriptionClosed,
)
from veilstream.social.settings import SocialSettings

log = logging.getLogger(__name__)

def check_relay_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")) or len(url) < 8:
        raise SocialError(f"{url!r} is not a relay URL (ws://host:port or wss://host)")
    return url


def _overridden(settings: SocialSettings, **overrides: float | int | None) -> SocialSettings:
    """`settings` with the keyword arguments a caller gave (None: not given) applied."""
    given = {name: value for name, value in overrides.items() if value is not None}
    return settings.but(**given) if given else settings


@dataclass(frozen=True)
class PublishOutcome:
    relay: str
    accepted: bool
    message: str


@dataclass
class FetchResult:
    relay: str
    events: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False  # the relay said EOSE: it sent everything it has
    problem: str = ""


class _ConnectionLost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class RelayConnection:
    """One open WebSocket to one relay; use as an async context manager.

    Entering connects (unless `connect` already did) and starts the reader in the
    connection's own task group; leaving hangs up, cancels the reader and waits for it, so
    no task outlives the connection. A reader that fails for anything but the expected ends
    of a connection is a bug: the task group cancels the code inside `async with` and the
    bug comes out of it. `open_timeout` and `event_budget` override `settings`.
    """

    def __init__(
        self,
        url: str,
        *,
        settings: SocialSettings = SocialSettings(),
        open_timeout: float | None = None,
        event_budget: int | None = None,
    ) -> None:
        self.url = check_relay_url(url)
        self.settings = _overridden(settings, relay_open_timeout_s=open_timeout, relay_event_budget=event_budget)
        self.session = RelaySession(
            event_budget=self.settings.relay_event_budget, max_violations=self.settings.relay_max_violations
        )
        self._socket: ClientConnection | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._reader: asyncio.Task | None = None
        self._acks: dict[str, asyncio.Future[PublishAcknowledged]] = {}
        self._subscriptions: dict[str, asyncio.Queue] = {}
        self.closed_reason: str | None = None

    async def connect(self) -> None:
        """The WebSocket handshake alone (a pool does these at once, then enters each)."""
        try:
            self._socket = await connect(
                self.url,
                open_timeout=self.settings.relay_open_timeout_s,
                max_size=self.session.max_frame_bytes,
                compression=None,
                close_timeout=self.settings.relay_close_timeout_s,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise SocialError(f"cannot reach relay {self.url}: {exc or type(exc).__name__}") from exc

    async def __aenter__(self) -> RelayConnection:
        if self._socket is None:
            await self.connect()
        stack = AsyncExitStack()
        self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
        # Unwound last to first: hang up, cancel the reader (it has usually ended with the
        # connection), then the task group waits for it and raises what a bug raised.
        stack.callback(self._stop_reader)
        stack.push_async_callback(self.hang_up)
        self._exit_stack = stack
        self._reader = self._tasks.create_task(self._read_loop(), name=f"relay-reader {self.url}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:  # connected, never entered: only a socket to close
            await self.hang_up()
        elif isinstance(exc, asyncio.CancelledError):
            # Shown to the task group, which tells its own cancellation (the reader failed,
            # so it cancelled the body) from an outer one.
            await stack.__aexit__(exc_type, exc, tb)
        else:
            # Any other error of the body is the caller's: it passes on as it is, not
            # wrapped in the task group's ExceptionGroup.
            await stack.aclose()

    async def close(self) -> None:
        """Hang up, then cancel the reader and wait for it (in the task that entered)."""
        await self.__aexit__(None, None, None)

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()

    async def hang_up(self) -> None:
        """Close the WebSocket; the reader then ends. A relay that went first is no fault."""
        if self._socket is None:
            return
        try:
            await self._socket.close()
        except (OSError, ConnectionClosed) as exc:
            log.info("relay %s: hanging up: %s", self.url, exc)

    async def _send(self, frame: str) -> None:
        if self._socket is None or self.closed_reason is not None:
            raise ConnectionError(self.closed_reason or "not connected")
        await self._socket.send(frame)

    async def _read_loop(self) -> None:
        assert self._socket is not None and self._tasks is not None
        reason = "closed"
        hanging_up = False
        try:
            async for frame in self._socket:
                if hanging_up:
                    continue  # keep reading so the relay's close frame gets through the queue
                for relay_event in self.session.receive(frame):
                    self._dispatch(relay_event)
                for frame_out in self.session.outgoing:
                    await self._socket.send(frame_out)
                self.session.outgoing.clear()
                if self.session.should_disconnect:
                    reason = f"too many protocol violations ({self.session.violations})"
                    log.warning("relay %s: disconnecting: %s", self.url, reason)
                    hanging_up = True
                    self._tasks.create_task(self.hang_up(), name=f"relay-hang-up {self.url}")
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except OSError as exc:
            reason = f"connection error: {exc}"
        finally:
            self.closed_reason = reason
            lost = _ConnectionLost(reason)
            for future in self._acks.values():
                if not future.done():
                    future.set_result(PublishAcknowledged("", False, f"relay {reason}"))
            for queue in self._subscriptions.values():
                queue.put_nowait(lost)

    def _dispatch(self, relay_event: RelayEvent) -> None:
        if isinstance(relay_event, PublishAcknowledged):
            future = self._acks.get(relay_event.event_id)
            if future is not None and not future.done():
                future.set_result(relay_event)
        elif isinstance(relay_event, (EventReceived, EndOfStoredEvents, SubscriptionClosed)):
            queue = self._subscriptions.get(relay_event.subscription_id)
            if queue is not None:
                queue.put_nowait(relay_event)
            if isinstance(relay_event, SubscriptionClosed):
                log.info("relay %s closed subscription %s: %s", self.url, relay_event.subscription_id, relay_event.message)
        elif isinstance(relay_event, ProtocolViolation):
            log.warning("relay %s: protocol violation: %s", self.url, relay_event.reason)
        elif isinstance(relay_event, Notice):
            log.info("relay %s says: %s", self.url, relay_event.message)

    async def publish(self, event: Event, timeout: float | None = None) -> PublishOutcome:
        """Send `event` and wait for the relay's OK; a relay that fails is an outcome, not an error."""
        timeout = self.settings.relay_reply_timeout_s if timeout is None else timeout
        future: asyncio.Future[PublishAcknowledged] = asyncio.get_running_loop().create_future()
        self._acks[event.id] = future
        try:
            async with asyncio.timeout(timeout):  # a relay that stopped reading must not hold the send either
                await self._send(self.session.publish(event))
                ack = await future
        except TimeoutError:
            return PublishOutcome(self.url, False, f"no OK within {timeout:g} s")
        except (OSError, ConnectionClosed) as exc:
            return PublishOutcome(self.url, False, f"relay {exc}")
        finally:
            self._acks.pop(event.id, None)
        return PublishOutcome(self.url, ack.accepted, ack.message)

    async def subscribe(self, filters: list[dict[str, Any]], event_budget: int | None = None) -> AsyncIterator[Any]:
        """Events and markers (EndOfStoredEvents, SubscriptionClosed) of one live subscription."""
        subscription_id, frame = self.session.subscribe(filters, event_budget)
        queue: asyncio.Queue = asyncio.Queue()
        self._subscriptions[subscription_id] = queue
        try:
            await self._send(frame)
            while True:
                item = await queue.get()
                if isinstance(item, _ConnectionLost):
                    yield SubscriptionClosed(subscription_id, f"relay {item.reason}")
                    return
                yield item
                if isinstance(item, SubscriptionClosed):
                    return
        finally:
            self._subscriptions.pop(subscription_id, None)
            closing = self.session.close(subscription_id)
            if closing and self.closed_reason is None:
                try:
                    await self._send(closing)
                except (OSError, ConnectionClosed):
                    pass  # gone meanwhile: nothing left to close

    async def fetch(
        self, filters: list[dict[str, Any]], timeout: float | None = None, event_budget: int | None = None
    ) -> FetchResult:
        """Stored events matching `filters`, until EOSE, a close, or the timeout; a relay
        that fails leaves its reason in the result's `problem`."""
        timeout = self.settings.relay_reply_timeout_s if timeout is None else timeout
        result = FetchResult(self.url)
        try:
            async with asyncio.timeout(timeout):
                subscription = self.subscribe(filters, event_budget)
                try:
                    async for item in subscription:
                        if isinstance(item, EventReceived):
                            result.events.append(item.event)
                        elif isinstance(item, EndOfStoredEvents):
                            result.complete = True
                            break
                        elif isinstance(item, SubscriptionClosed):
                            result.problem = item.message
                            break
                finally:
                    await subscription.aclose()  # sends CLOSE now, not whenever it is collected
        except TimeoutError:
            result.problem = f"no EOSE within {timeout:g} s"
        except (OSError, ConnectionClosed) as exc:
            result.problem = f"relay {exc}"
        return result


class RelayPool:
    """Connections to a list of relays; publishes to all, fetches from all, survives any failing.

    Each relay's failure (down, slow, dropping, lying) becomes that relay's outcome, with a
    reason, and is logged; a bug in talking to any relay propagates. The keyword arguments
    override `settings`.
    """

    def __init__(
        self,
        urls: Iterable[str],
        *,
        settings: SocialSettings = SocialSettings(),
        open_timeout: float | None = None,
        reply_timeout: float | None = None,
        event_budget: int | None = None,
    ) -> None:
        self.urls = list(dict.fromkeys(check_relay_url(u) for u in urls))
        if not self.urls:
            raise SocialError("no relays: give --relay URL or configure a relay list")
        self.settings = _overridden(
            settings,
            relay_open_timeout_s=open_timeout,
            relay_reply_timeout_s=reply_timeout,
            relay_event_budget=event_budget,
        )
        self.connections: dict[str, RelayConnection] = {}
        self.unreachable: dict[str, str] = {}
        self._exit_stack: AsyncExitStack | None = None

    async def __aenter__(self) -> RelayPool:
        candidates = [RelayConnection(url, settings=self.settings) for url in self.urls]

        async def connect_one(connection: RelayConnection) -> None:
            try:
                await connection.connect()
            except SocialError as exc:  # connect turns the expected failures into this
                self.unreachable[connection.url] = str(exc)
                log.warning("%s", exc)

        self._exit_stack = AsyncExitStack()
        try:
            async with asyncio.TaskGroup() as group:
                for connection in candidates:
                    group.create_task(connect_one(connection))
            # Entered here, in the pool's task: each reader's task group has this task as
            # its parent, and closing the pool (in this task too) winds them all down.
            for connection in candidates:
                if connection.url not in self.unreachable:
                    self.connections[connection.url] = await self._exit_stack.enter_async_context(connection)
        except BaseException:
            for connection in candidates:
                if connection.url not in self.connections:
                    await connection.hang_up()  # connected, never entered: only a socket to close
            await self.close()
            raise
        if not self.connections:
            await self.close()
            raise SocialError("no relay reachable: " + "; ".join(self.unreachable.values()))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hang up on every relay at once (each may take the close timeout), then wind down
        each connection's reader."""
        connections, self.connections = list(self.connections.values()), {}
        async with asyncio.TaskGroup() as group:  # hang_up takes the expected failures; a bug is raised
            for connection in connections:
                group.create_task(connection.hang_up())
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.aclose()

    async def publish(self, event: Event) -> list[PublishOutcome]:
        """One outcome per relay, the unreachable ones included."""
        outcomes: dict[str, PublishOutcome] = {}

        async def publish_one(connection: RelayConnection) -> None:
            outcomes[connection.url] = await connection.publish(event, self.settings.relay_reply_timeout_s)

        async with asyncio.TaskGroup() as group:
            for connection in self.connections.values():
                group.create_task(publish_one(connection))
        failed = [PublishOutcome(url, False, reason) for url, reason in self.unreachable.items()]
        return [outcomes[url] for url in self.connections] + failed

    async def publish_or_raise(self, event: Event) -> list[PublishOutcome]:
        outcomes = await self.publish(event)
        if not any(o.accepted for o in outcomes):
            raise SocialError(
                "no relay accepted the event: " + "; ".join(f"{o.relay}: {o.message or 'refused'}" for o in outcomes)
            )
        return outcomes

    async def fetch(self, filters: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[FetchResult]]:
        """Events from every relay, each id once (relays overlap), and each relay's result."""
        results: dict[str, FetchResult] = {}

        async def fetch_one(connection: RelayConnection) -> None:
            result = await connection.fetch(filters, self.settings.relay_reply_timeout_s, self.settings.relay_event_budget)
            if result.problem:
                log.warning("relay %s: %s", result.relay, result.problem)
            results[connection.url] = result

        async with asyncio.TaskGroup() as group:
            for connection in self.connections.values():
                group.create_task(fetch_one(connection))
        ordered = [results[url] for url in self.connections]
        seen: set[str] = set()
        events = []
        for result in ordered:
            for event in result.events:
                event_id = event.get("id")
                if isinstance(event_id, str) and event_id not in seen:
                    seen.add(event_id)
                    events.append(event)
        return events, ordered


class Backoff:
    """Waits between attempts to reach a relay: doubling from `first_s` up to `max_s`, with
    jitter so that many nodes a relay dropped at once do not all come back at once."""

    def __init__(self, first_s: float, max_s: float, jitter=random.random) -> None:
        self.first_s, self.max_s = first_s, max(first_s, max_s)
        self._jitter = jitter
        self._next_s = first_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self.max_s, self._next_s * 2)
        return delay * (0.5 + self._jitter() / 2)

    def reset(self) -> None:
        self._next_s = self.first_s


@dataclass
class RelayState:
    """How one relay of a standing pool is doing, as `veil status` shows it."""

    url: str
    connected: bool = False
    since: float = 0.0  # when it connected, or when it went down (or the pool started)
    last_error: str = ""
    failures: int = 0  # attempts that failed since it last connected

    def document(self) -> dict[str, Any]:
        return {"url": self.url, "state": "connected" if self.connected else "down", "since": self.since,
                "last_error": self.last_error, "failures": self.failures}


class StandingRelay:
    """One relay kept connected for as long as `run` runs: when it cannot be reached or the
    connection drops, it is tried again after a backoff; a relay that is down is a state,
    never an error."""

    def __init__(self, url: str, *, settings: SocialSettings = SocialSettings(), clock=time.time) -> None:
        self.url = check_relay_url(url)
        self.settings = settings
        self._clock = clock
        self.state = RelayState(self.url, since=clock())
        self.connection: RelayConnection | None = None
        self._backoff = Backoff(settings.relay_retry_first_s, settings.relay_retry_max_s)

    async def run(self, on_connected: Callable[[RelayConnection], Awaitable[str]]) -> None:
        """Connect, hand the connection to `on_connected` (which returns why it stopped using
        it, typically because the connection was lost), and start again; until cancelled."""
        while True:
            connection = RelayConnection(self.url, settings=self.settings)
            try:
                await connection.connect()
            except SocialError as exc:  # connect turns the expected failures into this
                self._went_down(str(exc))
            else:
                async with connection:
                    self.connection = connection
                    self._went_up()
                    try:
                        reason = await on_connected(connection)
                    finally:
                        self.connection = None
                self._went_down(reason or connection.closed_reason or "closed")
            delay = self._backoff.next_delay()
            log.info("relay %s: trying again in %.1f s", self.url, delay)
            await asyncio.sleep(delay)

    def _went_up(self) -> None:
        self.state = RelayState(self.url, connected=True, since=self._clock())
        log.info("relay %s: connected", self.url)

    def _went_down(self, reason: str) -> None:
        state = self.state
        if state.connected and self._clock() - state.since >= self.settings.relay_retry_max_s:
            self._backoff.reset()  # it served a while: back soon; one that drops us at once waits longer each time
        since = state.since if not state.connected and state.failures else self._clock()
        self.state = RelayState(self.url, connected=False, since=since, last_error=reason, failures=state.failures + 1)
        if state.connected or state.failures == 0:
            log.warning("relay %s is down: %s", self.url, reason)


class StandingPool:
    """Every relay of a long-running node, each a `StandingRelay`, run by `run`.

    `publish` and `fetch` use the relays connected at that moment and answer at once for the
    others (down since when, and why), so a relay that is down costs no wait; the same
    methods as `RelayPool`'s, so the feed's helpers (sync, find_event) take either.
    """

    def __init__(self, urls: Iterable[str], *, settings: SocialSettings = SocialSettings(), clock=time.time) -> None:
        self.urls = list(dict.fromkeys(check_relay_url(u) for u in urls))
        if not self.urls:
            raise SocialError("no relays: configure a relay list or let the node use the local relay")
        self.settings = settings
        self.relays = {url: StandingRelay(url, settings=settings, clock=clock) for url in self.urls}

    async def run(self, on_connected: Callable[[str, RelayConnection], Awaitable[str]]) -> None:
        """Keep every relay connected until cancelled; `on_connected(url, connection)` uses
        each connection while it lasts."""
        async with asyncio.TaskGroup() as group:
            for url, relay in self.relays.items():
                group.create_task(relay.run(lambda connection, url=url: on_connected(url, connection)),
                                  name=f"relay {url}")

    def status(self) -> list[dict[str, Any]]:
        return [relay.state.document() for relay in self.relays.values()]

    def _connected(self) -> dict[str, RelayConnection]:
        return {url: relay.connection for url, relay in self.relays.items() if relay.connection is not None}

    def _down(self, url: str) -> str:
        state = self.relays[url].state
        when = time.strftime("%H:%M:%S", time.localtime(state.since))
        return f"down since {when}" + (f": {state.last_error}" if state.last_error else "")

    async def publish(self, event: Event) -> list[PublishOutcome]:
        """One outcome per relay, in the pool's order; a relay that is down is refused at once."""
        connected = self._connected()
        outcomes: dict[str, PublishOutcome] = {}

        async def publish_one(url: str, connection: RelayConnection) -> None:
            outcomes[url] = await connection.publish(event, self.settings.relay_reply_timeout_s)

        async with asyncio.TaskGroup() as group:
            for url, connection in connected.items():
                group.create_task(publish_one(url, connection))
        return [outcomes.get(url) or PublishOutcome(url, False, self._down(url)) for url in self.urls]

    async def publish_or_raise(self, event: Event) -> list[PublishOutcome]:
        outcomes = await self.publish(event)
        if not any(o.accepted for o in outcomes):
            raise RelaysRefused(outcomes)
        return outcomes

    async def fetch(self, filters: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[FetchResult]]:
        """Stored events from the relays connected now, each id once, and each relay's result."""
        connected = self._connected()
        results: dict[str, FetchResult] = {}

        async def fetch_one(url: str, connection: RelayConnection) -> None:
            results[url] = await connection.fetch(filters, self.settings.relay_reply_timeout_s,
                                                  self.settings.relay_event_budget)

        async with asyncio.TaskGroup() as group:
            for url, connection in connected.items():
                group.create_task(fetch_one(url, connection))
        ordered = [results.get(url) or FetchResult(url, problem=self._down(url)) for url in self.urls]
        seen: set[str] = set()
        events = []
        for result in ordered:
            for raw in result.events:
                event_id = raw.get("id")
                if isinstance(event_id, str) and event_id not in seen:
                    seen.add(event_id)
                    events.append(raw)
        return events, ordered


class RelaysRefused(SocialError):
    """No relay took an event: each relay's outcome says why (down, refused, no answer)."""

    http_status = 503

    def __init__(self, outcomes: list[PublishOutcome]) -> None:
        self.outcomes = outcomes
        super().__init__("no relay accepted the event: "
                         + "; ".join(f"{o.relay}: {o.message or 'refused'}" for o in outcomes))
