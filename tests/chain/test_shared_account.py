"""One account, several senders: two clients of one wallet (two `veil` processes on one
vault: a serve cashing while a play opens lanes) send at once through the vault's wallet
lock, each with its own lock file handle, and every transaction of both lands."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account

from veilstream.chain import ChainClient
from veilstream.chain.anvil import ANVIL_DEV_KEY, Anvil, find_anvil
from veilstream.chain.client import connect_rpc
from veilstream.vault.lock import hold

from .conftest import ETHER, TEST_SETTINGS, actor_account

SENDS_EACH = 12
DEPOSIT_WEI = 10**15


def test_two_clients_of_one_wallet_never_pick_the_same_nonce(tmp_path):
    if find_anvil() is None:
        pytest.fail("anvil is not installed: run `make tools` (scripts/install-tools.sh)")
    account = actor_account("shared wallet")
    with Anvil() as node:
        deployment = ChainClient.deploy(connect_rpc(node.url), Account.from_key(ANVIL_DEV_KEY), TEST_SETTINGS)
        clients = [ChainClient.connect(node.url, deployment, account) for _ in range(2)]  # two connections
        clients[0].dev.fund(account.address, ETHER)
        for client in clients:  # a fresh lock file handle per send, as a separate process has
            client.sender_lock = lambda address: hold(tmp_path / "locks", f"wallet-{address}", "test", wait_s=30)

        def deposits(client: ChainClient) -> int:
            for _ in range(SENDS_EACH):
                client.deposit(DEPOSIT_WEI)
            return SENDS_EACH

        with ThreadPoolExecutor(2) as pool:
            sent = sum(pool.map(deposits, clients))  # a collision raises here
        assert sent == 2 * SENDS_EACH
        assert clients[0].deposit_of() == 2 * SENDS_EACH * DEPOSIT_WEI
        assert clients[0].w3.eth.get_transaction_count(account.address) == 2 * SENDS_EACH
