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
