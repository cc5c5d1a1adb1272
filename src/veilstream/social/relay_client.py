"""Talking to relays: asyncio moves frames between a WebSocket and a `RelaySession`.

All protocol decisions live in `protocol.RelaySession`; this module only connects, sends,
receives, and turns timeouts and dropped connections into results with reasons.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
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
    RelaySession,
    SubscriptionClosed,
)

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


def check_relay_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")) or len(url) < 8:
        raise SocialError(f"{url!r} is not a relay URL (ws://host:port or wss://host)")
    return url


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
    """One open WebSocket to one relay."""

    def __init__(self, url: str, *, open_timeout: float = OPEN_TIMEOUT_S, event_budget: int | None = None) -> None:
        self.url = check_relay_url(url)
        self.open_timeout = open_timeout
        self.session = RelaySession() if event_budget is None else RelaySession(event_budget=event_budget)
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._acks: dict[str, asyncio.Future[PublishAcknowledged]] = {}
        self._subscriptions: dict[str, asyncio.Queue] = {}
        self.closed_reason: str | None = None

    async def open(self) -> RelayConnection:
        try:
            self._socket = await connect(
                self.url,
                open_timeout=self.open_timeout,
                max_size=self.session.max_frame_bytes,
                compression=None,
                close_timeout=CLOSE_TIMEOUT_S,
            )
        except (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError, TimeoutError) as exc:
            raise SocialError(f"cannot reach relay {self.url}: {exc or type(exc).__name__}") from exc
        self._reader = asyncio.create_task(self._read_loop(), name=f"relay-reader {self.url}")
        return self

    async def close(self) -> None:
        """Hang up and wait for the reader. The reader takes the expected ends of a
        connection itself; anything else it raises is a bug, and surfaces here."""
        if self._socket is not None:
            try:
                await self._socket.close()
            except (OSError, ConnectionClosed) as exc:  # the relay went first
                log.info("relay %s: closing: %s", self.url, exc)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader

    async def __aenter__(self) -> RelayConnection:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _send(self, frame: str) -> None:
        if self._socket is None or self.closed_reason is not None:
            raise ConnectionError(self.closed_reason or "not connected")
        await self._socket.send(frame)

    async def _read_loop(self) -> None:
        assert self._socket is not None
        reason = "closed"
        hang_up: asyncio.Task | None = None
        try:
            async for frame in self._socket:
                if hang_up is not None:
                    continue  # keep reading so the relay's close frame gets through the queue
                for happening in self.session.receive(frame):
                    self._dispatch(happening)
                for frame_out in self.session.outgoing:
                    await self._socket.send(frame_out)
                self.session.outgoing.clear()
                if self.session.should_disconnect:
                    reason = f"too many protocol violations ({self.session.violations})"
                    log.warning("relay %s: disconnecting: %s", self.url, reason)
                    hang_up = asyncio.create_task(self._socket.close())
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except OSError as exc:
            reason = f"connection error: {exc}"
        finally:
            if hang_up is not None:
                try:
                    await hang_up
                except (OSError, ConnectionClosed) as exc:
                    log.info("relay %s: hanging up: %s", self.url, exc)
            self.closed_reason = reason
            lost = _ConnectionLost(reason)
            for future in self._acks.values():
                if not future.done():
                    future.set_result(PublishAcknowledged("", False, f"relay {reason}"))
            for queue in self._subscriptions.values():
                queue.put_nowait(lost)

    def _dispatch(self, happening: object) -> None:
        if isinstance(happening, PublishAcknowledged):
            future = self._acks.get(happening.event_id)
            if future is not None and not future.done():
                future.set_result(happening)
        elif isinstance(happening, (EventReceived, EndOfStoredEvents, SubscriptionClosed)):
            queue = self._subscriptions.get(happening.subscription_id)
            if queue is not None:
                queue.put_nowait(happening)
            if isinstance(happening, SubscriptionClosed):
                log.info("relay %s closed subscription %s: %s", self.url, happening.subscription_id, happening.message)
        elif isinstance(happening, ProtocolViolation):
            log.warning("relay %s: protocol violation: %s", self.url, happening.reason)
        elif isinstance(happening, Notice):
            log.info("relay %s says: %s", self.url, happening.message)

    async def publish(self, event: Event, timeout: float = REPLY_TIMEOUT_S) -> PublishOutcome:
        future: asyncio.Future[PublishAcknowledged] = asyncio.get_running_loop().create_future()
        self._acks[event.id] = future
        try:
            await self._send(self.session.publish(event))
            ack = await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return PublishOutcome(self.url, False, f"no OK within {timeout:g} s")
        except (ConnectionError, ConnectionClosed) as exc:
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
                except (ConnectionError, ConnectionClosed):
                    pass

    async def fetch(
        self, filters: list[dict[str, Any]], timeout: float = REPLY_TIMEOUT_S, event_budget: int | None = None
    ) -> FetchResult:
        """Stored events matching `filters`, until EOSE, a close, or the timeout."""
        result = FetchResult(self.url)

        async def collect() -> None:
            async for item in self.subscribe(filters, event_budget):
                if isinstance(item, EventReceived):
                    result.events.append(item.event)
                elif isinstance(item, EndOfStoredEvents):
                    result.complete = True
                    return
                elif isinstance(item, SubscriptionClosed):
                    result.problem = item.message
                    return

        try:
            await asyncio.wait_for(collect(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            result.problem = f"no EOSE within {timeout:g} s"
        except (ConnectionError, ConnectionClosed) as exc:
            result.problem = f"relay {exc}"
        return result


class RelayPool:
    """Connections to a list of relays; publishes to all, fetches from all, survives any failing."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        open_timeout: float = OPEN_TIMEOUT_S,
        reply_timeout: float = REPLY_TIMEOUT_S,
        event_budget: int | None = None,
    ) -> None:
        self.urls = list(dict.fromkeys(check_relay_url(u) for u in urls))
        if not self.urls:
            raise SocialError("no relays: give --relay URL or configure a relay list")
        self.open_timeout = open_timeout
        self.reply_timeout = reply_timeout
        self.event_budget = event_budget
        self.connections: dict[str, RelayConnection] = {}
        self.unreachable: dict[str, str] = {}

    async def __aenter__(self) -> RelayPool:
        async def open_one(url: str) -> None:
            try:
                self.connections[url] = await RelayConnection(
                    url, open_timeout=self.open_timeout, event_budget=self.event_budget
                ).open()
            except SocialError as exc:
                self.unreachable[url] = str(exc)
                log.warning("%s", exc)

        await asyncio.gather(*(open_one(url) for url in self.urls))
        if not self.connections:
            await self.close()
            raise SocialError("no relay reachable: " + "; ".join(self.unreachable.values()))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        connections, self.connections = list(self.connections.values()), {}
        async with asyncio.TaskGroup() as group:  # each takes its expected failures; a bug in one is raised
            for connection in connections:
                group.create_task(connection.close())

    async def publish(self, event: Event) -> list[PublishOutcome]:
        outcomes = await asyncio.gather(
            *(c.publish(event, self.reply_timeout) for c in self.connections.values())
        )
        failed = [PublishOutcome(url, False, reason) for url, reason in self.unreachable.items()]
        return list(outcomes) + failed

    async def publish_or_raise(self, event: Event) -> list[PublishOutcome]:
        outcomes = await self.publish(event)
        if not any(o.accepted for o in outcomes):
            raise SocialError(
                "no relay accepted the event: " + "; ".join(f"{o.relay}: {o.message or 'refused'}" for o in outcomes)
            )
        return outcomes

    async def fetch(self, filters: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[FetchResult]]:
        """Events from every relay, each id once (relays overlap), and each relay's result."""
        results = await asyncio.gather(
            *(c.fetch(filters, self.reply_timeout, self.event_budget) for c in self.connections.values())
        )
        seen: set[str] = set()
        events = []
        for result in results:
            if result.problem:
                log.warning("relay %s: %s", result.relay, result.problem)
            for event in result.events:
                event_id = event.get("id")
                if isinstance(event_id, str) and event_id not in seen:
                    seen.add(event_id)
                    events.append(event)
        return events, list(results)
