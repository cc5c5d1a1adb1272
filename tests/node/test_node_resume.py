"""A stream open on the viewer's node when it dies (`kill -9`) or stops is open again after
the restart: it goes on from the slices it holds, spends only what its budget had left, and
plays every byte; once the user stops it, no restart opens it again."""

from __future__ import annotations

import signal
import time

from cli_harness import start, stop
from test_node_media import PRICE_WEI, SLICE, Api, two_nodes

WAIT_S = 120


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def restart_viewer(net) -> Api:
    process, banner = start(net["viewer_home"], "up", "--api-port", "0", *net["node_chain"], ready="API ")
    net["processes"].append(process)
    net["viewer_node"] = process
    return Api(net["viewer_home"], banner)


def open_streams(viewer: Api) -> list[dict]:
    status, streams = viewer.json("GET", "streams")
    assert status == 200, streams
    return streams


def test_a_stream_goes_on_after_kill_9_and_a_stop_within_its_budget_until_the_user_stops_it(tmp_path):
    # the creator's node sends 128 KiB/s: the stream is still downloading when its node dies
    with two_nodes(tmp_path, slices=24, creator_flags=("--set", "swarm.upload_rate_limit=128KiB")) as net:
        viewer, cid, plaintext = net["viewer"], net["cid"], net["plaintext"]
        # the content's cost and a little more: a payment that went out as the node died may
        # have bought nothing, and the budget counts it all the same
        budget = 30 * PRICE_WEI
        status, opened = viewer.json("POST", "streams", {"content": net["magnet"], "budget": f"{budget}wei"})
        assert status == 201 and opened["budget_wei"] == budget, opened
        assert 24 * PRICE_WEI <= opened["cost_wei"] < budget
        half = 4 * (SLICE - 16)
        status, _, data = viewer.call("GET", f"contents/{cid}/media", headers={"Range": f"bytes=0-{half - 1}"})
        assert status == 206 and data == plaintext[:half]
        paid_before = open_streams(viewer)[0]["paid_wei"]
        assert 4 * PRICE_WEI <= paid_before < opened["cost_wei"]

        net["viewer_node"].kill()  # at any moment: here with the stream half played
        net["viewer_node"].wait(timeout=30)
        viewer = restart_viewer(net)
        [resumed] = wait_for(lambda: open_streams(viewer), "resumed stream")
        assert resumed["content_id"] == cid
        assert 0 < resumed["budget_wei"] <= budget - paid_before  # what was left, never the budget again
        three_quarters = 18 * (SLICE - 16)
        status, _, data = viewer.call("GET", f"contents/{cid}/media", headers={"Range": f"bytes=0-{three_quarters - 1}"})
        assert status == 206 and data == plaintext[:three_quarters]
        [played] = open_streams(viewer)
        assert played["paid_wei"] <= resumed["budget_wei"]

        assert "stopped" in stop(net["viewer_node"], signal.SIGTERM)  # a clean stop keeps it too
        viewer = restart_viewer(net)
        [kept] = wait_for(lambda: open_streams(viewer), "stream kept over a stop")
        assert 0 < kept["budget_wei"] <= resumed["budget_wei"] - played["paid_wei"]
        status, _, data = viewer.call("GET", f"contents/{cid}/media")
        assert status == 200 and data == plaintext  # every byte, over three runs of the node

        status, _ = viewer.json("DELETE", f"streams/{cid}")  # the user stops it: for good
        assert status == 200
        assert "stopped" in stop(net["viewer_node"], signal.SIGTERM)
        viewer = restart_viewer(net)
        assert open_streams(viewer) == []


def test_a_stream_killed_right_after_a_burst_pays_for_no_slice_twice(tmp_path):
    # the slices a burst brought were on disk before any resume save, and some of the keys and
    # slices sent ahead were paid for and never kept: the restart finds the slices, keeps the
    # keys, is sent again what it lost, and pays each slice once
    with two_nodes(tmp_path, slices=24) as net:
        viewer, cid, plaintext = net["viewer"], net["cid"], net["plaintext"]
        status, opened = viewer.json("POST", "streams", {"content": net["magnet"], "budget": f"{40 * PRICE_WEI}wei"})
        assert status == 201, opened
        half = 12 * (SLICE - 16)
        status, _, data = viewer.call("GET", f"contents/{cid}/media", headers={"Range": f"bytes=0-{half - 1}"})
        assert status == 206 and data == plaintext[:half]
        net["viewer_node"].kill()
        net["viewer_node"].wait(timeout=30)
        viewer = restart_viewer(net)
        wait_for(lambda: open_streams(viewer), "resumed stream")
        status, _, data = viewer.call("GET", f"contents/{cid}/media")
        assert status == 200 and data == plaintext
        [again] = open_streams(viewer)
        paid_in_all = 40 * PRICE_WEI - again["budget_wei"] + again["paid_wei"]
        assert paid_in_all == opened["cost_wei"]  # every slice paid, once
