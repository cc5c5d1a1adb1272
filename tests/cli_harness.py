"""Running `veil` as a person does, for the CLI tests: a real process per command, with a
vault's home and passphrase in its environment, and the checks every such test makes
(it worked with no traceback; it failed in one red line).

Imported as a plain module (`from cli_harness import ...`): tests/conftest.py puts tests/
on the path."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from veilstream.identity import generate_mnemonic
from veilstream.vault import KdfParams, Vault

VEIL = [sys.executable, "-m", "veilstream"]
PASS = "cli test passphrase"
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)  # a vault made in-process: fast to open
COMMAND_TIMEOUT_S = 120


def veil_env(home: Path, *, passphrase: str | None = PASS, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `veil` command on the vault at `home`: wide tables, output as
    it is written, and no chain endpoint from the developer's shell (the flags name it)."""
    env = {**os.environ, "VEIL_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("VEIL_CHAIN_RPC", None)
    env.pop("VEIL_CHAIN_DEPLOYMENT", None)
    if passphrase is not None:
        env["VEIL_PASSPHRASE"] = passphrase
    return {**env, **(extra or {})}


def veil(home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
         passphrase: str | None = PASS, preexec=None, prefix=(), timeout: float = COMMAND_TIMEOUT_S,
         ) -> subprocess.CompletedProcess:
    """Run one `veil` command to its end; `env` is added to `veil_env`'s, `prefix` goes
    before the program (a wrapper such as setpriv)."""
    return subprocess.run([*prefix, *VEIL, *args], input=stdin or "", capture_output=True, text=True,
                          env=veil_env(home, passphrase=passphrase, extra=env), preexec_fn=preexec, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    """The output of a command that succeeded without a traceback."""
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_clean_failure(result: subprocess.CompletedProcess, pattern: str) -> None:
    """A failure as the user should see it: a non-zero exit, no traceback, one line starting
    `error:` that matches `pattern`."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]


def content_id_of(output: str) -> str:
    """The content id `veil publish` printed."""
    return re.search(r"content id\s+([0-9a-f]{64})", output)[1]


def new_vault(home: Path) -> Vault:
    """A vault with a fresh identity at `home` (cheap to unlock), as `veil init` would make it."""
    return Vault.create(home, PASS, generate_mnemonic(), CHEAP_KDF)


def start(home: Path, *args: str, ready: str, passphrase: str | None = PASS) -> tuple[subprocess.Popen, str]:
    """Start a long-running command and wait for the line containing `ready`; returns the
    process (stdout still open) and what it printed so far."""
    process = subprocess.Popen([*VEIL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=veil_env(home, passphrase=passphrase))
    seen = []
    for line in process.stdout:  # ends at EOF if the process dies
        seen.append(line)
        if ready in line:
            return process, "".join(seen)
    process.wait(timeout=30)
    raise AssertionError(f"{args[0]} did not start:\n" + "".join(seen))


def stop(process: subprocess.Popen, signum: int = signal.SIGINT) -> str:
    """Stop a started command as a user would (Ctrl-C by default); it must exit cleanly."""
    process.send_signal(signum)
    out, _ = process.communicate(timeout=COMMAND_TIMEOUT_S)
    assert process.returncode == 0, out
    assert "Traceback" not in out
    return out


def stop_all(processes: list[subprocess.Popen]) -> None:
    """A test's teardown: each process still running gets SIGTERM (the newest first) and a
    minute to go, else it is killed."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_anvil() -> None:
    from veilstream.chain.anvil import find_anvil

    if find_anvil() is None:
        pytest.fail("anvil is not installed: run `make tools` (scripts/install-tools.sh)")


def chain_flags(port: int, directory: Path) -> list[str]:
    """The flags that point a command at the devnet on `port` deployed from `directory`."""
    return ["--chain-rpc", f"http://127.0.0.1:{port}", "--chain-deployment", str(directory / "devnet.json")]


def start_devnet(home: Path, port: int, directory: Path) -> tuple[subprocess.Popen, str]:
    """`veil devnet` (anvil with the contracts deployed), once it says nodes may use it."""
    return start(home, "devnet", "--port", str(port), "--dir", str(directory), ready="nodes use it with",
                 passphrase=None)
