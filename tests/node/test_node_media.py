"""Two nodes in their own processes on one devnet (anvil): a creator's `veil up` seeds and
sells keys; a viewer's `veil up` streams the content through `/api/v1/contents/{id}/media`
by HTTP Range, paying per slice within the budget it was given. Every byte is compared."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_harness import chain_flags, content_id_of, free_port, new_vault, ok, require_anvil, start, start_devnet, \
    stop, stop_all, veil

SLICE = 64 * 1024
PRICE_WEI = 10**12


class Api:
    def __init__(self, home: Path, banner: str) -> None:
        self.url = re.search(r"API (http://\S+)/api/v1", banner)[1]
        self.token = (home / "node" / "api-token").read_text().strip()

    def call(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        request = urllib.request.Request(f"{self.url}/api/v1/{path}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def json(self, method: str, path: str, body: dict | None = None):
        status, _, raw = self.call(method, path, body)
        return status, json.loads(raw)


@contextmanager
def two_nodes(tmp: Path, slices: int = 11, creator_flags: tuple[str, ...] = ()):
    """A devnet, a creator's node seeding a content of about `slices` slices, and a viewer's
    node with a deposit; everything stopped after."""
    require_anvil()
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
        plaintext = os.urandom(slices * (SLICE - 16) + 1234)
        movie = tmp / "movie.bin"
        movie.write_bytes(plaintext)
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        published = ok(veil(creator, "publish", str(movie), "--slice-size", "64KiB", "--price", f"{PRICE_WEI}wei", *chain))
        magnet = re.search(r"(magnet:\?\S+)", published)[1]
        cid = content_id_of(published)
        ok(veil(viewer, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "deposit", "0.1", *chain))
        creator_node, creator_banner = start(creator, "up", "--api-port", "0", *node_chain, *creator_flags, ready="API ")
        processes.append(creator_node)
        peers_at = re.search(r"peers at (\S+:\d+)", creator_banner)[1]
        viewer_node, viewer_banner = start(viewer, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(viewer_node)
        yield dict(plaintext=plaintext, cid=cid, magnet=f"{magnet}&x.pe={peers_at}",
                   creator=Api(creator, creator_banner), viewer=Api(viewer, viewer_banner),
                   creator_node=creator_node, viewer_node=viewer_node, creator_home=creator, viewer_home=viewer, node_chain=node_chain,
                   processes=processes)
    finally:
        stop_all(processes)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    with two_nodes(tmp_path_factory.mktemp("media")) as network:
        yield network


def test_media_plays_by_range_within_the_budget_and_the_creator_earns(network):
    viewer, cid, plaintext = network["viewer"], network["cid"], network["plaintext"]
    media = f"contents/{cid}/media"
    status, body = viewer.json("GET", media)
    assert status == 404 and "POST /api/v1/streams" in body["error"]  # no stream, no spending

    # a budget of 3 slices: the first range plays, one past what it buys answers 402, not a hang
    status, opened = viewer.json("POST", "streams", {"content": network["magnet"], "budget": f"{3 * PRICE_WEI}wei"})
    assert status == 201 and opened["budget_wei"] == 3 * PRICE_WEI, opened
    status, headers, data = viewer.call("GET", media, headers={"Range": "bytes=0-999"})
    assert status == 206 and data == plaintext[:1000]
    assert headers["Content-Range"] == f"bytes 0-999/{len(plaintext)}" and headers["Accept-Ranges"] == "bytes"
    status, _, raw = viewer.call("GET", media, headers={"Range": f"bytes={8 * (SLICE - 16)}-"})
    assert status == 402 and "budget" in json.loads(raw)["error"], raw
    status, stopped = viewer.json("DELETE", f"streams/{cid}")
    assert status == 200 and 0 < stopped["paid_wei"] <= 3 * PRICE_WEI

    # the whole content's budget: a seek to the middle, back to the start, then all of it
    status, opened = viewer.json("POST", "streams", {"content": network["magnet"]})
    assert status == 201 and opened["budget_wei"] == opened["cost_wei"]
    middle = len(plaintext) // 2
    status, headers, data = viewer.call("GET", media, headers={"Range": f"bytes={middle}-{middle + 99_999}"})
    assert status == 206 and data == plaintext[middle:middle + 100_000]
    status, _, data = viewer.call("GET", media, headers={"Range": "bytes=-500"})
    assert status == 206 and data == plaintext[-500:]
    status, headers, data = viewer.call("GET", media)
    assert status == 200 and data == plaintext and headers["Content-Length"] == str(len(plaintext))
    status, _, raw = viewer.call("GET", media, headers={"Range": f"bytes={len(plaintext)}-"})
    assert status == 416
    status, state = viewer.json("GET", "status")
    assert state["streams"][0]["paid_wei"] <= opened["cost_wei"]
    shown = ok(veil(network["viewer_home"], "status"))
    assert f"streaming {cid[:16]}…: 12/12 slices verified" in shown

    # a player reading on range after range, cut anywhere (within slices, across them, one
    # starting where the last ended): the same bytes as the one read of the whole
    cuts = [0, 1000, SLICE - 17, SLICE - 16, 3 * (SLICE - 16) + 5, 3 * (SLICE - 16) + 6, len(plaintext)]
    for lo, hi in zip(cuts, cuts[1:]):
        status, _, data = viewer.call("GET", media, headers={"Range": f"bytes={lo}-{hi - 1}"})
        assert status == 206 and data == plaintext[lo:hi], (lo, hi)

    # the creator's node took the cheques and released the keys
    status, creator_state = network["creator"].json("GET", "status")
    [content] = creator_state["contents"]
    assert content["content_id"] == cid and content["cheques_accepted"] > 0 and content["keys_released"] > 0
    assert creator_state["chain"]["uncashed_wei"] + creator_state["chain"]["paid_wei"] > 0

    # kill -9 the creator's node, start it again: every cheque it had taken is still owed to it
    owed = creator_state["chain"]["uncashed_wei"]
    assert owed > 0  # below the cash threshold (MarketSettings.cash_threshold_wei): nothing was cashed yet
    network["creator_node"].kill()
    network["creator_node"].wait(timeout=30)
    again, banner = start(network["creator_home"], "up", "--api-port", "0", *network["node_chain"], ready="API ")
    network["processes"].append(again)
    status, restarted = Api(network["creator_home"], banner).json("GET", "status")
    assert status == 200 and restarted["pid"] != creator_state["pid"]
    assert restarted["chain"]["uncashed_wei"] == owed and restarted["contents"][0]["content_id"] == cid

    # SIGTERM: both stop cleanly, the creator cashes what it is owed (or keeps it, by the gas rule)
    assert "stopped" in stop(network["viewer_node"], signal.SIGTERM)
    assert "stopped; cashed and claimed" in stop(again, signal.SIGTERM)
