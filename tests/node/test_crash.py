"""A node that dies of something unforeseen leaves a report on disk, scrubbed of secrets,
ids and addresses, says where in one line, and sends it nowhere unless the user named a URL."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cli_harness import PASS, new_vault, veil_env
from veilstream.node.crash import CRASH_DIR, REPORTS_KEPT, scrub, write_report

CONTENT_ID = "ab" * 32
ADDRESS = "0x" + "Cd" * 20

# `veil up` in its own process, with a fault put into the running node: a RuntimeError that
# quotes everything a report must not hold.
CRASHING_NODE = f"""
import sys
from veilstream.node import daemon
from veilstream.node.cli import main

async def serve(self, stop, on_ready=None):
    raise RuntimeError(
        f"injected: {{self.secrets[0]}} / {{self.identity.mnemonic}} / {{self.identity.wallet_key.hex()}} / "
        f"{{self.api_token}} / content {CONTENT_ID} / wallet {{self.wallet_address}} {ADDRESS} / peer 10.1.2.3:6881 "
        f"/ in {{self.home}}")

daemon.Node.serve = serve
sys.argv = ["veil", "up", "--api-port", "0", *sys.argv[1:]]
main()
"""


@given(st.text(max_size=40), st.sampled_from(["0x" + "aB" * 20, "f0" * 32, "192.168.0.7:6881", "[::1]:8080",
                                              "npub1" + "q" * 58, "magnet:?xt=urn:btmh:1220" + "ab" * 32]))
def test_scrubbing_removes_ids_addresses_and_secrets_wherever_they_sit(around, identifying):
    secret = "correct horse battery staple"
    text = scrub(f"{around}{identifying} {secret}{around}", [secret])
    assert identifying not in text and secret not in text


def test_only_the_newest_reports_are_kept_and_each_is_private(tmp_path):
    for n in range(REPORTS_KEPT + 3):
        path = write_report(tmp_path, ValueError(f"failure {n}"), [], "test")
    reports = sorted((tmp_path / CRASH_DIR).glob("crash-*.json"))
    assert len(reports) == REPORTS_KEPT and reports[-1] == path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["error"] == f"ValueError: failure {REPORTS_KEPT + 2}"


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def crash_node(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASHING_NODE, *args], capture_output=True, text=True,
                          env=veil_env(home), timeout=120)


def reports_of(home: Path) -> list[Path]:
    return sorted((home / CRASH_DIR).glob("crash-*.json"))


def test_a_crashed_node_writes_a_scrubbed_report_and_sends_it_only_where_the_user_asked(tmp_path):
    home = tmp_path / "home"
    vault = new_vault(home)
    identity = vault.unlock(PASS).identity()
    forbidden = [PASS, identity.mnemonic, identity.wallet_key.hex(), CONTENT_ID, identity.wallet_address,
                 ADDRESS, "10.1.2.3", str(home)]

    result = crash_node(home)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    [report] = reports_of(home)
    assert line.startswith("error: the node crashed (RuntimeError)") and str(report) in line.replace("\n", "")
    assert "nothing was sent anywhere" in line
    text = report.read_text()
    assert "injected:" in text and "RuntimeError" in json.loads(text)["traceback"]
    token = (home / "node" / "api-token").read_text().strip()
    for secret in forbidden + [token]:
        assert secret not in text, secret

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/crashes"
        result = crash_node(home, "--set", f"node.crash_report_url={url}")
    finally:
        server.shutdown()
    assert f"sent to {url}" in result.stderr.replace("\n", "")
    [body] = Receiver.received
    assert body == reports_of(home)[-1].read_bytes()  # exactly the report on disk, nothing more
