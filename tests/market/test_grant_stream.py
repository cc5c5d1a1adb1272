"""A grant holder streams: it bought slices on chain (the creator's part paid there), uses
the keys issued to it, and pays seeders only their share of those slices, with direct
cheques the Wallet pays them in full. Real sockets, the embedded chain."""

import asyncio
import os
import shutil
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from eth_account import Account

from veilstream.chain.client import ChainClient
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market import messages
from veilstream.market.access import GrantResponder, OneTimeKey, issued_keys
from veilstream.market.audit import AuditLog
from veilstream.market.credit import DIRECT_CONTENT_ID, DirectBooks
from veilstream.market.key_agent import KeyAgent
from veilstream.market.lanes import LaneOpener
from veilstream.market.service import MarketService
from veilstream.market.stream import HeldGrants, PaidStream, viewer_swarm_settings
from veilstream.market.viewer import ViewerCore
from veilstream.swarm import ExtensionRegistry, PieceStore, SwarmNode, UT_METADATA

ETHER = 10**18
PRICE = 10**13
SHARE_BPS = 2_500
PART = PRICE * SHARE_BPS // 10_000
SLICE = 16 * 1024
GRANTED = (8, 30)  # slices bought on chain
TIMEOUT_S = int(os.environ.get("T", 60))


def market_node(settings=None) -> SwarmNode:
    registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
    return SwarmNode(settings, registry=registry) if settings else SwarmNode(registry=registry)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grants")
    chain = ChainClient.embedded(None)
    creator = Identity.from_mnemonic(generate_mnemonic())
    seeder, buyer = Account.create(), Account.create()
    for who in (creator.wallet_address, seeder.address, buyer.address):
        chain.dev.fund(who, ETHER)
    plaintext = os.urandom(40 * (SLICE - 16) + 777)
    (tmp / "movie.bin").write_bytes(plaintext)
    (tmp / "creator").mkdir()
    done = publish_file(tmp / "movie.bin", tmp / "creator", creator, PublishOptions(SLICE, terms=Terms(PRICE, SHARE_BPS)))
    (tmp / "seeder").mkdir()
    shutil.copy(done.ciphertext_path, tmp / "seeder" / done.torrent.name)
    torrent = done.torrent
    creator_chain = chain.with_account(creator.wallet)
    creator_chain.register(torrent.info_bytes, price_per_slice=PRICE, seeder_share_bps=SHARE_BPS, slice_count=torrent.piece_count)
    agent = KeyAgent(chain.cheque_domain, AuditLog(tmp / "grants-audit.log"), signing_key=creator.wallet_key)
    agent.offer(torrent, done.keys)
    buyer_chain = chain.with_account(buyer)
    buyer_chain.deposit(ETHER // 10)
    first, end = GRANTED
    one_time = OneTimeKey.generate()
    grant_id = buyer_chain.buy(torrent.info_hash, first, end - first, one_time.public)
    assert GrantResponder(creator_chain, agent).poll() == [grant_id]
    ring = issued_keys(chain, one_time.secret, grant_id, torrent)
    yield dict(chain=chain, creator=creator, seeder=seeder, buyer=buyer, done=done, tmp=tmp,
               plaintext=plaintext, grants=HeldGrants((grant_id,), (GRANTED,), ring))
    chain.close()


@asynccontextmanager
async def network(world, *, seeder_checks_grants=True):
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(node)
                 for node in (market_node(), market_node(), market_node(viewer_swarm_settings(SLICE)))]
        yield (nodes, *_services(world, nodes, seeder_checks_grants))


def _services(world, nodes, seeder_checks_grants):
    chain, done, tmp = world["chain"], world["done"], world["tmp"]
    torrent = done.torrent
    creator_content = nodes[0].seed(PieceStore.for_seeding(torrent, done.ciphertext_path))
    agent = KeyAgent(chain.cheque_domain, AuditLog(tmp / f"audit-{os.urandom(4).hex()}.log"),
                     signing_key=world["creator"].wallet_key)  # each scenario's viewer starts its cheques at zero
    agent.offer(torrent, done.keys)
    creator_service = MarketService(creator_content, payee=world["creator"].wallet_address, domain=chain.cheque_domain,
                                    key_agent=agent, grant_lookup=chain.grant, cover_lookup=chain.guarantee)
    seeder_content = nodes[1].seed(PieceStore.for_seeding(torrent, tmp / "seeder" / torrent.name))
    seeder_service = MarketService(seeder_content, payee=world["seeder"].address, domain=chain.cheque_domain,
                                   grant_lookup=chain.grant if seeder_checks_grants else None,
                                   cover_lookup=chain.guarantee)
    return creator_service, seeder_service


async def play(stream):
    out = {}
    async with asyncio.timeout(TIMEOUT_S):
        async for index, plaintext in stream.slices(0):
            out[index] = plaintext
    return out


def viewer(world, node, grants, budget=ETHER // 10, core_class=ViewerCore):
    chain, torrent = world["chain"], world["done"].torrent
    content = node.fetch(torrent, world["tmp"] / f"viewer-{os.urandom(4).hex()}")
    return PaidStream(content, torrent, wallet=world["buyer"], domain=chain.cheque_domain, budget_wei=budget,
                      grants=grants, lanes=LaneOpener(chain.with_account(world["buyer"])), core_class=core_class)


def test_a_grant_holder_pays_seeders_only_their_share_of_granted_slices(world):
    chain, done = world["chain"], world["done"]
    n = done.torrent.piece_count
    first, end = GRANTED

    async def scenario():
        async with network(world) as (nodes, creator_service, seeder_service):
            stream = viewer(world, nodes[2], world["grants"])
            for node in nodes[:2]:
                stream.content.add_peer("127.0.0.1", node.listen_port)
            got = await play(stream)
            await nodes[2].drain()
            return stream, got, creator_service, seeder_service

    stream, got, creator_service, seeder_service = asyncio.run(scenario())
    assert b"".join(got[i] for i in range(n)) == world["plaintext"]
    granted, bought_per_slice = end - first, n - (end - first)
    # slices outside the grant: the full price in cheques for the content; inside: the seeders' part
    assert stream.payer.content_spent_wei == bought_per_slice * PRICE
    assert sum(stream.payer.direct_owed.values()) == granted * PART
    # the key agent released keys only for slices outside the grant
    agent = creator_service.key_agent
    released = agent.account(world["buyer"].address, done.torrent.info_hash).released
    assert released == set(range(n)) - set(range(first, end))
    assert agent.audit.count == stream.stats.key_deliveries
    # each seeder's direct book holds exactly what the holder signed it, and it cashes in full
    for service in (creator_service, seeder_service):
        account = service.direct_books.account(world["buyer"].address)
        assert account.paid_wei == stream.payer.direct_owed.get(service.payee, 0)
        # it never had more than the window unpaid (endgame duplicates it sent may go unused)
        assert account.served_wei - account.paid_wei <= 2 * PART
    seeder_chain = chain.with_account(world["seeder"])
    direct = seeder_service.direct_books.account(world["buyer"].address).latest
    content_cheque = seeder_service.account(world["buyer"].address).latest
    assert direct.cheque.content_id == DIRECT_CONTENT_ID
    earned_before = seeder_chain.earnings()
    seeder_chain.cash([c for c in (direct, content_cheque) if c is not None])
    content_paid = content_cheque.cheque.cumulative_amount if content_cheque else 0
    assert seeder_chain.earnings() - earned_before == direct.cheque.cumulative_amount + content_paid * SHARE_BPS // 10_000


class NonPayingHolder(ViewerCore):
    """A grant holder that never pays seeders their share."""

    def piece_verified(self, event, now):
        return []


def test_a_holder_that_stops_paying_gets_at_most_the_window_of_granted_slices(world):
    async def scenario():
        async with network(world) as (nodes, _creator_service, seeder_service):
            grants = world["grants"]
            only_granted = HeldGrants(grants.grant_ids, grants.ranges, grants.keys)
            stream = viewer(world, nodes[2], only_granted, core_class=NonPayingHolder)
            stream.content.add_peer("127.0.0.1", nodes[1].listen_port)
            stream.seek(GRANTED[0])
            # the seeder holds back once the window is used: a refusal after it served (ones
            # before that are the wait for the holder's lane to be seen on chain). Checked at
            # every upload the gate decides: the refusal that ends the window comes in the
            # same write as the blocks served before it (a poll only sees both at once).
            account = seeder_service.direct_books.account(world["buyer"].address)
            refused_when_serving_began = []

            def refused_after_serving_began() -> bool:
                if not refused_when_serving_began and account.served_wei > 0:
                    refused_when_serving_began.append(seeder_service.stats.blocks_refused)
                return bool(refused_when_serving_began) and \
                    seeder_service.stats.blocks_refused > refused_when_serving_began[0]

            async with asyncio.timeout(TIMEOUT_S):
                await seeder_service.wait_until(refused_after_serving_began)
            return seeder_service

    seeder_service = asyncio.run(scenario())
    account = seeder_service.direct_books.account(world["buyer"].address)
    assert account.paid_wei == 0
    assert 0 < account.served_wei <= 2 * PART


def test_a_seeder_that_cannot_check_grants_is_paid_in_full(world):
    n = world["done"].torrent.piece_count

    async def scenario():
        async with network(world, seeder_checks_grants=False) as (nodes, creator_service, seeder_service):
            stream = viewer(world, nodes[2], world["grants"])
            stream.content.add_peer("127.0.0.1", nodes[1].listen_port)
            stream.content.add_peer("127.0.0.1", nodes[0].listen_port)
            got = await play(stream)
            return stream, got, seeder_service

    stream, got, seeder_service = asyncio.run(scenario())
    assert b"".join(got[i] for i in range(n)) == world["plaintext"]
    assert "cannot check grants" in " ".join(seeder_service.stats.refusals)
    # what that seeder delivered of granted slices was paid at the full price, as for anyone
    assert stream.payer.direct_owed.get(seeder_service.payee, 0) == 0


def test_claims_on_other_viewers_or_contents_grants_are_refused(world):
    chain, done = world["chain"], world["done"]
    stranger = Account.create()

    async def scenario():
        async with network(world) as (nodes, _creator_service, seeder_service):
            stolen = world["grants"]
            content = nodes[2].fetch(done.torrent, world["tmp"] / "stranger")
            stream = PaidStream(content, done.torrent, wallet=stranger, domain=chain.cheque_domain, budget_wei=0,
                                grants=stolen)
            content.add_peer("127.0.0.1", nodes[1].listen_port)
            async with asyncio.timeout(TIMEOUT_S):
                await seeder_service.wait_until(lambda: any("not this viewer's" in r for r in seeder_service.stats.refusals))
            return stream, seeder_service

    _stream, seeder_service = asyncio.run(scenario())
    assert seeder_service.granted.get(stranger.address, []) == []
    assert stranger.address not in seeder_service.direct_books.accounts or \
        seeder_service.direct_books.account(stranger.address).served_wei == 0


def test_direct_books_are_shared_by_the_contents_a_node_serves(world):
    books = DirectBooks(world["seeder"].address, world["chain"].cheque_domain.verify)
    assert books.account(world["buyer"].address) is books.account(world["buyer"].address)


def test_a_peer_cannot_make_a_seeder_look_up_grants_without_end(world):
    chain, done = world["chain"], world["done"]
    stranger = Account.create()
    lookups = []

    async def scenario():
        async with network(world) as (nodes, _creator_service, seeder_service):
            real = seeder_service.grant_lookup
            seeder_service.grant_lookup = lambda grant_id: (lookups.append(grant_id), real(grant_id))[1]
            content = nodes[2].fetch(done.torrent, world["tmp"] / "claimer")
            stream = PaidStream(content, done.torrent, wallet=stranger, domain=chain.cheque_domain, budget_wei=0)
            content.add_peer("127.0.0.1", nodes[1].listen_port)
            async with asyncio.timeout(TIMEOUT_S):
                await stream.wait_until(lambda: any(s.terms for s in stream.sources.values()))
            conn = next(iter(stream.sources))
            for batch in range(5):  # 5 claims of 64 made-up grants each, sent on the wire as a hostile viewer would
                claim = messages.GrantClaim(tuple(range(1000 + 64 * batch, 1064 + 64 * batch)))
                assert content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(claim))
            async with asyncio.timeout(TIMEOUT_S):
                await seeder_service.wait_until(lambda: any("too many" in r for r in seeder_service.stats.refusals))

    asyncio.run(scenario())
    assert len(lookups) == messages.MAX_GRANTS_PER_CLAIM
