"""Live state: one Server-Sent Events stream of what changes on the node (the kinds are in
`node.live`), and the snapshot a client resyncs from.

A client takes `GET /api/v1/snapshot`, then listens to `GET /api/v1/events?last_event_id=`
the snapshot's `last_event_id`: it misses nothing in between. An EventSource that
reconnects sends `Last-Event-ID` itself and gets exactly what it missed, or a `resync`
event (then the snapshot again). The guard in `node.api` decides who may listen, as for
every route: the token now; a browser's EventSource, which cannot send headers, comes with
the app's session instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from veilstream.errors import VeilError

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

KEEPALIVE = b": keep-alive\n\n"
RECONNECT_AFTER_MS = 2000  # the EventSource's `retry:`: soon after a restart of the node, not in a tight loop


class BadEventId(VeilError):
    http_status = 400


def parse_event_id(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise BadEventId(f"Last-Event-ID must be an event id (a whole number), not {text[:40]!r}") from None
    if value < 0:
        raise BadEventId(f"Last-Event-ID must not be negative, not {value}")
    return value


def router(node: Node) -> APIRouter:
    api = APIRouter()
    hub = node.live.hub

    @api.get("/snapshot")
    async def snapshot() -> dict[str, Any]:
        """The node's whole state now and the id of the last event it includes: listen to
        `/events` from that id on."""
        last = hub.last_id  # taken first: what changes after it comes again as an event
        status = node.status()
        return {"last_event_id": last, "status": status, "streams": status["streams"]}

    @api.get("/events", response_class=StreamingResponse)
    async def events(request: Request, last_event_id: str | None = None):
        """Server-Sent Events (`text/event-stream`): `id:`, `event:` (its kind) and `data:`
        (JSON) per event, a comment every `node.events_keepalive_s` while idle; resumes after
        the `Last-Event-ID` header (or the `last_event_id` parameter)."""
        after = parse_event_id(request.headers.get("last-event-id") or last_event_id)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        subscription = hub.subscribe(lambda: loop.call_soon_threadsafe(ready.set), after)
        keepalive_s = node.settings.events_keepalive_s

        async def body():
            try:
                yield f"retry: {RECONNECT_AFTER_MS}\n\n".encode()
                while True:
                    ready.clear()  # before taking: an event published after the take wakes the wait
                    taken = subscription.take()
                    if taken:
                        yield b"".join(event.encode() for event in taken)
                        continue
                    if subscription.ended:
                        return
                    try:
                        async with asyncio.timeout(keepalive_s):
                            await ready.wait()
                    except TimeoutError:
                        yield KEEPALIVE
            finally:
                subscription.close()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return api
