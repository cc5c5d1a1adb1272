"""Pay-per-slice streaming over real loopback sockets: a creator node (seeder + key agent),
a seeder holding only ciphertext, and a viewer that pays per verified slice."""

import asyncio
from contextlib import AsyncExitStack
import os
import shutil
from dataclasses import replace

import pytest
from eth_account import Account

from veilstream.content import PublishOptions, Terms, WrongKeyError, publish_file
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market import messages
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.lanes import LaneOpener
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.market.actions import Send
from veilstream.market.stream import PaidStream, StreamError, viewer_swarm_settings
from veilstream.market.viewer import ViewerCore
from veilstream.swarm import ExtensionRegistry, PieceStore, PieceVerified, SwarmNode, SwarmSettings, UT_METADATA

PRICE = 10**12
SLICE = 16 * 1024
BIG_SLICE = 16 * SLICE
TIMEOUT_S = 60


def market_node(settings=None) -> SwarmNode:
    registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
    return SwarmNode(settings, registry=registry) if settings else SwarmNode(registry=registry)


@pytest.fixture(scope="module")
def published(tmp_path_factory, register):
    tmp = tmp_path_factory.mktemp("paid")
    plaintext = os.urandom(40 * (SLICE - 16) + 1234)
    (tmp / "movie.bin").write_bytes(plaintext)
    (tmp / "creator").mkdir()
    creator = Identity.from_mnemonic(generate_mnemonic())
    done = register(publish_file(tmp / "movie.bin", tmp / "creator", creator, PublishOptions(SLICE, terms=Terms(PRICE, 2_500))), creator)
    seeder_dir = tmp / "seeder"
    seeder_dir.mkdir()
    shutil.copy(done.ciphertext_path, seeder_dir / done.torrent.name)
    return done, creator, plaintext, tmp


class Network:
    """Creator (seeds, sells keys), one key-less seeder, and the viewer's node."""

    def __init__(self, published, chain, tmp_path, *, key_agent_class=KeyAgent, seeder_serves=True,
                 market=MarketSettings(), viewer_settings=None, paid_before=None, seeder_wallet=None,
                 released_floor=None):
        self.done, self.creator, self.plaintext, self.tmp = published
        self.chain, self.domain, self.tmp_path = chain, chain.cheque_domain, tmp_path
        self.market = market
        self.key_agent_class, self.seeder_serves = key_agent_class, seeder_serves
        self.viewer_settings = viewer_settings
        self.paid_before = paid_before or {}  # payee → what each viewer paid it in earlier sessions
        self.seeder_wallet = seeder_wallet or Account.create()
        self.released_floor = released_floor

    async def __aenter__(self):
        torrent = self.done.torrent
        viewer_settings = self.viewer_settings or viewer_swarm_settings(self.done.torrent.piece_length, self.market)
        self._stack = AsyncExitStack()
        self.nodes = [await self._stack.enter_async_context(node)
                      for node in (market_node(), market_node(), market_node(viewer_settings))]
        creator_node, seeder_node, self.viewer_node = self.nodes
        agent = self.key_agent_class(self.domain, AuditLog(self.tmp_path / "audit.log"), self.market,
                                     signing_key=self.creator.wallet_key, released_floor=self.released_floor)
        agent.offer(torrent, self.done.keys)
        creator_content = creator_node.seed(PieceStore.for_seeding(torrent, self.done.ciphertext_path))
        self.creator_service = MarketService(creator_content, payee=self.creator.wallet_address, domain=self.domain,
                                             cover_lookup=self.chain.guarantee,
                                             settings=self.market, key_agent=agent,
                                             paid_before=self._before(self.creator.wallet_address))
        self.agent = agent
        self.seeders = [creator_node]
        if self.seeder_serves:
            seeder_content = seeder_node.seed(PieceStore.for_seeding(torrent, self.tmp / "seeder" / torrent.name))
            self.seeder_service = MarketService(seeder_content, payee=self.seeder_wallet.address, domain=self.domain,
                                                cover_lookup=self.chain.guarantee,
                                                settings=self.market, paid_before=self._before(self.seeder_wallet.address))
            self.seeders.append(seeder_node)
        return self

    def _before(self, payee):
        table = self.paid_before.get(payee, {})  # (a closure over the table only: not the whole network)
        return lambda viewer, content_id: table.get((viewer, content_id), 0)

    def viewer(self, wallet, budget=10**16, stream_class=PaidStream, signed_before=None, deposit=10**16, work=None,
               **kwargs):
        """A viewer with `deposit` in the Wallet (if it has none yet), storing in `work`."""
        if deposit and not self.chain.deposit_of(wallet.address) and not self.chain.held_of(wallet.address):
            self.chain.dev.fund(wallet.address, 10**18)
            self.chain.with_account(wallet).deposit(deposit)
        content = self.viewer_node.fetch(self.done.torrent, work or self.tmp_path / f"viewer-{os.urandom(4).hex()}")
        stream = stream_class(content, self.done.torrent, wallet=wallet, domain=self.domain, budget_wei=budget,
                              settings=self.market, signed_before=signed_before,
                              lanes=LaneOpener(self.chain.with_account(wallet), self.market), **kwargs)
        for node in self.seeders:
            content.add_peer("127.0.0.1", node.listen_port)
        return stream

    async def __aexit__(self, *exc):
        await self._stack.aclose()


async def play(stream, start=0):
    out = {}
    async with asyncio.timeout(TIMEOUT_S):
        async for index, plaintext in stream.slices(start):
            out[index] = plaintext
    return out


def test_honest_stream_pays_each_slice_once_and_decrypts(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            wallet = Account.create()
            stream = net.viewer(wallet)
            got = await play(stream)
            n = net.done.torrent.piece_count
            assert b"".join(got[i] for i in range(n)) == net.plaintext
            assert sum(stream.stats.paid_by_payee.values()) == n * PRICE
            assert stream.payer.spent_wei == n * PRICE
            assert stream.metadata().name == "movie.bin"
            assert net.agent.audit.count == stream.stats.key_deliveries
            assert stream.stats.bad_key_deliveries == 0
            # every seeder was paid exactly what it served, within the window at every moment
            for service in (net.creator_service, net.seeder_service):
                for account in service.accounts.values():
                    assert account.owed_wei <= 2 * PRICE
            stream.close()
            assert stream.session.closed
    asyncio.run(scenario())


@pytest.fixture(scope="module")
def published_in_big_slices(tmp_path_factory, register):
    """Slices of 16 blocks, so one slice could come from several seeders."""
    tmp = tmp_path_factory.mktemp("paid-big")
    plaintext = os.urandom(48 * (BIG_SLICE - 16) + 1234)
    (tmp / "movie.bin").write_bytes(plaintext)
    (tmp / "creator").mkdir()
    creator = Identity.from_mnemonic(generate_mnemonic())
    done = register(publish_file(tmp / "movie.bin", tmp / "creator", creator,
                                 PublishOptions(BIG_SLICE, terms=Terms(PRICE, 2_500))), creator)
    (tmp / "seeder").mkdir()
    shutil.copy(done.ciphertext_path, tmp / "seeder" / done.torrent.name)
    return done, creator, plaintext, tmp


def test_gated_seeders_never_wait_on_each_other(published_in_big_slices, chain, tmp_path):
    """With a one-slice window a seeder holds back everything past one unpaid slice. Were a
    slice's blocks split across seeders, each could sit on blocks of the other's slices
    while waiting for payment for its own: no slice would verify and nobody would be paid.
    The viewer takes each slice whole from one seeder, so the stream never needs the
    timeouts (set out of reach here) to get going again."""
    market = MarketSettings(credit_window_slices=1)
    patient = replace(SwarmSettings(), request_timeout_s=3600.0, deadline_rerequest_s=3600.0)

    async def scenario():
        async with Network(published_in_big_slices, chain, tmp_path, market=market,
                           viewer_settings=viewer_swarm_settings(BIG_SLICE, market, patient)) as net:
            stream = net.viewer(Account.create())
            senders = []
            stream.content.subscribe(
                lambda event: senders.append(len(event.bytes_by_sender)) if isinstance(event, PieceVerified) else None)
            got = await play(stream)
            n = net.done.torrent.piece_count
            assert b"".join(got[i] for i in range(n)) == net.plaintext
            assert senders == [1] * n
            assert set(stream.stats.paid_by_payee) == {net.creator.wallet_address, net.seeder_wallet.address}
            for service in (net.creator_service, net.seeder_service):
                for account in service.accounts.values():
                    assert account.owed_wei <= PRICE
    asyncio.run(scenario())


def test_seek_starts_from_the_middle(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            stream = net.viewer(Account.create())
            n = net.done.torrent.piece_count
            got = await play(stream, start=n // 2)
            plain_len = SLICE - 16
            assert b"".join(got[i] for i in range(n // 2, n)) == net.plaintext[(n // 2) * plain_len :]
    asyncio.run(scenario())


class NonPayingViewer(ViewerCore):
    """A viewer that takes slices and keys but never signs a cheque."""

    def piece_verified(self, event, now):
        self.stats.slices_by_source["unpaid"] += 1
        return []


async def until_every_seeder_refused(services):
    await asyncio.gather(*(s.wait_until(lambda s=s: s.stats.blocks_refused > 0) for s in services))


def test_a_viewer_that_stops_paying_gets_at_most_the_window(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            stream = net.viewer(Account.create(), core_class=NonPayingViewer)

            async def consume():
                async for _ in stream.slices():
                    pass

            services = (net.creator_service, net.seeder_service)
            async with asyncio.TaskGroup() as group:
                player = group.create_task(consume())
                async with asyncio.timeout(TIMEOUT_S):  # until both seeders have said no
                    await until_every_seeder_refused(services)
                player.cancel()
            window = MarketSettings().credit_window_slices
            for service in (net.creator_service, net.seeder_service):
                assert service.stats.bytes_served <= window * SLICE
            assert len(net.agent.account(stream.payer.account.address, net.done.torrent.info_hash).released) <= window
    asyncio.run(scenario())


class ReplayingViewer(NonPayingViewer):
    """Shows every peer the cheques of an earlier session, then pays nothing more."""

    old_cheques = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.replayed_to = set()

    def receive(self, event, now):
        actions = super().receive(event, now)
        conn = getattr(event, "conn", None)
        source = self.sources.get(conn)
        if source is not None and source.terms is not None and conn not in self.replayed_to:
            self.replayed_to.add(conn)
            actions += [Send(conn, messages.ChequeMessage(cheque)) for cheque in self.old_cheques]
        return actions


def test_a_returning_viewer_continues_its_cheques_and_old_payments_buy_nothing_new(published, chain, tmp_path):
    """Cheques are cumulative across sessions. The viewer's next session continues its
    counters (or the Wallet would take the new amounts as already cashed); the seeders'
    books start from what they were paid before and the key agent's from its audit log,
    so what the viewer paid last time is no credit for new slices or keys."""
    wallet, seeder_wallet = Account.create(), Account.create()
    window = MarketSettings().credit_window_slices

    async def first_session():
        async with Network(published, chain, tmp_path, seeder_wallet=seeder_wallet) as net:
            stream = net.viewer(wallet)
            async with asyncio.timeout(TIMEOUT_S):
                async for index, _ in stream.slices(0):
                    if index + 1 == net.done.torrent.piece_count // 2:
                        break
        # the nodes are closed: nothing moves any more. What each payee holds is what it was paid.
        key = (wallet.address, net.done.torrent.info_hash)
        services = (net.creator_service, net.seeder_service)
        paid = {s.payee: {key: s.account(wallet.address).paid_wei} for s in services}
        cheques = [s.account(wallet.address).latest for s in services]
        return cheques, paid, set(net.agent.account(*key).released)

    cheques, paid, released_before = asyncio.run(first_session())
    signed = {c.cheque.seeder: c.cheque.cumulative_amount for c in cheques}
    assert len(signed) == 2 and all(amount >= PRICE for amount in signed.values())
    assert len(released_before) >= 2

    async def second_session(core_class):
        # the same seeders and the same audit log (a new key agent reads it back)
        async with Network(published, chain, tmp_path, seeder_wallet=seeder_wallet, paid_before=paid) as net:
            content_id = net.done.torrent.info_hash
            stream = net.viewer(wallet, core_class=core_class,
                                signed_before=lambda cid, seeder: signed.get(seeder, 0) if cid == content_id else 0)
            services = (net.creator_service, net.seeder_service)
            if core_class is ViewerCore:
                got = await play(stream)
                assert b"".join(got[i] for i in sorted(got)) == net.plaintext
                for payee, amount in stream.payer.owed.items():  # each counter went on from last time
                    assert amount > signed.get(payee, 0)
                return
            stream.core.old_cheques = cheques
            async with asyncio.TaskGroup() as group:
                player = group.create_task(play(stream))
                async with asyncio.timeout(TIMEOUT_S):  # until both seeders have said no
                    await until_every_seeder_refused(services)
                player.cancel()
            for service in services:  # the replayed cheques were taken, and bought only the window
                assert service.account(wallet.address).paid_wei == signed[service.payee]
                assert service.stats.bytes_served <= window * SLICE
            released = net.agent.account(wallet.address, content_id).released
            assert released >= released_before and len(released - released_before) <= window

    asyncio.run(second_session(ReplayingViewer))
    asyncio.run(second_session(ViewerCore))


def test_a_later_session_goes_on_from_where_the_last_stopped_and_watching_again_is_free(published, chain, tmp_path):
    """Issue 12: a second play of content already partly paid for stopped after 2 slices
    and waited for ever (the pieces were on disk, so nothing new was paid, and only this
    session's payments counted). The keys bought are kept and count, with what was paid
    before: resuming pays only for what is new, and watching again pays nothing more."""
    wallet, seeder_wallet = Account.create(), Account.create()
    work = tmp_path / "viewer-store"
    n = published[0].torrent.piece_count

    async def session(stop_at=None, held=None, paid_before=0, signed=None, paid=None):
        async with Network(published, chain, tmp_path, seeder_wallet=seeder_wallet, paid_before=paid or {}) as net:
            cid = net.done.torrent.info_hash
            stream = net.viewer(wallet, work=work, held_keys=held, paid_before_wei=paid_before,
                                signed_before=(lambda c, s: (signed or {}).get(s, 0) if c == cid else 0))
            got = {}
            async with asyncio.timeout(TIMEOUT_S):
                async for index, plaintext in stream.slices(0):
                    got[index] = plaintext
                    if stop_at is not None and index + 1 == stop_at:
                        break
            await net.viewer_node.drain()
            stream.close()
            services = ((net.creator.wallet_address, net.creator_service), (seeder_wallet.address, net.seeder_service))
        # taken once every node is closed: a piece still arriving after the player stopped is paid too
        received = {p: {(wallet.address, cid): s.account(wallet.address).paid_wei} for p, s in services}
        return got, stream, dict(stream.payer.owed), received

    first, stream, owed, received = asyncio.run(session(stop_at=n // 2))
    assert sorted(first) == list(range(n // 2))
    ring = stream.bought_keys()
    paid_first = sum(owed.values())
    second, stream, owed2, received = asyncio.run(session(held=ring, paid_before=paid_first, signed=owed, paid=received))
    assert b"".join({**first, **second}[i] for i in range(n)) == published[2]  # the whole content, in the end
    assert stream.payer.content_spent_wei <= (n - n // 2) * PRICE  # only what was new was paid
    ring = stream.bought_keys()
    third, stream, _, _ = asyncio.run(session(held=ring, paid_before=sum(owed2.values()), signed=owed2, paid=received))
    assert b"".join(third[i] for i in range(n)) == published[2]
    assert stream.payer.content_spent_wei == 0 and stream.stats.key_deliveries == 0  # watching again: free


class LyingKeyAgent(KeyAgent):
    """Answers with keys from a different tree."""

    def offer(self, torrent, keys):
        super().offer(torrent, keys)
        from veilstream.content import ContentKeys

        self._offerings[torrent.info_hash].keys = ContentKeys.derive(os.urandom(32), torrent.manifest.salt, torrent.piece_count)


def test_wrong_keys_are_caught_and_kept_as_evidence(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path, key_agent_class=LyingKeyAgent) as net:
            stream = net.viewer(Account.create())
            with pytest.raises(StreamError, match="commitments"):
                await play(stream)
            assert stream.evidence and "commitments" in stream.evidence[0].reason
            assert stream.stats.key_deliveries == 0
            # the evidence convinces a third party that has only public data and the evidence
            from nacl.public import PrivateKey, SealedBox

            from veilstream.content.keytree import TreeNode
            from veilstream.content.unseal import verify_range_keys
            from veilstream.market.key_session import delivery_signer

            proof = stream.evidence[0]
            assert delivery_signer(proof.content_id, proof.first, proof.end, proof.sealed, proof.signature) == \
                net.creator.wallet_address == proof.agent
            opened = messages.decode_delivery(SealedBox(PrivateKey(proof.session_secret)).decrypt(proof.sealed))
            with pytest.raises(WrongKeyError):
                verify_range_keys(net.done.torrent, [TreeNode(h, j, k) for h, j, k in opened.nodes], list(opened.proof))
    asyncio.run(scenario())


class UnsigningKeyAgent(KeyAgent):
    """Answers with a signature that names nobody."""

    def on_key_request(self, *args, **kwargs):
        answer = super().on_key_request(*args, **kwargs)
        if isinstance(answer, messages.SealedKeys):
            return messages.SealedKeys(answer.first, answer.end, answer.sealed, bytes(65))
        return answer


class UnsigningLyingKeyAgent(LyingKeyAgent, UnsigningKeyAgent):
    pass


def test_right_keys_need_no_signature_but_wrong_unsigned_ones_cost_the_agent_its_trust(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path, key_agent_class=UnsigningKeyAgent) as net:
            got = await play(net.viewer(Account.create()))  # the commitments vouch for the keys
            assert b"".join(got[i] for i in range(net.done.torrent.piece_count)) == net.plaintext
        async with Network(published, chain, tmp_path, key_agent_class=UnsigningLyingKeyAgent) as net:
            stream = net.viewer(Account.create())
            with pytest.raises(StreamError, match="commitments"):
                await play(stream)
            assert stream.stats.bad_key_deliveries == 1 and stream.evidence == []  # nothing signed to show
    asyncio.run(scenario())


def test_the_budget_caps_what_a_viewer_signs(published, chain, tmp_path):
    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            stream = net.viewer(Account.create(), budget=5 * PRICE)
            with pytest.raises(StreamError, match="budget"):
                await play(stream)
            assert stream.payer.spent_wei <= 5 * PRICE
    asyncio.run(scenario())


def test_a_seeder_sending_garbage_is_banned_and_never_paid(published, chain, tmp_path):
    """The key-less seeder's copy is corrupted in every slice: each bad piece it sends fails
    its Merkle check, it is banned, the viewer finishes from the creator, and no cheque
    ever names the liar."""
    done, _, plaintext, tmp = published
    liar_copy = tmp_path / "liar"
    liar_copy.mkdir()
    raw = bytearray((tmp / "seeder" / done.torrent.name).read_bytes())
    for offset in range(100, len(raw), SLICE):
        raw[offset] ^= 0xFF
    (liar_copy / done.torrent.name).write_bytes(bytes(raw))

    async def scenario():
        async with Network(published, chain, tmp_path, seeder_serves=False) as net:
            liar_node = net.nodes[1]
            # seed the corrupt copy without the store's start-up check, as a lying peer would
            path = liar_copy / done.torrent.name
            store = PieceStore(done.torrent, path, final_path=path, resume_path=None,
                               have=bytearray([1]) * done.torrent.piece_count)
            liar_service = MarketService(liar_node.seed(store), payee=net.seeder_wallet.address, domain=chain.cheque_domain,
                                          cover_lookup=chain.guarantee)
            net.seeders.append(liar_node)
            stream = net.viewer(Account.create())
            got = await play(stream)
            assert b"".join(got[i] for i in range(done.torrent.piece_count)) == plaintext
            assert net.seeder_wallet.address not in stream.payer.owed
            assert liar_service.earned_wei == 0
            assert any(d.banned for d in stream.content.dropped) or stream.stats.slices_by_source.get(
                f"127.0.0.1:{liar_node.listen_port}", 0) == 0
    asyncio.run(scenario())


def _reachable_bytes(*roots, limit=200_000):
    """Every bytes-like object reachable from `roots` through the garbage collector's view,
    without crossing into the event loop: every role of these tests runs in one process,
    and through the loop's tasks everything reaches everything (the viewer included)."""
    import gc
    import types

    process_wide = (type, types.ModuleType, types.FrameType, types.CoroutineType, asyncio.Future,
                    asyncio.AbstractEventLoop, asyncio.TaskGroup)
    seen, stack, found = set(), list(roots), []
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, process_wide):
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray, memoryview)):
            found.append(bytes(obj[:1 << 20]))
            continue
        if isinstance(obj, types.MethodType):  # a callback: the object it is bound to
            stack.append(obj.__self__)
            continue
        if isinstance(obj, types.FunctionType):  # a closure: its cells, not its module's globals
            for cell in obj.__closure__ or ():
                try:
                    stack.append(cell.cell_contents)
                except ValueError:
                    pass
            continue
        if isinstance(obj, str):
            found.append(obj.encode(errors="ignore"))
            continue
        stack.extend(gc.get_referents(obj))
    return found


def test_a_seeders_disk_and_memory_hold_no_plaintext_or_keys(published, chain, tmp_path):
    done, _, plaintext, tmp = published
    keys = [done.keys.tree_root.key, done.keys.metadata_key] + [done.keys.tree_root.leaf_key(i) for i in range(done.torrent.piece_count)]
    probes = [plaintext[i : i + 48] for i in range(0, len(plaintext) - 48, 4096)]

    async def scenario():
        async with Network(published, chain, tmp_path) as net:
            stream = net.viewer(Account.create())
            await play(stream)
            seeder_state = _reachable_bytes(net.seeder_service, net.nodes[1])
            assert seeder_state, "the scan found nothing: it is not looking"
            assert any(done.torrent.info_hash in blob for blob in seeder_state)  # it does see what it holds
            creator_state = _reachable_bytes(net.creator_service)  # the control: the key agent holds keys
            assert any(done.keys.tree_root.key in blob for blob in creator_state)
            for blob in seeder_state:
                assert not any(k in blob or k.hex().encode() in blob for k in keys)
                assert not any(p in blob for p in probes)
    asyncio.run(scenario())
    for path in (tmp / "seeder").rglob("*"):
        blob = path.read_bytes()
        assert not any(p in blob for p in probes) and not any(k in blob for k in keys)
