"""Two nodes in their own processes on one devnet (anvil): a creator's `veil up` seeds and
sells keys; a viewer's `veil up` streams the content through `/api/v1/contents/{id}/media`
by HTTP Range, paying per slice within the budget it was given. Every byte is compared."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from veilstream.chain.anvil import find_anvil, free_port
from veilstream.identity import generate_mnemonic
from veilstream.vault import KdfParams, Vault

PASS = "node media passphrase"
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
SLICE = 64 * 1024
PRICE_WEI = 10**12
START_TIMEOUT_S = 120


def env_for(home: Path) -> dict:
    env = {**os.environ, "VEIL_HOME": str(home), "VEIL_PASSPHRASE": PASS, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("VEIL_CHAIN_RPC", None)
    env.pop("VEIL_CHAIN_DEPLOYMENT", None)
    return env


def veil(home: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "veilstream", *args], capture_output=True, text=True,
                            env=env_for(home), timeout=180)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr + result.stdout
    return result.stdout


def start(home: Path, *args: str, ready: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "veilstream", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env_for(home))
    seen = []
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in process.stdout:  # ends at EOF if the process dies
        seen.append(line)
        if ready in line:
            return process, "".join(seen)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"{args[0]} did not start:\n" + "".join(seen))


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in out, out
    return out


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


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    if find_anvil() is None:
        pytest.fail("anvil is not installed: run `make tools` (scripts/install-tools.sh)")
    tmp = tmp_path_factory.mktemp("media")
    creator, viewer = tmp / "creator", tmp / "viewer"
    for home in (creator, viewer):
        Vault.create(home, PASS, generate_mnemonic(), CHEAP_KDF)
    port, directory = free_port(), tmp / "devnet"
    chain = ["--chain-rpc", f"http://127.0.0.1:{port}", "--chain-deployment", str(directory / "devnet.json")]
    node_chain = ["--set", f"node.chain_rpc_url=http://127.0.0.1:{port}",
                  "--set", f"node.chain_deployment={directory / 'devnet.json'}"]
    devnet, _ = start(creator, "devnet", "--port", str(port), "--dir", str(directory), ready="nodes use it with")
    processes = [devnet]
    try:
        plaintext = os.urandom(11 * (SLICE - 16) + 1234)
        movie = tmp / "movie.bin"
        movie.write_bytes(plaintext)
        veil(creator, "wallet", "faucet", "1", *chain)
        published = veil(creator, "publish", str(movie), "--slice-size", "64KiB", "--price", f"{PRICE_WEI}wei", *chain)
        magnet = re.search(r"(magnet:\?\S+)", published)[1]
        cid = re.search(r"content id\s+([0-9a-f]{64})", published)[1]
        veil(viewer, "wallet", "faucet", "1", *chain)
        veil(viewer, "wallet", "deposit", "0.1", *chain)
        creator_node, creator_banner = start(creator, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(creator_node)
        peers_at = re.search(r"peers at (\S+:\d+)", creator_banner)[1]
        viewer_node, viewer_banner = start(viewer, "up", "--api-port", "0", *node_chain, ready="API ")
        processes.append(viewer_node)
        yield dict(plaintext=plaintext, cid=cid, magnet=f"{magnet}&x.pe={peers_at}",
                   creator=Api(creator, creator_banner), viewer=Api(viewer, viewer_banner),
                   creator_node=creator_node, viewer_node=viewer_node, creator_home=creator, viewer_home=viewer, node_chain=node_chain,
                   processes=processes)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()


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
    shown = veil(network["viewer_home"], "status")
    assert f"streaming {cid[:16]}…: 12/12 slices verified" in shown

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
    assert "stopped" in stop(network["viewer_node"])
    assert "stopped; cashed and claimed" in stop(again)
