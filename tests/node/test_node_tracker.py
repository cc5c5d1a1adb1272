"""Nodes of one machine find each other through the local tracker, with no flags: a viewer
given only a content id gets its metadata and slices from the creator's node; when the node
that ran the tracker stops, another runs it."""

from __future__ import annotations

import signal

from cli_harness import stop
from test_node_resume import wait_for
from test_node_media import two_nodes


def test_a_content_id_alone_finds_its_seeder_through_the_local_tracker(tmp_path):
    with two_nodes(tmp_path) as net:
        creator, viewer, cid, plaintext = net["creator"], net["viewer"], net["cid"], net["plaintext"]
        assert creator.json("GET", "status")[1]["tracker"]["ours"] is True  # the first node up runs it
        assert viewer.json("GET", "status")[1]["tracker"]["ours"] is False
        status, opened = viewer.json("POST", "streams", {"content": cid})  # no magnet, no peer address
        assert status == 201, opened
        status, _, data = viewer.call("GET", f"contents/{cid}/media")
        assert status == 200 and data == plaintext

        assert "stopped" in stop(net["creator_node"], signal.SIGTERM)
        wait_for(lambda: viewer.json("GET", "status")[1]["tracker"]["ours"], "the viewer's node running the tracker")
