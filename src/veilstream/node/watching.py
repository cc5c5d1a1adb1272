"""The node's viewing role: a paid stream of one content, read by plaintext byte ranges.

`veil play` writes a whole content in order; the node's `/media` endpoint reads whatever
range a player asks for. Both open the stream the same way: the torrent from the vault or
from peers, grants held, what earlier sessions paid and signed, the keys already held, and
a budget the stream never spends past.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from veilstream.chain.ledger import ChequeLedger, Direction
from veilstream.content import KeyRing, Torrent
from veilstream.errors import VeilError
from veilstream.market.access import held_grants
from veilstream.market.credit import seeder_part_wei
from veilstream.market.lanes import LaneOpener
from veilstream.market.onchain import registered_record
from veilstream.market.stream import PaidStream, viewer_swarm_settings
from veilstream.swarm import SwarmNode, Transfer

log = logging.getLogger("veilstream.node")

METADATA_TIMEOUT_S = 30.0
RECENT_SLICES_KEPT = 2  # decrypted slices a viewing keeps for the next range (see Viewing._recent)
BUDGET_CHECK_S = 0.1  # while a read waits, how often it looks whether the budget can still pay for it


class ViewingError(VeilError):
    http_status = 503


class OutOfBudget(ViewingError):
    """What the player asks for needs more than the stream's budget has left."""

    http_status = 402


class Stalled(ViewingError):
    http_status = 504


def held_keys(vault, cid: str) -> KeyRing | None:
    """The keys this vault already holds for the content (bought, or its creator's), if any."""
    try:
        return vault.keyring(cid)
    except VeilError:
        return None


def paid_for(ledger: ChequeLedger, client, viewer: str, content_id: bytes) -> int:
    """What this viewer's cheques for the content add up to, over every payee (its ledger)."""
    return sum(c.cheque.cumulative_amount for c in ledger.latest(client.cheque_domain, Direction.ISSUED)
               if c.cheque.viewer == viewer and c.cheque.content_id == content_id)


def grant_secret_name(client, grant_id: int) -> str:
    return f"grant-{client.deployment.access_sales[2:].lower()}-{grant_id}"


def grant_secrets(vault, client):
    """grant id → its one-time secret, for the purchases this vault made."""
    def secret_for(grant_id: int) -> int | None:
        raw = vault.secret(grant_secret_name(client, grant_id))
        return int.from_bytes(raw, "big") if raw else None
    return secret_for


def signed_before(ledger: ChequeLedger, client, viewer: str):
    """(content id, seeder) → what this viewer signed that seeder in earlier sessions: its
    ledger, or what is cashed on chain if more (a ledger lost with an old machine)."""
    issued = {(c.cheque.content_id, c.cheque.seeder): c.cheque.cumulative_amount
              for c in ledger.latest(client.cheque_domain, Direction.ISSUED) if c.cheque.viewer == viewer}
    return lambda content_id, seeder: max(issued.get((content_id, seeder), 0), client.cashed(viewer, content_id, seeder))


def known_torrent(vault, cid: str) -> Torrent | None:
    try:
        return vault.torrent(cid)
    except VeilError:
        return None


async def fetch_metadata(node: SwarmNode, cid: str, peers, trackers, scratch: Path,
                         timeout_s: float = METADATA_TIMEOUT_S) -> Torrent:
    """The torrent of `cid` from peers (BEP 9 + piece layers); the transfer is removed after."""
    transfer = node.fetch(bytes.fromhex(cid), scratch)
    try:
        for host, port in peers:
            transfer.add_peer(host, port)
        for url in trackers:
            node.announce_to(transfer, url)
        async with asyncio.timeout(timeout_s):
            return await transfer.metadata()
    except TimeoutError:
        raise ViewingError(f"no peer sent the content's metadata within {timeout_s:g} s") from None
    finally:
        node.remove(transfer)


class KeysKeeper:
    """Bought keys go to the vault as they arrive, not only at the stream's end: a killed
    stream keeps what it paid for (the agent counts keys it released as sold; asked again
    after a crash, they would cost again, and the stream could stall unpaid)."""

    def __init__(self, vault, cid: str, stream: PaidStream) -> None:
        self._vault, self._cid, self._stream = vault, cid, stream
        self._kept = len(stream.bought_keys().nodes)
        stream.on_keys_arrived = self.now

    def now(self) -> None:
        ring = self._stream.bought_keys()
        if len(ring.nodes) != self._kept:
            self._vault.store_keyring(self._cid, ring)
            self._kept = len(ring.nodes)


def open_paid_stream(node: SwarmNode, transfer: Transfer, torrent: Torrent, vault, identity, client,
                     ledger: ChequeLedger, record, grants, budget_wei: int, *, peers=(), trackers=()) -> PaidStream:
    """A paid stream of `transfer` that goes on from what earlier sessions signed and paid,
    uses the keys the vault holds, keeps every cheque before it goes out, and asks `peers`
    and `trackers` for the content."""
    cid = torrent.content_id
    stream = PaidStream(transfer, torrent, wallet=identity.wallet, domain=client.cheque_domain, budget_wei=budget_wei,
                        grants=grants, signed_before=signed_before(ledger, client, identity.wallet_address),
                        lanes=LaneOpener(client), key_agent=record.key_agent if record else None,
                        held_keys=held_keys(vault, cid),
                        paid_before_wei=paid_for(ledger, client, identity.wallet_address, torrent.info_hash))
    # every cheque is kept before it goes out: the next session's counters go on from it
    stream.on_cheque_signed = lambda signed: ledger.record(client.cheque_domain, signed, Direction.ISSUED)
    for host, port in peers:
        transfer.add_peer(host, port)
    for url in trackers:
        node.announce_to(transfer, url)
    return stream


def whole_cost_wei(torrent: Torrent, granted: set[int]) -> int:
    terms = torrent.manifest.terms
    return terms.price_per_slice_wei * (torrent.piece_count - len(granted)) + seeder_part_wei(terms) * len(granted)


class Viewing:
    """One paid stream on the node: `read(start, end)` yields verified, decrypted plaintext
    of bytes [start, end), paying per slice within `budget_wei`."""

    def __init__(self, transfer: Transfer, torrent: Torrent, stream: PaidStream, ledger: ChequeLedger, client,
                 keeper: KeysKeeper, budget_wei: int, cost_wei: int, stall_timeout_s: float) -> None:
        self.transfer, self.torrent, self.stream = transfer, torrent, stream
        self._ledger, self._client, self._keeper = ledger, client, keeper
        self.budget_wei, self.cost_wei = budget_wei, cost_wei
        self.stall_timeout_s = stall_timeout_s
        self._reads = 0  # a new read makes the one before it stop at its next slice
        # The last slices decrypted: a player's ranges rarely end on a slice's end, so the next
        # range starts in the slice the last one ended in (decrypting it again would halve a
        # stream read in 1 MiB ranges of 1 MiB slices).
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        # A read that ended where its range did leaves its slices iterator here, at the next
        # slice: a player's next range most often starts there, and a new iterator would seek.
        self._parked: tuple[int, AsyncIterator] | None = None
        self.closed = False
        # for the node's metrics: cheques this stream signed, reads that gave up stalled
        self.cheques_signed = self.stalls = 0
        keep = stream.on_cheque_signed

        def count_signed(signed) -> None:
            if keep is not None:
                keep(signed)
            self.cheques_signed += 1

        stream.on_cheque_signed = count_signed

    @classmethod
    async def start(cls, node: SwarmNode, vault, identity, client, ledger: ChequeLedger, cid: str, *,
                    peers=(), trackers=(), budget_wei: int | None = None, stall_timeout_s: float = 60.0) -> Viewing:
        torrent = known_torrent(vault, cid)
        if torrent is None:
            torrent = await fetch_metadata(node, cid, peers, trackers, Path(vault.home) / "partial" / f"{cid}.metadata")
        terms = torrent.manifest.terms

        def read_chain():  # a few round trips to the chain: off the loop the API and the swarm run on
            record = registered_record(client, torrent, required=bool(terms.price_per_slice_wei))
            grants = held_grants(client, grant_secrets(vault, client), identity.wallet_address, torrent)
            cover = client.cheque_cover(identity.wallet_address) + client.held_of(identity.wallet_address)
            return record, grants, cover

        record, grants, cover = await asyncio.to_thread(read_chain)
        granted = ({i for first, end in grants.ranges for i in range(first, min(end, torrent.piece_count))}
                   if grants is not None else set())
        cost = whole_cost_wei(torrent, granted)
        limit = cost if budget_wei is None else budget_wei
        if limit > cover:
            raise ViewingError(f"the deposit covers {cover} wei; this budget needs {limit} wei: deposit more first")
        transfer = node.fetch(torrent, Path(vault.home) / "partial" / torrent.content_id,
                              settings=viewer_swarm_settings(torrent.piece_length, base=node.settings))
        stream = open_paid_stream(node, transfer, torrent, vault, identity, client, ledger, record, grants, limit,
                                  peers=peers, trackers=trackers)
        return cls(transfer, torrent, stream, ledger, client, KeysKeeper(vault, cid, stream), limit, cost,
                   stall_timeout_s)

    @property
    def plaintext_length(self) -> int:
        return self.torrent.manifest.plaintext_length

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Plaintext bytes [start, end) in order, each slice verified and decrypted first. A
        new read stops the one before it (a player that seeks abandons the old range)."""
        if not 0 <= start < end <= self.plaintext_length:
            raise ViewingError(f"range [{start}, {end}) is outside the {self.plaintext_length}-byte content")
        self._reads += 1
        mine = self._reads
        size = self.torrent.manifest.plain_slice_length
        index = start // size
        while (plaintext := self._recent.get(index)) is not None:
            slice_start = index * size
            yield plaintext[max(start, slice_start) - slice_start:min(end, slice_start + len(plaintext)) - slice_start]
            if slice_start + len(plaintext) >= end or mine != self._reads or self.closed:
                return
            index += 1
        parked, self._parked = self._parked, None
        if parked is not None and parked[0] == index:
            slices = parked[1]  # the player reads on from where its last range ended: no seek
        else:
            if parked is not None:
                await parked[1].aclose()
            slices = aiter(self.stream.slices(index))
        ended_at_range_end = False
        try:
            while True:
                try:
                    index, plaintext = await self._next_slice(slices, index)
                except StopAsyncIteration:
                    return
                if mine != self._reads or self.closed:
                    return
                self._recent[index] = plaintext
                while len(self._recent) > RECENT_SLICES_KEPT:
                    self._recent.popitem(last=False)
                slice_start = index * size
                lo, hi = max(start, slice_start) - slice_start, min(end, slice_start + len(plaintext)) - slice_start
                if lo < hi:
                    yield plaintext[lo:hi]
                if slice_start + len(plaintext) >= end:
                    ended_at_range_end = not self.closed
                    return
                index += 1
        finally:
            if ended_at_range_end:
                self._parked = (index + 1, slices)  # for the next range, which most likely starts there
            else:
                await slices.aclose()

    async def _next_slice(self, slices, index: int):
        """The next (index, plaintext) of `slices`, or `OutOfBudget` as soon as what is left of
        the budget cannot pay for slice `index` (payments for slices fetched ahead go on
        while it waits), or `Stalled` after `stall_timeout_s` without it."""
        waiting = asyncio.ensure_future(anext(slices))
        deadline = asyncio.get_running_loop().time() + self.stall_timeout_s
        try:
            while True:
                if self._unaffordable(index):
                    raise OutOfBudget(f"slice {index} needs more than the {self.budget_wei - self.stream.payer.spent_wei}"
                                      f" wei left of this stream's budget of {self.budget_wei} wei: stop it and start "
                                      "one with a larger budget")
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self.stalls += 1
                    raise Stalled(f"no verified slice {index} within {self.stall_timeout_s:g} s "
                                  f"({self.transfer.peers} sources connected)")
                done, _ = await asyncio.wait({waiting}, timeout=min(left, BUDGET_CHECK_S))
                if done:
                    return waiting.result()
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait({waiting})

    def _unaffordable(self, index: int) -> bool:
        """Slice `index` is not in and what is left of the budget cannot pay for its delivery
        (the cheque that pays for a slice also pays for its key): waiting would wait forever."""
        stream, terms = self.stream, self.torrent.manifest.terms
        granted = stream.grants is not None and stream.grants.covers(index)
        price = seeder_part_wei(terms) if granted else terms.price_per_slice_wei
        store = self.transfer.store
        if not price or (store is not None and store.have[index]):
            return False
        return stream.payer.budget_wei - stream.payer.spent_wei < price

    def stats(self) -> dict:
        stream = self.stream
        have = self.transfer.store.have if self.transfer.store is not None else b""
        return {"content_id": self.torrent.content_id, "slices": self.torrent.piece_count,
                "slices_verified": int(sum(have)), "paid_wei": stream.payer.spent_wei,
                "budget_wei": self.budget_wei, "cost_wei": self.cost_wei, "sources": self.transfer.peers,
                "key_deliveries": stream.stats.key_deliveries,
                "slices_by_source": dict(stream.stats.slices_by_source)}

    async def aclose(self, node: SwarmNode) -> None:
        """Stop the stream: cheques and keys kept, its chain calls ended, the transfer removed
        from the node."""
        if self.closed:
            return
        self.closed = True
        parked, self._parked = self._parked, None
        try:
            if parked is not None:
                await parked[1].aclose()
            for signed in self.stream.payer.all_signed():
                self._ledger.record(self._client.cheque_domain, signed, Direction.ISSUED)
            self._keeper.now()
        finally:
            try:
                await self.stream.aclose()
            finally:
                node.remove(self.transfer)
