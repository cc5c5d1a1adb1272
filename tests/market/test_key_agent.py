"""Key agent and viewer, end to end without a network: cheques buy keys, keys check out."""

import os

import pytest
from eth_account import Account

from veilstream.chain.client import Guarantee
from veilstream.content import PublishOptions, Terms, WrongKeyError, publish_file
from veilstream.content.keytree import TreeNode
from veilstream.content.unseal import open_verified_slice, verify_range_keys
from veilstream.identity import Identity
from veilstream.market import messages
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.key_session import ViewerKeySession
from veilstream.market.payer import BudgetExceeded, Payer

PRICE = 10**12
AGENT_KEY = bytes(range(1, 33))
NOW = 1_700_000_000
LANE = Guarantee(ceiling_wei=10**6 * PRICE, until=NOW + 10**6)  # what the chain promises a payee
CHANNEL = ("test", 1)  # the connection a session belongs to


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ka")
    (tmp / "in.bin").write_bytes(os.urandom(500_000))
    (tmp / "out").mkdir()
    creator = Identity.from_mnemonic("leader monkey parrot ring guide accident before fence cannon height naive bean")
    return publish_file(tmp / "in.bin", tmp / "out", creator, PublishOptions(16 * 1024, terms=Terms(PRICE, 2_000))), tmp


@pytest.fixture
def agent(published, domain, tmp_path):
    done, _ = published
    agent = KeyAgent(domain, AuditLog(tmp_path / "audit.log"), clock=lambda: NOW, signing_key=AGENT_KEY)
    agent.offer(done.torrent, done.keys)
    return agent


def open_delivery(session, torrent, answer):
    assert isinstance(answer, messages.SealedKeys), answer
    delivery = messages.decode_delivery(session.open(answer.sealed))
    nodes = [TreeNode(h, j, k) for h, j, k in delivery.nodes]
    return verify_range_keys(torrent, nodes, list(delivery.proof)), delivery


def test_keys_are_released_against_cheques_and_decrypt(agent, published, domain):
    done, _ = published
    torrent, cid = done.torrent, done.torrent.info_hash
    wallet = Account.create()
    session = ViewerKeySession(wallet.key, cid, NOW + 600)
    assert agent.on_session(session.offer, CHANNEL) == wallet.address
    payer = Payer(wallet, domain, cid, PRICE, budget_wei=100 * PRICE)
    seeder = Account.create().address
    assert agent.covers_wanted(wallet.address, cid) == [agent.creator_of(cid)]
    agent.set_cover(wallet.address, cid, agent.creator_of(cid), LANE)
    agent.set_cover(wallet.address, cid, seeder, LANE)

    keys, delivery = open_delivery(session, torrent, agent.on_key_request(CHANNEL, cid, 0, 2))  # the window
    assert sorted(keys) == [0, 1] and delivery.metadata_key == done.keys.metadata_key
    refused = agent.on_key_request(CHANNEL, cid, 2, 3)
    assert isinstance(refused, messages.MarketRefusal) and refused.code == messages.RefusalCode.PAYMENT_NEEDED

    for _ in range(5):
        agent.on_cheque(payer.pay_for_slice(seeder))
    keys, _ = open_delivery(session, torrent, agent.on_key_request(CHANNEL, cid, 2, 7))
    with open(done.ciphertext_path, "rb") as f:
        for i in range(2, 7):
            offset, length = torrent.manifest.slice_range(i)
            f.seek(offset)
            assert len(open_verified_slice(torrent, i, f.read(length), keys[i])) > 0
    assert agent.audit.count == 2 and [e["first"] for e in agent.audit.entries()] == [0, 2]


def test_requests_without_session_or_out_of_range_are_refused(agent, published):
    done, _ = published
    cid = done.torrent.info_hash
    assert isinstance(agent.on_key_request(CHANNEL, cid, 0, 1), messages.MarketRefusal)
    wallet = Account.create()
    agent.on_session(ViewerKeySession(wallet.key, cid, NOW + 60).offer, CHANNEL)
    answer = agent.on_key_request(CHANNEL, cid, 0, done.torrent.piece_count + 1)
    assert isinstance(answer, messages.MarketRefusal) and answer.code == messages.RefusalCode.BAD_REQUEST
    assert agent.audit.count == 0


def test_a_lying_agent_is_caught_by_the_viewer(agent, published, domain):
    """Keys that do not match the commitments are refused: the delivery is the evidence."""
    done, _ = published
    torrent, cid = done.torrent, done.torrent.info_hash
    wallet = Account.create()
    session = ViewerKeySession(wallet.key, cid, NOW + 600)
    agent.on_session(session.offer, CHANNEL)
    agent.set_cover(wallet.address, cid, agent.creator_of(cid), LANE)
    answer = agent.on_key_request(CHANNEL, cid, 0, 2)
    delivery = messages.decode_delivery(session.open(answer.sealed))
    wrong = [TreeNode(h, j, os.urandom(32)) for h, j, _ in delivery.nodes]
    with pytest.raises(WrongKeyError):
        verify_range_keys(torrent, wrong, list(delivery.proof))


def test_asking_what_a_payee_was_signed_before_spends_nothing(domain):
    """A later session reads what earlier ones signed each payee (to hold a lane that
    covers it) before it pays any of them: that is no spending. Counted as negative
    spending, it made a viewer holding most keys think it had paid for fewer slices than
    it held, so it never asked for the next key and waited for ever (seen in CI)."""
    content = os.urandom(32)
    seeders = [Account.create().address for _ in range(2)]
    before = {seeders[0]: 8 * PRICE, seeders[1]: 30 * PRICE}
    payer = Payer(Account.create(), domain, content, PRICE, budget_wei=10 * PRICE,
                  signed_before=lambda cid, seeder: before[seeder] if cid == content else 0)
    assert [payer.signed_before_for(content, s) for s in seeders] == [8 * PRICE, 30 * PRICE]
    assert payer.content_spent_wei == payer.spent_wei == 0
    assert payer.pay_for_slice(seeders[0]).cheque.cumulative_amount == 9 * PRICE
    assert payer.content_spent_wei == payer.spent_wei == PRICE


def test_the_payer_keeps_to_its_budget(domain):
    payer = Payer(Account.create(), domain, os.urandom(32), PRICE, budget_wei=3 * PRICE)
    seeders = [Account.create().address for _ in range(2)]
    payer.pay_for_slice(seeders[0])
    payer.pay_for_slice(seeders[1])
    assert payer.pay_for_slice(seeders[0]).cheque.cumulative_amount == 2 * PRICE
    with pytest.raises(BudgetExceeded):
        payer.pay_for_slice(seeders[1])
    assert payer.spent_wei == 3 * PRICE


def test_cheques_signed_ahead_are_the_cheques_signed_on_demand_and_stay_in_budget(domain, monkeypatch):
    """A payer signing ahead hands out exactly what one signing on demand would (RFC 6979
    signatures are deterministic), drops what the payments' course makes useless, and
    never holds cheques signed ahead for more than the budget leaves."""
    wallet, content = Account.create(), os.urandom(32)
    seeders = [Account.create().address for _ in range(2)]
    signed_amounts = []
    sign = type(domain).sign

    def recording_sign(self, account, cheque):
        signed_amounts.append(cheque.cumulative_amount)
        return sign(self, account, cheque)

    monkeypatch.setattr(type(domain), "sign", recording_sign)
    ahead = Payer(wallet, domain, content, PRICE, budget_wei=8 * PRICE, sign_ahead=3)
    plain = Payer(wallet, domain, content, PRICE, budget_wei=8 * PRICE)
    course = [(0, PRICE)] * 4 + [(1, PRICE), (0, PRICE // 2), (0, PRICE // 2), (1, PRICE), (0, PRICE)]
    served_ahead = 0
    for seeder, amount in course:
        signed_amounts.clear()
        mine = ahead.pay(seeders[seeder], amount)
        served_ahead += not signed_amounts
        assert ahead.spent_wei + ahead.signed_ahead_wei <= 8 * PRICE
        signed_amounts.clear()
        assert mine == plain.pay(seeders[seeder], amount)
        domain.verify(mine)
    assert served_ahead >= 3 and ahead.owed == plain.owed and ahead.spent_wei == 8 * PRICE
    with pytest.raises(BudgetExceeded):
        ahead.pay(seeders[0], PRICE)


def test_an_expired_session_is_refused_with_its_own_code_and_a_newer_one_takes_over(published, domain, tmp_path):
    """The viewer renews an expiring session; an agent that sees an expired one says so
    distinctly (the viewer then renews instead of distrusting an honest agent)."""
    done, _ = published
    cid = done.torrent.info_hash
    clock = [NOW]
    agent = KeyAgent(domain, AuditLog(tmp_path / "audit.log"), clock=lambda: clock[0], signing_key=AGENT_KEY)
    agent.offer(done.torrent, done.keys)
    wallet = Account.create()
    first = ViewerKeySession(wallet.key, cid, NOW + 60)
    agent.on_session(first.offer, CHANNEL)
    agent.set_cover(wallet.address, cid, agent.creator_of(cid), LANE)
    clock[0] = NOW + 61
    expired = agent.on_key_request(CHANNEL, cid, 0, 1)
    assert isinstance(expired, messages.MarketRefusal) and expired.code == messages.RefusalCode.SESSION_EXPIRED
    renewed = ViewerKeySession(wallet.key, cid, NOW + 3600)
    agent.on_session(renewed.offer, CHANNEL)
    keys, _ = open_delivery(renewed, done.torrent, agent.on_key_request(CHANNEL, cid, 0, 1))
    assert sorted(keys) == [0]
