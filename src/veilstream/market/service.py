"""The serving side of the market on one content: an asyncio driver around `SellerCore`
(seller.py), which decides what to serve, what a cheque is worth, which keys to release
and which lanes and grants to look up.

`MarketService` subscribes to the swarm `Transfer` and is its upload gate; it feeds the
core every event with `now`, and carries out the core's actions: market messages out on
the extension, peers that broke the protocol dropped, held uploads resumed, and chain
lookups run on worker threads (a chain call must not stall the loop) as supervised work
whose answers go back to the core — an expected failure (the chain down, a timeout) is
logged and goes back as a failed lookup, a bug goes to the event loop's exception handler. Cheques this node
is owed go to `on_cheque_accepted` (the cheque ledger, cashed in batches once they pass
the threshold), the lanes looked up to `on_cover`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from veilstream.chain.cheque import ChequeDomain, SignedCheque
from veilstream.chain.client import Grant, Guarantee
from veilstream.market import messages
from veilstream.market.actions import ChequeAccepted, CoverFound, Drop, LookUpCover, LookUpGrants, ResumeUploads, Send
from veilstream.market.credit import DirectBooks, SeederAccount
from veilstream.market.driver import ChainWork, Waiters
from veilstream.market.key_agent import KeyAgent
from veilstream.market.seller import PeerState, SellerCore, SellerStats
from veilstream.market.settings import MarketSettings
from veilstream.swarm import SwarmEvent, Transfer

__all__ = ["CoverLookup", "MarketService", "PeerState", "SellerStats"]

log = logging.getLogger("veilstream.market")

CoverLookup = Callable[[str, bytes, str], Guarantee]  # (viewer, content id, payee) → what the chain promises


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
        core_class: type[SellerCore] = SellerCore,
    ) -> None:
        self.content = content
        # `core_class`: a test's misbehaving seller or key agent is a SellerCore subclass
        self.core = core_class(content.torrent, payee=payee, domain=domain, settings=settings, key_agent=key_agent,
                               looks_up_covers=cover_lookup is not None, looks_up_grants=grant_lookup is not None,
                               serve_plain_peers=serve_plain_peers, direct_books=direct_books,
                               paid_before=paid_before, unpayable=unpayable)
        self._cover_lookup = cover_lookup  # None: no chain to read, so no credit for paid slices
        self._grant_lookup = grant_lookup  # None: grant claims are refused (the viewer then pays in full)
        self._clock = clock
        self.on_cheque_accepted: Callable[[SignedCheque], None] | None = None  # e.g. keep it for cashing
        self.on_cover: Callable[[str, bytes, str, Guarantee], None] | None = None  # e.g. cash before the lane's time
        self._work = ChainWork(self._bug)
        self._waiters = Waiters()
        self._unsubscribe = content.subscribe(self._on_swarm_event)
        content.set_upload_gate(self._may_upload)

    def close(self) -> None:
        """Stop listening and cancel the lookups under way (the node's own end stops it too)."""
        self._unsubscribe()
        self._work.close()

    async def aclose(self) -> None:
        """Stop listening, cancel the lookups under way and wait until they have ended."""
        self._unsubscribe()
        await self._work.aclose()

    # -- what the core holds, for the application -------------------------------------------
    payee = property(lambda self: self.core.payee)
    domain = property(lambda self: self.core.domain)
    settings = property(lambda self: self.core.settings)
    key_agent = property(lambda self: self.core.key_agent)
    content_id = property(lambda self: self.core.content_id)
    manifest = property(lambda self: self.core.manifest)
    terms = property(lambda self: self.core.terms)
    unpayable = property(lambda self: self.core.unpayable)
    paid_before = property(lambda self: self.core.paid_before)
    stats = property(lambda self: self.core.stats)
    accounts = property(lambda self: self.core.accounts)
    direct_books = property(lambda self: self.core.direct_books)
    granted = property(lambda self: self.core.granted)
    serving_paid_until = property(lambda self: self.core.serving_paid_until)
    earned_wei = property(lambda self: self.core.earned_wei)

    @property
    def serve_plain_peers(self) -> bool:
        return self.core.serve_plain_peers

    @serve_plain_peers.setter
    def serve_plain_peers(self, value: bool) -> None:
        self.core.serve_plain_peers = value

    @property
    def cover_lookup(self) -> CoverLookup | None:
        return self._cover_lookup

    @cover_lookup.setter
    def cover_lookup(self, lookup: CoverLookup | None) -> None:
        self._cover_lookup = lookup
        self.core.looks_up_covers = lookup is not None

    @property
    def grant_lookup(self) -> Callable[[int], Grant | None] | None:
        return self._grant_lookup

    @grant_lookup.setter
    def grant_lookup(self, lookup: Callable[[int], Grant | None] | None) -> None:
        self._grant_lookup = lookup
        self.core.looks_up_grants = lookup is not None

    def account(self, viewer: str) -> SeederAccount:
        return self.core.account(viewer)

    def cheques_owed(self) -> list[SignedCheque]:
        """The latest cheque of every viewer that paid this node: what to cash."""
        return self.core.cheques_owed()

    def terms_changed(self, seeder_share_now_bps: int, scheduled_bps: int | None, effective_at: int | None) -> None:
        """The registry's seeder share, read on chain (see `SellerCore.terms_changed`)."""
        self.core.terms_changed(seeder_share_now_bps, scheduled_bps, effective_at)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds, checked after each thing the service handles (a swarm
        event, a chain answer) and each upload the gate decides."""
        await self._waiters.wait_until(predicate)

    # -- carrying out the core's actions -------------------------------------------------------
    def _on_swarm_event(self, event: SwarmEvent) -> None:
        self._run(self.core.receive(event, self._clock()))

    def _may_upload(self, conn: int, piece: int, length: int) -> bool:
        allowed = self.core.may_upload(conn, piece, length, self._clock())
        if self._waiters:
            self._waiters.check()
        return allowed

    def _run(self, actions) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                self._send(action.conn, action.message)
            elif kind is ResumeUploads:
                self.content.uploads_may_resume(action.conn)
            elif kind is ChequeAccepted:
                if self.on_cheque_accepted is not None:
                    self.on_cheque_accepted(action.cheque)
            elif kind is CoverFound:
                if self.on_cover is not None:
                    self.on_cover(action.viewer, action.content_id, action.payee, action.cover)
            elif kind is LookUpCover:
                self._look_up_cover(action)
            elif kind is LookUpGrants:
                self._look_up_grants(action)
            elif kind is Drop:
                self.content.drop_peer(action.conn, action.reason)
            else:
                raise TypeError(f"not a seller action: {action!r}")
        if self._waiters:
            self._waiters.check()

    def _send(self, conn: int, message: messages.Message) -> None:
        if not self.content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(message)):
            log.debug("market message to %s not sent: the peer left", conn)

    def _look_up_cover(self, action: LookUpCover) -> None:
        viewer, content_id, payee = action.viewer, action.content_id, action.payee

        def answer(cover: Guarantee | None) -> None:
            self._run(self.core.cover_looked_up(viewer, content_id, payee, cover, self._clock()))

        self._work.run(f"lane lookup for {payee}", self._cover_lookup, viewer, content_id, payee,
                       done=answer, failed=lambda _error: answer(None))

    def _look_up_grants(self, action: LookUpGrants) -> None:
        lookup, conn, claim = self._grant_lookup, action.conn, action.claim

        def answer(grants: list[Grant | None] | None) -> None:
            self._run(self.core.grants_looked_up(conn, claim, grants, self._clock()))

        self._work.run("grant lookup", lambda ids: [lookup(i) for i in ids], action.grant_ids,
                       done=answer, failed=lambda _error: answer(None))

    def _bug(self, what: str, error: BaseException) -> None:
        """Raised where a loop callback's error goes: the loop's exception handler."""
        asyncio.get_running_loop().call_exception_handler(
            {"message": f"market service on {self.content_id.hex()[:16]}: {what} failed", "exception": error})

