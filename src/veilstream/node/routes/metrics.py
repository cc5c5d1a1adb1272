"""Metrics for the node's user (`GET /api/v1/metrics`, Prometheus text format): what it
moved, paid, earned and cashed. Read at scrape time from the node's own figures through
a registry of this node's (not prometheus_client's global one, which would mix in whatever
else the process registered); the token is required as everywhere, and nothing is pushed
anywhere: a scraper the user runs pulls.

Counters never go down while the node runs, although the parts they sum restart (a paused
content's service, a stopped stream): what a part had counted when it restarted or went is
kept. A node restart starts them again, as any process's counters. Labels stay bounded:
totals, plus bytes per content (its id's first 16 hex digits) for the busiest
`CONTENT_SERIES_MAX` contents.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

CONTENT_SERIES_MAX = 20  # per-content series: a node seeding hundreds of contents stays a short page
CONTENT_LABEL_HEX = 16  # as the CLI and the log shorten content ids

# name (without a counter's `_total`), type, help: what a scrape shows
METRICS = (
    ("veil_uploaded_bytes", "counter", "Ciphertext bytes sent to peers"),
    ("veil_downloaded_bytes", "counter", "Ciphertext bytes received from peers (verified or not)"),
    ("veil_content_uploaded_bytes", "counter", "Ciphertext bytes sent to peers, per content (the busiest)"),
    ("veil_content_downloaded_bytes", "counter", "Ciphertext bytes received from peers, per content (the busiest)"),
    ("veil_peers", "gauge", "Peers connected, over every content"),
    ("veil_contents_seeded", "gauge", "Contents this node seeds now (not paused)"),
    ("veil_streams_open", "gauge", "Paid streams open on this node"),
    ("veil_slices_paid", "counter", "Slices this node's streams received from a source and paid for"),
    ("veil_cheques_signed", "counter", "Cheques this node's streams signed"),
    ("veil_cheques_accepted", "counter", "Cheques this node accepted for the contents it seeds or sells"),
    ("veil_key_deliveries", "counter", "Key deliveries this node's streams received"),
    ("veil_keys_released", "counter", "Key releases this node's key agent made"),
    ("veil_stalls", "counter", "Media reads that gave up with no verified slice in time"),
    ("veil_earned_wei", "gauge", "What viewers' cheques to this node add up to, for the contents it seeds now"),
    ("veil_uncashed_wei", "gauge", "Accepted cheques' value not yet cashed on chain"),
    ("veil_cashed_wei", "counter", "Value of the cheques cashed on chain since the node started"),
    ("veil_cash_batches", "counter", "Cash transactions sent since the node started"),
    ("veil_chain_up", "gauge", "1 while the chain answers, 0 while it does not"),
)


class RunningTotal:
    """A counter summed over parts that restart from zero or go away: what a part had at the
    last look is kept when it drops (what it counted after that look and before it went is
    lost: a counter may undercount, never go down)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}
        self._gone = 0

    def total(self, parts: dict[Hashable, int]) -> int:
        for key, value in self._last.items():
            if parts.get(key, 0) < value:
                self._gone += value
        self._last = dict(parts)
        return self._gone + sum(parts.values())


class NodeCollector:
    """Reads the node's figures at every scrape (on the event loop, which owns them)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._totals: dict[str, RunningTotal] = {}

    def describe(self) -> Iterator[Metric]:
        for name, kind, doc in METRICS:
            yield _family(name, kind, doc)

    def _running(self, name: str, parts: dict[Hashable, int]) -> int:
        return self._totals.setdefault(name, RunningTotal()).total(parts)

    def collect(self) -> Iterator[Metric]:
        node = self._node
        status = node.status()
        transfers = list(node.swarm.transfers.values()) if node.swarm is not None else []
        up = {t.info_hash: t.swarm.uploaded_bytes for t in transfers}
        down = {t.info_hash: t.swarm.downloaded_bytes for t in transfers}
        contents = {c["content_id"]: c for c in status["contents"]}
        viewings = dict(node.viewings)
        chain = status["chain"]
        values = {
            "veil_uploaded_bytes": self._running("up", up),
            "veil_downloaded_bytes": self._running("down", down),
            "veil_peers": sum(t.peers for t in transfers),
            "veil_contents_seeded": sum(1 for c in contents.values() if not c["paused"]),
            "veil_streams_open": len(viewings),
            "veil_slices_paid": self._running("slices", {cid: sum(v.stream.stats.slices_by_source.values())
                                                         for cid, v in viewings.items()}),
            "veil_cheques_signed": self._running("signed", {cid: v.cheques_signed for cid, v in viewings.items()}),
            "veil_cheques_accepted": self._running("accepted", {cid: c["cheques_accepted"]
                                                                for cid, c in contents.items()}),
            "veil_key_deliveries": self._running("deliveries", {cid: v.stream.stats.key_deliveries
                                                                for cid, v in viewings.items()}),
            "veil_keys_released": self._running("released", {cid: c["keys_released"] for cid, c in contents.items()}),
            "veil_stalls": self._running("stalls", {cid: v.stalls for cid, v in viewings.items()}),
            "veil_earned_wei": status["earned_wei"],
            "veil_uncashed_wei": chain["uncashed_wei"],
            "veil_cashed_wei": chain["paid_wei"],
            "veil_cash_batches": chain["batches_cashed"],
            "veil_chain_up": 1 if chain["answers"] else 0,
        }
        busiest = sorted(up, key=lambda h: up[h] + down[h], reverse=True)[:CONTENT_SERIES_MAX]
        per_content = {"veil_content_uploaded_bytes": up, "veil_content_downloaded_bytes": down}
        for name, kind, doc in METRICS:
            if name in per_content:
                family = _family(name, kind, doc, labels=["content"])
                for info_hash in busiest:
                    family.add_metric([info_hash.hex()[:CONTENT_LABEL_HEX]], per_content[name][info_hash])
            else:
                family = _family(name, kind, doc, value=values[name])
            yield family


def _family(name: str, kind: str, doc: str, **kwargs) -> Metric:
    return (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, **kwargs)


def router(node: Node) -> APIRouter:
    api = APIRouter()
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))

    @api.get("/metrics", response_class=Response)
    async def metrics() -> Response:  # async: the collector reads the loop's state on the loop
        """The node's figures in Prometheus text format, for a scraper the user runs."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api
