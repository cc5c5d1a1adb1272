"""The serving side of the market on one content as a protocol core without IO: a seeder
that charges per slice, and, on the creator's node, the key agent. Fed swarm events,
lookup results and `now` (unix seconds), it answers with actions (`market.actions`) for
its driver (`MarketService`, service.py), and it is the upload gate: asked before each
block goes out, it says yes (and charges the block) or no.

When a peer that speaks the market extension is ready it gets our terms; its signed
session offer tells us which viewer it is; its cheques feed the viewer's books; the upload
gate lets a piece go out only while those books allow; key requests go to the key agent (a
plain object, already without IO). A peer that breaks the market protocol is told why and
dropped.

Credit rests on the chain: a viewer's book serves nothing until the lane the viewer holds
for this payee is looked up (`LookUpCover`, the Wallet's guarantee), and the key agent
counts a cheque only once its payee's lane is known. The connection's uploads and key
requests wait for the lookups (`ResumeUploads` once none is left), and each connection may
cost only so many. A viewer that has just opened lanes says so (`LanesOpened`) and its
covers are looked up again.

A paid seeder serves no peer that does not speak the market (a plain BitTorrent client
would take every byte free) unless told to; free content goes to everyone.

A viewer may claim on-chain grants for the content (slices it bought whole, paying the
creator's part on chain). Each claim is looked up on chain once (`LookUpGrants`); the
granted slices then cost that viewer only the seeder's share, paid with direct cheques
whose book is the node's (`DirectBooks`), since their counter runs across contents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from fractions import Fraction

from veilstream.chain.cheque import ChequeDomain, SignedCheque, checksum_address
from veilstream.chain.client import Grant, GrantState, Guarantee
from veilstream.content import Torrent
from veilstream.market import messages
from veilstream.market.actions import Action, ChequeAccepted, CoverFound, Drop, LookUpCover, LookUpGrants, ResumeUploads, Send
from veilstream.market.credit import DIRECT_CONTENT_ID, ZERO_ADDRESS, DirectBooks, SeederAccount, seeder_part_wei
from veilstream.market.errors import MarketProtocolError, PaymentRefused
from veilstream.market.key_agent import KeyAgent
from veilstream.market.settings import MarketSettings
from veilstream.swarm import ExtensionMessageReceived, PeerDropped, PeerReady, SwarmEvent

log = logging.getLogger("veilstream.market")

NO_COVER = Guarantee(0, 0)  # what a payee counts on when no lane is known (or the lookup failed)
COUNTED_GRANT_STATES = (GrantState.OPEN, GrantState.ISSUED, GrantState.SETTLED)

CoverKey = tuple[str, bytes, str]  # (viewer, content id, payee)


@dataclass
class PeerState:
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
    plain_blocks_refused: int = 0  # blocks a plain BitTorrent peer asked for and did not get (no --serve-plain)
    cheques_accepted: int = 0
    cheques_refused: int = 0
    keys_released: int = 0
    peers_dropped: int = 0
    cover_lookups: int = 0
    refusals: list[str] = field(default_factory=list)


class SellerCore:
    """One payee's market state for one content. Input methods take `now` (unix seconds)
    and return the actions they lead to, in order; `may_upload` is the upload gate."""

    def __init__(
        self,
        torrent: Torrent,
        *,
        payee: str,
        domain: ChequeDomain,
        settings: MarketSettings = MarketSettings(),
        key_agent: KeyAgent | None = None,
        looks_up_covers: bool = True,
        looks_up_grants: bool = False,
        serve_plain_peers: bool | None = None,
        direct_books: DirectBooks | None = None,
        paid_before: Callable[[str, bytes], int] | None = None,
        unpayable: Collection[str] = (),
    ) -> None:
        self.payee = checksum_address(payee)
        self.domain = domain
        self.settings = settings
        self.key_agent = key_agent
        self.torrent = torrent
        self.content_id = torrent.info_hash
        self.manifest = torrent.manifest
        self.terms = torrent.manifest.terms
        # None: a paid seeder serves only peers that pay (default); free content, everyone.
        self.serve_plain_peers = self.terms.price_per_slice_wei == 0 if serve_plain_peers is None else serve_plain_peers
        self.looks_up_covers = looks_up_covers  # False: no chain to read, so no credit for paid slices
        self.looks_up_grants = looks_up_grants  # False: grant claims are refused (the viewer then pays in full)
        self.unpayable = frozenset({ZERO_ADDRESS, domain.wallet, *(checksum_address(a) for a in unpayable)})
        if self.payee in self.unpayable:
            raise PaymentRefused(f"{self.payee} cannot be paid by the Wallet: choose another payee address")
        self.stats = SellerStats()
        self.accounts: dict[str, SeederAccount] = {}  # by viewer address
        self.peers: dict[int, PeerState] = {}
        self.paid_before = paid_before  # (viewer, content id) → what earlier sessions paid this payee
        self.direct_books = direct_books or DirectBooks(self.payee, domain.verify, paid_before,
                                                        settings.lane_cash_margin_s)
        self.granted: dict[str, list[tuple[int, int]]] = {}  # viewer → [first, end) ranges it holds grants for
        self._grants: dict[int, Grant] = {}  # grants looked up on chain, open or issued
        self._covers: dict[CoverKey, Guarantee] = {}  # looked up
        self._covers_pending: dict[str, int] = {}  # viewer → lookups in flight
        self._covers_inflight: dict[CoverKey, int] = {}  # → the connection whose lookup it is
        self._covers_stale: set[CoverKey] = set()
        self._block_units: dict[tuple[int, int], int] = {}
        self._last_piece_size = self.manifest.slice_range(torrent.piece_count - 1)[1]
        # value in 1/units_per_wei wei: every block's share of its slice's price is a whole number
        self._units_per_wei = math.lcm(torrent.piece_length, self._last_piece_size)
        self._seeder_part_wei = seeder_part_wei(self.terms)
        self.serving_paid_until = math.inf  # a seeder-share cut ahead stops paid serving before it (`terms_changed`)
        self._now = 0.0
        self._out: list[Action] = []

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

    # -- inputs -------------------------------------------------------------------------------
    def receive(self, event: SwarmEvent, now: float) -> list[Action]:
        """A swarm event of the content (PeerReady, PeerDropped, ExtensionMessageReceived)."""
        self._now = now
        kind = type(event)
        if kind is ExtensionMessageReceived:
            self._on_message(event)
        elif kind is PeerReady:
            self._on_peer_ready(event)
        elif kind is PeerDropped:
            self._on_peer_dropped(event)
        return self._take()

    def cover_looked_up(self, viewer: str, content_id: bytes, payee: str, cover: Guarantee | None,
                        now: float) -> list[Action]:
        """The answer to `LookUpCover`; None: the lookup failed (nothing is counted on)."""
        self._now = now
        key = (viewer, content_id, payee)
        conn = self._covers_inflight.pop(key, None)
        if conn is None:
            return self._take()  # not asked (or forgotten since)
        self._covers_pending[viewer] -= 1
        cover = NO_COVER if cover is None else cover
        self._covers[key] = cover
        self._apply_cover(key, cover)
        if key in self._covers_stale:
            self._covers_stale.discard(key)
            self._look_up_cover(conn, viewer, content_id, payee, again=True)
        elif payee == self.payee and content_id == self.content_id and cover.ceiling_wei <= cover.cashed_wei:
            self._refuse(conn, messages.RefusalCode.NO_COVER,
                         f"no lane of your deposit is held for {self.payee}: open one (Wallet.open_lanes)")
        self._resume_if_done(viewer)
        return self._take()

    def grants_looked_up(self, conn: int, claim: tuple[int, ...], grants: list[Grant | None] | None,
                         now: float) -> list[Action]:
        """The answer to `LookUpGrants`; None: the lookup failed (the claims are refused)."""
        self._now = now
        for grant in grants or ():
            if grant is not None and grant.state in COUNTED_GRANT_STATES:
                self._grants[grant.grant_id] = grant
        state = self.peers.get(conn)
        if state is not None:
            state.lookups_pending -= 1
            self._take_grants(conn, state, claim)
            self._resume_if_done(state.viewer)
        return self._take()

    def may_upload(self, conn: int, piece: int, length: int, now: float) -> bool:
        """The upload gate: may this block go out to `conn`? A yes charges it."""
        state = self.peers.get(conn)
        if state is None or not state.speaks_market:
            if not self.serve_plain_peers:
                self.stats.plain_blocks_refused += 1
            return self.serve_plain_peers
        if not self.terms.price_per_slice_wei:
            return True
        if state.viewer is None or self._waiting(state):
            return False  # wait for the signed session offer that says who pays (and its lookups)
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
        account = self.accounts.get(state.viewer) or self.account(state.viewer)
        charged = account.charged_bytes.get(piece, 0)
        if charged >= piece_size:  # sent whole before and asked again: charged once (SeederAccount)
            self.stats.bytes_served += length
            return True
        units = self._block_units.get((piece_size, length))
        if units is None:  # one value per (piece size, block length): a handful in all
            units = self._block_units[(piece_size, length)] = (
                self.terms.price_per_slice_wei * length * self._units_per_wei // piece_size)
        if not account.serve_units(units, now):
            self.stats.blocks_refused += 1
            return False
        account.charged_bytes[piece] = charged + length
        self.stats.bytes_served += length
        return True

    # -- key requests: the one hook a test's impostor overrides ------------------------------
    def answer_key_request(self, conn: int, request: messages.KeyRequest, now: float) -> messages.Message | None:
        """The key agent's answer to `request` on `conn` (None: no answer)."""
        return self.key_agent.on_key_request((id(self), conn), self.content_id, request.first, request.end, now=now)

    # -- chain lookups ---------------------------------------------------------------------
    def _look_up_cover(self, conn: int, viewer: str, content_id: bytes, payee: str, again: bool = False) -> None:
        key = (viewer, content_id, payee)
        if key in self._covers and not again:
            self._apply_cover(key, self._covers[key])
            return
        if not self.looks_up_covers:
            self._apply_cover(key, NO_COVER)
            return
        if key in self._covers_inflight:
            if again:
                self._covers_stale.add(key)  # looked up again once this answer is in
            return
        state = self.peers.get(conn)
        if state is None:
            return
        if state.cover_lookups >= self.settings.cover_lookups_per_connection:
            log.info("peer %s asked for more lane lookups than allowed; %s is not looked up", conn, payee)
            return
        state.cover_lookups += 1
        self.stats.cover_lookups += 1
        self._covers_pending[viewer] = self._covers_pending.get(viewer, 0) + 1
        self._covers_inflight[key] = conn
        self._out.append(LookUpCover(viewer, content_id, payee))

    def _apply_cover(self, key: CoverKey, cover: Guarantee) -> None:
        viewer, content_id, payee = key
        if payee == self.payee:
            if content_id == DIRECT_CONTENT_ID:
                self.direct_books.account(viewer).set_cover(cover)
            else:
                self.account(viewer).set_cover(cover)
            self._out.append(CoverFound(viewer, content_id, payee, cover))
        if self.key_agent is not None and content_id == self.content_id:
            self.key_agent.set_cover(viewer, content_id, payee, cover)

    def _look_up_for_session(self, conn: int, viewer: str, again: bool = False) -> None:
        self._look_up_cover(conn, viewer, self.content_id, self.payee, again)  # this payee's own lane
        if self.granted.get(viewer):
            self._look_up_cover(conn, viewer, DIRECT_CONTENT_ID, self.payee, again)
        if self.key_agent is not None:
            for payee in self.key_agent.covers_wanted(viewer, self.content_id):
                self._look_up_cover(conn, viewer, self.content_id, payee)
            if again:  # the viewer opened or topped up lanes: every cover the book counts may have grown
                for payee in list(self.key_agent.account(viewer, self.content_id).covers):
                    if payee != self.payee:
                        self._look_up_cover(conn, viewer, self.content_id, payee, True)

    def _waiting(self, state: PeerState) -> bool:
        return bool(state.lookups_pending or self._covers_pending.get(state.viewer, 0))

    def _resume_if_done(self, viewer: str | None) -> None:
        """Once no lookup holds a viewer back, its connections' deferred key requests are
        answered and their uploads resume. (Checked after every lookup, of grants too: a
        key request deferred for a grant lookup used to wait until its agent was passed
        over when no cover lookup followed.)"""
        if viewer is None or self._covers_pending.get(viewer, 0):
            return
        for conn, state in list(self.peers.items()):
            if state.viewer != viewer or state.lookups_pending:
                continue
            deferred, state.deferred = state.deferred, []
            for request in deferred:
                self._answer_key_request(conn, request)
            self._out.append(ResumeUploads(conn))

    # -- peers ----------------------------------------------------------------------------
    def _on_peer_ready(self, event: PeerReady) -> None:
        state = self.peers.setdefault(event.conn, PeerState())
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
        self.peers.pop(event.conn, None)
        if self.key_agent is not None:
            self.key_agent.end_channel((id(self), event.conn))
        if len(self.accounts) > self.settings.max_idle_books:
            self._forget_idle_viewers()

    def _forget_idle_viewers(self) -> None:
        """Per-viewer state must not grow without end. Viewers with no connection left are
        forgotten: what they paid is in the ledger (`paid_before`) and with the cashier, and
        a returning viewer's books are rebuilt from there (the agent's from its audit log)."""
        live = {state.viewer for state in self.peers.values()}
        for viewer in [v for v in self.accounts if v not in live]:
            del self.accounts[viewer]
            self.granted.pop(viewer, None)
            self.direct_books.accounts.pop(viewer, None)
            if self.key_agent is not None:
                self.key_agent.forget(viewer, self.content_id)
        for key in [k for k in self._covers if k[0] not in live]:
            del self._covers[key]

    def _on_message(self, event: ExtensionMessageReceived) -> None:
        if event.name != messages.MARKET_EXTENSION:
            return
        conn = event.conn
        state = self.peers.setdefault(conn, PeerState(speaks_market=True))
        try:
            self._handle(conn, state, messages.decode(event.payload))
        except MarketProtocolError as exc:  # malformed or out of order: told why, then the connection goes
            self._refuse(conn, messages.RefusalCode.BAD_REQUEST, str(exc))
            self.stats.peers_dropped += 1
            self._out.append(Drop(conn, f"broke the market protocol: {exc}"))
        except PaymentRefused as exc:
            self.stats.cheques_refused += 1
            self._refuse(conn, messages.RefusalCode.BAD_CHEQUE, str(exc))

    def _handle(self, conn: int, state: PeerState, message: messages.Message) -> None:
        match message:
            case messages.SessionMessage(offer=offer):
                if offer.content_id != self.content_id:
                    raise PaymentRefused("session offer for another content")
                viewer = offer.check(self.content_id, int(self._now))
                if state.viewer not in (None, viewer):
                    raise PaymentRefused("a connection cannot change viewer")
                if self.key_agent is not None:
                    self.key_agent.on_session(offer, (id(self), conn), now=self._now)
                first = state.viewer is None
                state.viewer = viewer
                if first:
                    self._look_up_for_session(conn, viewer)
                self._out.append(ResumeUploads(conn))
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
                    state.deferred.append(message)  # answered once its lookups are in
                else:
                    self._answer_key_request(conn, message)
            case messages.LanesOpened():
                if state.viewer is not None:
                    self._look_up_for_session(conn, state.viewer, again=True)
            case messages.TermsMessage() | messages.SealedKeys() | messages.MarketRefusal():
                pass  # a viewer's business, not ours

    def _answer_key_request(self, conn: int, request: messages.KeyRequest) -> None:
        answer = self.answer_key_request(conn, request, self._now)
        if answer is None:
            return
        if isinstance(answer, messages.SealedKeys):
            self.stats.keys_released += request.end - request.first
        self._send(conn, answer)

    def _on_grant_claim(self, conn: int, state: PeerState, grant_ids: tuple[int, ...]) -> None:
        """Grants already known are taken at once; the others are looked up on chain, and
        this connection's uploads wait until they are in: a granted block is charged differently."""
        if state.viewer is None:
            self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "send a session offer before claiming grants")
            return
        if not self.looks_up_grants:
            self._refuse(conn, messages.RefusalCode.GRANT_REFUSED, "this seeder cannot check grants on chain")
            return
        unknown = tuple(grant_id for grant_id in grant_ids if grant_id not in self._grants)
        if state.grant_lookups + len(unknown) > messages.MAX_GRANTS_PER_CLAIM:
            self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "too many grant claims on one connection")
            return
        state.grant_lookups += len(unknown)  # a chain call each: a hostile peer gets a bounded number
        if not unknown:
            self._take_grants(conn, state, grant_ids)
            return
        state.lookups_pending += 1
        self._out.append(LookUpGrants(conn, tuple(grant_ids), unknown))

    def _take_grants(self, conn: int, state: PeerState, grant_ids: tuple[int, ...]) -> None:
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
            self._look_up_cover(conn, state.viewer, DIRECT_CONTENT_ID, self.payee)
        self._out.append(ResumeUploads(conn))

    def _on_cheque(self, conn: int, state: PeerState, signed: SignedCheque) -> None:
        cheque = signed.cheque
        if state.viewer is not None and cheque.viewer != state.viewer:
            raise PaymentRefused("cheque from another viewer than this connection's")
        if cheque.seeder in self.unpayable:
            raise PaymentRefused(f"cheque names {cheque.seeder}, which the chain would never pay")
        if cheque.content_id == DIRECT_CONTENT_ID:
            if cheque.seeder != self.payee:
                raise PaymentRefused("direct cheque names another seeder")
            if self.direct_books.account(cheque.viewer).accept(signed):
                self.stats.cheques_accepted += 1
                self._out.append(ChequeAccepted(signed))
            self._out.append(ResumeUploads(conn))
            return
        if cheque.content_id != self.content_id:
            raise PaymentRefused("cheque for another content")
        accepted = False
        if self.key_agent is not None:
            accepted = self.key_agent.on_cheque(signed)
            if state.viewer is not None:
                for payee in self.key_agent.covers_wanted(state.viewer, self.content_id):
                    self._look_up_cover(conn, state.viewer, self.content_id, payee)
        if cheque.seeder == self.payee:
            accepted = self.account(cheque.viewer).accept(signed) or accepted
        elif self.key_agent is None:
            raise PaymentRefused("cheque names another seeder")
        if accepted:
            self.stats.cheques_accepted += 1
            self._out.append(ChequeAccepted(signed))
        self._out.append(ResumeUploads(conn))

    # -- output ----------------------------------------------------------------------------
    def _send(self, conn: int, message: messages.Message) -> None:
        self._out.append(Send(conn, message))

    def _refuse(self, conn: int, code: int, text: str) -> None:
        self.stats.refusals.append(text)
        log.info("refused peer %s: %s", conn, text)
        self._send(conn, messages.MarketRefusal(code, text))

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out
