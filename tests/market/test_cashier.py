"""The cashier on the embedded chain: batches once the threshold is passed, anchors the
audit head, settles the rest on close; every wei signed ends up cashed and split."""

from hashlib import sha256
from dataclasses import replace

import pytest
from eth_account import Account

from veilstream.chain.client import AnchorKind, ChainClient
from veilstream.chain.errors import ChainUnavailable
from veilstream.chain.ledger import ChequeLedger
from veilstream.market.cashier import Cashier
from veilstream.market.settings import MarketSettings

ETHER = 10**18
PRICE = 10**15


@pytest.fixture(scope="module")
def chain():
    client = ChainClient.embedded(None)
    yield client
    client.close()


def info_naming(creator: str) -> tuple[bytes, bytes]:
    """The smallest info dict laid out as a Veilstream torrent's, naming `creator`."""
    info = b"d10:veilstreamd7:creator20:" + bytes.fromhex(creator[2:]) + b"13:creator nostr32:" + bytes(32) + \
        b"8:key root32:" + bytes(32) + b"ee"
    return info, sha256(info).digest()


def actors(chain):
    """A registered content's creator, a seeder, and a viewer with a deposit."""
    creator, seeder, viewer = Account.create(), Account.create(), Account.create()
    for who in (creator, seeder, viewer):
        chain.dev.fund(who.address, ETHER)
    info, content = info_naming(creator.address)
    chain.with_account(creator).register(info, price_per_slice=PRICE, seeder_share_bps=2_500, slice_count=100)
    chain.with_account(viewer).deposit(ETHER // 10)
    return creator, seeder, viewer, content


def test_threshold_batches_anchor_and_close(chain, tmp_path):
    creator, seeder, viewer, content = actors(chain)
    settings = replace(MarketSettings(), cash_threshold_wei=5 * PRICE, audit_anchor_every_entries=2)
    cashier = Cashier(chain.with_account(seeder), ChequeLedger(tmp_path / "cheques.sqlite"), settings)
    viewer_chain = chain.with_account(viewer)
    for n in range(1, 13):
        cashier.on_cheque(viewer_chain.sign_cheque(content, seeder.address, n * PRICE))
        if n == 5:
            cashier._worker.submit(lambda: None).result()  # let the first batch land
            assert cashier.batches_cashed == 1
            assert chain.cashed(viewer.address, content, seeder.address) == 5 * PRICE
    cashier.on_audit_head(b"\x01" * 32, entries=1)
    cashier.on_audit_head(b"\x02" * 32, entries=2)  # every 2nd entry is anchored
    claimed = cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == 12 * PRICE
    assert claimed == 12 * PRICE * 2_500 // 10_000  # the seeder's share; the rest is the creator's
    assert chain.earnings(creator.address) == 12 * PRICE - claimed
    assert chain.latest_anchor(seeder.address, AnchorKind.AUDIT_LOG)[0] == b"\x02" * 32
    assert cashier.anchors_posted == 1 and not cashier.failures


def test_a_batch_that_failed_is_cashed_again(chain, tmp_path):
    """A cash transaction that fails (the chain was down) is handed over again, not
    forgotten until the next run."""
    _creator, seeder, viewer, content = actors(chain)
    payee = chain.with_account(seeder)
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(MarketSettings(), cash_threshold_wei=PRICE))
    real_cash = payee.cash
    outage = [True]

    def flaky(cheques):
        if outage[0]:
            raise ChainUnavailable("the chain is down")
        return real_cash(cheques)
    payee.cash = flaky
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(content, seeder.address, 3 * PRICE))
    cashier._worker.submit(lambda: None).result()
    assert chain.cashed(viewer.address, content, seeder.address) == 0 and cashier.uncashed_wei == 3 * PRICE
    outage[0] = False
    cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == 3 * PRICE
    assert cashier.failures == ["the chain is down"]
