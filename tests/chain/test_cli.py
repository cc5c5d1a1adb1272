"""`veil wallet`, `veil chain info` and `veil devnet` as a person uses them: real
processes, one red line and no traceback for every mistake."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import ChainClient, ChequeLedger, Direction
from veilstream.chain.anvil import find_anvil, free_port
from veilstream.identity import Identity, generate_mnemonic
from veilstream.vault import KdfParams, Vault

PASS = "chain test passphrase"
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
ETHER = 10**18


def veil(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VEIL_HOME": str(home), "VEIL_PASSPHRASE": PASS, "COLUMNS": "200"}
    env.pop("VEIL_CHAIN_RPC", None)
    env.pop("VEIL_CHAIN_DEPLOYMENT", None)
    return subprocess.run(
        [sys.executable, "-m", "veilstream", *args], capture_output=True, text=True, env=env, timeout=120
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def clean_failure(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]


@pytest.fixture
def home(tmp_path) -> tuple[Path, Identity]:
    home = tmp_path / "home"
    vault = Vault.create(home, PASS, generate_mnemonic(), CHEAP_KDF)
    return home, vault.identity()


def test_the_wallet_on_the_embedded_chain(home):
    home, identity = home
    assert ok(veil(home, "wallet", "address")).strip() == identity.wallet_address
    ok(veil(home, "wallet", "faucet", "5"))
    assert "deposit is now 1.5 ETH" in ok(veil(home, "wallet", "deposit", "1.5"))
    assert "execute it in 24h" in ok(veil(home, "wallet", "withdraw", "request", "0.5"))
    clean_failure(veil(home, "wallet", "withdraw", "execute"), "time-locked: it can be executed in 2[34]h")
    before = re.search(r"account\s+(\S+) ETH", ok(veil(home, "wallet", "balance")))[1]
    clean_failure(veil(home, "wallet", "withdraw", "request", "0.2"), "already requested")  # and no gas spent on it
    assert re.search(r"account\s+(\S+) ETH", ok(veil(home, "wallet", "balance")))[1] == before
    balance = ok(veil(home, "wallet", "balance"))
    assert re.search(r"deposit\s+1\.5 ETH", balance)
    assert re.search(r"withdrawal\s+0\.5 ETH", balance)
    info = ok(veil(home, "chain", "info"))
    assert re.search(r"chain id\s+131277322940537", info)
    assert "embedded EVM in" in info

    # Another viewer pays this identity with a direct cheque; it shows as pending, then cashes.
    payer = Account.from_key(keccak(b"cli payer"))
    with ChainClient.embedded(home / "chain" / "embedded", payer) as client:
        client.dev.fund(payer.address, ETHER)
        client.deposit(ETHER // 2)
        cheque = client.sign_payment(identity.wallet_address, ETHER // 10)
        ledger = ChequeLedger(home / "chain" / "cheques.sqlite")
        ledger.record(client.cheque_domain, cheque, Direction.RECEIVED)
        ledger.close()
    assert "0.1 ETH" in ok(veil(home, "wallet", "pending"))
    assert "cashed 1 cheque for 0.1 ETH" in ok(veil(home, "wallet", "cash"))
    assert "no uncashed cheques" in ok(veil(home, "wallet", "pending"))
    assert "claimed 0.1 ETH" in ok(veil(home, "wallet", "claim"))

    # A micro-payment is not worth its gas (some 10¹⁴ wei here): kept, and cashed only if asked.
    with ChainClient.embedded(home / "chain" / "embedded", payer) as client:
        ledger = ChequeLedger(home / "chain" / "cheques.sqlite")
        ledger.record(client.cheque_domain, client.sign_payment(identity.wallet_address, ETHER // 10 + 10**12),
                      Direction.RECEIVED)
        ledger.close()
    held = ok(veil(home, "wallet", "cash"))
    assert "cashed 0 cheques for 0 ETH" in held
    assert re.search(r"left uncashed: 0\.000001 ETH in 1 cheque \(gas ~0\.\d+ ETH would cost more than they are "
                     r"worth\); they stay in the ledger", held), held
    assert "cashed 1 cheque for 0.000001 ETH" in ok(veil(home, "wallet", "cash", "--all"))


def test_mistakes_are_one_red_line(home):
    home, _identity = home
    clean_failure(veil(home, "wallet", "deposit", "abc"), "not an amount")
    clean_failure(veil(home, "wallet", "deposit", "1.5wei"), "whole number of wei")
    clean_failure(veil(home, "wallet", "deposit", "1000000"), "not enough ether")
    clean_failure(veil(home, "wallet", "withdraw", "execute"), "no withdrawal requested")
    clean_failure(veil(home, "wallet", "withdraw", "request", "1"), "free deposit is 0 ETH")
    clean_failure(veil(home, "wallet", "claim"), "nothing to claim")
    port = free_port()  # nothing listens there
    clean_failure(veil(home, "wallet", "balance", "--chain-rpc", f"http://127.0.0.1:{port}"), "cannot reach")
    clean_failure(veil(home, "chain", "info", "--chain-rpc", "ftp://x"), "http")
    clean_failure(
        veil(home, "chain", "info", "--chain-deployment", str(home / "missing.json")), "no deployment file"
    )


def _start_devnet(home: Path, port: int, directory: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "VEIL_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "veilstream", "devnet", "--port", str(port), "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen = []
    for line in process.stdout:  # ends at EOF if the devnet dies
        seen.append(line)
        if "nodes use it with" in line:
            return process, "".join(seen)
    process.wait(timeout=30)
    raise AssertionError("devnet did not start:\n" + "".join(seen))


def _stop_devnet(process: subprocess.Popen, signum: int = signal.SIGINT) -> str:
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert "Traceback" not in out
    return out


def test_devnet_is_shared_by_processes_and_survives_a_restart(home, tmp_path):
    if find_anvil() is None:
        pytest.fail("anvil is not installed: run `make tools` (scripts/install-tools.sh)")
    home, _identity = home
    port, directory = free_port(), tmp_path / "devnet"
    url, deployment = f"http://127.0.0.1:{port}", directory / "devnet.json"
    chain_args = ["--chain-rpc", url, "--chain-deployment", str(deployment)]

    process, banner = _start_devnet(home, port, directory)
    try:
        assert "contracts deployed" in banner and url in banner
        ok(veil(home, "wallet", "faucet", "3", *chain_args))
        ok(veil(home, "wallet", "deposit", "1", *chain_args))
        assert re.search(r"chain id\s+31337", ok(veil(home, "chain", "info", *chain_args)))
        clean_failure(veil(home, "devnet", "--port", str(free_port()), "--dir", str(directory)), "already runs")
    finally:
        _stop_devnet(process)
    assert (directory / "anvil-state.json").exists()

    process, banner = _start_devnet(home, port, directory)
    try:
        assert "already deployed, reused" in banner
        balance = ok(veil(home, "wallet", "balance", *chain_args))
        assert re.search(r"deposit\s+1 ETH", balance)
        # The deployment file alone is enough: it names the endpoint.
        assert re.search(r"deposit\s+1 ETH", ok(veil(home, "wallet", "balance", "--chain-deployment", str(deployment))))
    finally:
        _stop_devnet(process, signal.SIGTERM)  # a plain kill stops anvil too
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens: anvil is gone


def test_lanes_are_listed_and_closed_after_their_time(home):
    """What a viewer's deposit holds for payees, and getting it back once a lane's time is past."""
    home, identity = home
    ok(veil(home, "wallet", "faucet", "1"))
    ok(veil(home, "wallet", "deposit", "0.5"))
    assert "no lanes held" in ok(veil(home, "wallet", "lanes"))
    payee = Account.create().address
    with ChainClient.embedded(home / "chain" / "embedded", identity.wallet) as client:
        until = client.timestamp() + client.deployment.settings.lane_min_duration_s + 60
        client.open_lanes(keccak(b"a content"), [payee], ETHER // 10, until)
    listed = ok(veil(home, "wallet", "lanes"))
    assert payee in listed and "0.1 ETH" in listed and "held in lanes" in ok(veil(home, "wallet", "balance"))
    assert "returned 0 ETH" in ok(veil(home, "wallet", "lanes", "--close"))  # not yet: still held
    with ChainClient.embedded(home / "chain" / "embedded", identity.wallet) as client:
        client.dev.advance_time(client.deployment.settings.lane_min_duration_s + 120)
    assert "returned 0.1 ETH" in ok(veil(home, "wallet", "lanes", "--close"))
    assert "0.5 ETH" in ok(veil(home, "wallet", "balance"))
