"""Shared chain fixtures.

The contracts are deployed once per backend and worker; every test starts from the same
snapshot (actors funded, one content registered, viewers' deposits made) and the chain is
reverted after it. `chain` runs each test on the embedded EVM and on anvil.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from veilstream.chain import ChainClient, ChainSettings
from veilstream.chain.anvil import ANVIL_DEV_KEY, Anvil, find_anvil
from veilstream.chain.artifacts import compile_source
from veilstream.chain.client import _transact, connect_rpc

BACKENDS = ["embedded", "anvil"]
TEST_SETTINGS = ChainSettings(withdrawal_delay_s=1_000, withdrawal_window_s=2_000, lane_min_duration_s=300,
                              key_deadline_s=600, dispute_window_s=700, terms_delay_s=500)
ETHER = 10**18
PRICE_PER_SLICE = 10**12
SEEDER_SHARE_BPS = 2_000
SLICE_COUNT = 1_000
VIEWER_DEPOSIT = ETHER
VIEWER2_DEPOSIT = ETHER // 100
ACTORS = ("creator", "agent", "seeder", "seeder2", "viewer", "viewer2", "stranger")
ATTACKER_SOURCE = Path(__file__).parent / "contracts" / "Attacker.vy"


def _test_keys():
    """The test content's key tree and key-commitment tree: AccessSales checks deliveries
    against the registered root, so the content has real ones."""
    from veilstream.content import merkle
    from veilstream.content.keytree import TreeNode, tree_depth
    from veilstream.content.unseal import all_commitments

    root = TreeNode(tree_depth(SLICE_COUNT), 0, keccak(b"veilstream test content key"))
    return root, merkle.MerkleTree(all_commitments(root, SLICE_COUNT))


TEST_KEYS, TEST_COMMITMENTS = _test_keys()


def actor_account(name: str) -> LocalAccount:
    return Account.from_key(keccak(f"veilstream test actor {name}".encode()))


def fake_info(creator: str, label: bytes = b"content", key_root: bytes | None = None) -> tuple[bytes, bytes]:
    """A bencoded info dict laid out as a Veilstream torrent's (the manifest last, the
    creator its first field) for `creator`, and its content id (SHA-256): what the
    registry reads the creator from."""
    from hashlib import sha256

    root = key_root if key_root is not None else keccak(b"key root " + label)
    manifest = (b"10:veilstreamd7:creator20:" + bytes.fromhex(creator[2:]) + b"13:creator nostr32:" + bytes(32)
                + b"8:key root32:" + root + b"1:vi1ee")
    name = b"veil-" + label.hex().encode()
    info = b"d4:name%d:%s%se" % (len(name), name, manifest)
    return info, sha256(info).digest()


@dataclass
class World:
    kind: str
    base: ChainClient
    creator: ChainClient
    agent: ChainClient
    seeder: ChainClient
    seeder2: ChainClient
    viewer: ChainClient
    viewer2: ChainClient
    stranger: ChainClient
    content_id: bytes

    @property
    def settings(self) -> ChainSettings:
        return self.base.deployment.settings

    def advance(self, seconds: int) -> int:
        return self.base.dev.advance_time(seconds)

    def clients(self) -> list[ChainClient]:
        return [getattr(self, name) for name in ACTORS]

    def assert_wallet_solvent(self, extra: tuple[str, ...] = ()) -> None:
        """The Wallet holds exactly every deposit, every lane and every unclaimed earning."""
        addresses = [c.address for c in self.clients()] + list(extra)
        owed = sum(self.base.deposit_of(a) + self.base.held_of(a) for a in addresses) + sum(
            self.base._view(self.base.wallet.functions.earnings(a)) for a in addresses
        )
        assert self.base.balance(self.base.deployment.wallet) == owed

    def send(self, client: ChainClient, fn, value: int = 0):
        """Transact with a contract outside the client (the test's hostile contracts)."""
        return _transact(client.w3, client.account, fn, value=value, chain_id=client.chain_id)


def _start_backend(kind: str, stack) -> ChainClient:
    if kind == "embedded":
        client = ChainClient.embedded(None, settings=TEST_SETTINGS)
        stack.callback(client.close)
        return client
    if find_anvil() is None:
        pytest.fail("anvil is not installed: run `make tools` (scripts/install-tools.sh)")
    node = stack.enter_context(Anvil())
    deployment = ChainClient.deploy(connect_rpc(node.url), Account.from_key(ANVIL_DEV_KEY), TEST_SETTINGS)
    return ChainClient.connect(node.url, deployment)


@pytest.fixture(scope="session", params=BACKENDS)
def _world(request) -> Iterator[tuple[World, list]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        base = _start_backend(request.param, stack)
        clients = {}
        for name in ACTORS:
            account = actor_account(name)
            base.dev.fund(account.address, 1_000 * ETHER)
            clients[name] = base.with_account(account)
        info, content_id = fake_info(clients["creator"].address, b"veilstream test content", TEST_COMMITMENTS.root)
        clients["creator"].register(
            info,
            price_per_slice=PRICE_PER_SLICE,
            seeder_share_bps=SEEDER_SHARE_BPS,
            slice_count=SLICE_COUNT,
            card_hash=keccak(b"card"),
            key_agent=clients["agent"].address,
        )
        clients["viewer"].deposit(VIEWER_DEPOSIT)
        clients["viewer2"].deposit(VIEWER2_DEPOSIT)
        world = World(kind=request.param, base=base, content_id=content_id, **clients)
        holder = [base.dev.snapshot()]
        yield world, holder


@pytest.fixture
def chain(_world) -> Iterator[World]:
    world, holder = _world
    try:
        yield world
    finally:
        world.base.dev.revert(holder[0])
        # anvil forgets a snapshot once reverted to; take it again for the next test.
        holder[0] = world.base.dev.snapshot()


@pytest.fixture(scope="session")
def attacker_artifact() -> tuple[list, bytes]:
    return compile_source(ATTACKER_SOURCE.read_text(), "Attacker")


@pytest.fixture
def attacker(chain: World, attacker_artifact):
    """A hostile contract deployed by `stranger`, pointed at the Wallet and AccessSales."""
    abi, bytecode = attacker_artifact
    w3 = chain.base.w3
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = chain.send(
        chain.stranger, factory.constructor(chain.base.deployment.wallet, chain.base.deployment.access_sales)
    )
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)
