"""`veil wallet`, `veil chain info` and `veil devnet` as a person uses them: real
processes, one red line and no traceback for every mistake."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from cli_harness import assert_clean_failure as clean_failure
from cli_harness import chain_flags, free_port, new_vault, ok, require_anvil, start_devnet, stop, veil
from veilstream.chain import ChainClient, ChequeLedger, Direction
from veilstream.identity import Identity

ETHER = 10**18


@pytest.fixture
def home(tmp_path) -> tuple[Path, Identity]:
    home = tmp_path / "home"
    return home, new_vault(home).identity()


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


def test_devnet_is_shared_by_processes_and_survives_a_restart(home, tmp_path):
    require_anvil()
    home, _identity = home
    port, directory = free_port(), tmp_path / "devnet"
    url, deployment = f"http://127.0.0.1:{port}", directory / "devnet.json"
    chain_args = chain_flags(port, directory)

    process, banner = start_devnet(home, port, directory)
    try:
        assert "contracts deployed" in banner and url in banner
        ok(veil(home, "wallet", "faucet", "3", *chain_args))
        ok(veil(home, "wallet", "deposit", "1", *chain_args))
        assert re.search(r"chain id\s+31337", ok(veil(home, "chain", "info", *chain_args)))
        clean_failure(veil(home, "devnet", "--port", str(free_port()), "--dir", str(directory)), "already runs")
    finally:
        stop(process)
    assert (directory / "anvil-state.json").exists()

    process, banner = start_devnet(home, port, directory)
    try:
        assert "already deployed, reused" in banner
        balance = ok(veil(home, "wallet", "balance", *chain_args))
        assert re.search(r"deposit\s+1 ETH", balance)
        # The deployment file alone is enough: it names the endpoint.
        assert re.search(r"deposit\s+1 ETH", ok(veil(home, "wallet", "balance", "--chain-deployment", str(deployment))))
    finally:
        stop(process, signal.SIGTERM)  # a plain kill stops anvil too
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
