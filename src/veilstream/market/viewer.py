"""The viewer's side of the market as a protocol core without IO: fed swarm events, market
messages, lookup results, timer firings and `now` (unix seconds), it answers with actions
(`market.actions`) for its driver (`PaidStream`, stream.py) to carry out.

Payment follows delivery: when a slice verifies, the peer that delivered most of it gets a
cheque raised by one price (a plain BitTorrent peer's slices are paid to the creator); the
key agent, whose books sum cheques over seeders, is shown the newest of them with each
key request. Payees extend credit only against a lane of the viewer's deposit held for
them on chain, so the core wants one (`OpenLanes`) for the creator at once and for every
seeder as it meets it, gathered into one transaction at start, and tells the seeder when it
holds. Keys come sealed to the session key and are checked against the manifest's key
commitments before use; a wrong delivery is kept as evidence and the keys are asked of
another agent. The registered key agent is asked first; an agent that answers nothing in
`key_request_timeout_s`, or keeps refusing what is paid for, is passed over, and when no
agent is left the stream fails with a message that says so. The session key is renewed
before it expires.

A viewer holding on-chain grants (slices bought whole, the creator paid on chain) says so
to every seeder, uses the keys it was issued for those slices, and pays seeders only their
share of them, with direct cheques.

Signing cheques (the `Payer`), opening sealed deliveries and checking them against the
commitments stay here: they are computation, not IO, and what is paid, to whom, and
whether a delivery is evidence are the protocol's decisions; a test drives all of it
with no socket and no clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from veilstream.chain.cheque import SignedCheque, checksum_address
from veilstream.content import KeyRing, Torrent, WrongKeyError
from veilstream.content.keytree import TreeNode
from veilstream.content.unseal import verify_range_keys
from veilstream.market import messages
from veilstream.market.actions import (Action, CancelTimer, ChequeSigned, Drop, Fail, KeysArrived, LimitFetching,
                                       OpenLanes, Send, StartTimer)
from veilstream.market.credit import DIRECT_CONTENT_ID, seeder_part_wei
from veilstream.market.errors import MarketError, MarketProtocolError, PaymentRefused
from veilstream.market.key_session import ViewerKeySession, delivery_signer
from veilstream.market.lanes import NoCover
from veilstream.market.payer import BudgetExceeded, Payer
from veilstream.market.settings import MarketSettings
from veilstream.swarm import ExtensionMessageReceived, PeerReady, PieceVerified, SwarmEvent

log = logging.getLogger("veilstream.market")

# Timer names (`StartTimer.name`).
KEY_REQUEST_TIMER = "key request"  # the agent asked has answered nothing in key_request_timeout_s
KEY_BATCH_TIMER = "key batch"  # a waiting player's short batch has waited key_batch_wait_s
KEY_RETRY_TIMER = "key retry"  # a refused key request is asked again after the backoff
LANE_GATHER_TIMER = "lane gather"  # the first lanes have waited lane_gather_s for the peers met at start
NO_KEY_AGENT_TIMER = "no key agent"  # a waiting player has found no agent for no_key_agent_timeout_s

MAX_PAYEES_PER_LANE_CALL = 16  # Wallet.MAX_LANES_PER_CALL


class StreamError(MarketError):
    """The stream cannot go on: no honest key agent, budget exhausted, or a swarm failure."""


class BudgetSpent(StreamError):
    """The budget the viewer set is spent: the stream stops before paying more."""


@dataclass
class Source:
    """A peer the viewer met, as the market sees it."""

    address: tuple[str, int]
    terms: messages.TermsMessage | None = None  # None: a plain BitTorrent peer (or not yet said)
    speaks_market: bool = False
    refuses_grants: bool = False  # it charges granted slices in full
    refusals: int = 0  # key requests it refused in a row

    @property
    def payee(self) -> str | None:
        return checksum_address(self.terms.payee) if self.terms is not None else None


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
    first_plaintext_at: float | None = None  # the driver's monotonic clock
    started_at: float | None = None  # the driver's monotonic clock


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


class ViewerCore:
    """One viewer's market state for one content. Every input method takes `now` (unix
    seconds) and returns the actions it leads to, in order; queries (`key_for`,
    `have_key`, ...) change nothing."""

    def __init__(
        self,
        torrent: Torrent,
        *,
        payer: Payer,
        wallet_key: bytes,
        now: float,
        settings: MarketSettings = MarketSettings(),
        recent_pieces_kept_bytes: int = 1 << 62,
        grants: HeldGrants | None = None,
        lanes: bool = False,
        key_agent: str | None = None,
        held_keys: KeyRing | None = None,
        paid_before_wei: int = 0,
    ) -> None:
        self.torrent = torrent
        self.manifest = manifest = torrent.manifest
        self.settings = settings
        self.creator = checksum_address(manifest.creator_address)
        self.payer = payer
        self._wallet_key = wallet_key
        self.session = ViewerKeySession(wallet_key, torrent.info_hash, int(now) + settings.key_session_ttl_s)
        self._old_sessions: list[ViewerKeySession] = []  # renewed: kept to open deliveries already sealed to them
        self.lanes = lanes  # a chain to hold lanes on (the driver's LaneOpener)
        self.key_agent = checksum_address(key_agent) if key_agent else None  # the agent registered on chain
        self._laned: dict[bytes, set[str]] = {}  # content id (or the direct id) → payees holding a lane
        self._lane_wanted: dict[bytes, set[str]] = {}
        self._lane_job: tuple[bytes, frozenset[str]] | None = None  # (content id, payees) being opened
        self._lanes_gathered = False
        self._gathering = False
        self.stats = StreamStats()
        self.evidence: list[Evidence] = []
        self.metadata_key: bytes | None = None
        self.sources: dict[int, Source] = {}
        self._keys: dict[int, bytes] = {}
        # Keys bought in earlier sessions (the vault's): watching again costs nothing, and
        # they count, with what earlier sessions paid, as the key agent's books count them.
        self.held_keys = held_keys
        self._held: set[int] = set()
        if held_keys is not None:
            self._held = {i for node in held_keys.nodes
                          for i in range(node.first_leaf, min(node.end_leaf, manifest.slice_count))}
        self._paid_before_wei = paid_before_wei
        self._bought_nodes: list[TreeNode] = []  # the tree nodes delivered this session
        self._keys_bought = sum(1 for i in self._held if not (grants is not None and grants.covers(i)))
        self._player_waits_for_key: int | None = None
        self._keys_since_seek = 0  # keys bought since the start or the last seek: batches grow with them
        self._key_frontier = 0  # the first slice from the playhead on whose key is not held
        self._fetch_limit: int | None = None
        # Half the lookahead, but a player behind by a batch must still find its slices in
        # the swarm's memory of recent pieces, not read them back from disk.
        self._key_batch = max(1, min(settings.key_lookahead_slices // 2,
                                     recent_pieces_kept_bytes // (2 * manifest.piece_length)))
        self._batch_timer = False
        self._batch_waited = False
        self.grants = grants
        if grants is not None:
            self.metadata_key = grants.keys.metadata_key
        if held_keys is not None and held_keys.metadata_key is not None:
            self.metadata_key = held_keys.metadata_key
        self.distrusted: set[int] = set()  # agents passed over
        self._key_request: tuple[int, int, int] | None = None  # (conn, first, end) in flight
        self._no_agent_since: float | None = None
        self._shown: dict[int, dict[str, int]] = {}  # conn → seeder → the newest amount it was sent
        self._playhead = 0
        self.failure: StreamError | None = None
        self._now = now
        self._out: list[Action] = []

    # -- inputs ---------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """The player starts: the creator's lane (its node's and plain peers' slices) is wanted at once."""
        if self.manifest.terms.price_per_slice_wei and not self.lanes:
            raise StreamError("paid content needs a chain to hold lanes of the deposit on; none was given")
        self._now = now
        self._want_lane(self.torrent.info_hash, self.creator)
        return self._take()

    def seek(self, index: int, now: float) -> list[Action]:
        self._now = now
        if index != self._playhead:
            self._keys_since_seek = 0  # key batches start small again where the player jumped to
        self._playhead = self._key_frontier = index
        self._want_keys()
        return self._take()

    def played(self, index: int, now: float) -> list[Action]:
        """The player has slice `index` in plaintext."""
        self._now = now
        self._player_waits_for_key = None
        self._playhead = index + 1
        self._want_keys()
        return self._take()

    def wait_for_key(self, index: int, now: float) -> list[Action]:
        """The player waits for the key of slice `index` (ask again after each `KeysArrived`)."""
        self._now = now
        if self.failure is not None or self.key_for(index) is not None:
            return self._take()
        self._player_waits_for_key = index
        if self._budget_buys_no_more_keys():
            self._fail(BudgetSpent(f"the budget of {self.payer.budget_wei} wei buys no more keys"))
            return self._take()
        self._want_keys()
        if self._key_agents():
            self._agent_found()
        elif self._no_agent_since is None:
            # Nobody sells keys: wait a while for one (a peer still connecting), then say so.
            self._no_agent_since = now
            self._out.append(StartTimer(NO_KEY_AGENT_TIMER, now + self.settings.no_key_agent_timeout_s))
        return self._take()

    def receive(self, event: SwarmEvent, now: float) -> list[Action]:
        """A swarm event of the content (PeerReady, ExtensionMessageReceived, PieceVerified;
        others are no business of the market's)."""
        self._now = now
        kind = type(event)
        if kind is PieceVerified:
            return self.piece_verified(event, now)
        if kind is ExtensionMessageReceived:
            self._on_message(event)
        elif kind is PeerReady:
            self._on_peer_ready(event)
        return self._take()

    def piece_verified(self, event: PieceVerified, now: float) -> list[Action]:
        """Slice `event.index` verified: pay who delivered it (overridden by a test's
        viewer that does not pay)."""
        self._now = now
        self._on_piece_verified(event)
        return self._take()

    def timer_fired(self, name, now: float) -> list[Action]:
        self._now = now
        if name == KEY_REQUEST_TIMER:
            if self._key_request is not None:
                conn = self._key_request[0]
                timeout = self.settings.key_request_timeout_s
                log.warning("key agent %s answered nothing in %.1f s; asking another", conn, timeout)
                self._pass_over(conn, f"the key agent answered nothing in {timeout:g} s")
        elif name == KEY_BATCH_TIMER:
            self._batch_timer = False
            self._batch_waited = True
            self._want_keys()
        elif name == KEY_RETRY_TIMER:
            self._want_keys()
        elif name == LANE_GATHER_TIMER:
            self._lanes_gathered_now()
        elif name == NO_KEY_AGENT_TIMER:
            self._no_agent_since = None
            if self._player_waits_for_key is not None and not self._key_agents() and self.failure is None:
                who = f" (the registry names {self.key_agent})" if self.key_agent else ""
                self._fail(StreamError(
                    f"no key agent answers for this content{who}: stopped after paying for "
                    f"{self._keys_paid_without_key()} slices whose keys it has not sold; reach the creator's node "
                    "(--peer HOST:PORT) and play again"))
        return self._take()

    def lanes_opened(self, content_id: bytes, payees: list[str], now: float) -> list[Action]:
        """The `OpenLanes` under way is done: `payees` hold a lane now."""
        self._now = now
        self._lane_job = None
        got = set(payees)
        self._laned.setdefault(content_id, set()).update(got)
        for conn, source in self.sources.items():  # the payees, and key agents (they count every lane)
            if source.payee in got or (source.terms is not None and source.terms.serves_keys):
                self._send(conn, messages.LanesOpened())
            source.refusals = 0  # refusals before a lane held were no fault of the agent's
        self._open_lanes()
        self._want_keys()
        return self._take()

    def lanes_failed(self, content_id: bytes, error: Exception, now: float) -> list[Action]:
        """The `OpenLanes` under way failed (`NoCover`: the deposit holds no more; else the chain)."""
        self._now = now
        self._lane_job = None
        log.warning("%s", error)
        if not isinstance(error, NoCover):
            self._fail(StreamError(f"lanes could not be opened: {error}"))
        elif not any(self._laned.values()):
            self._fail(StreamError(str(error)))
        self._open_lanes()
        return self._take()

    def close(self) -> list[Action]:
        """Forget the session keys; cancel every timer."""
        self.session.close()
        for old in self._old_sessions:
            old.close()
        return [CancelTimer(name) for name in (KEY_REQUEST_TIMER, KEY_BATCH_TIMER, KEY_RETRY_TIMER,
                                               LANE_GATHER_TIMER, NO_KEY_AGENT_TIMER)]

    # -- queries ----------------------------------------------------------------------------
    def key_for(self, index: int) -> bytes | None:
        if self.grants is not None and self.grants.covers(index):
            return self.grants.keys.slice_key(index)  # derived from the issued tree nodes
        if index in self._held:
            return self.held_keys.slice_key(index)
        return self._keys.get(index)

    def have_key(self, index: int) -> bool:
        return index in self._keys or index in self._held or (self.grants is not None and self.grants.covers(index))

    def budget_buys_no_more_keys(self) -> bool:
        return self._budget_buys_no_more_keys()

    def bought_keys(self) -> KeyRing:
        """Every key this stream holds, earlier sessions' included: what the vault keeps."""
        nodes = list(self.held_keys.nodes) if self.held_keys is not None else []
        return KeyRing(tuple(nodes + self._bought_nodes), self.metadata_key)

    def key_agents(self) -> list[int]:
        """Peers that sell keys and have not lost our trust, the registered agent first."""
        return self._key_agents()

    # -- keys ---------------------------------------------------------------------------
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

    def _key_agents(self) -> list[int]:
        agents = [conn for conn, s in self.sources.items()
                  if s.terms is not None and s.terms.serves_keys and conn not in self.distrusted]
        return sorted(agents, key=lambda conn: self._claims_registered_agent(conn) is not True)

    def _agent_found(self) -> None:
        if self._no_agent_since is not None:
            self._no_agent_since = None
            self._out.append(CancelTimer(NO_KEY_AGENT_TIMER))

    def _claims_registered_agent(self, conn: int) -> bool | None:
        """Does the peer say it is the registered key agent? None: no agent is registered."""
        if self.key_agent is None:
            return None
        terms = self.sources[conn].terms
        return bool(terms and terms.key_agent) and checksum_address(terms.key_agent) == self.key_agent

    def _want_keys(self) -> None:
        if self._key_request is not None:
            return
        first = max(self._playhead, self._key_frontier)  # keys are never dropped: no need to look behind it
        count = self.manifest.slice_count
        while first < count and self.have_key(first):
            first += 1
        self._key_frontier = first
        self._limit_fetching()
        if first >= count:
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
        while end < count and end - first < allowance and not self.have_key(end):
            end += 1
        agents = self._key_agents()
        if end <= first or not agents:
            return
        if price and self.lanes and not self._laned.get(self.torrent.info_hash):
            return  # no lane yet: the agent could count nothing; asked once the first lane holds
        # Keys come in batches: each delivery costs both sides a key exchange, a proof and
        # a round trip. A batch is half the lookahead, but no more than the keys bought
        # since the start or the seek (so it starts at one key and doubles: a player
        # starting out is not held back for a full batch). A waiting player's short batch
        # waits up to `key_batch_wait_s` for the payments of the slices now arriving to
        # widen it (at full speed that is a few milliseconds).
        batch = max(1, min(self._key_batch, self._keys_since_seek))
        more_to_ask = end < count and not self.have_key(end)  # only payment holds the request short
        if end - first < batch and more_to_ask and not self._batch_waited:
            if self._player_waits_for_key is None:
                return
            if not self._batch_timer:
                self._batch_timer = True
                self._out.append(StartTimer(KEY_BATCH_TIMER, self._now + self.settings.key_batch_wait_s))
            return
        if self._batch_timer:
            self._batch_timer = False
            self._out.append(CancelTimer(KEY_BATCH_TIMER))
        self._batch_waited = False
        conn = agents[0]
        self._renew_session_if_due()
        self._key_request = (conn, first, end)
        self._show_cheques(conn)
        self._send(conn, messages.KeyRequest(first, end))
        self._out.append(StartTimer(KEY_REQUEST_TIMER, self._now + self.settings.key_request_timeout_s))

    def _pass_over(self, conn: int, why: str) -> None:
        """Stop asking `conn` for keys; ask another agent, or fail if none is left."""
        self.distrusted.add(conn)
        if self._key_request is not None and self._key_request[0] == conn:
            self._end_key_request()
        if not self._key_agents():
            self._fail(StreamError(f"no key agent left to buy keys from: {why}"))
            return
        self._want_keys()

    def _end_key_request(self) -> None:
        self._key_request = None
        self._out.append(CancelTimer(KEY_REQUEST_TIMER))

    def _renew_session_if_due(self) -> None:
        if self._now >= self.session.offer.expires_at - self.settings.key_session_renew_s:
            self.session = self._renewed_now()

    def _renewed_now(self) -> ViewerKeySession:
        for dropped in self._old_sessions[1:]:
            dropped.close()  # forward secrecy: a session two renewals old has no delivery in flight
        self._old_sessions = [self.session, *self._old_sessions[:1]]
        renewed = ViewerKeySession(self._wallet_key, self.torrent.info_hash,
                                   int(self._now) + self.settings.key_session_ttl_s)
        for conn, source in self.sources.items():
            if source.speaks_market:
                self._send(conn, messages.SessionMessage(renewed.offer))
        return renewed

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
                self._out.append(LimitFetching(end))

    def _on_keys(self, conn: int, message: messages.SealedKeys) -> None:
        """Keys that match the manifest's commitments are taken whoever signed them (there
        is nothing to prove); the agent's signature is checked only on a bad delivery,
        which it turns into portable evidence (and a bad one without a valid signature
        still costs the agent our trust)."""
        if self._key_request is None or self._key_request[0] != conn:
            return  # unasked: ignore
        self._end_key_request()
        content_id = self.torrent.info_hash
        try:
            delivery = messages.decode_delivery(self._open_sealed(message.sealed))
            nodes = [TreeNode(h, j, k) for h, j, k in delivery.nodes]
            keys = verify_range_keys(self.torrent, nodes, list(delivery.proof))
            if min(keys) != message.first or max(keys) + 1 != message.end:
                raise WrongKeyError("the delivery opens other slices than it claims")
        except (WrongKeyError, PaymentRefused, MarketProtocolError) as exc:
            self.stats.bad_key_deliveries += 1
            self.distrusted.add(conn)
            try:
                agent = delivery_signer(content_id, message.first, message.end, message.sealed, message.signature)
            except PaymentRefused as unsigned:
                log.warning("key agent %s sent bad keys (%s) without a valid signature (%s)", conn, exc, unsigned)
            else:
                source = self.sources.get(conn)
                self.evidence.append(Evidence(agent, source.address if source else ("?", 0), content_id,
                                              message.first, message.end, message.sealed, message.signature,
                                              self.session.disclose(), str(exc)))
                log.warning("key agent %s sent bad keys (%s); asking another", conn, exc)
            if not self._key_agents():
                self._fail(StreamError(f"the key agent sent keys that fail their commitments ({exc}); no other agent"))
            self._want_keys()
            return
        source = self.sources.get(conn)
        if source is not None:
            source.refusals = 0
        if self._claims_registered_agent(conn):
            try:
                signer = delivery_signer(content_id, message.first, message.end, message.sealed, message.signature)
            except PaymentRefused:
                signer = None
            if signer != self.key_agent:  # right keys, but it is not who it says: ask the real one next
                log.warning("peer %s claims to be the registered key agent but its deliveries are signed by %s",
                            conn, signer)
                self.distrusted.add(conn)
        if delivery.metadata_key is not None and self.metadata_key is None:
            self.metadata_key = delivery.metadata_key
        new_keys = sum(1 for index in keys if index not in self._keys and index not in self._held)
        self._bought_nodes.extend(nodes)
        self._keys_bought += new_keys
        self._keys_since_seek += new_keys
        self._keys.update(keys)
        self.stats.key_deliveries += 1
        self._out.append(KeysArrived(message.first, message.end))
        self._want_keys()

    # -- lanes --------------------------------------------------------------------------
    def _want_lane(self, content_id: bytes, payee: str) -> None:
        if not self.lanes or not self.manifest.terms.price_per_slice_wei:
            return
        if payee in self._laned.get(content_id, ()) or (content_id, payee) in self._lanes_coming():
            return
        self._lane_wanted.setdefault(content_id, set()).add(payee)
        self._open_lanes()

    def _lanes_gathered_now(self) -> None:
        self._gathering = False
        self._lanes_gathered = True
        self._open_lanes()

    def _lanes_coming(self) -> set[tuple[bytes, str]]:
        coming = set()
        if self._lane_job is not None:
            content_id, payees = self._lane_job
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
            if not self._gathering:
                self._gathering = True
                self._out.append(StartTimer(LANE_GATHER_TIMER, self._now + self.settings.lane_gather_s))
            return
        content_id = next(c for c, wanted in self._lane_wanted.items() if wanted)
        payees = sorted(self._lane_wanted[content_id])[:MAX_PAYEES_PER_LANE_CALL]
        self._lane_wanted[content_id].difference_update(payees)
        self._lane_job = (content_id, frozenset(payees))
        before = {payee: self.payer.signed_before_for(content_id, payee) for payee in payees}  # drawn on the same lane
        self._out.append(OpenLanes(content_id, tuple(payees), self._lane_want_wei(content_id), before))

    # -- payment ------------------------------------------------------------------------
    def _on_piece_verified(self, event: PieceVerified) -> None:
        shares = list(event.bytes_by_sender) or [(conn, 1) for conn in event.senders[:1]]
        if not shares:
            return
        main = self.sources.get(shares[0][0])
        label = f"{main.address[0]}:{main.address[1]}" if main else "?"
        self.stats.slices_by_source[label] += 1
        terms = self.manifest.terms
        if not terms.price_per_slice_wei:
            return
        granted = self.grants is not None and self.grants.covers(event.index)
        full, direct, conn_of_payee = [], [], {}  # (payee, bytes) paid the price / the seeder's part
        for conn, size in shares:
            source = self.sources.get(conn)
            if source is not None and source.terms is not None:
                payee = checksum_address(source.terms.payee)
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
                price = seeder_part_wei(terms) if is_direct else terms.price_per_slice_wei
                price = price * sum(size for _, size in group) // total
                for payee, amount in self.payer.split_slice_price(group, price).items():
                    if not amount:
                        continue
                    cheque = self.payer.pay(payee, amount, direct=is_direct)
                    self._out.append(ChequeSigned(cheque))
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
            conn for conn, source in self.sources.items()
            if source.terms is not None and (checksum_address(source.terms.payee) == payee or source.terms.serves_keys)]
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

    def _all_cheques(self) -> list[SignedCheque]:
        """What this viewer signed every payee met, earlier sessions included: the agent
        sells keys against all of it, and may not have seen the earlier cheques."""
        payees = dict.fromkeys(self.payer.owed)
        payees.update(dict.fromkeys(checksum_address(s.terms.payee) for s in self.sources.values()
                                    if s.terms is not None))
        return [c for c in (self.payer.standing_cheque(p) for p in payees) if c is not None]

    # -- peers and messages ----------------------------------------------------------------
    def _on_peer_ready(self, event: PeerReady) -> None:
        source = self.sources.setdefault(event.conn, Source(event.address))
        source.speaks_market = messages.MARKET_EXTENSION in event.extensions
        if source.speaks_market:
            self._send(event.conn, messages.SessionMessage(self.session.offer))
            if self.grants is not None:
                self._send(event.conn, messages.GrantClaim(self.grants.grant_ids))

    def _on_message(self, event: ExtensionMessageReceived) -> None:
        if event.name != messages.MARKET_EXTENSION:
            return
        conn = event.conn
        try:
            message = messages.decode(event.payload)
        except MarketProtocolError as exc:
            log.info("peer %s sent a malformed market message: %s; dropped", conn, exc)
            self._out.append(Drop(conn, f"broke the market protocol: {exc}"))
            if self._key_request is not None and self._key_request[0] == conn:
                self._pass_over(conn, f"the key agent broke the market protocol ({exc})")
            else:
                self.distrusted.add(conn)
            return
        source = self.sources.setdefault(conn, Source(("?", 0)))
        match message:
            case messages.TermsMessage():
                self._on_terms(conn, source, message)
            case messages.SealedKeys():
                self._on_keys(conn, message)
            case messages.MarketRefusal():
                self._on_refusal(conn, source, message)

    def _on_terms(self, conn: int, source: Source, message: messages.TermsMessage) -> None:
        domain = self.payer.domain
        if message.chain_id != domain.chain_id or checksum_address(message.wallet_contract) != domain.wallet:
            log.info("peer %s prices on another chain or wallet; treated as a plain peer", conn)
            return
        source.terms = message
        self._want_lane(self.torrent.info_hash, source.payee)
        if not self._lanes_gathered and self._gathering and all(
                s.terms is not None for s in self.sources.values() if s.speaks_market):
            self._out.append(CancelTimer(LANE_GATHER_TIMER))
            self._lanes_gathered_now()
        if self.grants is not None:
            self._want_lane(DIRECT_CONTENT_ID, source.payee)
        if message.serves_keys and self._key_agents():
            self._agent_found()
        self._want_keys()

    def _on_refusal(self, conn: int, source: Source, message: messages.MarketRefusal) -> None:
        code, text = message.code, message.text
        log.info("peer %s refused: %s", conn, text)
        if code == messages.RefusalCode.GRANT_REFUSED:
            source.refuses_grants = True
            return
        if code == messages.RefusalCode.NO_COVER:
            content_id, payee = self.torrent.info_hash, source.payee
            if payee in self._laned.get(content_id, ()):
                self._send(conn, messages.LanesOpened())  # it looked before our lane was in
            elif payee is not None:
                self._want_lane(content_id, payee)
            return
        if self._key_request is None or self._key_request[0] != conn:
            return
        self._end_key_request()
        if code == messages.RefusalCode.SESSION_EXPIRED:
            self.session = self._renewed_now()
            self._want_keys()
        elif code == messages.RefusalCode.PAYMENT_NEEDED:
            source.refusals += 1  # asked again after the next payment, or a moment later
            if source.refusals >= self.settings.key_refusals_while_paid:
                self._pass_over(conn, f"the key agent refused what was paid for: {text}")
            else:
                self._out.append(StartTimer(KEY_RETRY_TIMER,
                                            self._now + self.settings.key_refusal_backoff_s * source.refusals))
        else:
            self._pass_over(conn, text)

    # -- output ----------------------------------------------------------------------------
    def _send(self, conn: int, message: messages.Message) -> None:
        self._out.append(Send(conn, message))

    def _fail(self, error: StreamError) -> None:
        if self.failure is None:
            self.failure = error
        self._out.append(Fail(self.failure))

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out
