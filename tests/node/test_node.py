"""`veil up` as a user runs it, in its own process: one node per vault, an API only its own
user can use, `veil status` and `veil logs` beside it, a signal that stops it cleanly, and
a log that never holds a secret."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli_harness import PASS, VEIL, assert_clean_failure, content_id_of, ok, veil, veil_env
from veilstream.vault import Vault

START_TIMEOUT_S = 90
STOP_LIMIT_S = 10.0  # the issue: SIGTERM → cashed, flushed and gone within 10 s


class Home(type(Path())):
    """The vault's folder, and the content published in it."""

    content_id = ""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("node") / "home")
    ok(veil(home, "init"))
    ok(veil(home, "wallet", "faucet", "1"))
    media = tmp_path_factory.mktemp("media") / "notes.bin"
    media.write_bytes(os.urandom(100_000))
    home.content_id = content_id_of(ok(veil(home, "publish", str(media), "--slice-size", "16KiB", "--price", "1000wei")))
    return home


class RunningNode:
    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.process = subprocess.Popen(VEIL + ["up", "--api-port", "0", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=veil_env(home))
        self.lines = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()  # the node prints its URL once it is up
            if not line:
                raise AssertionError(f"veil up ended: {self.process.wait()} {self.process.stderr.read()}")
            self.lines.append(line)
            found = re.search(r"API (http://\S+)/api/v1", line)
            if found:
                self.url = found[1]
                break
        else:
            raise AssertionError(f"veil up did not start in {START_TIMEOUT_S} s: {self.lines}")
        self.token = (home / "node" / "api-token").read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def get(self, path: str, *, token: str | None = "", headers: dict | None = None):
        sent = dict(headers or {})
        token = self.token if token == "" else token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{self.url}{path}", headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> tuple[int, float, str, str]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, time.monotonic() - started, "".join(self.lines) + out, err


@pytest.fixture(scope="module")
def node(home):
    running = RunningNode(home)
    yield running
    if running.process.poll() is None:
        running.stop()


def test_the_api_answers_its_own_user_only(node, home):
    assert node.get("/api/v1/health", token=None) == (200, {"status": "ok"})  # health needs no token
    status, body = node.get("/api/v1/status", token=None)
    assert status == 401 and "API token" in body["error"]
    assert node.get("/api/v1/status", token="not-the-token")[0] == 401
    status, body = node.get("/api/v1/status")
    assert status == 200
    assert [(c["content_id"], c["role"], c["sells_keys"]) for c in body["contents"]] == [(home.content_id, "creator", True)]
    assert body["chain"] == {**body["chain"], "endpoint": "embedded", "answers": True}
    assert oct((home / "node" / "api-token").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},  # DNS rebinding: a page of evil.example resolved to 127.0.0.1
    {"Host": "evil.example:80"},
    {"Origin": "http://evil.example"},  # a foreign page's request, even with the right Host
    {"Origin": "null"},
])
def test_a_foreign_page_is_refused_even_with_the_token(node, headers):
    status, body = node.get("/api/v1/status", headers=headers)
    assert status == 403 and body["error"]
    assert node.get("/api/v1/status", headers={"Host": f"localhost:{node.port}"})[0] == 200


def test_veil_status_shows_the_running_node(node, home):
    result = veil(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["contents"][0]["content_id"] == home.content_id and state["pid"] == node.process.pid
    table = veil(home, "status")
    assert table.returncode == 0 and home.content_id[:16] in table.stdout and "creator" in table.stdout


def test_a_second_node_of_the_vault_is_refused_naming_the_first(node, home):
    result = veil(home, "up", "--api-port", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"pid {node.process.pid}" in result.stderr and result.stderr.strip().count("\n") == 0


def answers_handshake(address: str, content_id: str) -> bool:
    """Does the node at `address` take a BitTorrent handshake for `content_id` (BEP 52: the
    v2 info-hash, truncated to 20 bytes on the wire)?"""
    import socket

    host, port = address.rsplit(":", 1)
    hello = b"\x13BitTorrent protocol" + bytes(8) + bytes.fromhex(content_id)[:20] + b"-TE0001-" + bytes(12)
    with socket.create_connection((host, int(port)), timeout=10) as peer:
        peer.sendall(hello)
        try:
            return peer.recv(68).startswith(b"\x13BitTorrent protocol")
        except ConnectionResetError:
            return False


def test_pause_stops_seeding_a_content_until_resume(node, home):
    _, state = node.get("/api/v1/status")
    address = state["swarm"]["listen"]
    assert answers_handshake(address, home.content_id)
    paused = veil(home, "pause", home.content_id)
    assert paused.returncode == 0 and f"paused {home.content_id}" in paused.stdout, paused.stderr
    assert not answers_handshake(address, home.content_id)  # no transfer: the connection is refused
    _, state = node.get("/api/v1/status")
    assert state["contents"][0]["paused"] is True and state["contents"][0]["peers"] == 0
    assert json.loads((home / "node" / "paused.json").read_text()) == [home.content_id]
    resumed = veil(home, "resume", home.content_id)
    assert resumed.returncode == 0, resumed.stderr
    assert answers_handshake(address, home.content_id)
    assert node.get("/api/v1/status")[1]["contents"][0]["paused"] is False
    unknown = veil(home, "pause", "ab" * 32)
    assert_clean_failure(unknown, "does not hold")


def test_a_content_paused_before_a_restart_stays_paused(tmp_path):
    home = Home(tmp_path / "home")
    ok(veil(home, "init"))
    ok(veil(home, "wallet", "faucet", "1"))
    (tmp_path / "a.bin").write_bytes(os.urandom(40_000))
    cid = content_id_of(ok(veil(home, "publish", str(tmp_path / "a.bin"), "--slice-size", "16KiB", "--price", "1000wei")))
    (home / "node").mkdir(exist_ok=True)
    (home / "node" / "paused.json").write_text(json.dumps([cid]))  # what `veil pause` left before the stop
    running = RunningNode(home)
    try:
        _, state = running.get("/api/v1/status")
        assert state["contents"][0]["paused"] is True
        assert not answers_handshake(state["swarm"]["listen"], cid)
    finally:
        assert running.stop()[0] == 0


def test_sigterm_stops_within_ten_seconds_and_the_log_holds_no_secret(node, home):
    # runs last in this file: it stops the module's node
    code, took_s, out, err = node.stop()
    assert code == 0, err
    assert took_s < STOP_LIMIT_S and "stopped; cashed and claimed" in out
    assert not (home / "node" / "node.json").exists()
    log = (home / "logs" / "node.log").read_text()
    assert "node up" in log and "node stopping" in log
    identity = Vault.open(home).unlock(PASS).identity()
    for secret in (PASS, identity.mnemonic, identity.wallet_key.hex(), node.token):
        assert secret not in log
    missing = veil(home, "status")
    assert_clean_failure(missing, "no node is running for this vault")


def test_a_bad_setting_is_refused_before_the_passphrase(tmp_path):
    result = subprocess.run(VEIL + ["up", "--set", "node.api_port=70000"], capture_output=True, text=True,
                            env={**os.environ, "VEIL_HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "node.api_port = 70000 is not allowed" in result.stderr


def test_a_taken_api_port_is_one_line(tmp_path):
    import socket

    home = tmp_path / "home"
    assert veil(home, "init").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = veil(home, "up", "--api-port", str(port))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"the API cannot listen on 127.0.0.1:{port}" in result.stderr
