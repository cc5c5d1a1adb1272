import os

import pytest
from eth_account import Account

from veilstream.chain.cheque import Cheque, ChequeDomain


@pytest.fixture(scope="session")
def domain() -> ChequeDomain:
    return ChequeDomain(chain_id=31337, wallet="0x" + "11" * 20)


@pytest.fixture(scope="session")
def viewer():
    return Account.create()


@pytest.fixture(scope="session")
def content_id() -> bytes:
    return os.urandom(32)


@pytest.fixture
def sign(domain, viewer, content_id):
    def make(seeder: str, amount: int, *, account=None, content=None, on_domain=None):
        signer = account or viewer
        cheque = Cheque(signer.address, content or content_id, seeder, amount)
        return (on_domain or domain).sign(signer, cheque)
    return make


ETHER = 10**18


@pytest.fixture(scope="session")
def chain():
    """One embedded chain for the market's tests: each test uses accounts of its own."""
    from veilstream.chain.client import ChainClient

    client = ChainClient.embedded(None)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fund(chain):
    """fund(account, deposit_wei=0): ether for gas, and a deposit in the Wallet."""
    def make(account, deposit_wei: int = 0):
        chain.dev.fund(account.address, ETHER)
        if deposit_wei:
            chain.with_account(account).deposit(deposit_wei)
        return account
    return make


@pytest.fixture(scope="session")
def register(chain, fund):
    """register(done, creator): the published content on chain, by its creator."""
    def make(done, creator):
        fund(creator.wallet)
        terms = done.torrent.manifest.terms
        chain.with_account(creator.wallet).register(
            done.torrent.info_bytes, price_per_slice=terms.price_per_slice_wei,
            seeder_share_bps=terms.seeder_share_bps, slice_count=done.torrent.piece_count)
        return done
    return make
