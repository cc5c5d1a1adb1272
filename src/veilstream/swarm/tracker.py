"""HTTP trackers (BEP 3, compact peer lists per BEP 23): a client that announces, and an
embedded tracker for local networks (`veil tracker`).

The request and response formats and the tracker's bookkeeping are plain functions and
a state class (testable without sockets); the asyncio parts only move bytes. For a v2
torrent the info-hash sent to a tracker is the 32-byte hash truncated to 20 (BEP 52).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from veilstream.content import bencode
from veilstream.swarm.errors import TrackerError

MAX_RESPONSE_BYTES = 1 << 20  # a compact reply for 50 peers is 300 bytes; 1 MiB is far past any tracker
MAX_REQUEST_HEAD_BYTES = 8 * 1024  # an announce URL is < 1 KiB; nginx's default header buffer is 8 KiB
MAX_SWARMS = 10_000  # contents the embedded tracker follows; the oldest idle ones are forgotten first
MAX_PEERS_PER_SWARM = 2_000  # opentracker answers at most 200 per request; we remember 10× that
MAX_NUMWANT = 200  # peers in one answer (opentracker's cap)
ANNOUNCE_INTERVAL_S = 60  # what the embedded tracker asks clients to use; small for local networks
PEER_EXPIRY_S = 3 * ANNOUNCE_INTERVAL_S  # a peer that missed three announces is gone
TRACKER_CLIENT_TIMEOUT_S = 10.0  # how long the server waits for a client's request head


@dataclass(frozen=True)
class AnnounceResponse:
    interval_s: float
    peers: list[tuple[str, int]] = field(default_factory=list)
    complete: int | None = None
    incomplete: int | None = None


def announce_url(base: str, info_hash: bytes, peer_id: bytes, port: int, *, uploaded: int = 0,
                 downloaded: int = 0, left: int = 0, event: str | None = None, numwant: int = 50) -> str:
    params = [
        ("info_hash", quote_from_bytes(info_hash[:20], safe="")),
        ("peer_id", quote_from_bytes(peer_id, safe="")),
        ("port", str(port)),
        ("uploaded", str(uploaded)),
        ("downloaded", str(downloaded)),
        ("left", str(left)),
        ("compact", "1"),
        ("numwant", str(numwant)),
    ]
    if event:
        params.append(("event", event))
    query = "&".join(f"{k}={v}" for k, v in params)
    return f"{base}{'&' if '?' in base else '?'}{query}"


def parse_announce_response(body: bytes) -> AnnounceResponse:
    try:
        value = bencode.decode(body)
    except bencode.BencodeError as exc:
        raise TrackerError(f"the tracker's answer is not bencoded ({exc})") from None
    if not isinstance(value, dict):
        raise TrackerError("the tracker's answer is not a dictionary")
    if b"failure reason" in value:
        reason = value[b"failure reason"]
        raise TrackerError(f"tracker refused: {reason.decode('utf-8', 'replace') if isinstance(reason, bytes) else reason}")
    interval = value.get(b"interval")
    if not isinstance(interval, int) or interval <= 0:
        raise TrackerError("the tracker's answer has no interval")
    peers: list[tuple[str, int]] = []
    raw = value.get(b"peers", b"")
    if isinstance(raw, bytes):
        if len(raw) % 6:
            raise TrackerError("compact peer list is not a multiple of 6 bytes")
        for i in range(0, len(raw), 6):
            ip = str(ipaddress.IPv4Address(raw[i : i + 4]))
            (port,) = struct.unpack(">H", raw[i + 4 : i + 6])
            if port:
                peers.append((ip, port))
    elif isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict) and isinstance(entry.get(b"ip"), bytes) and isinstance(entry.get(b"port"), int):
                if 0 < entry[b"port"] < 65536:
                    peers.append((entry[b"ip"].decode("ascii", "replace"), entry[b"port"]))
    complete, incomplete = value.get(b"complete"), value.get(b"incomplete")
    return AnnounceResponse(float(interval), peers, complete if isinstance(complete, int) else None,
                            incomplete if isinstance(incomplete, int) else None)


# -- the embedded tracker's state ------------------------------------------------------


@dataclass
class _TrackedPeer:
    ip: str
    port: int
    left: int
    seen: float


class TrackerState:
    """Who announced what; answers announces with compact peer lists."""

    def __init__(self, *, interval_s: int = ANNOUNCE_INTERVAL_S, rng: random.Random | None = None) -> None:
        self.interval_s = interval_s
        self.swarms: dict[bytes, dict[bytes, _TrackedPeer]] = {}
        self._rng = rng or random.Random()

    def announce(self, query: dict[str, bytes], client_ip: str, now: float) -> bytes:
        try:
            return bencode.encode(self._announce(query, client_ip, now))
        except _Refusal as refusal:
            return bencode.encode({b"failure reason": str(refusal).encode()})

    def _announce(self, query: dict[str, bytes], client_ip: str, now: float) -> dict:
        info_hash, peer_id = query.get("info_hash", b""), query.get("peer_id", b"")
        if len(info_hash) != 20 or len(peer_id) != 20:
            raise _Refusal("info_hash and peer_id must be 20 bytes")
        try:
            port = int(query.get("port", b"0"))
            left = int(query.get("left", b"0"))
            numwant = min(MAX_NUMWANT, int(query.get("numwant", b"50")))
        except ValueError:
            raise _Refusal("port, left and numwant must be integers") from None
        if not 0 < port < 65536:
            raise _Refusal("port out of range")
        ip = client_ip
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise _Refusal("only IPv4 peers are tracked") from None
        event = query.get("event", b"").decode("ascii", "replace")
        self._expire(now)
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            if event == "stopped":
                return {b"interval": self.interval_s, b"peers": b""}
            if len(self.swarms) >= MAX_SWARMS:
                raise _Refusal("tracker is full")
            swarm = self.swarms[info_hash] = {}
        if event == "stopped":
            swarm.pop(peer_id, None)
        elif peer_id in swarm or len(swarm) < MAX_PEERS_PER_SWARM:
            swarm[peer_id] = _TrackedPeer(ip, port, left, now)
        others = [p for pid, p in swarm.items() if pid != peer_id]
        self._rng.shuffle(others)
        compact = b"".join(ipaddress.IPv4Address(p.ip).packed + struct.pack(">H", p.port) for p in others[: max(0, numwant)])
        seeds = sum(1 for p in swarm.values() if p.left == 0)
        return {b"interval": self.interval_s, b"peers": compact, b"complete": seeds, b"incomplete": len(swarm) - seeds}

    def _expire(self, now: float) -> None:
        for info_hash in list(self.swarms):
            swarm = self.swarms[info_hash]
            for pid in [pid for pid, p in swarm.items() if now - p.seen > PEER_EXPIRY_S]:
                del swarm[pid]
            if not swarm:
                del self.swarms[info_hash]


class _Refusal(Exception):
    pass


def parse_request_head(head: bytes) -> tuple[str, str, dict[str, bytes]]:
    """(method, path, query) of an HTTP request head; query values are raw bytes."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("malformed request line")
    method, target = parts[0], parts[1]
    path, _, raw_query = target.partition("?")
    query: dict[str, bytes] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        query[key] = unquote_to_bytes(value)
    return method, path, query


def _http_response(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    return (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


class TrackerServer:
    """The embedded HTTP tracker: `GET /announce`."""

    def __init__(self, state: TrackerState | None = None) -> None:
        self.state = state or TrackerState()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server.sockets[0].getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/announce"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(TRACKER_CLIENT_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_HEAD_BYTES:
                raise ValueError("request head too large")
            method, path, query = parse_request_head(head)
            if method != "GET" or path != "/announce":
                writer.write(_http_response("404 Not Found", b"only /announce is served here\n"))
            else:
                peer_ip = writer.get_extra_info("peername")[0]
                body = self.state.announce(query, peer_ip, time.monotonic())
                writer.write(_http_response("200 OK", body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError, ConnectionError):
            if not writer.is_closing():
                writer.write(_http_response("400 Bad Request", b"bad request\n"))
        finally:
            writer.close()


async def http_get(url: str, timeout_s: float) -> bytes:
    """The body of a GET over plain HTTP (what trackers on a local network speak)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise TrackerError(f"only http:// trackers are supported, not {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(parts.hostname, port)
            try:
                writer.write(f"GET {target} HTTP/1.0\r\nHost: {parts.hostname}:{port}\r\nUser-Agent: Veilstream\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read(MAX_RESPONSE_BYTES + 1)
                while len(raw) <= MAX_RESPONSE_BYTES:
                    more = await reader.read(MAX_RESPONSE_BYTES + 1 - len(raw))
                    if not more:
                        break
                    raw += more
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise TrackerError(f"cannot reach tracker {parts.hostname}:{port} ({exc or 'timed out'})") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise TrackerError("the tracker's answer is too large")
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if not sep or len(status) < 2 or status[1] != b"200":
        raise TrackerError(f"tracker answered {head[:60]!r}")
    return body


async def announce(url: str, info_hash: bytes, peer_id: bytes, port: int, *, timeout_s: float = 10.0, **kwargs) -> AnnounceResponse:
    body = await http_get(announce_url(url, info_hash, peer_id, port, **kwargs), timeout_s)
    return parse_announce_response(body)

