"""Run anvil (Foundry's local EVM node) as a child process on loopback.

Used by `veil devnet` (a chain shared by nodes in separate processes, kept in a state
file across restarts) and by the tests (the contract suite runs on anvil too).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from veilstream.chain.errors import ChainError

HOST = "127.0.0.1"
# anvil answers within a second on a warm machine; the first start unpacks and can be slow.
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 15.0
READY_POLL_S = 0.05
# How often anvil writes its state file, besides on exit (bounds loss on a hard kill).
STATE_INTERVAL_S = 5
REPO_ROOT = Path(__file__).resolve().parents[3]
# The well-known first development account of anvil's default mnemonic ("test test ...
# junk"): it holds 10,000 ether on every fresh anvil and deploys the devnet contracts.
ANVIL_DEV_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")


def find_anvil() -> str | None:
    """`VEIL_ANVIL`, the copy `make tools` installs under .tools/, or anvil on PATH."""
    candidates = [
        os.environ.get("VEIL_ANVIL"),
        str(REPO_ROOT / ".tools" / "node_modules" / ".bin" / "anvil"),
        shutil.which("anvil"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Anvil:
    """One anvil process. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        *,
        port: int | None = None,
        state_path: Path | None = None,
        chain_id: int | None = None,
        log_path: Path | None = None,
        executable: str | None = None,
    ) -> None:
        self.executable = executable or find_anvil()
        if self.executable is None:
            raise ChainError("anvil is not installed: run `make tools` (or put anvil on PATH)")
        self._port_chosen = port is None
        self.port = port or free_port()
        self.state_path = Path(state_path) if state_path else None
        self.chain_id = chain_id
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.executable, "--host", HOST, "--port", str(self.port)]
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_path), "--state-interval", str(STATE_INTERVAL_S)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        return cmd

    def start(self) -> Anvil:
        if self.process is not None:
            return self
        attempts = START_ATTEMPTS if self._port_chosen else 1
        for attempt in range(attempts):
            try:
                return self._start_once()
            except ChainError:
                # A port we picked can be taken between picking and binding: pick again.
                if attempt + 1 == attempts:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> Anvil:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import json
        import urllib.request

        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ChainError(
                    f"anvil exited at start (code {self.process.returncode}); "
                    f"is port {self.port} free?"
                )
            try:
                request = urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=1) as response:
                    if b"result" in response.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChainError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S:.0f}s")
            time.sleep(READY_POLL_S)  # polling a condition with a deadline, not a sync sleep

    def stop(self) -> None:
        """Stop gracefully (anvil writes its state file on SIGINT), then harder."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
