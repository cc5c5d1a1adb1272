"""The serving side's market core without sockets or clocks: `SellerCore` fed swarm events,
market messages, lookup results and `now`, its actions and upload-gate answers asserted.
The credit window, cover lookups and the gate waiting on them, grants and direct cheques,
key requests waiting for lookups, and peers that break the protocol."""

import pytest
from eth_account import Account

from veilstream.chain.cheque import Cheque
from veilstream.chain.client import Grant, GrantState, Guarantee
from veilstream.market import messages
from veilstream.market.actions import ChequeAccepted, CoverFound, Drop, LookUpCover, LookUpGrants, ResumeUploads
from veilstream.market.credit import DIRECT_CONTENT_ID
from veilstream.market.key_session import ViewerKeySession
from veilstream.market.seller import SellerCore
from veilstream.swarm import ExtensionMessageReceived, PeerDropped, PeerReady

from .cores import LANE_UNTIL, MARKET, NOW, PART, PRICE, SLICE, key_agent, of, publish, received, sent

CONN = 5
COVER = Guarantee(10 * PRICE, LANE_UNTIL)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return publish(tmp_path_factory.mktemp("seller-core"), slices=12)


@pytest.fixture
def viewer():
    return Account.create()


def seeder(published, domain, **kwargs):
    return SellerCore(published.torrent, payee=Account.create().address, domain=domain, **kwargs)


def creator(published, domain, **kwargs):
    return SellerCore(published.torrent, payee=published.creator.wallet_address, domain=domain,
                      key_agent=key_agent(published, domain), **kwargs)


def session(core, published, viewer, conn=CONN):
    """The viewer's connection is ready and has said who it is: the lookups that wants."""
    core.receive(PeerReady(conn, ("127.0.0.1", 7000), MARKET), NOW)
    offer = ViewerKeySession(viewer.key, published.cid, int(NOW) + 600).offer
    return core.receive(received(conn, messages.SessionMessage(offer)), NOW)


def cheque(domain, viewer, core, amount, content_id=None):
    signed = domain.sign(viewer, Cheque(viewer.address, content_id or core.content_id, core.payee, amount))
    return received(CONN, messages.ChequeMessage(signed))


def serve(core, pieces, now=NOW):
    return [core.may_upload(CONN, piece, SLICE, now) for piece in pieces]


# -- the credit window ------------------------------------------------------------------------


def test_a_seeder_serves_up_to_the_window_then_refuses_until_paid(published, domain, viewer):
    core = seeder(published, domain)
    actions = session(core, published, viewer)
    assert of(actions, LookUpCover) == [LookUpCover(viewer.address, published.cid, core.payee)]
    actions = core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    assert ResumeUploads(CONN) in actions and CoverFound(viewer.address, published.cid, core.payee, COVER) in actions
    assert serve(core, [0, 1, 2]) == [True, True, False]  # the window: two slices unpaid
    assert core.stats.blocks_refused == 1 and core.stats.bytes_served == 2 * SLICE
    actions = core.receive(cheque(domain, viewer, core, PRICE), NOW)
    assert [type(a) for a in actions] == [ChequeAccepted, ResumeUploads]
    assert serve(core, [2, 3]) == [True, False]  # one slice paid buys one more


def test_a_viewer_that_stops_paying_gets_at_most_the_window_whatever_it_asks(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    served = sum(serve(core, range(12)) + serve(core, range(12)))
    assert served == 4  # the two slices of the window, and the same two again (free: charged once)
    assert core.account(viewer.address).served_wei == 2 * PRICE and core.account(viewer.address).paid_wei == 0


def test_a_viewer_back_after_losing_unpaid_slices_gets_them_again_without_a_second_charge(published, domain, viewer):
    # it died after the seeder sent its window and before keeping it: on its return it asks
    # for the same slices; charged again, its window would stay full and its stream stall
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    assert serve(core, [0, 1, 2]) == [True, True, False]
    core.receive(PeerDropped(CONN, ("127.0.0.1", 7000), "gone", False), NOW)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    assert serve(core, [0, 1, 2]) == [True, True, False]  # the same two again; a new one waits for payment
    assert core.account(viewer.address).served_wei == 2 * PRICE
    core.receive(cheque(domain, viewer, core, 2 * PRICE), NOW)
    assert serve(core, [2, 3, 4]) == [True, True, False]


def test_replayed_and_stale_cheques_buy_nothing_more(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    core.receive(cheque(domain, viewer, core, 2 * PRICE), NOW)
    assert sum(serve(core, range(12))) == 4
    assert of(core.receive(cheque(domain, viewer, core, 2 * PRICE), NOW), ChequeAccepted) == []  # a replay
    actions = core.receive(cheque(domain, viewer, core, PRICE), NOW)  # stale
    assert sent(actions, messages.MarketRefusal)[0].code == messages.RefusalCode.BAD_CHEQUE
    assert core.stats.cheques_refused == 1 and sum(serve(core, range(4, 12))) == 0  # (0-3 again would be free)
    assert core.account(viewer.address).served_wei == 4 * PRICE


def test_no_lane_no_credit_and_the_viewer_is_told(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    actions = core.cover_looked_up(viewer.address, published.cid, core.payee, Guarantee(0, 0), NOW)
    assert sent(actions, messages.MarketRefusal)[0].code == messages.RefusalCode.NO_COVER
    assert serve(core, [0]) == [False]


def test_a_failed_lookup_counts_as_no_lane(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, None, NOW)
    assert serve(core, [0]) == [False] and core.stats.blocks_refused == 1


# -- cover lookups and the gate waiting on them -----------------------------------------------------


def test_the_upload_gate_waits_for_the_cover_lookups_then_resumes(published, domain, viewer):
    core = seeder(published, domain)
    core.receive(PeerReady(CONN, ("127.0.0.1", 7000), MARKET), NOW)
    assert serve(core, [0]) == [False]  # who pays is not known yet
    session(core, published, viewer)
    assert serve(core, [0]) == [False] and core.stats.blocks_refused == 0  # waiting, not refusing
    # the viewer opens lanes meanwhile and says so: looked up again once the first answer is in
    assert of(core.receive(received(CONN, messages.LanesOpened()), NOW), LookUpCover) == []
    actions = core.cover_looked_up(viewer.address, published.cid, core.payee, Guarantee(0, 0), NOW)
    assert of(actions, LookUpCover) == [LookUpCover(viewer.address, published.cid, core.payee)]
    assert ResumeUploads(CONN) not in actions and serve(core, [0]) == [False]
    actions = core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    assert ResumeUploads(CONN) in actions
    assert serve(core, [0]) == [True]


def test_a_peer_costs_at_most_so_many_lookups(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, Guarantee(0, 0), NOW)
    lookups = 1
    for _ in range(200):
        actions = core.receive(received(CONN, messages.LanesOpened()), NOW)
        for lookup in of(actions, LookUpCover):
            lookups += 1
            core.cover_looked_up(lookup.viewer, lookup.content_id, lookup.payee, Guarantee(0, 0), NOW)
    assert lookups == core.settings.cover_lookups_per_connection == core.stats.cover_lookups


def test_a_key_request_waits_for_the_lookups_and_is_answered_when_they_are_in(published, domain, viewer):
    core = creator(published, domain)
    session(core, published, viewer)
    assert sent(core.receive(received(CONN, messages.KeyRequest(0, 1)), NOW)) == []  # deferred
    actions = core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    assert [type(m) for m in sent(actions)] == [messages.SealedKeys] and core.stats.keys_released == 1


def test_a_key_request_deferred_for_a_grant_lookup_is_answered_when_it_is_in(published, domain, viewer):
    """It used to wait until the viewer passed the agent over (`key_request_timeout_s`)
    when the grants looked up asked no cover lookup after them (here: none is the viewer's)."""
    core = creator(published, domain, looks_up_grants=True)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    [lookup] = of(core.receive(received(CONN, messages.GrantClaim((3,))), NOW), LookUpGrants)
    assert sent(core.receive(received(CONN, messages.KeyRequest(0, 1)), NOW)) == []  # waits for the grants
    actions = core.grants_looked_up(CONN, lookup.claim, [None], NOW)
    assert [m.code for m in sent(actions, messages.MarketRefusal)] == [messages.RefusalCode.GRANT_REFUSED]
    assert [type(m) for m in sent(actions)] == [messages.MarketRefusal, messages.SealedKeys]
    assert ResumeUploads(CONN) in actions


# -- grants: direct cheques for the seeder's share ---------------------------------------------------


def grant(published, viewer, first=2, count=4):
    return Grant(9, viewer.address, published.cid, first, count, PRICE * count, int(NOW) + 3600, GrantState.ISSUED)


def test_granted_slices_cost_only_the_seeders_share_in_direct_cheques(published, domain, viewer):
    core = seeder(published, domain, looks_up_grants=True)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    [lookup] = of(core.receive(received(CONN, messages.GrantClaim((9,))), NOW), LookUpGrants)
    assert lookup.grant_ids == (9,) and serve(core, [2]) == [False]  # waits for the grant
    actions = core.grants_looked_up(CONN, lookup.claim, [grant(published, viewer)], NOW)
    assert of(actions, LookUpCover) == [LookUpCover(viewer.address, DIRECT_CONTENT_ID, core.payee)]
    actions = core.cover_looked_up(viewer.address, DIRECT_CONTENT_ID, core.payee, Guarantee(10 * PART, LANE_UNTIL), NOW)
    assert core.granted[viewer.address] == [(2, 6)] and ResumeUploads(CONN) in actions
    assert serve(core, [2, 3, 4]) == [True, True, False]  # the window, in seeder shares
    books = core.direct_books.account(viewer.address)
    assert books.served_wei == 2 * PART and core.account(viewer.address).served_wei == 0
    assert of(core.receive(cheque(domain, viewer, core, PART, DIRECT_CONTENT_ID), NOW), ChequeAccepted)
    assert serve(core, [4, 5]) == [True, False]
    assert serve(core, [0, 1, 7]) == [True, True, False]  # outside the grant: the full price, its own window


def test_a_grant_that_is_not_the_viewers_is_refused(published, domain, viewer):
    core = seeder(published, domain, looks_up_grants=True)
    session(core, published, viewer)
    [lookup] = of(core.receive(received(CONN, messages.GrantClaim((9,))), NOW), LookUpGrants)
    other = grant(published, Account.create())
    actions = core.grants_looked_up(CONN, lookup.claim, [other], NOW)
    assert "not this viewer's" in sent(actions, messages.MarketRefusal)[0].text
    assert core.granted[viewer.address] == []


def test_a_seeder_that_cannot_check_grants_refuses_claims(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    actions = core.receive(received(CONN, messages.GrantClaim((9,))), NOW)
    assert sent(actions, messages.MarketRefusal)[0].code == messages.RefusalCode.GRANT_REFUSED
    assert of(actions, LookUpGrants) == []


def test_grant_claims_cost_a_bounded_number_of_lookups(published, domain, viewer):
    core = seeder(published, domain, looks_up_grants=True)
    session(core, published, viewer)
    looked_up = 0
    for batch in range(5):
        ids = tuple(range(1000 + 64 * batch, 1064 + 64 * batch))
        for lookup in of(core.receive(received(CONN, messages.GrantClaim(ids)), NOW), LookUpGrants):
            looked_up += len(lookup.grant_ids)
            core.grants_looked_up(CONN, lookup.claim, [None] * len(lookup.grant_ids), NOW)
    assert looked_up == messages.MAX_GRANTS_PER_CLAIM
    assert any("too many" in r for r in core.stats.refusals)


# -- peers -------------------------------------------------------------------------------------------


def test_a_peer_breaking_the_market_protocol_is_told_why_dropped_and_counted(published, domain):
    core = seeder(published, domain)
    core.receive(PeerReady(CONN, ("127.0.0.1", 7000), MARKET), NOW)
    actions = core.receive(ExtensionMessageReceived(CONN, messages.MARKET_EXTENSION, b"not bencode at all"), NOW)
    assert sent(actions, messages.MarketRefusal)[0].code == messages.RefusalCode.BAD_REQUEST
    [drop] = of(actions, Drop)
    assert drop.conn == CONN and "market protocol" in drop.reason
    assert core.stats.peers_dropped == 1


def test_a_paid_seeder_serves_a_plain_peer_nothing_and_free_content_to_everyone(published, domain):
    core = seeder(published, domain)
    core.receive(PeerReady(CONN, ("127.0.0.1", 7000), frozenset()), NOW)
    assert serve(core, [0]) == [False] and sent(core.receive(PeerReady(6, ("h", 1), frozenset()), NOW)) == []
    assert seeder(published, domain, serve_plain_peers=True).may_upload(CONN, 0, SLICE, NOW)


def test_terms_go_to_every_market_peer(published, domain):
    core = creator(published, domain)
    [terms] = sent(core.receive(PeerReady(CONN, ("127.0.0.1", 7000), MARKET), NOW))
    assert terms.price_per_slice_wei == PRICE and terms.serves_keys
    assert terms.payee == bytes.fromhex(core.payee[2:]) and terms.chain_id == domain.chain_id


def test_paid_serving_stops_before_a_cut_of_the_seeder_share(published, domain, viewer):
    core = seeder(published, domain)
    session(core, published, viewer)
    core.cover_looked_up(viewer.address, published.cid, core.payee, COVER, NOW)
    core.terms_changed(published.torrent.manifest.terms.seeder_share_bps, 0, int(NOW) + 3600)
    margin = core.settings.lane_cash_margin_s
    assert core.may_upload(CONN, 0, SLICE, NOW + 3600 - margin - 1)
    assert not core.may_upload(CONN, 1, SLICE, NOW + 3600 - margin)


def test_books_of_viewers_gone_are_forgotten_past_a_bound(published, domain):
    from dataclasses import replace

    core = seeder(published, domain, settings=replace(seeder(published, domain).settings, max_idle_books=5))
    for _ in range(20):
        core.account(Account.create().address)
        core.receive(PeerDropped(1, ("127.0.0.1", 1), "gone", False), NOW)
    assert len(core.accounts) <= 6
