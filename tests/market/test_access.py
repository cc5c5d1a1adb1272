"""Access sales on the embedded chain: buy a range in one transaction, the key agent posts
the keys sealed to the buyer, the buyer opens and checks them; nobody else can."""

import os

import pytest
from eth_account import Account

from veilstream.chain.client import ChainClient, GrantState
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.content.unseal import open_verified_slice
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market.access import BadDelivery, GrantResponder, OneTimeKey, issued_keys
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent

ETHER = 10**18
PRICE = 10**14


def market(chain, tmp_path, size: int):
    """A published, registered content, its creator's key agent, and a funded buyer."""
    creator, buyer = Identity.from_mnemonic(generate_mnemonic()), Account.create()
    for who in (creator.wallet_address, buyer.address):
        chain.dev.fund(who, ETHER)
    (tmp_path / "in.bin").write_bytes(os.urandom(size))
    (tmp_path / "out").mkdir()
    done = publish_file(tmp_path / "in.bin", tmp_path / "out", creator, PublishOptions(16 * 1024, terms=Terms(PRICE, 2_000)))
    torrent = done.torrent
    creator_chain = chain.with_account(creator.wallet)
    creator_chain.register(torrent.info_bytes, price_per_slice=PRICE, seeder_share_bps=2_000, slice_count=torrent.piece_count)
    agent = KeyAgent(chain.cheque_domain, AuditLog(tmp_path / "audit.log"), signing_key=creator.wallet_key)
    agent.offer(torrent, done.keys)
    return done, torrent, creator_chain, agent, buyer


def test_a_bought_range_is_answered_on_chain_and_opens(tmp_path):
    chain = ChainClient.embedded(None)
    try:
        done, torrent, creator_chain, agent, buyer = market(chain, tmp_path, 300_000)
        responder = GrantResponder(creator_chain, agent)

        buyer_chain = chain.with_account(buyer)
        one_time = OneTimeKey.generate()
        grant_id = buyer_chain.buy(torrent.info_hash, 3, 9, one_time.public)
        assert issued_keys(chain, one_time.secret, grant_id, torrent) is None  # nothing posted yet
        assert responder.poll() == [grant_id]
        assert responder.poll() == []  # answered once
        assert chain.grant(grant_id).state is GrantState.ISSUED

        ring = issued_keys(chain, one_time.secret, grant_id, torrent)
        assert ring.metadata_key == done.keys.metadata_key
        with open(done.ciphertext_path, "rb") as f:
            for i in range(3, 12):
                offset, length = torrent.manifest.slice_range(i)
                f.seek(offset)
                open_verified_slice(torrent, i, f.read(length), ring.slice_key(i))
        with pytest.raises(Exception):
            ring.slice_key(12)  # only what was bought
        with pytest.raises(BadDelivery):  # a stranger reading the chain learns nothing
            issued_keys(chain, OneTimeKey.generate().secret, grant_id, torrent)
        assert agent.audit.count == 1
        # price × slices × (1 − seeder share), to the creator once the buyer confirms
        assert creator_chain.earnings() == 0
        buyer_chain.confirm(grant_id)
        assert creator_chain.claim() == PRICE * 9 * (10_000 - 2_000) // 10_000
    finally:
        chain.close()


def test_one_grant_that_cannot_be_answered_does_not_hold_up_the_rest(tmp_path):
    """A grant past its deadline makes post_key revert; the grants after it on the same page
    are still answered, and only what was posted is in the audit log."""
    chain = ChainClient.embedded(None)
    try:
        done, torrent, creator_chain, agent, buyer = market(chain, tmp_path, 100_000)
        buyer_chain = chain.with_account(buyer)
        late = buyer_chain.buy(torrent.info_hash, 0, 2, OneTimeKey.generate().public)
        chain.dev.advance_time(chain.deployment.settings.key_deadline_s + 1)
        fresh = buyer_chain.buy(torrent.info_hash, 2, 2, OneTimeKey.generate().public)
        assert GrantResponder(creator_chain, agent).poll() == [fresh]
        assert chain.grant(late).state is GrantState.OPEN and chain.grant(fresh).state is GrantState.ISSUED
        assert [(e["first"], e["end"]) for e in agent.audit.entries()] == [(2, 4)]
    finally:
        chain.close()
