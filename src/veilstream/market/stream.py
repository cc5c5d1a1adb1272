"""The viewer's paid stream: an asyncio driver around `ViewerCore` (viewer.py), which
decides what to pay, which keys to ask for and of whom, and when to give up.

`PaidStream` subscribes to the swarm `Transfer`, feeds the core every event with `now`,
and carries out its actions: market messages out on the extension, timers on the event
loop by the core's names, lanes opened on a worker thread (supervised: the result or an
expected failure goes back to the core, a bug to the player), fetching limited to what
the keys held justify. Its player side verifies nothing itself: a slice's ciphertext was
verified by the swarm and its key checked by the core against the manifest's commitments;
it decrypts and hands out plaintext in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from eth_account.signers.local import LocalAccount

from veilstream.chain.cheque import ChequeDomain, SignedCheque
from veilstream.content import DecryptionError, KeyRing, Metadata, Torrent
from veilstream.content.crypto import open_slice, open_slice_into
from veilstream.content.merkle import BLOCK_SIZE
from veilstream.market import messages
from veilstream.market.actions import (CancelTimer, ChequeSigned, Drop, Fail, KeysArrived, LimitFetching, OpenLanes,
                                       Send, StartTimer)
from veilstream.market.driver import ChainWork, Timers, Waiters
from veilstream.market.lanes import LaneOpener
from veilstream.market.payer import Payer
from veilstream.market.settings import MarketSettings
from veilstream.market.viewer import (BudgetSpent, Evidence, HeldGrants, Source, StreamError, StreamStats,
                                      ViewerCore)
from veilstream.swarm import SwarmEvent, SwarmSettings, Transfer

__all__ = ["BudgetSpent", "Evidence", "HeldGrants", "PaidStream", "Source", "StreamError", "StreamStats",
           "viewer_swarm_settings"]

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
        core_class: type[ViewerCore] = ViewerCore,
    ) -> None:
        self.content = content
        self.torrent = torrent
        self.manifest = torrent.manifest
        self.settings = settings
        self.payer = Payer(wallet, domain, torrent.info_hash, self.manifest.terms.price_per_slice_wei, budget_wei,
                           signed_before, sign_ahead=settings.cheques_signed_ahead)
        self.lanes = lanes
        # `core_class`: a test's cheating viewer (one that stops paying, say) is a ViewerCore subclass
        self.core = core_class(torrent, payer=self.payer, wallet_key=wallet.key, now=time.time(), settings=settings,
                               recent_pieces_kept_bytes=content.settings.recent_pieces_kept_bytes, grants=grants,
                               lanes=lanes is not None, key_agent=key_agent, held_keys=held_keys,
                               paid_before_wei=paid_before_wei)
        self.stats = self.core.stats
        self.stats.started_at = time.monotonic()
        self.on_cheque_signed: Callable[[SignedCheque], None] | None = None  # e.g. keep it durably before it goes out
        self.on_keys_arrived: Callable[[], None] | None = None  # e.g. keep them: paid for, and not sold twice
        self._timers = Timers(self._timer_fired)
        self._work = ChainWork(self._bug)
        self._keys_changed = asyncio.Event()
        self._failed = asyncio.Event()
        self._failure: BaseException | None = None
        self._waiters = Waiters()
        self._unsubscribe = content.subscribe(self._on_swarm_event)
        self._closing: list[asyncio.Task] = []

    # -- what the player sees -------------------------------------------------------------
    async def slices(self, start: int = 0, *, reuse: bool = False) -> AsyncIterator[tuple[int, bytes | memoryview]]:
        """(index, plaintext) from slice `start` on, in order; `seek` restarts elsewhere.
        With `reuse`, every plaintext is a view of one buffer, valid until the next slice is
        asked for: for a consumer that writes each slice out at once (a file, a decoder)."""
        core, manifest, content = self.core, self.manifest, self.content
        self._run(core.start(time.time()))
        self.seek(start)
        index = start
        out = bytearray(manifest.piece_length) if reuse else None
        while index < manifest.slice_count:
            if not core.have_key(index) and core.budget_buys_no_more_keys():
                raise BudgetSpent(f"the budget of {self.payer.budget_wei} wei buys no more keys")  # nor serving
            if not content.has_piece(index):
                await self._unless_failed(content.wait_for_piece(index))
            key = core.key_for(index)
            if key is None:
                key = await self._key_for(index)
            ciphertext = content.piece_view(index)  # verified by the swarm; not copied, used before any await
            try:
                if out is not None:
                    plaintext = open_slice_into(manifest.suite, key, manifest.salt, index, ciphertext, out)
                else:
                    plaintext = open_slice(manifest.suite, key, manifest.salt, index, ciphertext)
            except DecryptionError:
                raise StreamError(f"slice {index} fails authentication with a checked key: corrupt storage?") from None
            if self.stats.first_plaintext_at is None:
                self.stats.first_plaintext_at = time.monotonic()
            self._run(core.played(index, time.time()))
            yield index, plaintext
            index += 1

    def seek(self, index: int) -> None:
        self.content.seek(index * self.manifest.piece_length)
        self._run(self.core.seek(index, time.time()))

    def metadata(self) -> Metadata | None:
        if self.core.metadata_key is None:
            return None
        return self.manifest.metadata(self.core.metadata_key)

    def bought_keys(self) -> KeyRing:
        """Every key this stream holds, earlier sessions' included: what the vault keeps."""
        return self.core.bought_keys()

    def close(self) -> None:
        """Stop: no more events, timers or chain calls (those under way are cancelled)."""
        self._closing = self._work.close()
        self._unsubscribe()
        self._run(self.core.close())
        self._timers.cancel_all()

    async def aclose(self) -> None:
        """`close`, then wait until the chain calls it cancelled have ended."""
        self.close()
        if self._closing:
            await asyncio.wait(self._closing)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds, checked after each thing the stream handles (a swarm
        event, a timer, a chain answer); raises the stream's failure if it fails first."""
        if self._failure is not None:
            raise self._failure
        await self._waiters.wait_until(predicate)

    # -- what the core holds, for the application -------------------------------------------
    @property
    def session(self):
        return self.core.session

    @property
    def evidence(self) -> list[Evidence]:
        return self.core.evidence

    @property
    def sources(self) -> dict[int, Source]:
        """The peers met, by connection, as the market sees them (read only)."""
        return self.core.sources

    @property
    def grants(self) -> HeldGrants | None:
        return self.core.grants

    @property
    def metadata_key(self) -> bytes | None:
        return self.core.metadata_key

    @property
    def key_agent(self) -> str | None:
        return self.core.key_agent

    # -- waiting ---------------------------------------------------------------------------
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

    async def _key_for(self, index: int) -> bytes:
        core = self.core
        while True:
            if self._failure is not None:
                raise self._failure
            event = self._keys_changed
            self._run(core.wait_for_key(index, time.time()))
            key = core.key_for(index)
            if key is not None:
                return key
            if self._failure is not None:
                raise self._failure
            await event.wait()

    # -- carrying out the core's actions -------------------------------------------------------
    def _on_swarm_event(self, event: SwarmEvent) -> None:
        self._run(self.core.receive(event, time.time()))

    def _timer_fired(self, name) -> None:
        self._run(self.core.timer_fired(name, time.time()))

    def _run(self, actions) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                self._send(action.conn, action.message)
            elif kind is ChequeSigned:
                if self.on_cheque_signed is not None:
                    self.on_cheque_signed(action.cheque)
            elif kind is StartTimer:
                self._timers.start(action.name, action.at_s - time.time())
            elif kind is CancelTimer:
                self._timers.cancel(action.name)
            elif kind is LimitFetching:
                self.content.limit_fetching(action.end_piece)
            elif kind is KeysArrived:
                if self.on_keys_arrived is not None:
                    self.on_keys_arrived()
                self._wake_player()
            elif kind is OpenLanes:
                self._open_lanes(action)
            elif kind is Drop:
                self.content.drop_peer(action.conn, action.reason)
            elif kind is Fail:
                self._fail(action.error)
            else:
                raise TypeError(f"not a viewer action: {action!r}")
        if self._waiters:
            self._waiters.check()

    def _send(self, conn: int, message: messages.Message) -> None:
        if not self.content.send_extension(conn, messages.MARKET_EXTENSION, messages.encode(message)):
            log.debug("market message to %s not sent: the peer left", conn)

    def _open_lanes(self, action: OpenLanes) -> None:
        content_id = action.content_id
        self._work.run(
            "opening lanes", self.lanes.open, content_id, list(action.payees), action.want_wei,
            action.signed_before.__getitem__,
            done=lambda got: self._run(self.core.lanes_opened(content_id, got, time.time())),
            failed=lambda error: self._run(self.core.lanes_failed(content_id, error, time.time())))

    def _wake_player(self) -> None:
        self._keys_changed.set()
        self._keys_changed = asyncio.Event()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self._failed.set()
        self._keys_changed.set()
        self._waiters.fail(self._failure)

    def _bug(self, what: str, error: BaseException) -> None:
        """A chain call or the core failed unexpectedly: the player sees the error itself."""
        log.error("%s: internal error", what, exc_info=error)
        self._fail(error)

