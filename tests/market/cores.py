"""The market's cores joined in memory, as tests/swarm joins swarm cores: a `ViewerCore`
and any number of `SellerCore`s pass messages through their actions, a dict stands for the
chain's lanes, timers are only recorded (a test fires them at a `now` of its choosing).
No socket, no clock, no sleep."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from eth_account import Account

from veilstream.chain.client import Guarantee
from veilstream.content import PublishOptions, Terms, publish_file
from veilstream.identity import Identity, generate_mnemonic
from veilstream.market import messages
from veilstream.market.actions import (CancelTimer, ChequeAccepted, ChequeSigned, CoverFound, Drop, Fail, KeysArrived,
                                       LimitFetching, LookUpCover, LookUpGrants, OpenLanes, ResumeUploads, Send,
                                       StartTimer)
from veilstream.market.audit import AuditLog
from veilstream.market.key_agent import KeyAgent
from veilstream.market.payer import Payer
from veilstream.market.seller import SellerCore
from veilstream.market.settings import MarketSettings
from veilstream.market.viewer import ViewerCore
from veilstream.swarm import ExtensionMessageReceived, PeerReady, PieceVerified

PRICE = 10**12
SHARE_BPS = 2_500
PART = PRICE * SHARE_BPS // 10_000
SLICE = 16 * 1024  # one block a slice: a block served is a slice served
NOW = 1_700_000_000.0
LANE_UNTIL = int(NOW) + 10 * 24 * 3_600
VIEWER_CONN = 1  # how every seller sees the viewer
MARKET = frozenset({messages.MARKET_EXTENSION})


@dataclass
class Published:
    done: object
    creator: Identity
    tmp: object

    @property
    def torrent(self):
        return self.done.torrent

    @property
    def cid(self) -> bytes:
        return self.done.torrent.info_hash


def publish(tmp, slices: int = 41) -> Published:
    (tmp / "movie.bin").write_bytes(os.urandom(slices * (SLICE - 16) - 100))
    (tmp / "out").mkdir()
    creator = Identity.from_mnemonic(generate_mnemonic())
    done = publish_file(tmp / "movie.bin", tmp / "out", creator,
                        PublishOptions(SLICE, terms=Terms(PRICE, SHARE_BPS)))
    return Published(done, creator, tmp)


def key_agent(published: Published, domain, settings=MarketSettings()) -> KeyAgent:
    agent = KeyAgent(domain, AuditLog(published.tmp / f"audit-{os.urandom(3).hex()}.log"), settings,
                     clock=lambda: NOW, signing_key=published.creator.wallet_key)
    agent.offer(published.torrent, published.done.keys)
    return agent


def wire(message) -> bytes:
    return messages.encode(message)


def received(conn: int, message) -> ExtensionMessageReceived:
    return ExtensionMessageReceived(conn, messages.MARKET_EXTENSION, wire(message))


def verified(index: int, *senders: tuple[int, int]) -> PieceVerified:
    """Piece `index` verified, delivered by (conn, bytes) `senders`, most bytes first."""
    return PieceVerified(index, tuple(conn for conn, _ in senders), tuple(senders))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def sent(actions, kind=None, conn=None):
    """The messages of the `Send` actions (of one kind, to one connection)."""
    return [a.message for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.message, kind))
            and (conn is None or a.conn == conn)]


class Market:
    """A viewer core joined to seller cores (the viewer's connection `conn` is seller
    `sellers[conn]`; plain BitTorrent peers are connections with no seller)."""

    def __init__(self, published: Published, domain, *, sellers: dict[int, SellerCore], viewer=None,
                 budget_wei: int = 10**16, settings=MarketSettings(), core_class=ViewerCore, signed_before=None,
                 **viewer_kwargs):
        self.published, self.domain, self.sellers = published, domain, sellers
        self.viewer = viewer or Account.create()
        self.payer = Payer(self.viewer, domain, published.cid, PRICE, budget_wei, signed_before)
        self.core = core_class(published.torrent, payer=self.payer, wallet_key=self.viewer.key, now=NOW,
                               settings=settings, lanes=True, **viewer_kwargs)
        self.covers: dict[tuple[str, bytes, str], Guarantee] = {}  # the chain's lanes
        self.now = NOW
        self.timers: dict[object, float] = {}
        self.log: list = []  # every action of the viewer core, in order
        self.seller_log: dict[int, list] = {conn: [] for conn in sellers}
        self.lanes_open_automatically = True
        self.pending_lanes: list[OpenLanes] = []
        self._queue: deque = deque()

    # -- inputs ---------------------------------------------------------------------------------
    def connect(self, *conns: int, speaks_market: bool = True) -> Market:
        """Peers `conns` finish their handshakes together (so the viewer meets them all
        before any says its terms)."""
        extensions = MARKET if speaks_market else frozenset()
        for conn in conns:
            self._viewer(self.core.receive(PeerReady(conn, ("127.0.0.1", 6880 + conn), extensions), self.now))
        for conn in conns:
            seller = self.sellers.get(conn)
            if seller is not None:
                self._seller(conn, seller.receive(PeerReady(VIEWER_CONN, ("viewer", 1), extensions), self.now))
        return self.pump()

    def start(self, at: int = 0) -> Market:
        self._viewer(self.core.start(self.now))
        self._viewer(self.core.seek(at, self.now))
        return self.pump()

    def deliver(self, index: int, *senders: tuple[int, int]) -> Market:
        self._viewer(self.core.receive(verified(index, *senders), self.now))
        return self.pump()

    def play(self, index: int) -> Market:
        self._viewer(self.core.played(index, self.now))
        return self.pump()

    def wait_for_key(self, index: int) -> Market:
        self._viewer(self.core.wait_for_key(index, self.now))
        return self.pump()

    def fire(self, name) -> Market:
        """Fire timer `name` at the time it was set for."""
        self.now = max(self.now, self.timers.pop(name))
        self._viewer(self.core.timer_fired(name, self.now))
        return self.pump()

    def open_pending_lanes(self) -> Market:
        for action in self.pending_lanes:
            self._open(action)
        self.pending_lanes.clear()
        return self.pump()

    # -- what happened ----------------------------------------------------------------------------
    def viewer_actions(self, kind=None):
        return self.log if kind is None else of(self.log, kind)

    def viewer_sent(self, kind=None, conn=None):
        return sent(self.log, kind, conn)

    @property
    def failure(self):
        return self.core.failure

    # -- the wiring -------------------------------------------------------------------------------
    def _viewer(self, actions) -> None:
        self._queue.extend(("viewer", a) for a in actions)

    def _seller(self, conn, actions) -> None:
        self._queue.extend((conn, a) for a in actions)

    def pump(self) -> Market:
        while self._queue:
            who, action = self._queue.popleft()
            if who == "viewer":
                self.log.append(action)
                self._carry_out_viewer(action)
            else:
                self.seller_log[who].append(action)
                self._carry_out_seller(who, action)
        return self

    def _carry_out_viewer(self, action) -> None:
        match action:
            case Send(conn=conn, message=message):
                seller = self.sellers.get(conn)
                if seller is not None:
                    self._seller(conn, seller.receive(received(VIEWER_CONN, message), self.now))
            case StartTimer(name=name, at_s=at):
                self.timers[name] = at
            case CancelTimer(name=name):
                self.timers.pop(name, None)
            case OpenLanes():
                if self.lanes_open_automatically:
                    self._open(action)
                else:
                    self.pending_lanes.append(action)
            case Drop() | Fail() | KeysArrived() | ChequeSigned() | LimitFetching():
                pass
            case _:
                raise AssertionError(f"not a viewer action: {action!r}")

    def _open(self, action: OpenLanes) -> None:
        for payee in action.payees:
            self.covers[(self.viewer.address, action.content_id, payee)] = Guarantee(action.want_wei, LANE_UNTIL)
        self._viewer(self.core.lanes_opened(action.content_id, list(action.payees), self.now))

    def _carry_out_seller(self, conn, action) -> None:
        seller = self.sellers[conn]
        match action:
            case Send(message=message):
                self._viewer(self.core.receive(received(conn, message), self.now))
            case LookUpCover(viewer=viewer, content_id=cid, payee=payee):
                cover = self.covers.get((viewer, cid, payee), Guarantee(0, 0))
                self._seller(conn, seller.cover_looked_up(viewer, cid, payee, cover, self.now))
            case ResumeUploads() | ChequeAccepted() | CoverFound() | Drop() | LookUpGrants():
                pass
            case _:
                raise AssertionError(f"not a seller action: {action!r}")
