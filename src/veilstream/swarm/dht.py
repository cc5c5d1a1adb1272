"""A BEP 5 DHT node: trackerless discovery.

`DhtCore` is the protocol without IO: it answers KRPC queries (ping, find_node,
get_peers, announce_peer), keeps a Kademlia routing table and the peers announced to it,
and builds and matches our own queries. `Lookup` is one iterative get_peers walk toward
an info-hash, also without IO. `DhtNode` moves datagrams and runs lookups with timeouts.
For a v2 content the DHT key is the info-hash truncated to 20 bytes (BEP 52).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import struct
import time
from dataclasses import dataclass, field

from veilstream.content import bencode
from veilstream.swarm.errors import SwarmError
from veilstream.swarm.settings import SwarmSettings

log = logging.getLogger("veilstream.swarm.dht")

K = 8  # BEP 5: bucket size and lookup width
ALPHA = 3  # Kademlia: queries in flight per lookup
ID_BITS = 160
MAX_DATAGRAM_BYTES = 1500  # one Ethernet MTU: KRPC messages fit; larger ones are dropped unread
MAX_ROUTING_NODES = K * ID_BITS  # one full bucket per prefix length
MAX_TORRENTS = 10_000  # info-hashes whose announced peers we remember
MAX_PEERS_PER_TORRENT = 200  # libtorrent's dht_max_peers_reply is 100; we keep twice that
MAX_PEERS_PER_REPLY = 50  # keeps a get_peers reply under the MTU (50 × 6 + overhead)
PEER_TTL_S = 30 * 60  # BEP 5: announced peers expire (libtorrent: 30 min)
TOKEN_ROTATE_S = 5 * 60  # BEP 5: tokens change every five minutes, the previous one stays valid
MAX_PENDING_QUERIES = 1024  # our own outstanding queries; more means we are flooding


class KrpcError(Exception):
    """A KRPC message we cannot use (malformed, or an error reply)."""


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def pack_nodes(nodes: list[tuple[bytes, tuple[str, int]]]) -> bytes:
    return b"".join(nid + ipaddress.IPv4Address(ip).packed + struct.pack(">H", port) for nid, (ip, port) in nodes)


def unpack_nodes(raw: bytes) -> list[tuple[bytes, tuple[str, int]]]:
    if len(raw) % 26:
        raise KrpcError("compact node list is not a multiple of 26 bytes")
    out = []
    for i in range(0, len(raw), 26):
        port = struct.unpack(">H", raw[i + 24 : i + 26])[0]
        if port:
            out.append((raw[i : i + 20], (str(ipaddress.IPv4Address(raw[i + 20 : i + 24])), port)))
    return out


def pack_peer(ip: str, port: int) -> bytes:
    return ipaddress.IPv4Address(ip).packed + struct.pack(">H", port)


def unpack_peer(raw: bytes) -> tuple[str, int] | None:
    if len(raw) != 6:
        return None
    port = struct.unpack(">H", raw[4:])[0]
    return (str(ipaddress.IPv4Address(raw[:4])), port) if port else None


@dataclass
class _Pending:
    method: bytes
    address: tuple[str, int]
    sent: float


@dataclass
class Reply:
    """A response to one of our queries."""

    transaction: bytes
    method: bytes
    address: tuple[str, int]
    node_id: bytes
    nodes: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    token: bytes | None = None


class DhtCore:
    def __init__(self, node_id: bytes | None = None, *, secret: bytes | None = None) -> None:
        self.node_id = node_id or os.urandom(20)
        self.table: dict[bytes, tuple[tuple[str, int], float]] = {}  # node id → (address, last seen)
        self.peers: dict[bytes, dict[tuple[str, int], float]] = {}  # info-hash → peer → announced at
        self._secrets = [secret or os.urandom(16), secret or os.urandom(16)]
        self._rotated = 0.0
        self._pending: dict[bytes, _Pending] = {}
        self._next_tid = 0

    # -- tokens -------------------------------------------------------------------------
    def _token(self, ip: str, secret: bytes) -> bytes:
        return hmac.new(secret, ip.encode(), "sha1").digest()[:8]

    def _rotate(self, now: float) -> None:
        if now - self._rotated >= TOKEN_ROTATE_S:
            self._secrets = [os.urandom(16), self._secrets[0]]
            self._rotated = now

    # -- routing table --------------------------------------------------------------------
    def add_node(self, node_id: bytes, address: tuple[str, int], now: float) -> None:
        if len(node_id) != 20 or node_id == self.node_id:
            return
        if node_id in self.table or len(self.table) < MAX_ROUTING_NODES:
            bucket = ID_BITS - distance(node_id, self.node_id).bit_length()
            same = [n for n in self.table if ID_BITS - distance(n, self.node_id).bit_length() == bucket]
            if node_id in self.table or len(same) < K:
                self.table[node_id] = (address, now)
                return
            oldest = min(same, key=lambda n: self.table[n][1])
            if now - self.table[oldest][1] > 15 * 60:  # BEP 5: nodes silent for 15 min are questionable
                del self.table[oldest]
                self.table[node_id] = (address, now)

    def closest(self, target: bytes, count: int = K) -> list[tuple[bytes, tuple[str, int]]]:
        ids = sorted(self.table, key=lambda n: distance(n, target))[:count]
        return [(n, self.table[n][0]) for n in ids]

    # -- our queries ------------------------------------------------------------------------
    def query(self, method: bytes, args: dict, address: tuple[str, int], now: float) -> tuple[bytes, bytes]:
        """(transaction id, datagram) for a query of ours."""
        if len(self._pending) >= MAX_PENDING_QUERIES:
            raise SwarmError("too many DHT queries in flight")
        self._next_tid = (self._next_tid + 1) & 0xFFFF
        tid = struct.pack(">H", self._next_tid)
        self._pending[tid] = _Pending(method, address, now)
        message = {b"t": tid, b"y": b"q", b"q": method, b"a": {b"id": self.node_id, **args}}
        return tid, bencode.encode(message)

    def forget(self, tid: bytes) -> None:
        self._pending.pop(tid, None)

    # -- incoming ---------------------------------------------------------------------------
    def receive(self, data: bytes, address: tuple[str, int], now: float) -> tuple[bytes | None, Reply | None]:
        """Handle one datagram: (our answer to send back, or None; a reply to one of our
        queries, or None). Malformed datagrams are dropped silently, as BEP 5 peers do."""
        if len(data) > MAX_DATAGRAM_BYTES:
            return None, None
        try:
            message = bencode.decode(data)
        except bencode.BencodeError:
            return None, None
        if not isinstance(message, dict) or not isinstance(message.get(b"t"), bytes):
            return None, None
        kind = message.get(b"y")
        try:
            if kind == b"q":
                return self._answer(message, address, now), None
            if kind == b"r":
                return None, self._reply(message, address, now)
            if kind == b"e":
                self._pending.pop(message[b"t"], None)
        except KrpcError:
            return None, None
        return None, None

    def _answer(self, message: dict, address: tuple[str, int], now: float) -> bytes:
        tid, method, args = message[b"t"], message.get(b"q"), message.get(b"a")
        if not isinstance(args, dict) or not isinstance(args.get(b"id"), bytes) or len(args[b"id"]) != 20:
            return _error(tid, 203, "missing or bad id")
        self._rotate(now)
        self.add_node(args[b"id"], address, now)
        body: dict = {b"id": self.node_id}
        if method == b"ping":
            pass
        elif method == b"find_node":
            target = args.get(b"target")
            if not isinstance(target, bytes) or len(target) != 20:
                return _error(tid, 203, "bad target")
            body[b"nodes"] = pack_nodes(self.closest(target))
        elif method == b"get_peers":
            info_hash = args.get(b"info_hash")
            if not isinstance(info_hash, bytes) or len(info_hash) != 20:
                return _error(tid, 203, "bad info_hash")
            body[b"token"] = self._token(address[0], self._secrets[0])
            known = self._live_peers(info_hash, now)
            if known:
                body[b"values"] = [pack_peer(*p) for p in known[:MAX_PEERS_PER_REPLY]]
            body[b"nodes"] = pack_nodes(self.closest(info_hash))
        elif method == b"announce_peer":
            info_hash, token, port = args.get(b"info_hash"), args.get(b"token"), args.get(b"port")
            if not isinstance(info_hash, bytes) or len(info_hash) != 20 or not isinstance(token, bytes):
                return _error(tid, 203, "bad announce")
            if not any(hmac.compare_digest(token, self._token(address[0], s)) for s in self._secrets):
                return _error(tid, 203, "bad token")
            if args.get(b"implied_port") == 1:
                port = address[1]
            if not isinstance(port, int) or not 0 < port < 65536:
                return _error(tid, 203, "bad port")
            self._remember(info_hash, (address[0], port), now)
        else:
            return _error(tid, 204, "method unknown")
        return bencode.encode({b"t": tid, b"y": b"r", b"r": body})

    def _reply(self, message: dict, address: tuple[str, int], now: float) -> Reply | None:
        pending = self._pending.pop(message[b"t"], None)
        if pending is None or pending.address != address:
            return None
        body = message.get(b"r")
        if not isinstance(body, dict) or not isinstance(body.get(b"id"), bytes) or len(body[b"id"]) != 20:
            raise KrpcError("reply without an id")
        self.add_node(body[b"id"], address, now)
        reply = Reply(message[b"t"], pending.method, address, body[b"id"])
        nodes = body.get(b"nodes")
        if isinstance(nodes, bytes):
            reply.nodes = unpack_nodes(nodes)
        values = body.get(b"values")
        if isinstance(values, list):
            reply.peers = [p for p in (unpack_peer(v) for v in values if isinstance(v, bytes)) if p]
        token = body.get(b"token")
        reply.token = token if isinstance(token, bytes) else None
        return reply

    def _remember(self, info_hash: bytes, peer: tuple[str, int], now: float) -> None:
        if info_hash not in self.peers and len(self.peers) >= MAX_TORRENTS:
            return
        peers = self.peers.setdefault(info_hash, {})
        if peer in peers or len(peers) < MAX_PEERS_PER_TORRENT:
            peers[peer] = now

    def _live_peers(self, info_hash: bytes, now: float) -> list[tuple[str, int]]:
        peers = self.peers.get(info_hash, {})
        for peer in [p for p, t in peers.items() if now - t > PEER_TTL_S]:
            del peers[peer]
        return list(peers)


def _error(tid: bytes, code: int, text: str) -> bytes:
    return bencode.encode({b"t": tid, b"y": b"e", b"e": [code, text.encode()]})


class Lookup:
    """An iterative get_peers walk toward `target` (Kademlia): query the ALPHA closest
    unqueried nodes, learn closer ones, stop when the K closest have all answered."""

    def __init__(self, target: bytes, start: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.target = target
        self.candidates: dict[bytes, tuple[str, int]] = dict(start)
        self.queried: set[bytes] = set()
        self.answered: dict[bytes, bytes | None] = {}  # node id → token
        self.peers: set[tuple[str, int]] = set()

    def next_queries(self, in_flight: int) -> list[tuple[bytes, tuple[str, int]]]:
        ranked = sorted(self.candidates, key=lambda n: distance(n, self.target))
        fresh = [n for n in ranked[:K] if n not in self.queried]
        picks = fresh[: max(0, ALPHA - in_flight)]
        self.queried.update(picks)
        return [(n, self.candidates[n]) for n in picks]

    def on_reply(self, reply: Reply) -> None:
        self.answered[reply.node_id] = reply.token
        self.candidates.setdefault(reply.node_id, reply.address)
        for nid, address in reply.nodes:
            self.candidates.setdefault(nid, address)
        self.peers.update(reply.peers)

    def on_timeout(self, node_id: bytes) -> None:
        self.candidates.pop(node_id, None)

    @property
    def done(self) -> bool:
        ranked = sorted(self.candidates, key=lambda n: distance(n, self.target))[:K]
        return all(n in self.queried for n in ranked)

    def announce_targets(self) -> list[tuple[bytes, tuple[str, int], bytes]]:
        ranked = sorted((n for n, t in self.answered.items() if t), key=lambda n: distance(n, self.target))[:K]
        return [(n, self.candidates[n], self.answered[n]) for n in ranked if n in self.candidates]


class _DhtProtocol(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, address) -> None:
        self.node._datagram(data, (address[0], address[1]))


class DhtNode:
    """A DHT node on one UDP port."""

    def __init__(self, settings: SwarmSettings = SwarmSettings(), core: DhtCore | None = None) -> None:
        self.settings = settings
        self.core = core or DhtCore()
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[bytes, asyncio.Future] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _DhtProtocol(self), local_addr=(host, port))
        except OSError as exc:
            raise SwarmError(f"cannot open the DHT port {host}:{port}: {exc.strerror}") from None
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        return self._transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for waiter in self._waiters.values():
            waiter.cancel()

    def _datagram(self, data: bytes, address: tuple[str, int]) -> None:
        answer, reply = self.core.receive(data, address, time.monotonic())
        if answer is not None:
            self._transport.sendto(answer, address)
        if reply is not None:
            waiter = self._waiters.pop(reply.transaction, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)

    async def _query(self, method: bytes, args: dict, address: tuple[str, int]) -> Reply | None:
        tid, datagram = self.core.query(method, args, address, time.monotonic())
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[tid] = waiter
        try:
            self._transport.sendto(datagram, address)
            async with asyncio.timeout(self.settings.dht_query_timeout_s):
                return await waiter
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(tid, None)
            self.core.forget(tid)

    async def bootstrap(self, addresses: list[tuple[str, int]]) -> int:
        """Join through known nodes: find our own neighbourhood. Returns nodes known."""
        replies = await asyncio.gather(*(self._query(b"find_node", {b"target": self.core.node_id}, a) for a in addresses))
        for reply in replies:
            for nid, address in reply.nodes if reply else []:
                self.core.add_node(nid, address, time.monotonic())
        return len(self.core.table)

    async def get_peers(self, info_hash: bytes, *, announce_port: int | None = None) -> list[tuple[str, int]]:
        """Peers for `info_hash` (20 bytes); announce ourselves on `announce_port` too."""
        lookup = Lookup(info_hash, self.core.closest(info_hash, K * 2))
        if not lookup.candidates:
            raise SwarmError("the DHT routing table is empty: bootstrap from a known node first")
        in_flight: dict[asyncio.Task, bytes] = {}
        try:
            await self._look_up(lookup, info_hash, announce_port, in_flight)
        except TimeoutError:  # slow or silent nodes: what was found by the deadline is the answer
            log.info("dht lookup stopped after %.1f s with %d peers", self.settings.dht_lookup_timeout_s,
                     len(lookup.peers))
        return sorted(lookup.peers)

    async def _look_up(self, lookup: Lookup, info_hash: bytes, announce_port: int | None,
                       in_flight: dict[asyncio.Task, bytes]) -> None:
        async with asyncio.timeout(self.settings.dht_lookup_timeout_s):
            async with asyncio.TaskGroup() as group:
                while True:
                    for nid, address in lookup.next_queries(len(in_flight)):
                        task = group.create_task(self._query(b"get_peers", {b"info_hash": info_hash}, address))
                        in_flight[task] = nid
                    if not in_flight:
                        break
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        nid = in_flight.pop(task)
                        reply = task.result()
                        if reply is None:
                            lookup.on_timeout(nid)
                        else:
                            lookup.on_reply(reply)
                    if lookup.done and not in_flight:
                        break
                if announce_port:
                    for _nid, address, token in lookup.announce_targets():
                        group.create_task(self._query(
                            b"announce_peer", {b"info_hash": info_hash, b"port": announce_port, b"token": token}, address))

