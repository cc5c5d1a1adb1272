"""The serving side of the market on one content: a seeder that charges per slice, and,
on the creator's node, the key agent.

It binds the protocol pieces to a swarm `Transfer`: when a peer that speaks the market
extension is ready it gets our terms; its signed session offer tells us which viewer it
is; its cheques feed the viewer's books; the upload gate lets a piece go out only while
those books allow; key requests go to the key agent. Cheques this node is owed are kept
in the cheque ledger and cashed in batches once they pass the threshold.

Credit rests on the chain: a viewer's book serves nothing until the lane the viewer holds
for this payee (`cover_lookup`, the Wallet's guarantee) is looked up, and the key agent
counts a cheque only once its payee's lane is known. Lookups run on a worker thread (a
chain call must not stall the loop); the connection's uploads and key requests wait for
them, and each connection may cost only so many. A viewer that has just opened lanes says
so (`LanesOpened`) and its covers are looked up again.

A paid seeder serves no peer that does not speak the market (a plain BitTorrent client
would take every byte free) unless told to; free content goes to everyone.

A viewer may claim on-chain grants for the content (slices it bought whole, paying the
creator's part on chain). Each claim is looked up on chain once; the granted slices then
cost that viewer only the seeder's share, paid with direct cheques whose book is the
node's (`DirectBooks`), since their counter runs across contents.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from fractions import Fraction

from veilstream.chain.cheque import ChequeDomain, SignedCheque, checksum_address
from veilstream.chain.client import Grant, GrantState, Guarantee
from veilstream.market import messages
from veilstream.market.credit import DIRECT_CONTENT_ID, ZERO_ADDRESS, DirectBooks, SeederAccount, seeder_part_wei
from veilstream.market.errors import MarketProtocolError, PaymentRefused
from veilstream.market.key_agent import KeyAgent
from veilstream.market.settings import MarketSettings
from veilstream.swarm import ExtensionMessageReceived, PeerDropped, PeerReady, SwarmEvent, Transfer

log = logging.getLogger("veilstream.market")

CoverLookup = Callable[[str, bytes, str], Guarantee]  # (viewer, content id, payee) → what the chain promises


@dataclass
class _PeerState:
    viewer: str | None = None  # known once the peer's signed session offer arrives
    speaks_market: bool = False
    grant_lookups: int = 0  # chain lookups this connection's claims cost us
    lookups_pending: int = 0  # claims still being looked up: uploads wait for them
    cover_lookups: int = 0  # chain lookups of lanes this connection cost us
    deferred: list[messages.KeyRequest] = field(default_factory=list)  # waiting for lookups


@dataclass
class SellerStats:
    bytes_served: int = 0
    blocks_refused: int = 0
    cheques_accepted: int = 0
    cheques_refused: int = 0
    keys_released: int = 0
    peers_dropped: int = 0
    cover_lookups: int = 0
    refusals: list[str] = field(default_factory=list)


class MarketService:
    def __init__(
        self,
        content: Transfer,
        *,
        payee: str,
        domain: ChequeDomain,
        settings: MarketSettings = MarketSettings(),
        key_agent: KeyAgent | None = None,
        cover_lookup: CoverLookup | None = None,
        serve_plain_peers: bool | None = None,
        grant_lookup: Callable[[int], Grant | None] | None = None,
        direct_books: DirectBooks | None = None,
        paid_before: Callable[[str, bytes], int] | None = None,
        unpayable: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.content = content
        self.payee = checksum_address(payee)
        self.domain = domain
        self.settings = settings
        self.key_agent = key_agent
        torrent = content.torrent
        self.content_id = torrent.info_hash
        self.manifest = torrent.manifest
        self.terms = torrent.manifest.terms
        # None: a paid seeder serves only peers that pay (default); free content, everyone.
        self.serve_plain_peers = self.terms.price_per_slice_wei == 0 if serve_plain_peers is None else serve_plain_peers
        self.cover_lookup = cover_lookup  # None: no chain to read, so no credit for paid slices
        self.unpayable = frozenset({ZERO_ADDRESS, domain.wallet, *(checksum_address(a) for a in unpayable)})
        if self.payee in self.unpayable:
            raise PaymentRefused(f"{self.payee} cannot be paid by the Wallet: choose another payee address")
        self._clock = clock
        self.stats = SellerStats()
        self.accounts: dict[str, SeederAccount] = {}  # by viewer address
        self.on_cheque_accepted: Callable[[SignedCheque], None] | None = None  # e.g. keep it for cashing
        self.on_cover: Callable[[str, bytes, str, Guarantee], None] | None = None  # e.g. cash before the lane's time
        self._peers: dict[int, _PeerState] = {}
        self.grant_lookup = grant_lookup  # None: grant claims are refused (the viewer then pays in full)
        self.paid_before = paid_before  # (viewer, content id) → what earlier sessions paid this payee
        self.direct_books = direct_books or DirectBooks(self.payee, domain.verify, paid_before,
                                                        settings.lane_cash_margin_s)
        self.granted: dict[str, list[tuple[int, int]]] = {}  # viewer → [first, end) ranges it holds grants for
        self._grants: dict[int, Grant] = {}  # grants looked up on chain, open or issued
        self._covers: dict[tuple[str, bytes, str], Guarantee] = {}  # (viewer, content id, payee) → looked up
        self._covers_pending: dict[str, int] = {}  # viewer → lookups in flight
        self._covers_inflight: set[tuple[str, bytes, str]] = set()
        self._covers_stale: set[tuple[str, bytes, str]] = set()
        self._block_units: dict[tuple[int, int], int] = {}
        self._last_piece_size = self.manifest.slice_range(torrent.piece_count - 1)[1]
        # value in 1/units_per_wei wei: every block's share of its slice's price is a whole number
        self._units_per_wei = math.lcm(torrent.piece_length, self._last_piece_size)
        self._seeder_part_wei = seeder_part_wei(self.terms)
        self.serving_paid_until = math.inf  # a seeder-share cut ahead stops paid serving before it (`terms_changed`)
        self.close = content.subscribe(self._on_swarm_event)  # stop listening (the node's own end stops it too)
        content.set_upload_gate(self._may_upload)

    # -- books -------------------------------------------------------------------------
    def account(self, viewer: str) -> SeederAccount:
        if viewer not in self.accounts:
            account = self.accounts[viewer] = SeederAccount(
                viewer, self.content_id, self.terms.price_per_slice_wei, self.settings.credit_window_slices,
                self.domain.verify, seeder=self.payee, units_per_wei=self._units_per_wei,
                paid_before_wei=self.paid_before(viewer, self.content_id) if self.paid_before else 0,
                margin_s=self.settings.lane_cash_margin_s,
            )
            cover = self._covers.get((viewer, self.content_id, self.payee))
            if cover is not None:
                account.set_cover(cover)
        return self.accounts[viewer]

    def cheques_owed(self) -> list[SignedCheque]:
        """The latest cheque of every viewer that paid this node: what to cash."""
        return [a.latest for a in self.accounts.values() if a.latest is not None]

    @property
    def earned_wei(self) -> int:
        return sum(a.paid_wei for a in self.accounts.values())

    def terms_changed(self, seeder_share_now_bps: int, scheduled_bps: int | None, effective_at: int | None) -> None:
        """The registry's seeder share, read on chain. Serving for less than the share this
        node advertises (the manifest's) is refused; a cut ahead ends paid serving a margin
        before it takes effect, so what was served is cashed under the old share."""
        advertised = self.terms.seeder_share_bps
        if seeder_share_now_bps < advertised:
            self.serving_paid_until = 0.0
            log.warning("the registry pays seeders %s bps of %s, below the %s bps advertised: serving nothing paid",
                        seeder_share_now_bps, self.content_id.hex()[:16], advertised)
        elif scheduled_bps is not None and effective_at is not None and scheduled_bps < advertised:
            self.serving_paid_until = effective_at - self.settings.lane_cash_margin_s
            log.warning("the seeder share of %s drops to %s bps at %s: paid serving stops before then",
                        self.content_id.hex()[:16], scheduled_bps, effective_at)
        else:
            self.serving_paid_until = math.inf

    # -- chain lookups ---------------------------------------------------------------------
    def _look_up_cover(self, conn: int, state: _PeerState, viewer: str, content_id: bytes, payee: str,
                       again: bool = False) -> None:
        key = (viewer, content_id, payee)
        if key in self._covers and not again:
            self._apply_cover(key, self._covers[key])
            return
        if self.cover_lookup is None:
            self._apply_cover(key, Guarantee(0, 0))
            return
        if key in self._covers_inflight:
            if again:
                self._covers_stale.add(key)  # looked up again once this answer is in
            return
        if state.cover_lookups >= self.settings.cover_lookups_per_connection:
            log.info("peer %s asked for more lane lookups than allowed; %s is not looked up", conn, payee)
            return
        state.cover_lookups += 1
        self.stats.cover_lookups += 1
        self._covers_pending[viewer] = self._covers_pending.get(viewer, 0) + 1
        self._covers_inflight.add(key)
        lookup = self.cover_lookup
        future = asyncio.get_running_loop().run_in_executor(None, lookup, viewer, content_id, payee)

        def looked_up(done: asyncio.Future) -> None:
            self._covers_pending[viewer] -= 1
            self._covers_inflight.discard(key)
            if done.cancelled() or done.exception() is not None:
                log.warning("lane lookup for %s failed: %s", payee,
                            "cancelled" if done.cancelled() else done.exception())
                cover = Guarantee(0, 0)
            else:
                cover = done.result()
            self._covers[key] = cover
            self._apply_cover(key, cover)
            if key in self._covers_stale:
                self._covers_stale.discard(key)
                self._look_up_cover(conn, state, viewer, content_id, payee, again=True)
            elif payee == self.payee and content_id == self.content_id and cover.ceiling_wei <= cover.cashed_wei:
                self._refuse(conn, messages.RefusalCode.NO_COVER,
                             f"no lane of your deposit is held for {self.payee}: open one (Wallet.open_lanes)")
            if not self._covers_pending[viewer]:
                self._resume_viewer(viewer)

        future.add_done_callback(looked_up)

    def _apply_cover(self, key: tuple[str, bytes, str], cover: Guarantee) -> None:
        viewer, content_id, payee = key
        if payee == self.payee:
            if content_id == DIRECT_CONTENT_ID:
                self.direct_books.account(viewer).set_cover(cover)
            else:
                self.account(viewer).set_cover(cover)
            if self.on_cover is not None:
                self.on_cover(viewer, content_id, payee, cover)
        if self.key_agent is not None and content_id == self.content_id:
            self.key_agent.set_cover(viewer, content_id, payee, cover)

    def _look_up_for_session(self, conn: int, state: _PeerState, again: bool = False) -> None:
        viewer = state.viewer
        self._look_up_cover(conn, state, viewer, self.content_id, self.payee, again)  # this payee's own lane
        if self.granted.get(viewer):
            self._look_up_cover(conn, state, viewer, DIRECT_CONTENT_ID, self.payee, again)
        if self.key_agent is not None:
            for payee in self.key_agent.covers_wanted(viewer, self.content_id):
                self._look_up_cover(conn, state, viewer, self.content_id, payee)
            if again:  # the viewer opened or topped up lanes: every cover the book counts may have grown
                for payee in list(self.key_agent.account(viewer, self.content_id).covers):
                    if payee != self.payee:
                        self._look_up_cover(conn, state, viewer, self.content_id, payee, True)

    def _waiting(self, state: _PeerState) -> bool:
        return bool(state.lookups_pending or self._covers_pending.get(state.viewer, 0))

    def _resume_viewer(self, viewer: str) -> None:
        for conn, state in list(self._peers.items()):
            if state.viewer != viewer:
                continue
            deferred, state.deferred = state.deferred, []
            for request in deferred:
                self._answer_key_request(conn, state, request)
            self.content.uploads_may_resume(conn)

    # -- swarm callbacks ------------------------------------------------------------------
    def _on_swarm_event(self, event: SwarmEvent) -> None:
        handler = self._SWARM_HANDLERS.get(type(event))
        if handler is not None:
            getattr(self, handler)(event)

    def _on_peer_ready(self, event: PeerReady) -> None:
        state = self._peers.setdefault(event.conn, _PeerState())
        state.speaks_market = messages.MARKET_EXTENSION in event.extensions
        if state.speaks_market:
            self._send(event.conn, messages.TermsMessage(
                price_per_slice_wei=self.terms.price_per_slice_wei,
                seeder_share_bps=self.terms.seeder_share_bps,
                payee=bytes.fromhex(self.payee[2:]),
                credit_window_slices=self.settings.credit_window_slices,
                chain_id=self.domain.chain_id,
                wallet_contract=bytes.fromhex(self.domain.wallet[2:]),
                serves_keys=self.key_agent is not None,
                key_agent=bytes.fromhex(self.key_agent.address[2:]) if self.key_agent is not None else b"",
            ))

    def _on_peer_dropped(self, event: PeerDropped) -> None:
        self._peers.pop(event.conn, None)
        if self.key_agent is not None:
            self.key_agent.end_channel((id(self), event.conn))
        if len(self.accounts) > self.settings.max_idle_books:
            self._forget_idle_viewers()

    def _forget_idle_viewers(self) -> None:
        """Per-viewer state must not grow without end. Viewers with no connection left are
        forgotten: what they paid is in the ledger (`paid_before`) and with the cashier, and
        a returning viewer's books are rebuilt from there (the agent's from its audit log)."""
        live = {state.viewer for state in self._peers.values()}
        for viewer in [v for v in self.accounts if v not in live]:
            del self.accounts[viewer]
            self.granted.pop(viewer, None)
            self.direct_books.accounts.pop(viewer, None)
            if self.key_agent is not None:
                self.key_agent.forget(viewer, self.content_id)
        for key in [k for k in self._covers if k[0] not in live]:
            del self._covers[key]

    def _may_upload(self, conn: int, piece: int, length: int) -> bool:
        state = self._peers.get(conn)
        if state is None or not state.speaks_market:
            return self.serve_plain_peers
        if not self.terms.price_per_slice_wei:
            return True
        if state.viewer is None or self._waiting(state):
            return False  # wait for the signed session offer that says who pays (and its lookups)
        now = self._clock()
        if now >= self.serving_paid_until:
            return False
        piece_size = self._last_piece_size if piece == self.manifest.slice_count - 1 else self.manifest.piece_length
        ranges = self.granted.get(state.viewer)
        if ranges and any(first <= piece < end for first, end in ranges):
            value = Fraction(self._seeder_part_wei * length, piece_size)
            if not self.direct_books.account(state.viewer).serve(
                    value, self.settings.credit_window_slices * self._seeder_part_wei, now):
                self.stats.blocks_refused += 1
                return False
            self.stats.bytes_served += length
            return True
        account = self.account(state.viewer)
        units = self._block_units.get((piece_size, length))
        if units is None:  # one value per (piece size, block length): a handful in all
            units = self._block_units[(piece_size, length)] = (
                self.terms.price_per_slice_wei * length * self._units_per_wei // piece_size)
        if not account.serve_units(units, now):
            self.stats.blocks_refused += 1
            return False
        self.stats.bytes_served += length
        return True

    def _on_message(self, event: ExtensionMessageReceived) -> None:
        if event.name != messages.MARKET_EXTENSION:
            return
        state = self._peers.setdefault(event.conn, _PeerState(speaks_market=True))
        try:
            message = messages.decode(event.payload)
            self._handle(event.conn, state, message)
        except MarketProtocolError as exc:  # malformed or out of order: told why, then the connection goes
            self._refuse(event.conn, messages.RefusalCode.BAD_REQUEST, str(exc))
            self.stats.peers_dropped += 1
            self.content.drop_peer(event.conn, f"broke the market protocol: {exc}")
        except PaymentRefused as exc:
            self.stats.cheques_refused += 1
            self._refuse(event.conn, messages.RefusalCode.BAD_CHEQUE, str(exc))

    def _handle(self, conn: int, state: _PeerState, message: messages.Message) -> None:
        match message:
            case messages.SessionMessage(offer=offer):
                if offer.content_id != self.content_id:
                    raise PaymentRefused("session offer for another content")
                viewer = offer.check(self.content_id, int(self._clock()))
                if state.viewer not in (None, viewer):
                    raise PaymentRefused("a connection cannot change viewer")
                if self.key_agent is not None:
                    self.key_agent.on_session(offer, (id(self), conn))
                first = state.viewer is None
                state.viewer = viewer
                if first:
                    self._look_up_for_session(conn, state)
                self.content.uploads_may_resume(conn)
            case messages.ChequeMessage(cheque=signed):
                self._on_cheque(conn, state, signed)
            case messages.GrantClaim(grant_ids=ids):
                self._on_grant_claim(conn, state, ids)
            case messages.KeyRequest():
                if self.key_agent is None:
                    self._refuse(conn, messages.RefusalCode.NO_KEYS, "this node sells no keys")
                elif state.viewer is None:
                    self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "send a session offer first")
                elif self._waiting(state):
                    state.deferred.append(message)  # answered once its lanes are looked up
                else:
                    self._answer_key_request(conn, state, message)
            case messages.LanesOpened():
                if state.viewer is not None:
                    self._look_up_for_session(conn, state, again=True)
            case messages.TermsMessage() | messages.SealedKeys() | messages.MarketRefusal():
                pass  # a viewer's business, not ours

    def _answer_key_request(self, conn: int, state: _PeerState, request: messages.KeyRequest) -> None:
        answer = self.key_agent.on_key_request((id(self), conn), self.content_id, request.first, request.end)
        if isinstance(answer, messages.SealedKeys):
            self.stats.keys_released += request.end - request.first
        self._send(conn, answer)

    def _on_grant_claim(self, conn: int, state: _PeerState, grant_ids: tuple[int, ...]) -> None:
        """Grants already known are taken at once; the others are looked up on chain on a
        worker thread (a chain call must not stall the loop), and this connection's
        uploads wait until they are in: a granted block is charged differently."""
        if state.viewer is None:
            self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "send a session offer before claiming grants")
            return
        if self.grant_lookup is None:
            self._refuse(conn, messages.RefusalCode.GRANT_REFUSED, "this seeder cannot check grants on chain")
            return
        unknown = [grant_id for grant_id in grant_ids if grant_id not in self._grants]
        if state.grant_lookups + len(unknown) > messages.MAX_GRANTS_PER_CLAIM:
            self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "too many grant claims on one connection")
            return
        state.grant_lookups += len(unknown)  # a chain call each: a hostile peer gets a bounded number
        if not unknown:
            self._take_grants(conn, state, grant_ids)
            return
        state.lookups_pending += 1
        lookup = self.grant_lookup
        future = asyncio.get_running_loop().run_in_executor(None, lambda: [lookup(i) for i in unknown])

        def looked_up(done: asyncio.Future) -> None:
            state.lookups_pending -= 1
            if not done.cancelled() and done.exception() is None:
                for grant in done.result():
                    if grant is not None and grant.state in (GrantState.OPEN, GrantState.ISSUED, GrantState.SETTLED):
                        self._grants[grant.grant_id] = grant
            else:
                log.warning("grant lookup failed: %s", done.exception() if not done.cancelled() else "cancelled")
            self._take_grants(conn, state, grant_ids)

        future.add_done_callback(looked_up)

    def _take_grants(self, conn: int, state: _PeerState, grant_ids: tuple[int, ...]) -> None:
        ranges = self.granted.setdefault(state.viewer, [])
        for grant_id in grant_ids:
            grant = self._grants.get(grant_id)
            if grant is None or grant.buyer != state.viewer or grant.content_id != self.content_id:
                self._refuse(conn, messages.RefusalCode.GRANT_REFUSED,
                             f"grant {grant_id} is not this viewer's open or issued grant for this content")
                continue
            granted = (grant.first_slice, grant.first_slice + grant.slice_count)
            if granted not in ranges:
                ranges.append(granted)
        if ranges:  # granted slices are paid with direct cheques, against the viewer's direct lane
            self._look_up_cover(conn, state, state.viewer, DIRECT_CONTENT_ID, self.payee)
        self.content.uploads_may_resume(conn)

    def _on_cheque(self, conn: int, state: _PeerState, signed: SignedCheque) -> None:
        if state.viewer is not None and signed.cheque.viewer != state.viewer:
            raise PaymentRefused("cheque from another viewer than this connection's")
        if signed.cheque.seeder in self.unpayable:
            raise PaymentRefused(f"cheque names {signed.cheque.seeder}, which the chain would never pay")
        if signed.cheque.content_id == DIRECT_CONTENT_ID:
            if signed.cheque.seeder != self.payee:
                raise PaymentRefused("direct cheque names another seeder")
            if self.direct_books.account(signed.cheque.viewer).accept(signed):
                self.stats.cheques_accepted += 1
                if self.on_cheque_accepted is not None:
                    self.on_cheque_accepted(signed)
            self.content.uploads_may_resume(conn)
            return
        if signed.cheque.content_id != self.content_id:
            raise PaymentRefused("cheque for another content")
        accepted = False
        if self.key_agent is not None:
            accepted = self.key_agent.on_cheque(signed)
            if state.viewer is not None:
                for payee in self.key_agent.covers_wanted(state.viewer, self.content_id):
                    self._look_up_cover(conn, state, state.viewer, self.content_id, payee)
        if signed.cheque.seeder == self.payee:
            accepted = self.account(signed.cheque.viewer).accept(signed) or accepted
        elif self.key_agent is None:
            raise PaymentRefused("cheque names another seeder")
        if accepted:
            self.stats.cheques_accepted += 1
            if self.on_cheque_accepted is not None:
                self.on_cheque_accepted(signed)
        self.content.uploads_may_resume(conn)

    def _send(self, conn: int, message: messages.Message) -> None:
        if not self.content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(message)):
            log.debug("market message to %s not sent: the peer left", conn)

    def _refuse(self, conn: int, code: int, text: str) -> None:
        self.stats.refusals.append(text)
        log.info("refused peer %s: %s", conn, text)
        self._send(conn, messages.MarketRefusal(code, text))

    _SWARM_HANDLERS = {PeerReady: "_on_peer_ready", PeerDropped: "_on_peer_dropped", ExtensionMessageReceived: "_on_message"}
