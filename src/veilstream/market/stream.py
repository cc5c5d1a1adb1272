"""The viewer's paid stream: fetch verified ciphertext, pay per slice, buy keys ahead of
the playhead, check them, decrypt, and hand out plaintext in order.

Payment follows delivery: when a slice verifies, the peer that delivered most of it gets a
cheque raised by one price (a plain BitTorrent peer's slices are paid to the creator); the
key agent, whose books sum cheques over seeders, is shown the newest of them with each
key request. Payees extend credit only against a lane of the viewer's deposit held for
them on chain, so the stream opens one (`LaneOpener`) for the creator at once and for
every seeder as it meets it, and tells the seeder when it holds. Keys come sealed to this
stream's ephemeral session key and are checked against the manifest's key commitments
before use; a wrong delivery is kept as evidence and the keys are asked of another agent.
The registered key agent is asked first; an agent that answers nothing in
`key_request_timeout_s`, or keeps refusing what is paid for, is passed over, and when no
agent is left the stream fails with a message that says so. The session key is renewed
before it expires; closing the stream forgets it.

A viewer holding on-chain grants (slices bought whole, the creator paid on chain) says so
to every seeder, uses the keys it was issued for those slices, and pays seeders only their
share of them, with direct cheques.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from eth_account.signers.local import LocalAccount

from veilstream.chain.cheque import ChequeDomain, SignedCheque, checksum_address
from veilstream.content import DecryptionError, KeyRing, Metadata, Torrent, WrongKeyError
from veilstream.content.crypto import open_slice, open_slice_into
from veilstream.content.keytree import TreeNode
from veilstream.content.unseal import verify_range_keys
from veilstream.market import messages
from veilstream.market.credit import DIRECT_CONTENT_ID, seeder_part_wei
from veilstream.market.errors import MarketError, MarketProtocolError, PaymentRefused
from veilstream.market.key_session import ViewerKeySession, delivery_signer
from veilstream.market.lanes import LaneOpener, NoCover
from veilstream.market.payer import BudgetExceeded, Payer
from veilstream.market.settings import MarketSettings
from veilstream.content.merkle import BLOCK_SIZE
from veilstream.swarm import ExtensionMessageReceived, PeerReady, PieceVerified, SwarmEvent, SwarmSettings, Transfer

log = logging.getLogger("veilstream.market")


def viewer_swarm_settings(piece_length: int, market: MarketSettings = MarketSettings(),
                          base: SwarmSettings = SwarmSettings()) -> SwarmSettings:
    """Swarm settings for a paying viewer: a seeder serves at most its credit window ahead
    of payment, so asking one peer for more only parks requests there while other peers
    idle. Ask each peer for about twice the window; the rest goes to the others. Take each
    piece whole from one peer: payment follows verified pieces, so pieces split across
    seeders could leave each waiting for payment for pieces the others hold back. And no
    endgame: a block two seeders both send is charged by both but paid to one, and what
    a seeder sent unpaid stays counted against its window for good (late window blocks
    are still asked of a second peer: playback matters more). Past the window, slices
    come in order: the player reads them as they verify, from memory."""
    blocks_per_slice = max(1, piece_length // BLOCK_SIZE)
    depth = max(blocks_per_slice, 2 * market.credit_window_slices * blocks_per_slice)
    return replace(base, request_queue_depth_blocks=min(base.request_queue_depth_blocks, depth),
                   whole_pieces_per_peer=True, endgame=False, sequential=True)


class StreamError(MarketError):
    """The stream cannot go on: no honest key agent, budget exhausted, or a swarm failure."""


class BudgetSpent(StreamError):
    """The budget the viewer set is spent: the stream stops before paying more."""


@dataclass
class _Source:
    address: tuple[str, int]
    terms: messages.TermsMessage | None = None  # None: a plain BitTorrent peer (or not yet said)
    speaks_market: bool = False
    refuses_grants: bool = False  # it charges granted slices in full
    refusals: int = 0  # key requests it refused in a row

    @property
    def payee(self) -> str | None:
        return _checksum(self.terms.payee) if self.terms is not None else None


@dataclass(frozen=True)
class HeldGrants:
    """On-chain grants the viewer holds for the content and the keys issued for them
    (checked against the commitments when they were issued)."""

    grant_ids: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...]  # [first, end) of each grant's slices
    keys: KeyRing

    def covers(self, index: int) -> bool:
        return any(first <= index < end for first, end in self.ranges)


@dataclass
class StreamStats:
    slices_by_source: Counter = field(default_factory=Counter)  # "host:port" → slices
    paid_by_payee: Counter = field(default_factory=Counter)  # address → wei signed
    key_deliveries: int = 0
    bad_key_deliveries: int = 0
    first_plaintext_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Evidence:
    """A signed key delivery whose keys fail the commitments: a portable proof. With the
    disclosed session key anyone can open `sealed`, check `signature` names `agent`, and
    check the keys against the manifest's public key-commitment root."""

    agent: str
    address: tuple[str, int]
    content_id: bytes
    first: int
    end: int
    sealed: bytes
    signature: bytes
    session_secret: bytes
    reason: str


class PaidStream:
    def __init__(
        self,
        content: Transfer,
        torrent: Torrent,
        *,
        wallet: LocalAccount,
        domain: ChequeDomain,
        budget_wei: int,
        settings: MarketSettings = MarketSettings(),
        grants: HeldGrants | None = None,
        signed_before: Callable[[bytes, str], int] | None = None,
        lanes: LaneOpener | None = None,
        key_agent: str | None = None,
        held_keys: KeyRing | None = None,
        paid_before_wei: int = 0,
    ) -> None:
        self.content = content
        self.torrent = torrent
        self.manifest = torrent.manifest
        self.settings = settings
        self.creator = _checksum(self.manifest.creator_address)
        self.payer = Payer(wallet, domain, torrent.info_hash, self.manifest.terms.price_per_slice_wei, budget_wei,
                           signed_before, sign_ahead=settings.cheques_signed_ahead)
        self._wallet = wallet
        self.session = ViewerKeySession(wallet.key, torrent.info_hash, int(time.time()) + settings.key_session_ttl_s)
        self._old_sessions: list[ViewerKeySession] = []  # renewed: kept to open deliveries already sealed to them
        self.lanes = lanes
        self.key_agent = _checksum_text(key_agent) if key_agent else None  # the agent registered on chain
        self._laned: dict[bytes, set[str]] = {}  # content id (or the direct id) → payees holding a lane
        self._lane_wanted: dict[bytes, set[str]] = {}
        self._lane_job: asyncio.Future | None = None
        self._lane_job_payees: tuple[bytes, frozenset[str]] = (b"", frozenset())
        self._lanes_gathered = False
        self._gather_timer: asyncio.TimerHandle | None = None
        self.stats = StreamStats()
        self.on_cheque_signed: Callable[[SignedCheque], None] | None = None  # e.g. keep it durably before it goes out
        self.evidence: list[Evidence] = []
        self.metadata_key: bytes | None = None
        self._sources: dict[int, _Source] = {}
        self._keys: dict[int, bytes] = {}
        # Keys bought in earlier sessions (the vault's): watching again costs nothing, and
        # they count, with what earlier sessions paid, as the key agent's books count them.
        self.held_keys = held_keys
        self._held = set()
        if held_keys is not None:
            self._held = {i for node in held_keys.nodes
                          for i in range(node.first_leaf, min(node.end_leaf, self.manifest.slice_count))}
        self._paid_before_wei = paid_before_wei
        self._bought_nodes: list[TreeNode] = []  # the tree nodes delivered this session
        self._keys_bought = sum(1 for i in self._held if not (grants is not None and grants.covers(i)))
        self._player_waits_for_key: int | None = None
        self._keys_since_seek = 0  # keys bought since the start or the last seek: batches grow with them
        self._key_frontier = 0  # the first slice from the playhead on whose key is not held
        self._fetch_limit: int | None = None
        # Half the lookahead, but a player behind by a batch must still find its slices in
        # the swarm's memory of recent pieces, not read them back from disk.
        self._key_batch = max(1, min(settings.key_lookahead_slices // 2, content.settings.recent_pieces_kept_bytes // (2 * self.manifest.piece_length)))
        self._batch_timer: asyncio.TimerHandle | None = None
        self._batch_waited = False
        self.grants = grants
        if grants is not None:
            self.metadata_key = grants.keys.metadata_key
        if held_keys is not None and held_keys.metadata_key is not None:
            self.metadata_key = held_keys.metadata_key
        self._keys_changed = asyncio.Event()
        self._distrusted: set[int] = set()
        self._key_request: tuple[int, int, int] | None = None  # (conn, first, end) in flight
        self._key_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._shown: dict[int, dict[str, int]] = {}  # conn → seeder → the newest amount it was sent
        self._playhead = 0
        self._failure: StreamError | None = None
        self._failed = asyncio.Event()
        self._unsubscribe = content.subscribe(self._on_swarm_event)

    # -- what the player sees -------------------------------------------------------------
    async def slices(self, start: int = 0, *, reuse: bool = False) -> AsyncIterator[tuple[int, bytes | memoryview]]:
        """(index, plaintext) from slice `start` on, in order; `seek` restarts elsewhere.
        With `reuse`, every plaintext is a view of one buffer, valid until the next slice is
        asked for: for a consumer that writes each slice out at once (a file, a decoder)."""
        if self.manifest.terms.price_per_slice_wei and self.lanes is None:
            raise StreamError("paid content needs a chain to hold lanes of the deposit on; none was given")
        self._want_lane(self.torrent.info_hash, self.creator)  # the creator's node and plain peers' slices
        self.seek(start)
        index = start
        out = bytearray(self.manifest.piece_length) if reuse else None
        while index < self.manifest.slice_count:
            if not self._have_key(index) and self._budget_buys_no_more_keys():
                raise BudgetSpent(f"the budget of {self.payer.budget_wei} wei buys no more keys")  # nor serving
            if not self.content.has_piece(index):
                await self._unless_failed(self.content.wait_for_piece(index))
            key = await self._key_for(index)
            ciphertext = self.content.piece_view(index)  # verified by the swarm; not copied, used before any await
            try:
                if out is not None:
                    plaintext = open_slice_into(self.manifest.suite, key, self.manifest.salt, index, ciphertext, out)
                else:
                    plaintext = open_slice(self.manifest.suite, key, self.manifest.salt, index, ciphertext)
            except DecryptionError:
                raise StreamError(f"slice {index} fails authentication with a checked key: corrupt storage?") from None
            if self.stats.first_plaintext_at is None:
                self.stats.first_plaintext_at = time.monotonic()
            self._playhead = index + 1
            self._want_keys()
            yield index, plaintext
            index += 1

    def seek(self, index: int) -> None:
        if index != self._playhead:
            self._keys_since_seek = 0  # key batches start small again where the player jumped to
        self._playhead = self._key_frontier = index
        self.content.seek(index * self.manifest.piece_length)
        self._want_keys()

    def metadata(self) -> Metadata | None:
        if self.metadata_key is None:
            return None
        return self.manifest.metadata(self.metadata_key)

    def close(self) -> None:
        self._unsubscribe()
        for timer in (self._batch_timer, self._key_timer, self._gather_timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        self._batch_timer = self._key_timer = self._gather_timer = None
        self.session.close()
        for old in self._old_sessions:
            old.close()

    async def _unless_failed(self, awaitable):
        """Await `awaitable`, unless the stream fails first (then raise the failure)."""
        if self._failure is not None:
            raise self._failure
        work = asyncio.ensure_future(awaitable)
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({work, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, failed):
                if not task.done():
                    task.cancel()
        if self._failure is not None:
            raise self._failure
        return work.result()

    # -- keys ---------------------------------------------------------------------------
    async def _key_for(self, index: int) -> bytes:
        if self.grants is not None and self.grants.covers(index):
            return self.grants.keys.slice_key(index)  # derived from the issued tree nodes
        if index in self._held:
            return self.held_keys.slice_key(index)
        without_agent_since = None
        while index not in self._keys:
            if self._failure is not None:
                raise self._failure
            self._player_waits_for_key = index
            try:
                if self._budget_buys_no_more_keys():
                    self._fail(BudgetSpent(f"the budget of {self.payer.budget_wei} wei buys no more keys"))
                    continue
                self._want_keys()
                event = self._keys_changed
                if self._key_agents():
                    without_agent_since = None
                    await event.wait()
                    continue
                # Nobody sells keys: wait a while for one (a peer still connecting), then say so.
                loop = asyncio.get_running_loop()
                without_agent_since = without_agent_since or loop.time()
                left = self.settings.no_key_agent_timeout_s - (loop.time() - without_agent_since)
                if left <= 0:
                    who = f" (the registry names {self.key_agent})" if self.key_agent else ""
                    self._fail(StreamError(
                        f"no key agent answers for this content{who}: stopped after paying for "
                        f"{self._keys_paid_without_key()} slices whose keys it has not sold; reach the creator's node "
                        "(--peer HOST:PORT) and play again"))
                    continue
                try:
                    async with asyncio.timeout(min(left, 0.5)):
                        await event.wait()
                except TimeoutError:
                    pass
            finally:
                self._player_waits_for_key = None
        return self._keys[index]

    def _budget_buys_no_more_keys(self) -> bool:
        price = self.manifest.terms.price_per_slice_wei
        if not price or self._key_request is not None:
            return False
        return (self._paid_before_wei + self.payer.budget_wei) // price <= self._keys_bought

    def _keys_paid_without_key(self) -> int:
        price = self.manifest.terms.price_per_slice_wei
        return max(0, self._paid_total_wei() // price - self._keys_bought) if price else 0

    def _paid_total_wei(self) -> int:
        """Paid for this content in cheques, this session and earlier ones."""
        return self._paid_before_wei + self.payer.content_spent_wei

    def bought_keys(self) -> KeyRing:
        """Every key this stream holds, earlier sessions' included: what the vault keeps."""
        nodes = list(self.held_keys.nodes) if self.held_keys is not None else []
        return KeyRing(tuple(nodes + self._bought_nodes), self.metadata_key)

    def _have_key(self, index: int) -> bool:
        return index in self._keys or index in self._held or (self.grants is not None and self.grants.covers(index))

    def _key_agents(self) -> list[int]:
        """Peers that sell keys and have not lost our trust, the registered agent first."""
        agents = [conn for conn, s in self._sources.items()
                  if s.terms is not None and s.terms.serves_keys and conn not in self._distrusted]
        return sorted(agents, key=lambda conn: self._claims_registered_agent(conn) is not True)

    def _claims_registered_agent(self, conn: int) -> bool | None:
        """Does the peer say it is the registered key agent? None: no agent is registered."""
        if self.key_agent is None:
            return None
        terms = self._sources[conn].terms
        return bool(terms and terms.key_agent) and _checksum(terms.key_agent) == self.key_agent

    def _want_keys(self) -> None:
        if self._key_request is not None:
            return
        first = max(self._playhead, self._key_frontier)  # keys are never dropped: no need to look behind it
        while first < self.manifest.slice_count and self._have_key(first):
            first += 1
        self._key_frontier = first
        self._limit_fetching()
        if first >= self.manifest.slice_count:
            return
        price = self.manifest.terms.price_per_slice_wei
        allowance = self.settings.key_lookahead_slices - (first - self._playhead)  # held ahead of the playhead
        if price:
            paid_slices = self._paid_total_wei() // price
            payable_slices = (self._paid_before_wei + self.payer.budget_wei) // price  # no more can be paid for
            allowance = min(allowance, paid_slices + self.settings.credit_window_slices - self._keys_bought,
                            payable_slices - self._keys_bought)
        if allowance <= 0:
            return
        end = first
        while end < self.manifest.slice_count and end - first < allowance and not self._have_key(end):
            end += 1
        agents = self._key_agents()
        if end <= first or not agents:
            return
        if price and self.lanes is not None and not self._laned.get(self.torrent.info_hash):
            return  # no lane yet: the agent could count nothing; asked once the first lane holds
        # Keys come in batches: each delivery costs both sides a key exchange, a proof and
        # a round trip. A batch is half the lookahead, but no more than the keys bought
        # since the start or the seek (so it starts at one key and doubles: a player
        # starting out is not held back for a full batch). A waiting player's short batch
        # waits up to `key_batch_wait_s` for the payments of the slices now arriving to
        # widen it (at full speed that is a few milliseconds).
        batch = max(1, min(self._key_batch, self._keys_since_seek))
        count = self.manifest.slice_count
        more_to_ask = end < count and not self._have_key(end)  # only payment holds the request short
        if end - first < batch and more_to_ask and not self._batch_waited:
            if self._player_waits_for_key is None:
                return
            if self._batch_timer is None:
                self._batch_timer = asyncio.get_running_loop().call_later(
                    self.settings.key_batch_wait_s, self._batch_wait_over)
            return
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch_waited = False
        conn = agents[0]
        self._renew_session_if_due()
        self._key_request = (conn, first, end)
        self._show_cheques(conn)
        self._send(conn, messages.KeyRequest(first, end))
        self._key_timer = asyncio.get_running_loop().call_later(
            self.settings.key_request_timeout_s, self._key_request_timed_out, conn, first, end)

    def _key_request_timed_out(self, conn: int, first: int, end: int) -> None:
        self._key_timer = None
        if self._key_request != (conn, first, end):
            return
        log.warning("key agent %s answered nothing in %.1f s; asking another", conn, self.settings.key_request_timeout_s)
        self._pass_over(conn, f"the key agent answered nothing in {self.settings.key_request_timeout_s:g} s")

    def _pass_over(self, conn: int, why: str) -> None:
        """Stop asking `conn` for keys; ask another agent, or fail if none is left."""
        self._distrusted.add(conn)
        if self._key_request is not None and self._key_request[0] == conn:
            self._end_key_request()
        if not self._key_agents():
            self._fail(StreamError(f"no key agent left to buy keys from: {why}"))
            return
        self._want_keys()

    def _end_key_request(self) -> None:
        self._key_request = None
        if self._key_timer is not None:
            self._key_timer.cancel()
            self._key_timer = None

    def _renew_session_if_due(self) -> None:
        if time.time() >= self.session.offer.expires_at - self.settings.key_session_renew_s:
            self.session = self._renewed_now()

    # -- lanes --------------------------------------------------------------------------
    def _want_lane(self, content_id: bytes, payee: str) -> None:
        if self.lanes is None or not self.manifest.terms.price_per_slice_wei:
            return
        if payee in self._laned.get(content_id, ()):
            return
        self._lane_wanted.setdefault(content_id, set()).add(payee)
        self._open_lanes()

    def _lanes_gathered_now(self) -> None:
        self._gather_timer = None
        self._lanes_gathered = True
        self._open_lanes()

    def _lanes_coming(self) -> set[tuple[bytes, str]]:
        content_id, payees = self._lane_job_payees
        coming = {(content_id, p) for p in payees}
        return coming | {(c, p) for c, wanted in self._lane_wanted.items() for p in wanted}

    def _lane_want_wei(self, content_id: bytes) -> int:
        """What one payee may end up being paid this session: the budget, or the whole
        content's price if less (a seeder that honours no grant is paid in full for
        granted slices too); for direct cheques, the seeders' part of the granted slices."""
        terms = self.manifest.terms
        if content_id == DIRECT_CONTENT_ID:
            granted = sum(1 for i in range(self.manifest.slice_count) if self.grants.covers(i))
            cost = seeder_part_wei(terms) * granted
        else:
            cost = terms.price_per_slice_wei * self.manifest.slice_count
        return max(1, min(self.payer.budget_wei, cost))

    def _open_lanes(self) -> None:
        if self._lane_job is not None or not any(self._lane_wanted.values()):
            return
        if not self._lanes_gathered:
            # The first transaction waits a moment for the peers being connected to say who
            # they are, so one transaction holds lanes for all of them.
            if self._gather_timer is None:
                self._gather_timer = asyncio.get_running_loop().call_later(
                    self.settings.lane_gather_s, self._lanes_gathered_now)
            return
        content_id = next(c for c, wanted in self._lane_wanted.items() if wanted)
        payees = sorted(self._lane_wanted[content_id])[:16]  # Wallet.MAX_LANES_PER_CALL
        self._lane_wanted[content_id].difference_update(payees)
        self._lane_job_payees = (content_id, frozenset(payees))
        opener, want = self.lanes, self._lane_want_wei(content_id)
        before = {payee: self.payer.signed_before_for(content_id, payee) for payee in payees}  # drawn on the same lane
        self._lane_job = asyncio.get_running_loop().run_in_executor(
            None, opener.open, content_id, payees, want, before.__getitem__)

        def opened(done: asyncio.Future) -> None:
            self._lane_job = None
            self._lane_job_payees = (b"", frozenset())
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                log.warning("%s", error)
                if not isinstance(error, NoCover):
                    self._fail(StreamError(f"lanes could not be opened: {error}"))
                elif not any(self._laned.values()):
                    self._fail(StreamError(str(error)))
                self._open_lanes()
                return
            got = set(done.result())
            self._laned.setdefault(content_id, set()).update(got)
            for conn, source in self._sources.items():  # the payees, and key agents (they count every lane)
                if source.payee in got or (source.terms is not None and source.terms.serves_keys):
                    self._send(conn, messages.LanesOpened())
                source.refusals = 0  # refusals before a lane held were no fault of the agent's
            self._open_lanes()
            self._want_keys()

        self._lane_job.add_done_callback(opened)

    def _open_sealed(self, sealed: bytes) -> bytes:
        """Open a delivery with this session's key, or a renewed one's (sealed before the renewal)."""
        for session in (self.session, *self._old_sessions):
            try:
                return session.open(sealed)
            except MarketError:  # PaymentRefused among them: not sealed to this session
                continue
        raise PaymentRefused("a key delivery does not open with this stream's session keys")

    def _limit_fetching(self) -> None:
        """Pay no more than `pay_ahead_slices` ahead of the keys held: a slice fetched is a
        slice paid, and without its key it is worth nothing to the viewer."""
        if self.manifest.terms.price_per_slice_wei:
            end = self._key_frontier + self.settings.pay_ahead_slices
            if end != self._fetch_limit:
                self._fetch_limit = end
                self.content.limit_fetching(end)

    def _batch_wait_over(self) -> None:
        self._batch_timer = None
        self._batch_waited = True
        self._want_keys()

    def _on_keys(self, conn: int, message: messages.SealedKeys) -> None:
        """Keys that match the manifest's commitments are taken whoever signed them (there
        is nothing to prove); the agent's signature is checked only on a bad delivery,
        which it turns into portable evidence (and a bad one without a valid signature
        still costs the agent our trust)."""
        if self._key_request is None or self._key_request[0] != conn:
            return  # unasked: ignore
        self._end_key_request()
        try:
            delivery = messages.decode_delivery(self._open_sealed(message.sealed))
            nodes = [TreeNode(h, j, k) for h, j, k in delivery.nodes]
            keys = verify_range_keys(self.torrent, nodes, list(delivery.proof))
            if min(keys) != message.first or max(keys) + 1 != message.end:
                raise WrongKeyError("the delivery opens other slices than it claims")
        except (WrongKeyError, PaymentRefused, MarketProtocolError) as exc:
            self.stats.bad_key_deliveries += 1
            self._distrusted.add(conn)
            try:
                agent = delivery_signer(self.torrent.info_hash, message.first, message.end, message.sealed,
                                        message.signature)
            except PaymentRefused as unsigned:
                log.warning("key agent %s sent bad keys (%s) without a valid signature (%s)", conn, exc, unsigned)
            else:
                source = self._sources.get(conn)
                self.evidence.append(Evidence(agent, source.address if source else ("?", 0), self.torrent.info_hash,
                                              message.first, message.end, message.sealed, message.signature,
                                              self.session.disclose(), str(exc)))
                log.warning("key agent %s sent bad keys (%s); asking another", conn, exc)
            if not self._key_agents():
                self._fail(StreamError(f"the key agent sent keys that fail their commitments ({exc}); no other agent"))
            self._want_keys()
            return
        source = self._sources.get(conn)
        if source is not None:
            source.refusals = 0
        if self._claims_registered_agent(conn):
            try:
                signer = delivery_signer(self.torrent.info_hash, message.first, message.end, message.sealed,
                                         message.signature)
            except PaymentRefused:
                signer = None
            if signer != self.key_agent:  # right keys, but it is not who it says: ask the real one next
                log.warning("peer %s claims to be the registered key agent but its deliveries are signed by %s",
                            conn, signer)
                self._distrusted.add(conn)
        if delivery.metadata_key is not None and self.metadata_key is None:
            self.metadata_key = delivery.metadata_key
        new_keys = sum(1 for index in keys if index not in self._keys and index not in self._held)
        self._bought_nodes.extend(nodes)
        self._keys_bought += new_keys
        self._keys_since_seek += new_keys
        self._keys.update(keys)
        self.stats.key_deliveries += 1
        self._keys_changed.set()
        self._keys_changed = asyncio.Event()
        self._want_keys()

    # -- payment ------------------------------------------------------------------------
    def _on_piece_verified(self, event: PieceVerified) -> None:
        shares = list(event.bytes_by_sender) or [(conn, 1) for conn in event.senders[:1]]
        if not shares:
            return
        main = self._sources.get(shares[0][0])
        label = f"{main.address[0]}:{main.address[1]}" if main else "?"
        self.stats.slices_by_source[label] += 1
        if not self.manifest.terms.price_per_slice_wei:
            return
        granted = self.grants is not None and self.grants.covers(event.index)
        full, direct, conn_of_payee = [], [], {}  # (payee, bytes) paid the price / the seeder's part
        for conn, size in shares:
            source = self._sources.get(conn)
            if source is not None and source.terms is not None:
                payee = _checksum(source.terms.payee)
                conn_of_payee[payee] = conn
                (direct if granted and not source.refuses_grants else full).append((payee, size))
            elif not granted:
                full.append((self.creator, size))  # a plain BitTorrent peer's bytes are paid to the creator
            # else: the creator was paid on chain for a granted slice; a plain peer asks nothing
        total = sum(size for _, size in shares)
        try:
            for group, is_direct in ((full, False), (direct, True)):
                if not group:
                    continue
                price = seeder_part_wei(self.manifest.terms) if is_direct else self.manifest.terms.price_per_slice_wei
                price = price * sum(size for _, size in group) // total
                for payee, amount in self.payer.split_slice_price(group, price).items():
                    if not amount:
                        continue
                    cheque = self.payer.pay(payee, amount, direct=is_direct)
                    if self.on_cheque_signed is not None:
                        self.on_cheque_signed(cheque)
                    self.stats.paid_by_payee[payee] += amount
                    if is_direct:
                        self._send(conn_of_payee[payee], messages.ChequeMessage(cheque))
                    else:
                        self._deliver_cheque(cheque, conn_of_payee.get(payee))
        except BudgetExceeded as exc:
            self._fail(BudgetSpent(str(exc)))
            return
        except MarketError as exc:
            self._fail(StreamError(str(exc)))
            return
        self._want_keys()

    def _deliver_cheque(self, cheque: SignedCheque, seeder_conn: int | None) -> None:
        """To the seeder it pays, now; a key agent is shown the newest cheques just before
        the next key request (its books only gate key releases). A cheque for slices from
        a plain BitTorrent peer names the creator: it goes now to the creator's node (a
        peer whose terms name the creator) or, failing one, to the key agents."""
        payee = cheque.cheque.seeder
        targets = [seeder_conn] if seeder_conn is not None else [
            conn for conn, source in self._sources.items()
            if source.terms is not None and (_checksum(source.terms.payee) == payee or source.terms.serves_keys)]
        message = messages.ChequeMessage(cheque)
        for conn in targets:
            self._send(conn, message)
            self._shown.setdefault(conn, {})[payee] = cheque.cheque.cumulative_amount

    def _show_cheques(self, conn: int) -> None:
        """Send key agent `conn` every cheque newer than what it has seen."""
        shown = self._shown.setdefault(conn, {})
        for cheque in self._all_cheques():
            seeder, amount = cheque.cheque.seeder, cheque.cheque.cumulative_amount
            if shown.get(seeder, 0) < amount:
                self._send(conn, messages.ChequeMessage(cheque))
                shown[seeder] = amount

    # -- swarm callbacks ------------------------------------------------------------------
    def _on_swarm_event(self, event: SwarmEvent) -> None:
        handler = self._SWARM_HANDLERS.get(type(event))
        if handler is not None:
            getattr(self, handler)(event)

    def _on_peer_ready(self, event: PeerReady) -> None:
        source = self._sources.setdefault(event.conn, _Source(event.address))
        source.speaks_market = messages.MARKET_EXTENSION in event.extensions
        if source.speaks_market:
            self._send(event.conn, messages.SessionMessage(self.session.offer))
            if self.grants is not None:
                self._send(event.conn, messages.GrantClaim(self.grants.grant_ids))

    def _on_message(self, event: ExtensionMessageReceived) -> None:
        if event.name != messages.MARKET_EXTENSION:
            return
        try:
            message = messages.decode(event.payload)
        except MarketProtocolError as exc:
            log.info("peer %s sent a malformed market message: %s; dropped", event.conn, exc)
            self.content.drop_peer(event.conn, f"broke the market protocol: {exc}")
            if self._key_request is not None and self._key_request[0] == event.conn:
                self._pass_over(event.conn, f"the key agent broke the market protocol ({exc})")
            else:
                self._distrusted.add(event.conn)
            return
        source = self._sources.setdefault(event.conn, _Source(self.content.peer_address(event.conn) or ("?", 0)))
        match message:
            case messages.TermsMessage():
                if message.chain_id != self.payer.domain.chain_id or _checksum(message.wallet_contract) != self.payer.domain.wallet:
                    log.info("peer %s prices on another chain or wallet; treated as a plain peer", event.conn)
                    return
                source.terms = message
                self._want_lane(self.torrent.info_hash, source.payee)
                if not self._lanes_gathered and self._gather_timer is not None and all(
                        s.terms is not None for s in self._sources.values() if s.speaks_market):
                    self._gather_timer.cancel()
                    self._lanes_gathered_now()
                if self.grants is not None:
                    self._want_lane(DIRECT_CONTENT_ID, source.payee)
                self._want_keys()
            case messages.SealedKeys():
                self._on_keys(event.conn, message)
            case messages.MarketRefusal(code=code, text=text):
                log.info("peer %s refused: %s", event.conn, text)
                if code == messages.RefusalCode.GRANT_REFUSED:
                    source.refuses_grants = True
                    return
                if code == messages.RefusalCode.NO_COVER:
                    content_id, payee = self.torrent.info_hash, source.payee
                    if payee in self._laned.get(content_id, ()):
                        self._send(event.conn, messages.LanesOpened())  # it looked before our lane was in
                    elif payee is not None and (content_id, payee) not in self._lanes_coming():
                        self._want_lane(content_id, payee)
                    return
                if self._key_request is not None and self._key_request[0] == event.conn:
                    self._end_key_request()
                    if code == messages.RefusalCode.SESSION_EXPIRED:
                        self.session = self._renewed_now()
                        self._want_keys()
                    elif code == messages.RefusalCode.PAYMENT_NEEDED:
                        source.refusals += 1  # asked again after the next payment, or a moment later
                        if source.refusals >= self.settings.key_refusals_while_paid:
                            self._pass_over(event.conn, f"the key agent refused what was paid for: {text}")
                        else:
                            if self._retry_timer is not None:
                                self._retry_timer.cancel()
                            self._retry_timer = asyncio.get_running_loop().call_later(
                                self.settings.key_refusal_backoff_s * source.refusals, self._want_keys)
                    else:
                        self._pass_over(event.conn, text)

    def _renewed_now(self) -> ViewerKeySession:
        for dropped in self._old_sessions[1:]:
            dropped.close()  # forward secrecy: a session two renewals old has no delivery in flight
        self._old_sessions = [self.session, *self._old_sessions[:1]]
        renewed = ViewerKeySession(self._wallet.key, self.torrent.info_hash,
                                   int(time.time()) + self.settings.key_session_ttl_s)
        for conn, source in self._sources.items():
            if source.speaks_market:
                self._send(conn, messages.SessionMessage(renewed.offer))
        return renewed

    def _all_cheques(self) -> list[SignedCheque]:
        return [c for c in (self.payer.latest(s) for s in self.payer.owed) if c is not None]

    def _send(self, conn: int, message: messages.Message) -> None:
        if not self.content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(message)):
            log.debug("market message to %s not sent: the peer left", conn)

    def _fail(self, error: StreamError) -> None:
        if self._failure is None:
            self._failure = error
        self._failed.set()
        self._keys_changed.set()

    _SWARM_HANDLERS = {PeerReady: "_on_peer_ready", ExtensionMessageReceived: "_on_message",
                       PieceVerified: "_on_piece_verified"}


def _checksum(address: bytes) -> str:
    return checksum_address(address)


def _checksum_text(address: str) -> str:
    return checksum_address(address)
