"""The attacks of the security review (issue 11), each performed against the real classes,
real sockets and the embedded chain. Each failed on the code before the fix (the viewer
with no deposit decrypted 41/41 slices, 20 throw-away addresses bought 40/40 keys, a
cheque naming the zero address bought 10 keys, a replayed offer took the viewer's keys,
a silent key agent stalled the stream for ever)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest
from eth_account import Account

from veilstream.chain.client import ChainClient
from veilstream.chain.ledger import ChequeLedger
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market import messages
from veilstream.market.audit import AuditLog, AuditLogError
from veilstream.market.cashier import Cashier, audit_anchor_kind
from veilstream.market.credit import SeederAccount
from veilstream.market.errors import PaymentRefused
from veilstream.market.key_agent import KeyAgent
from veilstream.market.key_session import ViewerKeySession
from veilstream.market.lanes import LaneOpener
from veilstream.market.onchain import ChainWatch, WithdrawalRequested, cashed_floor
from veilstream.market.payer import Payer
from veilstream.market.seller import SellerCore
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.market.stream import PaidStream, StreamError, viewer_swarm_settings
from veilstream.swarm import ExtensionRegistry, PeerDropped, PeerReady, PieceStore, SwarmNode, UT_METADATA

PRICE = 10**12
SLICE = 16 * 1024
WINDOW = MarketSettings().credit_window_slices
TIMEOUT_S = 60


def market_node(settings=None) -> SwarmNode:
    registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
    return SwarmNode(settings, registry=registry) if settings else SwarmNode(registry=registry)


@pytest.fixture(scope="module")
def published(tmp_path_factory, register):
    tmp = tmp_path_factory.mktemp("attacks")
    plaintext = os.urandom(40 * (SLICE - 16) + 1234)
    (tmp / "movie.bin").write_bytes(plaintext)
    (tmp / "creator").mkdir()
    creator = Identity.from_mnemonic(generate_mnemonic())
    done = register(publish_file(tmp / "movie.bin", tmp / "creator", creator,
                                 PublishOptions(SLICE, terms=Terms(PRICE, 2_500))), creator)
    (tmp / "seeder").mkdir()
    shutil.copy(done.ciphertext_path, tmp / "seeder" / done.torrent.name)
    return done, creator, plaintext, tmp


def agent_for(published, chain, tmp_path, **kwargs) -> KeyAgent:
    done, creator, _, _ = published
    agent = KeyAgent(chain.cheque_domain, AuditLog(tmp_path / f"audit-{os.urandom(3).hex()}.log"),
                     signing_key=creator.wallet_key, unpayable=chain.deployment.addresses.values(), **kwargs)
    agent.offer(done.torrent, done.keys)
    return agent


def look_up_covers(agent: KeyAgent, chain: ChainClient, viewer: str, cid: bytes) -> None:
    """What the node does for its key agent: look each wanted lane up on chain."""
    for payee in agent.covers_wanted(viewer, cid):
        agent.set_cover(viewer, cid, payee, chain.guarantee(viewer, cid, payee))


class Network:
    """The creator's node (seeds, sells keys) and a key-less seeder, on the real chain."""

    def __init__(self, published, chain, tmp_path, market=MarketSettings(), first=None,
                 creator_core_class=SellerCore):
        self.done, self.creator, self.plaintext, self.tmp = published
        self.chain, self.tmp_path, self.market = chain, tmp_path, market
        self.first = first  # a node of the test's own, connected to before the others
        self.seeder_wallet = Account.create()
        self.creator_core_class = creator_core_class

    async def __aenter__(self):
        torrent, chain = self.done.torrent, self.chain
        self._stack = AsyncExitStack()
        self.nodes = [await self._stack.enter_async_context(node) for node in
                      (market_node(), market_node(), market_node(viewer_swarm_settings(SLICE, self.market)))]
        self.agent = agent_for((self.done, self.creator, None, None), chain, self.tmp_path)
        self.creator_service = MarketService(
            self.nodes[0].seed(PieceStore.for_seeding(torrent, self.done.ciphertext_path)),
            payee=self.creator.wallet_address, domain=chain.cheque_domain, settings=self.market, key_agent=self.agent,
            cover_lookup=chain.guarantee, core_class=self.creator_core_class)
        self.seeder_service = MarketService(
            self.nodes[1].seed(PieceStore.for_seeding(torrent, self.tmp / "seeder" / torrent.name)),
            payee=self.seeder_wallet.address, domain=chain.cheque_domain, settings=self.market,
            cover_lookup=chain.guarantee)
        return self

    def stream(self, wallet, budget=10**16) -> PaidStream:
        content = self.nodes[2].fetch(self.done.torrent, self.tmp_path / f"viewer-{os.urandom(3).hex()}")
        stream = PaidStream(content, self.done.torrent, wallet=wallet, domain=self.chain.cheque_domain,
                            budget_wei=budget, settings=self.market, lanes=LaneOpener(self.chain.with_account(wallet)),
                            key_agent=self.creator.wallet_address)
        if self.first is not None:
            content.add_peer("127.0.0.1", self.first.listen_port)
        for node in self.nodes[:2]:
            content.add_peer("127.0.0.1", node.listen_port)
        return stream

    async def __aexit__(self, *exc):
        await self._stack.aclose()


async def play(stream, limit_s=TIMEOUT_S) -> dict[int, bytes]:
    out = {}
    async with asyncio.timeout(limit_s):
        async for index, plaintext in stream.slices(0):
            out[index] = bytes(plaintext)
    return out


# -- 1. nobody checked the viewer's deposit --------------------------------------------------


def test_a_viewer_with_no_deposit_gets_no_byte_and_no_key_and_is_told_why(published, chain, fund, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            broke = fund(Account.create())  # ether for gas, not a wei in the Wallet
            stream = net.stream(broke)
            with pytest.raises(StreamError, match="deposit"):
                await play(stream, limit_s=20)
            for service in (net.creator_service, net.seeder_service):
                assert service.stats.bytes_served == 0 and service.stats.keys_released == 0
            assert net.agent.audit.count == 0
    asyncio.run(scenario())


# -- 2. every new address got a free credit window -------------------------------------------


def test_throwaway_addresses_buy_no_keys_and_get_no_bytes(published, chain, tmp_path):
    done = published[0]
    cid = done.torrent.info_hash
    agent = agent_for(published, chain, tmp_path)
    released = 0
    for k in range(20):
        throwaway = Account.create()
        channel = ("throwaway", k)
        agent.on_session(ViewerKeySession(throwaway.key, cid, int(time.time()) + 600).offer, channel)
        look_up_covers(agent, chain, throwaway.address, cid)
        answer = agent.on_key_request(channel, cid, 2 * k, 2 * k + 2)
        if isinstance(answer, messages.SealedKeys):
            released += answer.end - answer.first
        seeder = Account.create().address
        book = SeederAccount(throwaway.address, cid, PRICE, WINDOW, chain.cheque_domain.verify, seeder=seeder,
                             margin_s=MarketSettings().lane_cash_margin_s)
        book.set_cover(chain.guarantee(throwaway.address, cid, seeder))
        assert not book.may_serve(1, time.time())
    assert released == 0, f"20 throw-away addresses bought {released} keys with no cover"


def test_one_deposit_promised_to_many_payees_costs_no_honest_payee_more_than_its_window(published, chain, fund):
    """The viewer holds lanes for two honest seeders, then signs cheques for its whole
    deposit to ten sock puppets at once (each cashing first), and stops paying the honest
    ones. Each honest seeder served against its lane and loses at most the window."""
    done = published[0]
    cid = done.torrent.info_hash
    viewer = fund(Account.create(), 100 * PRICE)
    viewer_chain = chain.with_account(viewer)
    honest = [fund(Account.create()) for _ in range(2)]
    LaneOpener(viewer_chain).open(cid, [h.address for h in honest], 40 * PRICE)
    assert viewer_chain.deposit_of() == 20 * PRICE  # 80 of 100 held for the two
    payer = Payer(viewer, chain.cheque_domain, cid, PRICE, budget_wei=10**18)
    books = {h.address: SeederAccount(viewer.address, cid, PRICE, WINDOW, chain.cheque_domain.verify, seeder=h.address,
                                      margin_s=MarketSettings().lane_cash_margin_s) for h in honest}
    now = time.time()
    for address, book in books.items():
        book.set_cover(chain.guarantee(viewer.address, cid, address))
        for _ in range(30):  # serves while the viewer pays, then 2 more unpaid
            while book.may_serve_next(now):
                book.record_served(now)
                if book.served_slices <= 28:
                    book.accept(payer.pay_for_slice(address))
        assert book.served_slices == 30
    puppets = [Account.create().address for _ in range(10)]
    chain.with_account(honest[0]).cash([payer.pay(p, 100 * PRICE) for p in puppets])  # the whole deposit, 10 times
    assert viewer_chain.deposit_of() == 0
    for wallet in honest:
        book = books[wallet.address]
        paid = chain.with_account(wallet).cash([book.latest]).paid
        assert paid == book.paid_wei == 28 * PRICE  # every cheque it held was paid in full
        assert book.served_wei - paid <= WINDOW * PRICE  # its loss: the window, no more


# -- 4. cheques the chain rejects bought keys --------------------------------------------------


@pytest.mark.parametrize("payee", ["zero", "wallet", "registry", "sales"])
def test_cheques_naming_an_unpayable_payee_buy_no_keys(published, chain, fund, tmp_path, payee):
    done = published[0]
    cid = done.torrent.info_hash
    agent = agent_for(published, chain, tmp_path)
    viewer = fund(Account.create(), 10**16)
    address = {"zero": "0x" + "00" * 20, "wallet": chain.deployment.wallet, "registry": chain.deployment.registry,
               "sales": chain.deployment.access_sales}[payee]
    agent.on_session(ViewerKeySession(viewer.key, cid, int(time.time()) + 600).offer, "conn")
    with pytest.raises(PaymentRefused, match="never pay"):
        agent.on_cheque(chain.with_account(viewer).sign_cheque(cid, address, 10 * PRICE))
    look_up_covers(agent, chain, viewer.address, cid)
    assert not isinstance(agent.on_key_request("conn", cid, 0, 10), messages.SealedKeys)


# -- 6. a paid seeder served every byte free to a plain peer -----------------------------------


def test_a_paid_seeder_gives_a_plain_bittorrent_peer_nothing(published, chain, tmp_path):
    done = published[0]

    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            async with SwarmNode() as plain:  # speaks BitTorrent, not the market
                content = plain.fetch(done.torrent, tmp_path / "plain")
                content.add_peer("127.0.0.1", net.nodes[1].listen_port)
                stats = net.seeder_service.stats
                async with asyncio.timeout(TIMEOUT_S):  # the seeder was asked for blocks, and said no
                    await net.seeder_service.wait_until(lambda: stats.plain_blocks_refused > 0)
                assert content.have_bytes == 0 and stats.bytes_served == 0
    asyncio.run(scenario())


# -- 7. a replayed session offer took the viewer's keys -----------------------------------------


def test_a_replayed_session_offer_cannot_redirect_a_viewers_keys(published, chain, fund, tmp_path):
    done = published[0]
    cid = done.torrent.info_hash
    agent = agent_for(published, chain, tmp_path)
    viewer = fund(Account.create(), 10**16)
    LaneOpener(chain.with_account(viewer)).open(cid, [published[1].wallet_address], 10 * PRICE)
    old = ViewerKeySession(viewer.key, cid, int(time.time()) + 600)  # an earlier session, seen on the wire
    new = ViewerKeySession(viewer.key, cid, int(time.time()) + 900)
    agent.on_session(new.offer, "viewer's connection")
    agent.on_session(old.offer, "a third node's connection")  # the replay opens only its own channel
    with pytest.raises(PaymentRefused, match="older"):
        agent.on_session(old.offer, "viewer's connection")  # and cannot take the viewer's back
    look_up_covers(agent, chain, viewer.address, cid)
    answer = agent.on_key_request("viewer's connection", cid, 0, 1)
    assert isinstance(answer, messages.SealedKeys)
    new.open(answer.sealed)  # the keys went to the viewer's own session


# -- 8. a fake key agent stalled the viewer for ever -------------------------------------------


class SilentSeller(SellerCore):
    """Says it is the registered key agent, then never answers a key request."""

    def answer_key_request(self, conn, request, now):
        return None


def test_a_silent_key_agent_is_passed_over_for_the_registered_one(published, chain, fund, tmp_path):
    done, creator = published[0], published[1]
    market = replace(MarketSettings(), key_request_timeout_s=0.5)

    async def scenario():
        async with market_node() as impostor:
            fake_agent = KeyAgent(chain.cheque_domain, AuditLog(tmp_path / "fake.log"), market,
                                  signing_key=os.urandom(32))
            fake_agent.offer(done.torrent, done.keys)
            fake_agent.address = creator.wallet_address  # what its terms claim
            MarketService(impostor.seed(PieceStore.for_seeding(done.torrent, done.ciphertext_path)),
                          payee=Account.create().address, domain=chain.cheque_domain, settings=market,
                          key_agent=fake_agent, cover_lookup=chain.guarantee, core_class=SilentSeller)
            async with Network(published, chain, tmp_path, market, first=impostor) as net:
                stream = net.stream(fund(Account.create(), 10**16))
                got = await play(stream)
                assert b"".join(got[i] for i in range(done.torrent.piece_count)) == net.plaintext
                assert stream.stats.key_deliveries > 0 and net.agent.audit.count == stream.stats.key_deliveries
                assert len(stream.core.distrusted) == 1  # the impostor, asked first, then passed over
    asyncio.run(scenario())


class RefusingSeller(SellerCore):
    """Sells no key, ever, though paid."""

    def answer_key_request(self, conn, request, now):
        return messages.MarketRefusal(messages.RefusalCode.PAYMENT_NEEDED, "pay more")


def test_a_stream_whose_only_key_agent_refuses_what_is_paid_fails_and_says_why(published, chain, fund, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path, creator_core_class=RefusingSeller) as net:
            stream = net.stream(fund(Account.create(), 10**16))
            with pytest.raises(StreamError, match="no key agent left"):
                await play(stream)
    asyncio.run(scenario())


# -- 5. a withdrawal nobody watched ------------------------------------------------------------


def test_a_payee_cashes_as_soon_as_it_sees_a_withdrawal_request(published, chain, fund, tmp_path):
    done = published[0]
    cid = done.torrent.info_hash
    viewer, seeder = fund(Account.create(), 10**16), fund(Account.create())
    watch = ChainWatch(chain, {cid})
    cashier = Cashier(chain.with_account(seeder), ChequeLedger(tmp_path / "cheques.sqlite"),
                      replace(MarketSettings(), cash_threshold_wei=10**18, min_cash_gain_ratio=0.0))  # not about gas
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(cid, seeder.address, 5 * PRICE))
    assert chain.cashed(viewer.address, cid, seeder.address) == 0  # far below the threshold: kept
    chain.with_account(viewer).request_withdrawal(10**16)
    seen = [c for c in watch.poll() if isinstance(c, WithdrawalRequested)]
    assert [c.viewer for c in seen] == [viewer.address]
    cashier.on_withdrawal_requested(seen[0].viewer)
    cashier.close()
    assert chain.cashed(viewer.address, cid, seeder.address) == 5 * PRICE


# -- 9. a scheduled cut of the seeder share -----------------------------------------------------


def test_a_seeder_stops_serving_before_a_share_cut_and_cashes_first(tmp_path, chain, fund):
    creator = Identity.from_mnemonic(generate_mnemonic())
    fund(creator.wallet)
    (tmp_path / "in.bin").write_bytes(os.urandom(5 * (SLICE - 16)))
    (tmp_path / "out").mkdir()
    done = publish_file(tmp_path / "in.bin", tmp_path / "out", creator, PublishOptions(SLICE, terms=Terms(PRICE, 2_000)))
    cid = done.torrent.info_hash
    creator_chain = chain.with_account(creator.wallet)
    creator_chain.register(done.torrent.info_bytes, price_per_slice=PRICE, seeder_share_bps=2_000, slice_count=5)
    viewer, seeder = fund(Account.create(), 10**16), fund(Account.create())
    creator_chain.set_terms(cid, price_per_slice=PRICE, seeder_share_bps=0)  # the cut, a TERMS_DELAY ahead
    record = chain.content(cid)
    assert record.scheduled_seeder_share_bps == 0

    async def scenario():
        async with market_node() as node:
            service = MarketService(node.seed(PieceStore.for_seeding(done.torrent, done.ciphertext_path)),
                                    payee=seeder.address, domain=chain.cheque_domain, cover_lookup=chain.guarantee)
            service.terms_changed(record.seeder_share_bps, record.scheduled_seeder_share_bps, record.share_effective_at)
            return service.serving_paid_until
    stop_at = asyncio.run(scenario())
    assert stop_at == record.share_effective_at - MarketSettings().lane_cash_margin_s

    clock = [float(record.share_effective_at - MarketSettings().lane_cash_margin_s - 1)]
    cashier = Cashier(chain.with_account(seeder), ChequeLedger(tmp_path / "c.sqlite"),
                      replace(MarketSettings(), cash_threshold_wei=10**18, min_cash_gain_ratio=0.0),
                      clock=lambda: clock[0])  # not about gas
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(cid, seeder.address, 3 * PRICE))
    cashier.cash_content_by(cid, record.share_effective_at)
    assert chain.cashed(viewer.address, cid, seeder.address) == 0
    clock[0] += 1  # the margin before the cut is reached
    cashier.tick()
    cashier.close()
    event = next(e for e in chain.events(names=["ChequeCashed"]).events if e.args["viewer"] == viewer.address)
    assert event.args["seeder_part"] == 3 * PRICE * 2_000 // 10_000  # cashed under the share it served under


# -- 10. an older audit log restored ------------------------------------------------------------


def test_an_audit_log_behind_its_anchor_is_refused_and_cashed_cheques_buy_nothing_twice(published, chain, fund,
                                                                                      tmp_path):
    done, creator = published[0], published[1]
    cid = done.torrent.info_hash
    viewer = fund(Account.create(), 10**16)
    LaneOpener(chain.with_account(viewer)).open(cid, [creator.wallet_address], 50 * PRICE)
    path = tmp_path / "audit.log"
    agent = agent_for(published, chain, tmp_path)
    agent.audit = AuditLog(path)
    payer = Payer(viewer, chain.cheque_domain, cid, PRICE, budget_wei=10**18)
    agent.on_session(ViewerKeySession(viewer.key, cid, int(time.time()) + 600).offer, "c")
    look_up_covers(agent, chain, viewer.address, cid)
    for _ in range(10):
        agent.on_cheque(payer.pay_for_slice(creator.wallet_address))
    assert isinstance(agent.on_key_request("c", cid, 0, 12), messages.SealedKeys)
    backup = path.read_bytes()  # a copy taken now ...
    for _ in range(10):
        agent.on_cheque(payer.pay_for_slice(creator.wallet_address))
    assert isinstance(agent.on_key_request("c", cid, 12, 22), messages.SealedKeys)
    creator_chain = chain.with_account(creator.wallet)
    creator_chain.anchor(audit_anchor_kind(cid), agent.audit.head)
    creator_chain.cash([payer.latest(creator.wallet_address)])
    agent.audit.close()
    path.write_bytes(backup)  # ... is restored after more keys were sold: a valid, shorter log
    anchored, _ = chain.latest_anchor(creator.wallet_address, audit_anchor_kind(cid))
    with pytest.raises(AuditLogError, match="behind its on-chain anchor"):
        AuditLog(path, anchored_head=anchored)
    # Without an anchor to compare with (say the last one was never posted), what the chain
    # shows cashed is the floor: the viewer's 20 slices of cheques buy no key again.
    floor = cashed_floor(chain, cid)
    assert floor[viewer.address] == 20 * PRICE
    restored = agent_for(published, chain, tmp_path, released_floor=lambda v, c: floor.get(v, 0) // PRICE)
    restored.audit = AuditLog(path)
    restored.on_session(ViewerKeySession(viewer.key, cid, int(time.time()) + 600).offer, "c")
    restored.on_cheque(payer.latest(creator.wallet_address))
    look_up_covers(restored, chain, viewer.address, cid)
    answer = restored.on_key_request("c", cid, 22, 24)  # the window only: the 20 paid are spent
    assert isinstance(answer, messages.SealedKeys)
    assert not isinstance(restored.on_key_request("c", cid, 24, 25), messages.SealedKeys)


# -- per-address state is bounded --------------------------------------------------------------


def test_books_of_viewers_gone_are_forgotten_past_a_bound(published, chain, tmp_path):
    """An attacker cycling through fresh addresses must not grow a payee's memory without
    end: past `max_idle_books`, the books of viewers with no connection are dropped (their
    payments are in the ledger and with the cashier)."""
    done = published[0]
    market = replace(MarketSettings(), max_idle_books=5)

    async def scenario():
        async with market_node() as node:
            service = MarketService(node.seed(PieceStore.for_seeding(done.torrent, done.ciphertext_path)),
                                    payee=Account.create().address, domain=chain.cheque_domain, settings=market,
                                    key_agent=agent_for(published, chain, tmp_path), cover_lookup=chain.guarantee)
            for _ in range(20):
                viewer = Account.create().address
                service.account(viewer)
                service.key_agent.account(viewer, done.torrent.info_hash)
                service.core.receive(PeerDropped(1, ("127.0.0.1", 1), "gone", False), time.time())
            assert len(service.accounts) <= market.max_idle_books + 1
            assert len(service.key_agent._accounts) <= market.max_idle_books + 1
    asyncio.run(scenario())


# -- 3. a registry record made by someone else ------------------------------------------------


def test_a_record_that_names_another_creator_is_refused_by_every_client(published, chain, monkeypatch):
    """The registry now takes a registration only from the manifest's creator (the chain
    tests perform the squat); a client still refuses any record whose creator or key root
    is not the manifest's — say, on a chain deployed before that rule."""
    from veilstream.market.onchain import RegistrationError, registered_record

    done = published[0]
    record = chain.content(done.torrent.info_hash)
    assert registered_record(chain, done.torrent) == record
    squatted = replace(record, creator=Account.create().address)
    monkeypatch.setattr(chain, "content", lambda _cid: squatted)
    with pytest.raises(RegistrationError, match="not to its creator"):
        registered_record(chain, done.torrent)
    monkeypatch.setattr(chain, "content", lambda _cid: replace(record, key_root=bytes(range(32))))
    with pytest.raises(RegistrationError, match="key-commitment root"):
        registered_record(chain, done.torrent)


# -- the viewer's side: never pay far ahead of the keys it holds -------------------------------


def test_with_no_key_agent_a_viewer_pays_at_most_its_pay_ahead_and_is_told(published, chain, fund, tmp_path):
    """Issue 12's first finding: with no key agent reachable, a viewer paid a seeder for
    every slice (40/40 here on the old code) and waited for ever. Now it fetches, and so
    pays, at most `pay_ahead_slices` past the keys it holds, and stops with a message."""
    done = published[0]
    market = replace(MarketSettings(), pay_ahead_slices=4, no_key_agent_timeout_s=1.0)

    async def scenario():
        async with Network(published, chain, tmp_path, market) as net:
            wallet = fund(Account.create(), 10**16)
            content = net.nodes[2].fetch(done.torrent, tmp_path / "lonely")
            stream = PaidStream(content, done.torrent, wallet=wallet, domain=chain.cheque_domain, budget_wei=10**16,
                                settings=market, lanes=LaneOpener(chain.with_account(wallet), market),
                                key_agent=net.creator.wallet_address)
            content.add_peer("127.0.0.1", net.nodes[1].listen_port)  # the key-less seeder only
            with pytest.raises(StreamError, match="no key agent answers"):
                await play(stream, limit_s=30)
            assert stream.payer.content_spent_wei <= market.pay_ahead_slices * PRICE
            assert net.seeder_service.stats.bytes_served <= (market.pay_ahead_slices + WINDOW) * SLICE
    asyncio.run(scenario())


# -- a peer that breaks the market protocol ------------------------------------------------------


def test_a_peer_that_breaks_the_market_protocol_is_dropped(published, chain, tmp_path):
    """Garbage on the market extension: the seller says why and closes the connection
    (it used to answer with a refusal and keep the peer)."""
    done = published[0]

    async def scenario():
        async with Network(published, chain, tmp_path) as net, market_node() as hostile:
            content = hostile.fetch(done.torrent, tmp_path / "hostile")
            ready, dropped, conns = asyncio.Event(), asyncio.Event(), []

            def on_event(event) -> None:
                if isinstance(event, PeerReady) and messages.MARKET_EXTENSION in event.extensions:
                    conns.append(event.conn)
                    ready.set()
                elif isinstance(event, PeerDropped):
                    dropped.set()
            content.subscribe(on_event)
            content.add_peer("127.0.0.1", net.nodes[1].listen_port)
            async with asyncio.timeout(TIMEOUT_S):
                await ready.wait()
                conn = conns[0]
                assert content.send_extension(conn, messages.MARKET_EXTENSION, b"not bencode at all")
                await dropped.wait()
            assert net.seeder_service.stats.peers_dropped == 1 and not content.peers
            assert not content.send_extension(conn, messages.MARKET_EXTENSION, b"x")  # gone: said, not raised
    asyncio.run(scenario())
