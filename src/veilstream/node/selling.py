"""The node's selling role: seed contents for cheques behind a market service each, sell the
keys of the user's own contents, answer on-chain grants, watch the chain for withdrawals and
share changes, and cash through one Cashier. `veil serve` and `veil up` both run it.

    seller = Seller(vault, identity, client, ledger, settings, on_fatal=stop.set)
    seller.offer(content_id, keys=True)
    seller.start(node, loop)
    while running: seller.poll(loop.time()); ...
    report = seller.finish()   # anchors the audit heads, cashes, claims
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veilstream.atomic import disk_is_full
from veilstream.chain import ContentRecord
from veilstream.chain.ledger import ChequeLedger, Direction
from veilstream.content import ContentKeys, Torrent
from veilstream.errors import VeilError
from veilstream.market.access import GrantResponder
from veilstream.market.audit import AuditLog, AuditLogError
from veilstream.market.cashier import Cashier, audit_anchor_kind
from veilstream.market.key_agent import KeyAgent
from veilstream.market.onchain import ChainWatch, ShareChange, WithdrawalRequested, cashed_floor, registered_record
from veilstream.market.service import MarketService
from veilstream.market.settings import MarketSettings
from veilstream.node.units import format_ether
from veilstream.swarm import PieceStore, SwarmNode

log = logging.getLogger("veilstream.node")

GRANT_POLL_INTERVAL_S = 2.0  # how often a key agent looks for new on-chain purchases
WATCH_INTERVAL_S = 2.0  # how often a payee looks for withdrawals and share changes on chain


class SellingError(VeilError):
    pass


@dataclass
class Offer:
    """One content this node serves: what it is, where its ciphertext is, its record on
    chain and (for the creator's node) the key agent that sells its keys."""

    torrent: Torrent
    store: PieceStore
    record: ContentRecord | None
    agent: KeyAgent | None
    service: MarketService | None = None
    paused: bool = False  # neither seeded nor its keys sold from this node until resumed


class Seller:
    def __init__(self, vault, identity, client, ledger: ChequeLedger, settings: MarketSettings = MarketSettings(), *,
                 serve_plain: bool = False, trackers: tuple[str, ...] = (),
                 on_fatal: Callable[[], None] = lambda: None) -> None:
        self.vault, self.identity, self.client, self.ledger = vault, identity, client, ledger
        self.settings = settings
        self.serve_plain = serve_plain
        self.trackers = tuple(trackers)
        self.project = tuple(client.deployment.addresses.values())
        self.offers: dict[bytes, Offer] = {}
        self.fatal: list[VeilError] = []  # what stopped the node: it serves no more unpaid or unlogged
        self._on_fatal = on_fatal
        self.cashier = Cashier(client, ledger, settings)  # also cashes what an earlier run left uncashed
        self._responders: list[GrantResponder] = []
        self._watch: ChainWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node: SwarmNode | None = None
        self._polled_at = self._watched_at = -float("inf")

    # -- what is sold ---------------------------------------------------------------------
    def offer(self, cid: str, *, keys: bool) -> Offer:
        """Prepare `cid` for serving (with `keys`, for selling its keys too: the creator's
        node); registers it on chain if the creator's and not yet there. Before `start`."""
        offer = self.prepare(cid, keys=keys)
        self.offers[offer.torrent.info_hash] = offer
        return offer

    def prepare(self, cid: str, *, keys: bool) -> Offer:
        """What `offer` does but serve it: on a thread that may make chain calls (the
        cashier's, which sends this account's transactions) while the node runs; `add` then
        serves it."""
        vault, identity, client = self.vault, self.identity, self.client
        torrent = vault.torrent(cid)
        store = PieceStore.for_seeding(torrent, vault.ciphertext_path(cid))
        terms = torrent.manifest.terms
        record = registered_record(client, torrent, required=False)
        agent = None
        if keys:
            ring = vault.keyring(cid)
            root = next((n for n in ring.nodes if n.first_leaf == 0 and n.end_leaf >= torrent.piece_count), None)
            if root is None or ring.metadata_key is None:
                raise SellingError(f"this vault holds only part of the keys of {cid[:16]}…: only the creator's "
                                   "node can sell them")
            if record is None:
                client.register(torrent.info_bytes, price_per_slice=terms.price_per_slice_wei,
                                seeder_share_bps=terms.seeder_share_bps, slice_count=torrent.piece_count)
                record = registered_record(client, torrent)
            elif record.price_per_slice != terms.price_per_slice_wei:
                raise SellingError(f"{cid[:16]}… is registered on chain with other terms than its manifest's")
            if record.key_agent != identity.wallet_address:
                # One set of books per content: a second agent would sell the same cheques' worth again.
                raise SellingError(f"the registry names {record.key_agent} as the key agent of {cid[:16]}…, not "
                                   "this node: only that agent sells its keys (`set_key_agent` moves it)")
            anchored, _ = client.latest_anchor(identity.wallet_address, audit_anchor_kind(torrent.info_hash))
            audit = AuditLog(Path(vault.home) / "audit" / f"{cid}.log", anchored_head=anchored)
            floor, price = cashed_floor(client, torrent.info_hash), terms.price_per_slice_wei
            agent = KeyAgent(client.cheque_domain, audit, self.settings, signing_key=identity.wallet_key,
                             unpayable=self.project,
                             released_floor=lambda viewer, _cid: floor.get(viewer, 0) // price if price else 0)
            agent.offer(torrent, ContentKeys(root, ring.metadata_key))
        elif terms.price_per_slice_wei:
            record = registered_record(client, torrent)  # refuses an unregistered or squatted content
        return Offer(torrent, store, record, agent)

    @property
    def agents(self) -> list[Offer]:
        return [offer for offer in self.offers.values() if offer.agent is not None]

    @property
    def plain_peers_served(self) -> bool:
        return all(offer.service.serve_plain_peers for offer in self.offers.values() if offer.service is not None)

    # -- running ----------------------------------------------------------------------------
    def start(self, node: SwarmNode, loop: asyncio.AbstractEventLoop) -> None:
        """Seed every offer on `node`, each behind its market service, wired to the cashier."""
        self._loop, self._node = loop, node
        for offer in self.offers.values():
            if not offer.paused:
                self._start_offer(node, offer)
        self._responders = [GrantResponder(self.client, offer.agent) for offer in self.agents]
        self._watch = ChainWatch(self.client, set(self.offers))

    def add(self, offer: Offer) -> None:
        """Serve a `prepare`d offer now, on the running node (from the loop)."""
        info_hash = offer.torrent.info_hash
        if info_hash in self.offers:
            raise SellingError(f"{offer.torrent.content_id[:16]}… is offered already")
        self.offers[info_hash] = offer
        if self._node is None:  # not started: `start` serves it
            return
        if not offer.paused:
            self._start_offer(self._node, offer)
        if offer.agent is not None:  # a new list: the chain thread may be walking the old one
            self._responders = [*self._responders, GrantResponder(self.client, offer.agent)]
        self._watch.content_ids.add(info_hash)

    async def drop(self, content_id: bytes) -> Offer:
        """Serve a content no more (from the loop): its peers are closed, its key agent's
        audit head is anchored; what its cheques are worth stays with the cashier."""
        offer = await self.pause(content_id)
        del self.offers[content_id]
        if offer.agent is not None:
            self._responders = [r for r in self._responders if r.agent is not offer.agent]
            if offer.agent.audit.count:
                self.cashier.anchor_audit_head(offer.agent.audit.head, content_id)
        if self._watch is not None:
            self._watch.content_ids.discard(content_id)
        return offer

    def _start_offer(self, node: SwarmNode, offer: Offer) -> None:
        transfer = node.seed(offer.store)
        service = offer.service = MarketService(
            transfer, payee=self.identity.wallet_address, domain=self.client.cheque_domain, settings=self.settings,
            key_agent=offer.agent, grant_lookup=self.client.grant, cover_lookup=self.client.guarantee,
            unpayable=self.project, serve_plain_peers=True if self.serve_plain else None,
            paid_before=paid_before(self.ledger, self.client, self.identity.wallet_address))
        service.on_cheque_accepted = self._keep_cheque
        service.on_cover = self.cashier.note_cover
        if offer.record is not None:
            self._terms_now(offer, offer.record)
        if offer.agent is not None:
            agent, info_hash = offer.agent, offer.torrent.info_hash
            agent.on_release = lambda head: self.cashier.on_audit_head(head, agent.audit.count, info_hash)
        for url in self.trackers:
            node.announce_to(transfer, url)

    async def pause(self, content_id: bytes) -> Offer:
        """Stop seeding one content (and selling its keys): its peers are closed."""
        offer = self.offers[content_id]
        if not offer.paused:
            offer.paused = True
            service, offer.service = offer.service, None
            if service is not None:
                await service.aclose()
                self._node.remove(service.content)
        return offer

    def resume(self, content_id: bytes) -> Offer:
        offer = self.offers[content_id]
        if offer.paused:
            offer.paused = False
            offer.store = PieceStore.for_seeding(offer.torrent, self.vault.ciphertext_path(offer.torrent.content_id))
            self._start_offer(self._node, offer)
        return offer

    def _keep_cheque(self, signed) -> None:
        try:
            self.cashier.on_cheque(signed)
        except VeilError as exc:  # the ledger cannot keep it (a full disk): stop rather than serve unpaid
            self._stop_for(exc)

    def _stop_for(self, error: VeilError) -> None:
        self.fatal.append(error)
        self._on_fatal()

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """The loop's exception handler while selling: a write that failed in a callback
        (the audit log's, say) stops the node; anything else goes to the default handler."""
        error = context.get("exception")
        full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or (isinstance(error, AuditLogError) and disk_is_full(Path(self.vault.home))):
            self._stop_for(SellingError(f"no space left on the disk of the vault at {self.vault.home}"))
        elif isinstance(error, VeilError):  # the audit log cannot be kept, say: no key may go out
            self._stop_for(error)
        else:
            loop.default_exception_handler(context)

    def poll(self, now: float) -> None:
        """From the loop, every fraction of a second: grants, the chain watch, due cheques."""
        cashier = self.cashier
        if self._responders and now - self._polled_at >= GRANT_POLL_INTERVAL_S and cashier.idle:
            self._polled_at = now
            cashier.run_later(self._answer_grants)  # on-chain purchases get their keys
        if now - self._watched_at >= WATCH_INTERVAL_S:
            self._watched_at = now
            cashier.run_later(self._watch_chain)
        cashier.tick()

    def _answer_grants(self) -> None:  # on the chain thread
        for responder in self._responders:
            responder.poll()

    def _watch_chain(self) -> None:  # on the chain thread
        changes = self._watch.poll()
        if changes:
            shares = {change.content_id for change in changes if isinstance(change, ShareChange)}
            records = {content_id: self.client.content(content_id) for content_id in shares & set(self.offers)}
            self._loop.call_soon_threadsafe(self._act_on, changes, records)

    def _act_on(self, changes, records) -> None:  # on the loop: what the watch saw
        for change in changes:
            if isinstance(change, WithdrawalRequested):
                self.cashier.on_withdrawal_requested(change.viewer)
        for content_id, record in records.items():
            offer = self.offers.get(content_id)  # None: dropped while the chain was asked
            if record is not None and offer is not None:
                self._terms_now(offer, record)

    def _terms_now(self, offer: Offer, record) -> None:
        """The registry's share in force and any cut ahead: a cut is cashed before it applies."""
        offer.record = record  # a paused content's service takes it when it resumes
        if offer.service is not None:
            offer.service.terms_changed(record.seeder_share_bps, record.scheduled_seeder_share_bps,
                                        record.share_effective_at)
        cut = record.scheduled_seeder_share_bps
        if cut is not None and cut < offer.torrent.manifest.terms.seeder_share_bps:
            self.cashier.cash_content_by(offer.torrent.info_hash, record.share_effective_at)

    def status_line(self) -> str:
        services = [offer.service for offer in self.offers.values() if offer.service is not None]
        served = sum(s.stats.bytes_served for s in services)
        line = (f"{sum(s.content.peers for s in services)} peers · {served / 2**20:.1f} MiB served · "
                f"{sum(s.stats.cheques_accepted for s in services)} cheques · "
                f"earned {format_ether(sum(s.earned_wei for s in services))}")
        if self.agents:
            line += f" · {sum(s.stats.keys_released for s in services)} keys released"
        if self._responders:
            line += f" · {sum(len(r.issued) for r in self._responders)} grants answered"
        return line

    # -- stopping ----------------------------------------------------------------------------
    async def stop(self) -> None:
        """Before the swarm stops: every market service stops listening, and the chain
        lookups they had under way end."""
        for offer in self.offers.values():
            if offer.service is not None:
                await offer.service.aclose()

    def finish(self) -> int:
        """After the swarm stopped: anchor every audit head, cash what is owed (by the gas
        rule; what is due whatever the gas), claim; returns what was claimed. Raises
        `ChainUnavailable` if the chain is away (every cheque stays in the ledger)."""
        for offer in self.agents:
            if offer.agent.audit.count:
                self.cashier.anchor_audit_head(offer.agent.audit.head, offer.torrent.info_hash)
        return self.cashier.close()


def paid_before(ledger: ChequeLedger, client, payee: str):
    """(viewer, content id) → what that viewer paid this payee in earlier sessions."""
    received = {(c.cheque.viewer, c.cheque.content_id): c.cheque.cumulative_amount
                for c in ledger.latest(client.cheque_domain, Direction.RECEIVED) if c.cheque.seeder == payee}
    return lambda viewer, content_id: max(received.get((viewer, content_id), 0), client.cashed(viewer, content_id, payee))

