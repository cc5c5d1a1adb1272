"""The node's live state: the event hub's ordering, resuming and bounds; the watch that
turns status changes into events; and, against a real `veil up`, the SSE stream, the
snapshot a client resyncs from, the Prometheus metrics, who may read them, and a stop that
does not wait on a listening client."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cli_harness import chain_flags, content_id_of, free_port, new_vault, ok, require_anvil, start, start_devnet, stop_all, veil
from test_node import STOP_LIMIT_S, Home, RunningNode
from veilstream.node.live import RESYNC, ChangeWatch, Event, EventHub
from veilstream.node.routes.metrics import METRICS, RunningTotal

FIRST_ID = 1_000_000
EVENT_WAIT_S = 20.0
KEEPALIVE_S = 0.5  # the module's node: its idle streams send comments often (15 s by default)  # the node's poll loop publishes within poll_interval_s; a loaded machine is slower


# -- the hub, without a node ------------------------------------------------------------
class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def drain(subscription) -> list[Event]:
    events = []
    while taken := subscription.take():
        events += taken
    return events


@given(st.integers(1, 50), st.integers(0, 200))
def test_ids_grow_by_one_from_the_first_and_the_ring_keeps_the_last_n(kept, published):
    hub = EventHub(kept, first_id=FIRST_ID)
    listener = hub.subscribe(Wakes())
    ids = [hub.publish("peers", {"n": i}).id for i in range(published)]
    assert ids == list(range(FIRST_ID, FIRST_ID + published))
    assert hub.last_id == FIRST_ID + published - 1
    assert len(hub._ring) == kept  # no growth, whatever was published
    if published > kept:  # the listener never read: it fell out of the ring
        assert [e.kind for e in drain(listener)] == [RESYNC]


@given(st.integers(1, 30), st.integers(0, 80), st.data())
def test_resuming_after_an_id_gives_exactly_the_missed_events_or_a_resync(kept, published, data):
    hub = EventHub(kept, first_id=FIRST_ID)
    for i in range(published):
        hub.publish("stream", {"i": i})
    last = hub.last_id
    after = data.draw(st.integers(FIRST_ID - 5, last + 5), label="Last-Event-ID")
    events = drain(hub.subscribe(Wakes(), after))
    oldest = max(FIRST_ID, last - kept + 1)
    if after > last:  # an id this run never gave: from an earlier run, or made up
        assert [e.kind for e in events] == [RESYNC] and events[0].id is None
    elif after + 1 >= oldest:
        assert [e.id for e in events] == list(range(after + 1, last + 1))
        assert [e.data["i"] for e in events] == [i - FIRST_ID for i in range(after + 1, last + 1)]
    else:
        assert [e.kind for e in events] == [RESYNC]
        assert "no longer kept" in events[0].data["reason"] and events[0].data["snapshot"] == "/api/v1/snapshot"


def test_an_id_from_an_earlier_run_is_too_old_for_the_next():
    # ids start at the start time in µs: the next run's first id is past anything the last gave
    first_run = EventHub(10, first_id=time.time_ns() // 1000)
    for _ in range(5):
        first_run.publish("peers", {})
    second_run = EventHub(10, first_id=time.time_ns() // 1000 + 1)
    assert [e.kind for e in drain(second_run.subscribe(Wakes(), first_run.last_id))] == [RESYNC]


def test_a_subscriber_too_slow_for_the_ring_is_dropped_with_a_resync_and_costs_nothing():
    hub = EventHub(8, first_id=FIRST_ID)
    slow, fast = hub.subscribe(Wakes()), hub.subscribe(Wakes())
    for i in range(20):
        hub.publish("stream", {"i": i})
        assert [e.data["i"] for e in fast.take()] == [i]  # one that keeps up is never dropped
    taken = slow.take()
    assert [e.kind for e in taken] == [RESYNC] and "too slowly" in taken[0].data["reason"]
    assert slow.ended and slow.take() == []
    assert hub.subscribers == 1 and not fast.ended
    assert taken[0].encode().startswith(b"event: resync\ndata: {")  # no id: the client's last id stands


def test_a_waiting_subscriber_is_woken_once_per_wait_not_once_per_event():
    hub = EventHub(100)
    wakes = Wakes()
    listener = hub.subscribe(wakes)
    hub.publish("peers", {})
    assert wakes.count == 0  # it was not waiting: it had not taken yet
    assert len(listener.take()) == 1 and listener.take() == []
    hub.publish("peers", {})
    hub.publish("peers", {})
    assert wakes.count == 1
    assert len(listener.take()) == 2


def test_a_long_backlog_comes_in_bounded_takes():
    hub = EventHub(1000)
    listener = hub.subscribe(Wakes(), after=0)
    for _ in range(250):
        hub.publish("stream", {})
    sizes = []
    while taken := listener.take():
        sizes.append(len(taken))
    assert sum(sizes) == 250 and max(sizes) <= 100


def test_closing_the_hub_ends_every_subscriber_after_what_it_had_not_taken():
    hub = EventHub(10)
    wakes = Wakes()
    listener = hub.subscribe(wakes)
    listener.take()
    hub.publish("status", {"chain_answers": False})
    hub.close()
    assert wakes.count == 2  # the event, then the close
    assert [e.kind for e in listener.take()] == ["status"]
    assert listener.take() == [] and listener.ended
    late = hub.subscribe(Wakes())
    assert late.take() == [] and late.ended and hub.subscribers == 0


def test_the_hub_refuses_a_resync_of_a_caller_and_an_empty_ring():
    with pytest.raises(ValueError):
        EventHub(0)
    with pytest.raises(ValueError):
        EventHub(5).publish(RESYNC, {})


def test_an_event_is_one_sse_record():
    assert Event(7, "peers", {"content_id": "ab", "peers": 2}).encode() == \
        b'id: 7\nevent: peers\ndata: {"content_id":"ab","peers":2}\n\n'
    assert b"\n\n" not in Event(1, "feed", {"text": "two\nlines"}).encode()[:-2]  # a newline in data stays escaped


# -- the watch: status changes become events ---------------------------------------------
def a_status(*, answers=True, contents=(), streams=(), batches=0, cashed=0, uncashed=0):
    return {"chain": {"answers": answers, "batches_cashed": batches, "paid_wei": cashed, "uncashed_wei": uncashed},
            "contents": [dict(c) for c in contents], "streams": [dict(s) for s in streams]}


def a_content(cid="aa", **changes):
    return {"content_id": cid, "role": "creator", "sells_keys": True, "paused": False, "peers": 0,
            "bytes_served": 0, "cheques_accepted": 0, "earned_wei": 0, "keys_released": 0, **changes}


def a_stream(cid="bb", **changes):
    return {"content_id": cid, "slices": 4, "slices_verified": 0, "paid_wei": 0, "sources": 0, **changes}


def test_the_watch_publishes_what_changed_and_nothing_when_nothing_did():
    watch = ChangeWatch()
    assert watch.changes(a_status(contents=[a_content()])) == []  # the first look learns: clients take the snapshot
    assert watch.changes(a_status(contents=[a_content()])) == []
    assert watch.changes(a_status(contents=[a_content(paused=True)])) == [("content", a_content(paused=True))]
    assert watch.changes(a_status(contents=[a_content(paused=True, peers=3)])) == [
        ("peers", {"content_id": "aa", "peers": 3})]
    paid = a_content(paused=True, peers=3, cheques_accepted=2, earned_wei=2000, bytes_served=99)
    assert watch.changes(a_status(contents=[paid])) == [
        ("payment", {"direction": "accepted", "content_id": "aa", "cheques_accepted": 2, "earned_wei": 2000,
                     "keys_released": 0})]
    assert watch.changes(a_status(answers=False)) == [("status", {"chain_answers": False}),
                                                      ("content", {"content_id": "aa", "removed": True})]
    assert watch.changes(a_status(batches=1, cashed=2000)) == [
        ("status", {"chain_answers": True}),
        ("payment", {"direction": "cashed", "batches_cashed": 1, "cashed_wei": 2000, "uncashed_wei": 0})]


def test_the_watch_follows_a_stream_from_open_to_stopped():
    watch = ChangeWatch()
    watch.changes(a_status())
    assert watch.changes(a_status(streams=[a_stream()])) == [("stream", {**a_stream(), "open": True})]
    assert watch.changes(a_status(streams=[a_stream()])) == []
    progressed = a_stream(slices_verified=2, paid_wei=2000, sources=1)
    assert watch.changes(a_status(streams=[progressed])) == [
        ("stream", {**progressed, "open": True}), ("payment", {"direction": "signed", "content_id": "bb",
                                                               "paid_wei": 2000})]
    assert watch.changes(a_status()) == [("stream", {"content_id": "bb", "open": False})]
    quick = a_stream(slices_verified=4, paid_wei=4000)  # paid whole between two looks
    assert watch.changes(a_status(streams=[quick])) == [
        ("stream", {**quick, "open": True}), ("payment", {"direction": "signed", "content_id": "bb", "paid_wei": 4000})]


@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(0, 1000), max_size=3), max_size=20))
def test_a_running_total_never_goes_down_while_its_parts_restart_and_go(looks):
    running, before = RunningTotal(), 0
    for parts in looks:
        now = running.total(parts)
        assert now >= before and now >= sum(parts.values())
        before = now


# -- a real node ----------------------------------------------------------------------------
class SseClient:
    """A reader of the node's event stream over a plain HTTP connection, as a script or an
    EventSource sees it."""

    def __init__(self, node, *, last_event_id: int | None = None, query: str = "",
                 timeout_s: float = EVENT_WAIT_S) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout_s)
        headers = {"Authorization": f"Bearer {node.token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", f"/api/v1/events{query}", headers=headers)
        self.response = self.connection.getresponse()

    def next_record(self) -> dict | None:
        """The next record up to a blank line (an event, a `retry:`, a comment), or None when
        the stream ended."""
        fields: dict = {}
        while line := self.response.readline():  # the body is chunked: read through the response
            line = line.decode().rstrip("\n")
            if not line:
                return fields
            if line.startswith(":"):
                fields["comment"] = line
                continue
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else int(value) if name == "id" else value
        return None

    def next_event(self) -> dict | None:
        """The next event ({"id", "event", "data"}), or None when the stream ended."""
        while (record := self.next_record()) is not None:
            if "event" in record:
                return record
        return None

    def next_comment(self) -> str:
        while (record := self.next_record()) is not None:
            if "comment" in record:
                return record["comment"]
        raise AssertionError("the stream ended")

    def event_where(self, wanted, deadline_s: float = EVENT_WAIT_S) -> dict:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:  # keep-alive comments come between events: the deadline holds
            record = self.next_record()
            assert record is not None, "the stream ended"
            if "event" in record and wanted(record):
                return record
        raise AssertionError(f"no such event within {deadline_s} s")

    def close(self) -> None:
        self.connection.close()


class Endpoint:
    """A node's API as these helpers need it (a `RunningNode` is one too)."""

    def __init__(self, home: Path, banner: str) -> None:
        self.port = int(re.search(r"API http://127.0.0.1:(\d+)/api/v1", banner)[1])
        self.token = (home / "node" / "api-token").read_text().strip()


def call(node, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def post(node, path: str) -> tuple[int, dict]:
    return call(node, "POST", path)


def raw_get(node, path: str, headers: dict) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("live") / "home")
    ok(veil(home, "init"))
    ok(veil(home, "wallet", "faucet", "1"))
    media = tmp_path_factory.mktemp("media") / "clip.bin"
    media.write_bytes(os.urandom(60_000))
    home.content_id = content_id_of(ok(veil(home, "publish", str(media), "--slice-size", "16KiB", "--price", "1000wei")))
    return home


@pytest.fixture(scope="module")
def node(home):
    running = RunningNode(home, "--set", f"node.events_keepalive_s={KEEPALIVE_S}")
    yield running
    if running.process.poll() is None:
        running.stop()


def is_content(cid: str, paused: bool):
    return lambda e: e["event"] == "content" and e["data"]["content_id"] == cid and e["data"]["paused"] is paused


def test_a_change_arrives_as_an_event_and_a_reconnect_gets_what_it_missed(node, home):
    cid = home.content_id
    status, snapshot = node.get("/api/v1/snapshot")
    assert status == 200 and snapshot["status"]["contents"][0]["content_id"] == cid and snapshot["streams"] == []
    listener = SseClient(node, query=f"?last_event_id={snapshot['last_event_id']}")  # the app's first connect
    assert listener.response.status == 200
    assert listener.response.getheader("content-type").startswith("text/event-stream")
    try:
        assert post(node, f"/api/v1/contents/{cid}/pause")[0] == 200
        paused = listener.event_where(is_content(cid, True))
        assert paused["id"] > snapshot["last_event_id"]
    finally:
        listener.close()
    assert post(node, f"/api/v1/contents/{cid}/resume")[0] == 200  # while no one listens
    deadline = time.monotonic() + EVENT_WAIT_S
    while (after := node.get("/api/v1/snapshot")[1])["last_event_id"] == paused["id"]:
        assert time.monotonic() < deadline, "resuming published nothing"
    assert after["status"]["contents"][0]["paused"] is False
    again = SseClient(node, last_event_id=paused["id"])  # as an EventSource reconnects
    try:
        missed = [again.next_event() for _ in range(after["last_event_id"] - paused["id"])]
        assert [e["id"] for e in missed] == list(range(paused["id"] + 1, after["last_event_id"] + 1))
        assert any(is_content(cid, False)(e) for e in missed)
    finally:
        again.close()


def test_an_id_the_node_no_longer_keeps_gets_a_resync_and_the_stream_ends(node):
    for old in (1, node.get("/api/v1/snapshot")[1]["last_event_id"] + 10):  # long gone; not this run's
        listener = SseClient(node, last_event_id=old)
        try:
            event = listener.next_event()
            assert event["event"] == RESYNC and "id" not in event and event["data"]["snapshot"] == "/api/v1/snapshot"
            assert listener.next_event() is None
        finally:
            listener.close()


def test_an_idle_stream_gets_keep_alive_comments(node):
    listener = SseClient(node)
    try:
        assert listener.next_comment() == ": keep-alive"
    finally:
        listener.close()


def test_a_bad_last_event_id_is_a_clear_400(node):
    status, _, body = raw_get(node, "/api/v1/events", {"Authorization": f"Bearer {node.token}",
                                                       "Last-Event-ID": "12; drop"})
    assert status == 400 and "Last-Event-ID must be an event id" in json.loads(body)["error"]


def test_metrics_are_prometheus_text_with_the_node_figures(node):
    status, content_type, text = raw_get(node, "/api/v1/metrics", {"Authorization": f"Bearer {node.token}"})
    assert status == 200 and content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert set(families) == {name for name, _, _ in METRICS}  # ours alone: no process or platform collector
    value = {name: f.samples[0].value for name, f in families.items() if f.samples and not f.samples[0].labels}
    assert value["veil_chain_up"] == 1 and value["veil_contents_seeded"] == 1 and value["veil_streams_open"] == 0
    assert families["veil_uploaded_bytes"].type == "counter"
    assert families["veil_uploaded_bytes"].samples[0].name == "veil_uploaded_bytes_total"
    per_content = families["veil_content_uploaded_bytes"].samples
    assert per_content and all(len(s.labels["content"]) == 16 for s in per_content)  # the seeded content's
    paths = node.get("/api/v1/openapi.json")[1]["paths"]
    assert {"/api/v1/events", "/api/v1/snapshot", "/api/v1/metrics"} <= set(paths)


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/snapshot", "/api/v1/metrics"])
def test_live_state_needs_the_token_and_the_node_s_own_origin(node, path):
    status, _, body = raw_get(node, path, {})
    assert status == 401 and "API token" in json.loads(body)["error"]
    status, _, body = raw_get(node, path, {"Authorization": "Bearer not-the-token"})
    assert status == 401
    status, _, body = raw_get(node, path, {"Authorization": f"Bearer {node.token}", "Origin": "http://evil.example"})
    assert status == 403 and json.loads(body)["error"]


def test_sigterm_with_a_client_listening_exits_cleanly_within_ten_seconds(node):
    # runs last in this file: it stops the module's node
    listener = SseClient(node, timeout_s=30)
    try:
        assert listener.response.status == 200
        code, took_s, out, err = node.stop()
        assert code == 0, err
        assert took_s < STOP_LIMIT_S and "stopped; cashed and claimed" in out
        assert listener.next_event() is None  # the stream ended, not cut mid-event
        log = (node.home / "logs" / "node.log").read_text()
        assert "graceful shutdown exceeded" not in log  # it ended by itself, not at the drain timeout
    finally:
        listener.close()


# -- two real nodes on a devnet: a paid stream, live -----------------------------------------
SLICE = 16 * 1024
PRICE_WEI = 10**12


def metric_values(node) -> dict[str, float]:
    status, _, text = raw_get(node, "/api/v1/metrics", {"Authorization": f"Bearer {node.token}"})
    assert status == 200
    return {s.name: s.value for f in text_string_to_metric_families(text.decode()) for s in f.samples if not s.labels}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    require_anvil()
    tmp = tmp_path_factory.mktemp("live-two")
    creator, viewer = tmp / "creator", tmp / "viewer"
    for home in (creator, viewer):
        new_vault(home)
    port, directory = free_port(), tmp / "devnet"
    chain = chain_flags(port, directory)
    node_chain = ["--set", f"node.chain_rpc_url=http://127.0.0.1:{port}",
                  "--set", f"node.chain_deployment={directory / 'devnet.json'}",
                  "--set", f"node.events_keepalive_s={KEEPALIVE_S}"]
    devnet, _ = start_devnet(creator, port, directory)
    processes = [devnet]
    try:
        plaintext = os.urandom(6 * (SLICE - 16) + 100)
        (tmp / "clip.bin").write_bytes(plaintext)
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        published = ok(veil(creator, "publish", str(tmp / "clip.bin"), "--slice-size", "16KiB",
                            "--price", f"{PRICE_WEI}wei", *chain))
        ok(veil(viewer, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "deposit", "0.1", *chain))
        creator_node, creator_banner = start(creator, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(creator_node)
        viewer_node, viewer_banner = start(viewer, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(viewer_node)
        peers_at = re.search(r"peers at (\S+:\d+)", creator_banner)[1]
        magnet = re.search(r"(magnet:\?\S+)", published)[1]
        yield dict(plaintext=plaintext, cid=content_id_of(published),
                   magnet=f"{magnet}&x.pe={peers_at}",
                   creator=Endpoint(creator, creator_banner), viewer=Endpoint(viewer, viewer_banner))
    finally:
        stop_all(processes)


def test_a_paid_stream_shows_its_progress_payments_and_figures_live(two_nodes):
    creator, viewer, cid = two_nodes["creator"], two_nodes["viewer"], two_nodes["cid"]
    creator_events, viewer_events = SseClient(creator), SseClient(viewer)
    try:
        status, opened = call(viewer, "POST", "/api/v1/streams", {"content": two_nodes["magnet"]})
        assert status == 201, opened
        status, _, data = raw_get(viewer, f"/api/v1/contents/{cid}/media", {"Authorization": f"Bearer {viewer.token}"})
        assert status == 200 and data == two_nodes["plaintext"]
        slices = opened["slices"]
        done = viewer_events.event_where(lambda e: e["event"] == "stream" and e["data"]["open"]
                                         and e["data"]["slices_verified"] == slices)
        assert done["data"]["content_id"] == cid and done["data"]["key_deliveries"] > 0
        viewer_events.event_where(lambda e: e["event"] == "payment" and e["data"]["direction"] == "signed"
                                  and e["data"]["content_id"] == cid and e["data"]["paid_wei"] > 0)
        taken = creator_events.event_where(lambda e: e["event"] == "payment" and e["data"]["direction"] == "accepted"
                                           and e["data"]["cheques_accepted"] > 0)
        assert taken["data"]["content_id"] == cid and taken["data"]["earned_wei"] > 0

        watched = metric_values(viewer)
        assert watched["veil_streams_open"] == 1 and watched["veil_slices_paid_total"] > 0
        assert watched["veil_cheques_signed_total"] > 0 and watched["veil_key_deliveries_total"] > 0
        assert watched["veil_downloaded_bytes_total"] >= len(two_nodes["plaintext"])
        served = metric_values(creator)
        assert served["veil_cheques_accepted_total"] > 0 and served["veil_keys_released_total"] > 0
        assert served["veil_uploaded_bytes_total"] >= len(two_nodes["plaintext"]) and served["veil_earned_wei"] > 0
        assert served["veil_uncashed_wei"] + served["veil_cashed_wei_total"] > 0

        assert call(viewer, "DELETE", f"/api/v1/streams/{cid}")[0] == 200
        viewer_events.event_where(lambda e: e["event"] == "stream" and e["data"] == {"content_id": cid, "open": False})
        after = metric_values(viewer)
        assert after["veil_streams_open"] == 0
        for counter in ("veil_slices_paid_total", "veil_cheques_signed_total", "veil_key_deliveries_total",
                        "veil_downloaded_bytes_total"):
            assert after[counter] >= watched[counter], counter  # a stopped stream's figures stay counted
    finally:
        creator_events.close()
        viewer_events.close()
