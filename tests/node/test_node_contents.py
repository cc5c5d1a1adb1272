"""What a user does with contents through a running node's API, as the CLI does it: list
and detail what the vault holds, publish by upload (progress live, seeding at once, an
MP4 with its index last remuxed to faststart), remove — and every bad input refused with
a clear error, nothing left behind."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from urllib.parse import urlencode

import pytest

from cli_harness import assert_clean_failure, chain_flags, content_id_of, free_port, new_vault, ok, require_anvil, start, start_devnet, stop_all, veil
from test_node import Home, RunningNode, answers_handshake
from test_node_live import Endpoint, SseClient, call, raw_get
from veilstream.content.faststart import file_needs_faststart
from veilstream.node.sample import make_sample_video

UPLOAD_CAP = 1024 * 1024  # the module's node takes uploads up to this (node.upload_max_bytes)
PUBLISH_WAIT_S = 90.0
SLICE = "16KiB"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("contents") / "home")
    ok(veil(home, "init"))
    ok(veil(home, "wallet", "faucet", "1"))
    media = tmp_path_factory.mktemp("media") / "notes.bin"
    media.write_bytes(os.urandom(50_000))
    home.content_id = content_id_of(ok(veil(home, "publish", str(media), "--slice-size", SLICE, "--price", "1000wei")))
    return home


@pytest.fixture(scope="module")
def node(home):
    running = RunningNode(home, "--set", f"node.upload_max_bytes={UPLOAD_CAP}")
    yield running
    if running.process.poll() is None:
        running.stop()


def upload(node, body: bytes, **query) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
    try:
        connection.request("POST", f"/api/v1/contents?{urlencode(query, doseq=True)}", body=body,
                           headers={"Authorization": f"Bearer {node.token}",
                                    "Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def finished_publish(node, publish_id: str) -> dict:
    deadline = time.monotonic() + PUBLISH_WAIT_S
    while time.monotonic() < deadline:
        status, state = call(node, "GET", f"/api/v1/publishes/{publish_id}")
        assert status == 200, state
        if state["stage"] in ("done", "failed"):
            return state
        time.sleep(0.05)  # a poll's pace, not a wait for a state: the loop ends on the state
    raise AssertionError(f"publish {publish_id} did not finish within {PUBLISH_WAIT_S} s")


def scratch_entries(home) -> list[str]:
    tmp = home / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def until(condition, what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def held_ids(node) -> set[str]:
    status, body = call(node, "GET", "/api/v1/contents")
    assert status == 200, body
    return {c["content_id"] for c in body["contents"]}


def opened(home, cid: str, out) -> bytes:
    ok(veil(home, "open", cid, "--out", str(out), "--force"))
    return out.read_bytes()


def test_the_list_and_detail_show_what_the_vault_holds_and_what_its_metadata_says(node, home):
    status, body = node.get("/api/v1/contents")
    assert status == 200
    [entry] = body["contents"]
    assert entry["content_id"] == home.content_id and entry["role"] == "creator" and entry["sells_keys"] is True
    assert entry["metadata"] == {"name": "notes.bin", "mime_type": "application/octet-stream", "size": 50_000,
                                 "duration_s": None}
    assert entry["slice_size"] == 16 * 1024 and entry["slices"] == 4 and entry["price_per_slice_wei"] == 1000
    assert entry["paused"] is False and entry["peers"] == 0 and entry["magnet"].startswith("magnet:?xt=urn:btmh:1220")
    assert node.get(f"/api/v1/contents/{home.content_id}") == (200, entry)
    paths = node.get("/api/v1/openapi.json")[1]["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/contents"]) and "delete" in paths["/api/v1/contents/{content_id}"]
    assert "application/octet-stream" in paths["/api/v1/contents"]["post"]["requestBody"]["content"]
    assert "/api/v1/publishes/{publish_id}" in paths


def test_an_unknown_or_malformed_content_id_is_a_clear_error(node):
    for method in ("GET", "DELETE"):
        status, body = call(node, method, f"/api/v1/contents/{'ab' * 32}")
        assert status == 404 and "does not hold abababab" in body["error"]
        status, body = call(node, method, "/api/v1/contents/not-an-id")
        assert status == 400 and "64 hex digits" in body["error"]
    status, body = node.get("/api/v1/publishes/nope")
    assert status == 404 and "no publish" in body["error"]


def test_a_publish_by_upload_reports_its_progress_live_and_seeds_at_once(node, home, tmp_path):
    plaintext = os.urandom(200_000)
    listener = SseClient(node)
    try:
        status, accepted = upload(node, plaintext, name="talk.bin", price="2000wei", slice_size=SLICE,
                                  seeder_share="25%")
        assert status == 202, accepted
        publish_id = accepted["publish_id"]
        stages = []

        def finished(event) -> bool:
            if event["event"] != "publish" or event["data"]["publish_id"] != publish_id:
                return False
            stages.append(event["data"])
            return event["data"]["stage"] in ("done", "failed")

        done = listener.event_where(finished)
        assert done["data"]["stage"] == "done", done
        added = listener.event_where(lambda e: e["event"] == "content"
                                     and e["data"]["content_id"] == done["data"]["result"]["content_id"])
        assert added["data"]["role"] == "creator" and added["data"]["sells_keys"] is True
    finally:
        listener.close()
    assert {"encrypting", "seeding", "done"} <= {s["stage"] for s in stages}
    encrypting = [s for s in stages if s["stage"] == "encrypting"]
    assert encrypting[0]["total_bytes"] == len(plaintext)
    assert all(set(s) >= {"publish_id", "stage", "done_bytes", "total_bytes"} for s in stages)
    state = finished_publish(node, publish_id)
    result = state["result"]
    cid = result["content_id"]
    assert result["remuxed"] is False and result["price_per_slice_wei"] == 2000 and result["seeder_share_bps"] == 2500
    assert state["done_bytes"] == state["total_bytes"] == len(plaintext)

    assert cid in held_ids(node)
    status, detail = node.get(f"/api/v1/contents/{cid}")
    assert status == 200 and detail["role"] == "creator" and detail["sells_keys"] is True
    assert detail["metadata"]["name"] == "talk.bin" and detail["metadata"]["size"] == len(plaintext)
    address = node.get("/api/v1/status")[1]["swarm"]["listen"]
    assert answers_handshake(address, cid)  # seeded at once, no restart
    assert opened(home, cid, tmp_path / "out.bin") == plaintext
    assert scratch_entries(home) == []
    home.uploaded = cid


def test_an_mp4_with_its_index_last_is_remuxed_to_faststart_and_still_plays(node, home, tmp_path):
    import av

    video = make_sample_video(tmp_path / "clip.mp4", seconds=1, width=160, height=96, faststart=False)
    assert file_needs_faststart(video)
    status, accepted = upload(node, video.read_bytes(), name="clip.mp4", slice_size=SLICE)
    assert status == 202, accepted
    state = finished_publish(node, accepted["publish_id"])
    assert state["stage"] == "done" and state["result"]["remuxed"] is True, state
    cid = state["result"]["content_id"]
    assert node.get(f"/api/v1/contents/{cid}")[1]["metadata"]["mime_type"] == "video/mp4"
    out = tmp_path / "plain.mp4"
    opened(home, cid, out)
    assert not file_needs_faststart(out)  # its moov now comes before its mdat
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24
    assert scratch_entries(home) == []


def refused_leaving_nothing(node, home, before: set[str], status: int, body: dict, code: int, words: str) -> None:
    assert status == code and words in body["error"], (status, body)
    assert held_ids(node) == before
    until(lambda: scratch_entries(home) == [], "the upload's scratch file is still there")


def test_bad_options_an_oversized_upload_and_a_corrupt_mp4_are_refused_leaving_nothing(node, home, tmp_path):
    before = held_ids(node)
    refused_leaving_nothing(node, home, before, *upload(node, b"x" * 1000, price="10"), 400, "say the price's unit")
    refused_leaving_nothing(node, home, before, *upload(node, b"x" * 1000, slice_size="3KiB"), 400, "power of two")
    refused_leaving_nothing(node, home, before, *upload(node, b"x" * 1000, seeder_share="120%"), 400,
                            "from 0% to 100%")
    refused_leaving_nothing(node, home, before, *upload(node, b""), 400, "body is empty")
    refused_leaving_nothing(node, home, before, *upload(node, os.urandom(UPLOAD_CAP + 1)), 413, "larger than")

    # sent chunked, with no length to refuse up front: refused once past the cap
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    try:
        chunks = (os.urandom(64 * 1024) for _ in range(UPLOAD_CAP // (64 * 1024) + 2))
        connection.request("POST", "/api/v1/contents?name=big.bin", body=chunks, encode_chunked=True,
                           headers={"Authorization": f"Bearer {node.token}", "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        refused_leaving_nothing(node, home, before, response.status, json.loads(response.read()), 413, "larger than")
    finally:
        connection.close()

    video = make_sample_video(tmp_path / "clip.mp4", seconds=1, width=160, height=96, faststart=False)
    cut = video.read_bytes()[:-100]  # its index box runs past the end
    refused_leaving_nothing(node, home, before, *upload(node, cut, name="clip.mp4"), 400, "runs past the end")

    # boxes that add up around an index PyAV cannot read: refused by the remux, after the 202
    def box(kind: bytes, body: bytes) -> bytes:
        return (8 + len(body)).to_bytes(4, "big") + kind + body

    unreadable = box(b"ftyp", b"isom\0\0\0\0") + box(b"mdat", b"\x01" * 64) + box(b"moov", b"\xff" * 64)
    status, accepted = upload(node, unreadable, name="clip.mp4")
    assert status == 202, accepted
    state = finished_publish(node, accepted["publish_id"])
    assert state["stage"] == "failed" and state["result"] is None, state
    assert re.search("PyAV cannot read it|no audio or video stream", state["error"]), state
    assert held_ids(node) == before
    until(lambda: scratch_entries(home) == [], "the failed publish left its scratch files")


def test_a_client_that_goes_away_mid_upload_leaves_nothing_behind(node, home):
    before = held_ids(node)
    peer = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    try:
        peer.sendall(f"POST /api/v1/contents?name=gone.bin HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
                     f"Authorization: Bearer {node.token}\r\nContent-Length: {UPLOAD_CAP}\r\n\r\n".encode())
        peer.sendall(os.urandom(UPLOAD_CAP // 4))

        def receiving() -> bool:
            files = [f for f in (home / "tmp").rglob("gone.bin")] if (home / "tmp").is_dir() else []
            return any(f.stat().st_size > 0 for f in files)

        until(receiving, "the node did not start writing the upload")
    finally:
        peer.close()
    until(lambda: scratch_entries(home) == [], "the upload's scratch file outlived its client")
    assert held_ids(node) == before


def test_an_upload_onto_a_full_disk_is_refused_leaving_nothing(small_disk):
    home = Home(small_disk.path / "home")
    new_vault(home)
    ok(veil(home, "wallet", "faucet", "1"))
    running = RunningNode(home)
    try:
        small_disk.fill(leave_bytes=64 * 1024)
        try:
            status, body = upload(running, os.urandom(512 * 1024), name="big.bin")
        finally:
            small_disk.free()
        assert status == 507 and "disk is full" in body["error"], body
        until(lambda: scratch_entries(home) == [], "the upload's scratch file outlived the full disk")
        assert held_ids(running) == set()
        status, accepted = upload(running, os.urandom(100_000), name="fits.bin", slice_size=SLICE)  # with room again
        assert status == 202 and finished_publish(running, accepted["publish_id"])["stage"] == "done"
    finally:
        assert running.stop()[0] == 0


def test_removing_a_content_stops_seeding_it_and_frees_it_from_the_vault(node, home):
    cid = home.uploaded
    address = node.get("/api/v1/status")[1]["swarm"]["listen"]
    assert_clean_failure(veil(home, "rm", cid), "in use by `veil up`")  # not under the running node's feet
    listener = SseClient(node)
    try:
        status, body = call(node, "DELETE", f"/api/v1/contents/{cid}")
        assert status == 200 and body["removed"] is True and body["freed_bytes"] > 200_000, body
        listener.event_where(lambda e: e["event"] == "content" and e["data"] == {"content_id": cid, "removed": True})
    finally:
        listener.close()
    assert node.get(f"/api/v1/contents/{cid}")[0] == 404
    assert cid not in held_ids(node) and home.content_id in held_ids(node)
    assert not answers_handshake(address, cid)
    assert not (home / "content" / cid).exists() and (home / "keys" / f"{cid}.sealed").exists()  # keys stay
    assert cid not in ok(veil(home, "list"))
    assert call(node, "DELETE", f"/api/v1/contents/{cid}")[0] == 404


def test_the_cli_says_it_remuxed_an_mp4_with_its_index_last(tmp_path):
    home = tmp_path / "home"
    new_vault(home)
    video = make_sample_video(tmp_path / "clip.mp4", seconds=1, width=160, height=96, faststart=False)
    table = ok(veil(home, "publish", str(video), "--slice-size", SLICE))
    assert "to faststart" in table and content_id_of(table)
    fast = make_sample_video(tmp_path / "fast.mp4", seconds=1, width=160, height=96)
    assert json.loads(ok(veil(home, "publish", str(fast), "--slice-size", SLICE, "--json")))["remuxed"] is False


def test_the_node_stops_cleanly_after_publishing(node):
    # runs after the tests of the module's node: it stops it
    code, _, out, err = node.stop()
    assert code == 0, err
    assert "stopped; cashed and claimed" in out


# -- on a devnet: a content published by upload sells its keys at once; its cheques are kept ----
PRICE_WEI = 10**12


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    require_anvil()
    tmp = tmp_path_factory.mktemp("contents-two")
    creator, viewer = tmp / "creator", tmp / "viewer"
    for home in (creator, viewer):
        new_vault(home)
    port, directory = free_port(), tmp / "devnet"
    chain = chain_flags(port, directory)
    node_chain = ["--set", f"node.chain_rpc_url=http://127.0.0.1:{port}",
                  "--set", f"node.chain_deployment={directory / 'devnet.json'}"]
    devnet, _ = start_devnet(creator, port, directory)
    processes = [devnet]
    try:
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "deposit", "0.1", *chain))
        creator_node, creator_banner = start(creator, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(creator_node)
        viewer_node, viewer_banner = start(viewer, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(viewer_node)
        yield dict(peers_at=re.search(r"peers at (\S+:\d+)", creator_banner)[1],
                   creator=Endpoint(creator, creator_banner), viewer=Endpoint(viewer, viewer_banner))
    finally:
        stop_all(processes)


def test_an_uploaded_content_sells_its_keys_at_once_and_is_not_removed_while_its_cheques_are_uncashed(two_nodes):
    creator, viewer = two_nodes["creator"], two_nodes["viewer"]
    plaintext = os.urandom(5 * (16 * 1024 - 16) + 77)
    status, accepted = upload(creator, plaintext, name="paid.bin", price=f"{PRICE_WEI}wei", slice_size=SLICE)
    assert status == 202, accepted
    state = finished_publish(creator, accepted["publish_id"])
    assert state["stage"] == "done", state
    cid, magnet = state["result"]["content_id"], state["result"]["magnet"]

    status, opened_stream = call(viewer, "POST", "/api/v1/streams", {"content": f"{magnet}&x.pe={two_nodes['peers_at']}"})
    assert status == 201, opened_stream
    status, _, data = raw_get(viewer, f"/api/v1/contents/{cid}/media", {"Authorization": f"Bearer {viewer.token}"})
    assert status == 200 and data == plaintext  # keys bought from a node that published it seconds ago
    status, body = call(viewer, "DELETE", f"/api/v1/contents/{cid}")
    assert status == 409 and "a stream of" in body["error"] and "is open" in body["error"], body
    assert call(viewer, "DELETE", f"/api/v1/streams/{cid}")[0] == 200

    def earned() -> bool:
        status, detail = call(creator, "GET", f"/api/v1/contents/{cid}")
        return status == 200 and detail["cheques_accepted"] > 0

    until(earned, "the creator took no cheque", deadline_s=30)
    status, body = call(creator, "DELETE", f"/api/v1/contents/{cid}")
    assert status == 409 and "not cashed yet" in body["error"], body
    assert cid in held_ids(creator)
    status, cashed = call(creator, "POST", "/api/v1/wallet/cash", {"ignore_gas": True})
    assert status == 200 and cashed["cheques_cashed"] > 0, cashed
    status, body = call(creator, "DELETE", f"/api/v1/contents/{cid}")
    assert status == 200 and body["removed"] is True, body
    assert cid not in held_ids(creator)
