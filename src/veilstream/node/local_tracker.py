"""The machine's local tracker: how the nodes of one machine (and a LAN's, pointed at it)
find each other's contents with no flags and no DHT.

Every node announces every content it seeds or streams to `http://127.0.0.1:<port>/announce`
(`VEIL_TRACKER_PORT`, default 6975). The first node up listens there (the swarm's embedded
`TrackerServer`); the others use it. When the node that ran it stops, another takes its
place within `CHECK_EVERY_S` (the tracker's state is rebuilt by the next announces: a
seeder without peers announces every few seconds, one with peers every minute).
`[node] local_tracker = false` leaves it out.
"""

from __future__ import annotations

import asyncio
import logging
import os

from veilstream.node.relays import port_listening
from veilstream.node.settings import NodeSettingsError
from veilstream.swarm import TrackerServer

log = logging.getLogger("veilstream.node")

DEFAULT_PORT = 6975
CHECK_EVERY_S = 15.0


def local_tracker_port() -> int:
    value = os.environ.get("VEIL_TRACKER_PORT")
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise NodeSettingsError(f"VEIL_TRACKER_PORT must be a port number (1–65535), not {value!r}")
    return int(value)


def local_tracker_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/announce"


class LocalTracker:
    """Runs the machine's tracker whenever no other process does, until cancelled."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = local_tracker_url(port)
        self.server: TrackerServer | None = None

    @property
    def ours(self) -> bool:
        return self.server is not None

    async def run(self) -> None:
        try:
            while True:
                if self.server is None and not await asyncio.to_thread(port_listening, self.port):
                    server = TrackerServer()
                    try:
                        await server.start("127.0.0.1", self.port)
                    except OSError as exc:  # another process was quicker
                        log.info("the local tracker on port %d is someone else's: %s", self.port, exc)
                    else:
                        self.server = server
                        log.info("this node runs the machine's local tracker at %s", self.url)
                await asyncio.sleep(CHECK_EVERY_S)
        finally:
            if self.server is not None:
                await self.server.close()
                self.server = None

    def status(self) -> dict[str, object]:
        return {"url": self.url, "ours": self.ours}
