"""The serving side of the market on one content: a seeder that charges per slice, and,
on the creator's node, the key agent.

It binds the protocol pieces to a swarm `Content`: when a peer that speaks the market
extension is ready it gets our terms; its signed session offer tells us which viewer it
is; its cheques feed the viewer's books; the upload gate lets a piece go out only while
those books allow; key requests go to the key agent. Cheques this node is owed are kept
in the cheque ledger and cashed in batches once they pass the threshold.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from veilstream.chain.cheque import ChequeDomain, SignedCheque
from veilstream.chain.client import Grant, GrantState
from veilstream.market import messages
from veilstream.market.credit import DIRECT_CONTENT_ID, DirectBooks, SeederAccount, seeder_part_wei
from veilstream.market.errors import MarketProtocolError, PaymentRefused
from veilstream.market.key_agent import KeyAgent
from veilstream.market.settings import MarketSettings
from veilstream.swarm.node import Content
from veilstream.swarm.swarm import ExtensionMessageReceived, PeerReady

log = logging.getLogger("veilstream.market")


@dataclass
class _PeerState:
    viewer: str | None = None  # known once the peer's signed session offer arrives
    speaks_market: bool = False
    grant_lookups: int = 0  # chain lookups this connection's claims cost us
    lookups_pending: int = 0  # claims still being looked up: uploads wait for them


@dataclass
class SellerStats:
    bytes_served: int = 0
    blocks_refused: int = 0
    cheques_accepted: int = 0
    cheques_refused: int = 0
    keys_released: int = 0
    peers_dropped: int = 0
    refusals: list[str] = field(default_factory=list)


class MarketService:
    def __init__(
        self,
        content: Content,
        *,
        payee: str,
        domain: ChequeDomain,
        settings: MarketSettings = MarketSettings(),
        key_agent: KeyAgent | None = None,
        serve_plain_peers: bool = True,
        grant_lookup: Callable[[int], Grant | None] | None = None,
        direct_books: DirectBooks | None = None,
        paid_before: Callable[[str, bytes], int] | None = None,
    ) -> None:
        self.content = content
        self.payee = payee
        self.domain = domain
        self.settings = settings
        self.key_agent = key_agent
        self.serve_plain_peers = serve_plain_peers
        self.stats = SellerStats()
        self.accounts: dict[str, SeederAccount] = {}  # by viewer address
        self.on_cheque_accepted: Callable[[SignedCheque], None] | None = None  # e.g. keep it for cashing
        self._peers: dict[int, _PeerState] = {}
        self.grant_lookup = grant_lookup  # None: grant claims are refused (the viewer then pays in full)
        self.paid_before = paid_before  # (viewer, content id) → what earlier sessions paid this payee
        self.direct_books = direct_books or DirectBooks(payee, domain.verify, paid_before)
        self.granted: dict[str, list[tuple[int, int]]] = {}  # viewer → [first, end) ranges it holds grants for
        self._grants: dict[int, Grant] = {}  # grants looked up on chain, open or issued
        self._block_units: dict[tuple[int, int], int] = {}
        self._last_piece_size = content.torrent.manifest.slice_range(content.torrent.piece_count - 1)[1]
        # value in 1/units_per_wei wei: every block's share of its slice's price is a whole number
        self._units_per_wei = math.lcm(content.torrent.piece_length, self._last_piece_size)
        torrent = content.torrent
        self.content_id = torrent.info_hash
        self.manifest = torrent.manifest
        self.terms = torrent.manifest.terms
        self._seeder_part_wei = seeder_part_wei(self.terms)
        content.on_peer_ready = self._on_peer_ready
        content.on_extension_message = self._on_message
        content.set_upload_gate(self._may_upload)

    # -- books -------------------------------------------------------------------------
    def account(self, viewer: str) -> SeederAccount:
        if viewer not in self.accounts:
            self.accounts[viewer] = SeederAccount(
                viewer, self.content_id, self.terms.price_per_slice_wei, self.settings.credit_window_slices,
                self.domain.verify, seeder=self.payee, units_per_wei=self._units_per_wei,
                paid_before_wei=self.paid_before(viewer, self.content_id) if self.paid_before else 0,
            )
        return self.accounts[viewer]

    def cheques_owed(self) -> list[SignedCheque]:
        """The latest cheque of every viewer that paid this node: what to cash."""
        return [a.latest for a in self.accounts.values() if a.latest is not None]

    @property
    def earned_wei(self) -> int:
        return sum(a.paid_wei for a in self.accounts.values())

    # -- swarm callbacks ------------------------------------------------------------------
    def _on_peer_ready(self, event: PeerReady) -> None:
        state = self._peers.setdefault(event.conn, _PeerState())
        state.speaks_market = messages.MARKET_EXTENSION in event.extensions
        if state.speaks_market:
            self._send(event.conn, messages.Terms(
                price_per_slice_wei=self.terms.price_per_slice_wei,
                seeder_share_bps=self.terms.seeder_share_bps,
                payee=bytes.fromhex(self.payee[2:]),
                credit_window_slices=self.settings.credit_window_slices,
                chain_id=self.domain.chain_id,
                wallet_contract=bytes.fromhex(self.domain.wallet[2:]),
                serves_keys=self.key_agent is not None,
            ))

    def _may_upload(self, conn: int, piece: int, length: int) -> bool:
        state = self._peers.get(conn)
        if state is None or not state.speaks_market:
            return self.serve_plain_peers or self.terms.price_per_slice_wei == 0
        if state.viewer is None or state.lookups_pending:
            return False  # wait for the signed session offer that says who pays (and its grants)
        piece_size = self._last_piece_size if piece == self.manifest.slice_count - 1 else self.manifest.piece_length
        ranges = self.granted.get(state.viewer)
        if ranges and any(first <= piece < end for first, end in ranges):
            value = Fraction(self._seeder_part_wei * length, piece_size)
            if not self.direct_books.account(state.viewer).serve(
                    value, self.settings.credit_window_slices * self._seeder_part_wei):
                self.stats.blocks_refused += 1
                return False
            self.stats.bytes_served += length
            return True
        account = self.account(state.viewer)
        units = self._block_units.get((piece_size, length))
        if units is None:  # one value per (piece size, block length): a handful in all
            units = self._block_units[(piece_size, length)] = (
                self.terms.price_per_slice_wei * length * self._units_per_wei // piece_size)
        if not account.serve_units(units):
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
        except MarketProtocolError as exc:
            self._refuse(event.conn, messages.RefusalCode.BAD_REQUEST, str(exc))
        except PaymentRefused as exc:
            self.stats.cheques_refused += 1
            self._refuse(event.conn, messages.RefusalCode.BAD_CHEQUE, str(exc))

    def _handle(self, conn: int, state: _PeerState, message: messages.Message) -> None:
        match message:
            case messages.SessionMessage(offer=offer):
                if offer.content_id != self.content_id:
                    raise PaymentRefused("session offer for another content")
                viewer = offer.check(self.content_id, int(time.time()))
                if state.viewer not in (None, viewer):
                    raise PaymentRefused("a connection cannot change viewer")
                state.viewer = viewer
                if self.key_agent is not None:
                    self.key_agent.on_session(offer)
                self.content.uploads_may_resume(conn)
            case messages.ChequeMessage(cheque=signed):
                self._on_cheque(conn, state, signed)
            case messages.GrantClaim(grant_ids=ids):
                self._on_grant_claim(conn, state, ids)
            case messages.KeyRequest(first=first, end=end):
                if self.key_agent is None:
                    self._refuse(conn, messages.RefusalCode.NO_KEYS, "this node sells no keys")
                elif state.viewer is None:
                    self._refuse(conn, messages.RefusalCode.BAD_REQUEST, "send a session offer first")
                else:
                    answer = self.key_agent.on_key_request(state.viewer, self.content_id, first, end)
                    if isinstance(answer, messages.SealedKeys):
                        self.stats.keys_released += end - first
                    self._send(conn, answer)
            case messages.Terms() | messages.SealedKeys() | messages.MarketRefusal():
                pass  # a viewer's business, not ours

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
                    if grant is not None and grant.state in (GrantState.OPEN, GrantState.ISSUED):
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
        self.content.uploads_may_resume(conn)

    def _on_cheque(self, conn: int, state: _PeerState, signed: SignedCheque) -> None:
        if state.viewer is not None and signed.cheque.viewer != state.viewer:
            raise PaymentRefused("cheque from another viewer than this connection's")
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
        try:
            self.content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(message))
        except Exception as exc:  # noqa: BLE001 - the peer left meanwhile: nothing to tell it
            log.debug("market message to %s not sent: %s", conn, exc)

    def _refuse(self, conn: int, code: int, text: str) -> None:
        self.stats.refusals.append(text)
        log.info("refused peer %s: %s", conn, text)
        self._send(conn, messages.MarketRefusal(code, text))
