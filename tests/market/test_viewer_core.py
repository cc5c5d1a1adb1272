"""The viewer's market core without sockets or clocks: `ViewerCore` joined in memory to
seller cores (tests/market/cores.py), `now` passed explicitly, its actions asserted. What
it pays whom for each slice, which keys it asks for, of whom and when, what it does with a
silent or lying key agent, and when it stops."""

import os

import pytest
from eth_account import Account

from veilstream.content import ContentKeys, KeyRing, nodes_for_range
from veilstream.market import messages
from veilstream.market.actions import ChequeSigned, Drop, Fail, KeysArrived, OpenLanes, Send, StartTimer
from veilstream.market.credit import DIRECT_CONTENT_ID
from veilstream.market.key_session import KeyDelivery, seal_to_session, sign_delivery
from veilstream.market.seller import SellerCore
from veilstream.market.settings import MarketSettings
from veilstream.market.viewer import (KEY_BATCH_TIMER, KEY_REQUEST_TIMER, LANE_GATHER_TIMER, NO_KEY_AGENT_TIMER,
                                      BudgetSpent, HeldGrants, StreamError)

from veilstream.swarm import ExtensionMessageReceived, PeerReady

from .cores import MARKET, PART, PRICE, SLICE, Market, key_agent, publish, sent

CREATOR, SEEDER, PLAIN, SECOND_AGENT = 1, 2, 3, 4  # the viewer's connections


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return publish(tmp_path_factory.mktemp("viewer-core"))


def creator_core(published, domain, settings=MarketSettings(), core_class=SellerCore):
    return core_class(published.torrent, payee=published.creator.wallet_address, domain=domain, settings=settings,
                      key_agent=key_agent(published, domain, settings))


def seeder_core(published, domain, payee=None, **kwargs):
    return SellerCore(published.torrent, payee=payee or Account.create().address, domain=domain, **kwargs)


def cheques(actions, *, direct=False):
    """(payee, cumulative amount) of each cheque signed, in order."""
    return [(a.cheque.cheque.seeder, a.cheque.cheque.cumulative_amount) for a in actions
            if isinstance(a, ChequeSigned) and (a.cheque.cheque.content_id == DIRECT_CONTENT_ID) == direct]


# -- the payment split ---------------------------------------------------------------------------


def test_a_slice_is_paid_to_the_seeder_that_delivered_it_the_creator_or_for_a_plain_peer_the_creator(published,
                                                                                                   domain):
    seeder = seeder_core(published, domain)
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain), SEEDER: seeder})
    market.connect(CREATOR, SEEDER).connect(PLAIN, speaks_market=False).start()
    creator = published.creator.wallet_address
    # the creator's and the seeder's lanes are held in one transaction, once both said who they are
    assert [(a.content_id, set(a.payees)) for a in market.viewer_actions(OpenLanes)] == \
        [(published.cid, {creator, seeder.payee})]
    start = len(market.log)
    market.deliver(0, (SEEDER, SLICE)).deliver(1, (CREATOR, SLICE)).deliver(2, (PLAIN, SLICE))
    market.deliver(3, (SEEDER, SLICE // 2), (CREATOR, SLICE // 2))
    actions = market.log[start:]
    # a slice split between two senders is paid in proportion (the rounding to the main sender)
    assert cheques(actions) == [(seeder.payee, PRICE), (creator, PRICE), (creator, 2 * PRICE),
                                (creator, 2 * PRICE + PRICE // 2), (seeder.payee, PRICE + PRICE // 2)]
    # each cheque goes to the node it names: a plain peer's slice is paid to the creator's node
    assert [m.cheque.cheque.cumulative_amount for m in sent(actions, messages.ChequeMessage, SEEDER)] == \
        [PRICE, PRICE + PRICE // 2]
    assert [m.cheque.cheque.cumulative_amount for m in sent(actions, messages.ChequeMessage, CREATOR)
            if m.cheque.cheque.seeder == creator] == [PRICE, 2 * PRICE, 2 * PRICE + PRICE // 2]
    # the creator's node sells keys: it is shown the seeder's cheques too, before a key request
    assert {m.cheque.cheque.seeder for m in sent(actions, messages.ChequeMessage, CREATOR)} == {creator, seeder.payee}
    assert not sent(actions, conn=PLAIN)
    # a cheque is kept (ChequeSigned) before the Send that carries it
    first_sign = next(i for i, a in enumerate(actions) if isinstance(a, ChequeSigned))
    first_send = next(i for i, a in enumerate(actions) if isinstance(a, Send)
                      and isinstance(a.message, messages.ChequeMessage))
    assert first_sign < first_send
    assert market.core.stats.paid_by_payee == {seeder.payee: PRICE + PRICE // 2, creator: 2 * PRICE + PRICE // 2}
    assert seeder.account(market.viewer.address).paid_wei == PRICE + PRICE // 2  # the seeder took them


def test_granted_slices_pay_the_seeder_only_its_share_by_direct_cheques(published, domain):
    keys = published.done.keys
    grants = HeldGrants((7,), ((0, 4),), KeyRing(tuple(nodes_for_range(keys.tree_root, 0, 4)), keys.metadata_key))
    seeder = seeder_core(published, domain, looks_up_grants=True)
    market = Market(published, domain, sellers={SEEDER: seeder}, grants=grants)
    market.connect(SEEDER).connect(PLAIN, speaks_market=False).start()
    assert [m.grant_ids for m in market.viewer_sent(messages.GrantClaim, SEEDER)] == [(7,)]
    # a lane for the seeder's direct cheques too
    assert {a.content_id for a in market.viewer_actions(OpenLanes)} >= {DIRECT_CONTENT_ID}
    start = len(market.log)
    market.deliver(1, (SEEDER, SLICE)).deliver(2, (SEEDER, SLICE)).deliver(3, (PLAIN, SLICE)).deliver(5, (SEEDER, SLICE))
    actions = market.log[start:]
    assert cheques(actions, direct=True) == [(seeder.payee, PART), (seeder.payee, 2 * PART)]
    assert cheques(actions) == [(seeder.payee, PRICE)]  # slice 5 is not granted: the full price
    assert market.payer.content_spent_wei == PRICE and sum(market.payer.direct_owed.values()) == 2 * PART
    # the plain peer's granted slice costs nothing: the creator was paid on chain
    assert market.core.key_for(3) == keys.tree_root.leaf_key(3)


def test_a_seeder_that_refuses_grants_is_paid_in_full_for_granted_slices(published, domain):
    keys = published.done.keys
    grants = HeldGrants((7,), ((0, 4),), KeyRing(tuple(nodes_for_range(keys.tree_root, 0, 4)), keys.metadata_key))
    seeder = seeder_core(published, domain)  # checks no grants
    market = Market(published, domain, sellers={SEEDER: seeder}, grants=grants)
    market.connect(SEEDER).start()
    assert "cannot check grants" in " ".join(seeder.stats.refusals)
    start = len(market.log)
    market.deliver(1, (SEEDER, SLICE))
    assert cheques(market.log[start:]) == [(seeder.payee, PRICE)] and not cheques(market.log[start:], direct=True)


# -- key batching ---------------------------------------------------------------------------------


def test_key_batching_never_holds_a_waiting_player_once_payments_stop_growing(published, domain):
    """Keys are asked for in batches that the next payments widen. When the swarm has
    nothing more to deliver (here no peer has the later slices), payments stop growing:
    the waiting player must still get the keys of the slices it holds, after the batch
    wait, not wait for slices that are not coming."""
    held = 24
    # The held slices are in and paid before the player starts; its first request takes the
    # lookahead's 20 keys, and the next batch (10) can only reach 24 + the window.
    settings = MarketSettings(key_lookahead_slices=20, key_batch_wait_s=0.05)
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain, settings)},
                    settings=settings)
    market.connect(PLAIN, speaks_market=False)
    for index in range(held):
        market.deliver(index, (PLAIN, SLICE))  # paid to the creator, whose node is not met yet
    market.connect(CREATOR).start()
    for index in range(20):
        assert market.core.key_for(index) is not None
        market.play(index)
    market.wait_for_key(20)
    assert market.core.key_for(20) is None
    assert KEY_BATCH_TIMER in market.timers  # the short batch waits for payments to widen it ...
    fired_at = market.timers[KEY_BATCH_TIMER]
    assert fired_at == pytest.approx(market.now + 0.05)
    market.fire(KEY_BATCH_TIMER)  # ... which do not come: it goes as it is
    requests = [(m.first, m.end) for m in market.viewer_sent(messages.KeyRequest)]
    assert requests == [(0, 20), (20, 26)]
    assert all(market.core.key_for(i) is not None for i in range(held))


def test_a_later_session_shows_the_agent_what_earlier_ones_paid_payees_it_pays_nothing_now(published, domain):
    """Keys are sold against what the viewer paid every payee. A viewer coming back holds
    the keys it bought and the slices it paid for; this session it may pay only the
    creator (the seeder's slices are on disk). The agent, restarted, saw the seeder's
    cheques in no session of its own: shown only this session's cheques, it refused the
    next keys as unpaid, and the stream failed (seen in CI). The viewer shows what it
    signed each payee before, signed again for the same amount (no new spending)."""
    keys, n, held = published.done.keys, published.torrent.piece_count, 34
    before = {published.creator.wallet_address: 8 * PRICE}
    seeder = seeder_core(published, domain)
    before[seeder.payee] = 30 * PRICE
    agent = key_agent(published, domain)
    agent.released_floor = lambda viewer, cid: held  # the audit log holds the earlier releases
    creator = SellerCore(published.torrent, payee=published.creator.wallet_address, domain=domain, key_agent=agent,
                         paid_before=lambda viewer, cid: before[published.creator.wallet_address])
    ring = KeyRing(tuple(nodes_for_range(keys.tree_root, 0, held)), keys.metadata_key)
    market = Market(published, domain, sellers={CREATOR: creator, SEEDER: seeder}, held_keys=ring,
                    paid_before_wei=38 * PRICE, signed_before=lambda cid, payee: before.get(payee, 0))
    market.connect(CREATOR, SEEDER).start()
    for index in range(held, n):
        market.deliver(index, (CREATOR, SLICE))  # only the creator is paid this session
    for index in range(held):
        market.play(index)
    market.wait_for_key(held)
    assert market.failure is None
    assert all(market.core.key_for(i) is not None for i in range(n))
    assert market.payer.content_spent_wei == (n - held) * PRICE  # showing old cheques spent nothing
    shown = {(m.cheque.cheque.seeder, m.cheque.cheque.cumulative_amount)
             for m in market.viewer_sent(messages.ChequeMessage, conn=CREATOR)}
    assert (seeder.payee, 30 * PRICE) in shown


# -- key agents that are silent or lie ----------------------------------------------------------------


class SilentSeller(SellerCore):
    """Sells keys, it says; answers no key request."""

    def answer_key_request(self, conn, request, now):
        return None


def test_a_silent_key_agent_is_passed_over_after_the_key_request_timeout(published, domain):
    settings = MarketSettings(key_request_timeout_s=5.0)
    silent = creator_core(published, domain, settings, core_class=SilentSeller)
    market = Market(published, domain, sellers={CREATOR: silent, SECOND_AGENT: creator_core(published, domain)},
                    settings=settings)
    market.connect(CREATOR, SECOND_AGENT).start().wait_for_key(0)
    assert [(conn, m) for conn in (CREATOR, SECOND_AGENT) for m in market.viewer_sent(messages.KeyRequest, conn)] == \
        [(CREATOR, messages.KeyRequest(0, 2))]
    assert market.timers[KEY_REQUEST_TIMER] == market.now + 5.0
    market.fire(KEY_REQUEST_TIMER)
    assert market.core.distrusted == {CREATOR}
    assert market.viewer_sent(messages.KeyRequest, SECOND_AGENT) == [messages.KeyRequest(0, 2)]
    assert market.viewer_actions(KeysArrived) == [KeysArrived(0, 2)] and market.failure is None


def test_with_no_agent_left_after_a_timeout_the_stream_fails_and_says_why(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain, core_class=SilentSeller)})
    market.connect(CREATOR).start().wait_for_key(0).fire(KEY_REQUEST_TIMER)
    assert isinstance(market.failure, StreamError) and "no key agent left" in str(market.failure)
    assert market.viewer_actions(Fail)[-1].error is market.failure


def test_a_player_with_no_key_agent_to_ask_gives_up_after_a_while(published, domain):
    settings = MarketSettings(no_key_agent_timeout_s=10.0)
    market = Market(published, domain, sellers={SEEDER: seeder_core(published, domain)}, settings=settings)
    market.connect(SEEDER).start().deliver(0, (SEEDER, SLICE)).wait_for_key(0)
    assert market.timers[NO_KEY_AGENT_TIMER] == market.now + 10.0 and market.failure is None
    market.fire(NO_KEY_AGENT_TIMER)
    assert "no key agent answers" in str(market.failure) and "paying for 1 slices" in str(market.failure)


class LyingSeller(SellerCore):
    """Answers with keys of another tree, sealed and signed as a real delivery."""

    def answer_key_request(self, conn, request, now):
        manifest = self.torrent.manifest
        wrong = ContentKeys.derive(os.urandom(32), manifest.salt, self.torrent.piece_count)
        nodes = nodes_for_range(wrong.tree_root, request.first, request.end)
        delivery = KeyDelivery(request.first, request.end, tuple((n.height, n.index, n.key) for n in nodes), ())
        sealed = seal_to_session(self.viewer_offer, messages.encode_delivery(delivery))
        signature = sign_delivery(self.signing_key, self.content_id, request.first, request.end, sealed)
        return messages.SealedKeys(request.first, request.end, sealed, signature)


def test_a_wrong_key_delivery_is_kept_as_evidence_and_the_keys_are_asked_of_another_agent(published, domain):
    liar = creator_core(published, domain, core_class=LyingSeller)
    liar.signing_key = published.creator.wallet_key
    market = Market(published, domain, sellers={CREATOR: liar, SECOND_AGENT: creator_core(published, domain)})
    liar.viewer_offer = market.core.session.offer  # what it seals to (it has seen the offer on the wire)
    market.connect(CREATOR, SECOND_AGENT).start().wait_for_key(0)
    assert market.core.stats.bad_key_deliveries == 1 and market.core.distrusted == {CREATOR}
    [evidence] = market.core.evidence
    assert evidence.agent == published.creator.wallet_address and "commitments" in evidence.reason
    assert (evidence.first, evidence.end) == (0, 2)
    assert market.viewer_sent(messages.KeyRequest, SECOND_AGENT) == [messages.KeyRequest(0, 2)]
    assert market.viewer_actions(KeysArrived) == [KeysArrived(0, 2)] and market.failure is None


def test_a_key_agent_breaking_the_market_protocol_is_dropped_and_passed_over(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain),
                                                SECOND_AGENT: creator_core(published, domain)})
    market.connect(CREATOR, SECOND_AGENT).start()
    actions = market.core.receive(ExtensionMessageReceived(CREATOR, messages.MARKET_EXTENSION, b"garbage"), market.now)
    assert Drop(CREATOR, actions[0].reason) == actions[0] and "market protocol" in actions[0].reason
    assert CREATOR in market.core.distrusted and market.core.key_agents() == [SECOND_AGENT]


# -- the budget -----------------------------------------------------------------------------------


def test_a_spent_budget_stops_the_stream_before_it_pays_more(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain)}, budget_wei=2 * PRICE)
    market.connect(CREATOR).start()
    market.deliver(0, (CREATOR, SLICE)).deliver(1, (CREATOR, SLICE))
    assert market.failure is None
    market.deliver(2, (CREATOR, SLICE))
    assert isinstance(market.failure, BudgetSpent)
    assert market.payer.spent_wei == 2 * PRICE
    assert market.core.budget_buys_no_more_keys() or market.core.key_for(2) is None


def test_a_player_waiting_for_a_key_the_budget_cannot_buy_is_told(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain)}, budget_wei=PRICE)
    market.connect(CREATOR).start().deliver(0, (CREATOR, SLICE)).wait_for_key(0)
    assert market.core.key_for(0) is not None  # one slice paid: its key bought
    market.play(0).wait_for_key(1)
    assert isinstance(market.failure, BudgetSpent) and "buys no more keys" in str(market.failure)


# -- lanes -----------------------------------------------------------------------------------------


def test_no_key_is_asked_for_before_a_lane_holds(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain)})
    market.lanes_open_automatically = False
    market.connect(CREATOR).start().wait_for_key(0)
    assert not market.viewer_sent(messages.KeyRequest) and market.pending_lanes
    market.open_pending_lanes()
    assert market.viewer_sent(messages.LanesOpened, CREATOR)
    assert market.viewer_sent(messages.KeyRequest, CREATOR) == [messages.KeyRequest(0, 2)]


def test_the_first_lanes_wait_for_the_peers_met_at_start_then_open_in_one_call(published, domain):
    seeder = seeder_core(published, domain)
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain), SEEDER: seeder})
    market.lanes_open_automatically = False
    # a second market peer has finished its handshake but not said its terms: the lanes wait for it
    market._viewer(market.core.receive(PeerReady(SEEDER, ("127.0.0.1", 1), MARKET), market.now))
    market.connect(CREATOR).start()
    assert not market.pending_lanes and LANE_GATHER_TIMER in market.timers
    market.connect(SEEDER)
    assert LANE_GATHER_TIMER not in market.timers  # all have said: no need to wait longer
    assert [set(a.payees) for a in market.pending_lanes] == [{published.creator.wallet_address, seeder.payee}]


def test_lanes_wanted_while_a_transaction_is_under_way_go_in_the_next(published, domain):
    seeder, late = seeder_core(published, domain), seeder_core(published, domain)
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain), SEEDER: seeder, 9: late})
    market.lanes_open_automatically = False
    market.connect(CREATOR, SEEDER).start()
    market.connect(9)
    assert [set(a.payees) for a in market.pending_lanes] == [{published.creator.wallet_address, seeder.payee}]
    market.open_pending_lanes()
    assert [late.payee in a.payees for a in market.pending_lanes] == [True]
    assert market.viewer_sent(messages.LanesOpened, SEEDER) and not market.viewer_sent(messages.LanesOpened, 9)


def test_a_lane_already_being_opened_is_not_opened_again_when_its_payee_says_who_it_is(published, domain):
    # The creator's node seeds: its terms name the payee whose lane the start already asked
    # for. Met after the gathering ended, while that transaction runs: one transaction, not two.
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain)})
    market.lanes_open_automatically = False
    market.start().fire(LANE_GATHER_TIMER)
    assert [a.payees for a in market.pending_lanes] == [(published.creator.wallet_address,)]
    market.connect(CREATOR).open_pending_lanes()
    assert not market.pending_lanes
    assert market.viewer_sent(messages.LanesOpened, CREATOR)


def test_timers_are_named_and_at_times_in_the_clock_it_was_fed(published, domain):
    market = Market(published, domain, sellers={CREATOR: creator_core(published, domain)})
    market.now += 1234.5
    market.connect(CREATOR).start().wait_for_key(0)
    starts = market.viewer_actions(StartTimer)
    assert starts and all(a.at_s >= market.now for a in starts)
