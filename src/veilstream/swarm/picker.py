"""Which block to ask which peer for next: streaming deadlines, rarest first, endgame.

The picker keeps a playback position. Pieces inside the window that starts there have
deadlines in index order and go, earliest first, to fast peers; a window block a peer
sits on for longer than `deadline_rerequest_s` is asked of another peer too. Outside the
window, pieces already started are finished first, then new pieces are taken rarest
first (ties broken at random, so leechers spread out). When every missing block has
been asked for, endgame lets idle peers duplicate outstanding requests. `seek()` moves
the window at once.

With `sequential` set, pieces outside the window are taken in order from the playback
position on (then from the start): a player reading in order finds each piece in memory
as it comes, instead of waiting for one while the rest of the file arrives. Rarest first
serves the swarm's health; a paying viewer that just watches wants its slices in order.

With `fetch_end` set, only pieces from the playback position up to it are started: a
viewer that pays per verified piece fetches no further ahead than it means to pay for.

With `whole_pieces` set, a piece's blocks go to the peer that started it (until that peer
gives some back, or is late with a window block): a paying viewer pays per verified
piece, and a seeder serves only a credit window ahead of payment, so pieces split across
seeders could leave every seeder waiting for payment for pieces the others hold back.

Peers are opaque keys; a peer's pieces are a bytearray of 0/1 per piece.
"""

from __future__ import annotations

import random

from veilstream.content.merkle import BLOCK_SIZE

ORDER_REBUILD_FRACTION = 16  # re-sort rarest-first order after availability changed for 1/16 of the pieces


class PieceProgress:
    """Blocks of one piece being downloaded."""

    __slots__ = ("piece", "block_count", "asked", "asked_at", "received", "received_count", "cursor", "unrequested",
                 "started_at", "owner")

    def __init__(self, piece: int, block_count: int) -> None:
        self.piece = piece
        self.block_count = block_count
        self.asked: list[list] = [[] for _ in range(block_count)]  # peers asked for each block
        self.asked_at = [0.0] * block_count  # when the latest request for each block went out
        self.received = bytearray(block_count)
        self.received_count = 0
        self.cursor = 0  # blocks before it were all asked for or received, unless aborted (cursor moves back)
        self.unrequested = block_count
        self.started_at: float | None = None  # when its first block was asked for
        self.owner = None  # with `whole_pieces`: the peer the piece's blocks go to


class PiecePicker:
    def __init__(self, piece_count: int, piece_length: int, length: int, window_pieces: int,
                 have: bytearray | None = None, *, rng: random.Random | None = None) -> None:
        self.piece_count = piece_count
        self.piece_length = piece_length
        self.length = length
        self.window_pieces = max(1, window_pieces)
        self.have = bytearray(have) if have is not None else bytearray(piece_count)
        self.missing = piece_count - sum(self.have)
        self.availability = [0] * piece_count
        self.downloading: dict[int, PieceProgress] = {}
        self.position = 0  # first piece of the playback window
        self.deadline_rerequest_s = 2.0
        self.endgame_duplicates = 2
        self.whole_pieces = False
        self.endgame = True
        self.sequential = False
        self.fetch_end: int | None = None  # set: no piece at or past it is started (a paying viewer's bound)
        self._sequential_cursor = 0  # pieces from the position up to it are had or being fetched
        self._rng = rng or random.Random()
        self._order: list[int] = []
        self._order_cursor = 0
        self._changes = piece_count  # forces a first build

    # -- geometry ------------------------------------------------------------------
    def piece_size(self, piece: int) -> int:
        return min(self.piece_length, self.length - piece * self.piece_length)

    def block_count(self, piece: int) -> int:
        return -(-self.piece_size(piece) // BLOCK_SIZE)

    def block_length(self, piece: int, block: int) -> int:
        if piece != self.piece_count - 1:
            return BLOCK_SIZE  # pieces are whole multiples of a block; only the last is short
        return min(BLOCK_SIZE, self.piece_size(piece) - block * BLOCK_SIZE)

    @property
    def complete(self) -> bool:
        return self.missing == 0

    # -- availability ------------------------------------------------------------------
    def add_peer(self, has: bytearray) -> None:
        avail = self.availability
        for i in range(self.piece_count):
            if has[i]:
                avail[i] += 1
        self._changes += self.piece_count

    def remove_peer(self, has: bytearray) -> None:
        avail = self.availability
        for i in range(self.piece_count):
            if has[i] and avail[i] > 0:
                avail[i] -= 1
        self._changes += self.piece_count

    def peer_has(self, piece: int) -> None:
        self.availability[piece] += 1
        self._changes += 1

    def _rarest_order(self) -> list[int]:
        if self._changes * ORDER_REBUILD_FRACTION >= self.piece_count:
            keys = [self._rng.random() for _ in range(self.piece_count)]
            avail, have = self.availability, self.have
            self._order = sorted((i for i in range(self.piece_count) if not have[i]), key=lambda i: (avail[i], keys[i]))
            self._order_cursor = 0
            self._changes = 0
        return self._order

    # -- streaming ---------------------------------------------------------------------
    def seek(self, piece: int) -> None:
        self.position = max(0, min(piece, self.piece_count - 1))
        self._sequential_cursor = self.position

    def in_window(self, piece: int) -> bool:
        return self.position <= piece < self.position + self.window_pieces

    def wants_from(self, has: bytearray) -> bool:
        """Does a peer with these pieces have anything we lack?"""
        have = self.have
        return any(has[i] and not have[i] for i in range(self.piece_count))

    # -- picking -------------------------------------------------------------------------
    def pick(self, peer, has: bytearray, count: int, *, fast: bool = True, now: float = 0.0) -> list[tuple[int, int]]:
        """Up to `count` (piece, block) pairs for `peer` to request now."""
        out: list[tuple[int, int]] = []
        have, downloading = self.have, self.downloading
        window_end = min(self.position + self.window_pieces, self.piece_count)
        # 1. the playback window, earliest deadline first, to fast peers (late blocks re-asked)
        if fast:
            for piece in range(self.position, window_end):
                if not have[piece] and has[piece]:
                    self._take(piece, peer, count, out, now, late_after=self.deadline_rerequest_s)
                    if len(out) >= count:
                        return out
        # 2. finish pieces already started
        for piece, progress in downloading.items():
            if progress.unrequested and has[piece] and (fast or not self.position <= piece < window_end):
                self._take(piece, peer, count, out, now)
                if len(out) >= count:
                    return out
        # 3. new pieces: in order from the position (sequential), or rarest first
        if self.sequential:
            self._take_in_order(peer, has, count, out, now, fast, window_end)
            if len(out) >= count:
                return out
        order = [] if self.sequential else self._rarest_order()
        i = self._order_cursor
        advancing = True
        while i < len(order):
            piece = order[i]
            if have[piece] or piece in downloading:
                if advancing:
                    self._order_cursor = i + 1
                i += 1
                continue
            advancing = False
            if has[piece] and (fast or not self.position <= piece < window_end):
                self._take(piece, peer, count, out, now)
                if len(out) >= count:
                    return out
            i += 1
        # 4. a slow peer gets window pieces when nothing else is left for it
        if not fast:
            for piece in range(self.position, window_end):
                if not have[piece] and has[piece]:
                    self._take(piece, peer, count, out, now)
                    if len(out) >= count:
                        return out
        # 5. endgame: everything is asked for; duplicate outstanding blocks
        if not out and self.endgame and self._all_requested():
            for piece, progress in downloading.items():
                if not has[piece]:
                    continue
                for block in range(progress.block_count):
                    asked = progress.asked[block]
                    if not progress.received[block] and peer not in asked and len(asked) < self.endgame_duplicates:
                        asked.append(peer)
                        progress.asked_at[block] = now
                        out.append((piece, block))
                        if len(out) >= count:
                            return out
        return out

    def _take_in_order(self, peer, has: bytearray, count: int, out: list, now: float, fast: bool, window_end: int) -> None:
        have, downloading, n = self.have, self.downloading, self.piece_count
        cursor = max(self._sequential_cursor, self.position)
        while cursor < n and (have[cursor] or cursor in downloading):
            cursor += 1
        self._sequential_cursor = cursor
        # a slow peer would hold up the pieces the player needs next: it takes the last ones
        order = (*range(cursor, n), *range(0, self.position))
        for piece in (order if fast else reversed(order)):
            if have[piece] or piece in downloading or not has[piece]:
                continue
            if not fast and self.position <= piece < window_end:
                continue  # slow peers get window pieces only when nothing else is left (step 4)
            self._take(piece, peer, count, out, now)
            if len(out) >= count:
                return

    def _take(self, piece: int, peer, count: int, out: list, now: float, late_after: float | None = None) -> None:
        progress = self.downloading.get(piece)
        if progress is None:
            if self.fetch_end is not None and not self.position <= piece < self.fetch_end:
                return
            progress = self.downloading[piece] = PieceProgress(piece, self.block_count(piece))
        if progress.started_at is None:
            progress.started_at = now
        takes_new = progress.unrequested > 0
        if takes_new and self.whole_pieces:
            if progress.owner is None or (late_after is not None and now - progress.started_at >= late_after):
                progress.owner = peer  # first come, or taking over from an owner late with a window piece
            takes_new = progress.owner == peer
        if takes_new:
            block = progress.cursor
            asked, received = progress.asked, progress.received
            while block < progress.block_count and len(out) < count:
                if not received[block] and not asked[block]:
                    asked[block].append(peer)
                    progress.asked_at[block] = now
                    progress.unrequested -= 1
                    out.append((piece, block))
                block += 1
                if progress.unrequested == 0:
                    break
            if block >= progress.block_count or progress.unrequested == 0:
                progress.cursor = progress.block_count
            else:
                progress.cursor = block
        if late_after is not None and len(out) < count and now - progress.started_at >= late_after:
            # deadline pieces: ask a second peer for blocks the first is late with
            for block in range(progress.block_count):
                asked = progress.asked[block]
                if (asked and not progress.received[block] and peer not in asked
                        and len(asked) < self.endgame_duplicates and now - progress.asked_at[block] >= late_after):
                    asked.append(peer)
                    progress.asked_at[block] = now
                    out.append((piece, block))
                    if len(out) >= count:
                        return

    def _all_requested(self) -> bool:
        if len(self.downloading) < self.missing:
            return False  # some missing piece is not even started
        return all(p.unrequested == 0 for p in self.downloading.values())

    # -- outcomes --------------------------------------------------------------------
    def block_received(self, piece: int, block: int, peer) -> tuple[bool, list]:
        """Record a block; returns (new, other peers that were also asked for it)."""
        progress = self.downloading.get(piece)
        if progress is None or not 0 <= block < progress.block_count or progress.received[block]:
            return False, []
        asked = progress.asked[block]
        if not asked:
            progress.unrequested -= 1  # arrived after an abort
        progress.received[block] = 1
        progress.received_count += 1
        if len(asked) == 1 and asked[0] == peer:  # the usual case: nobody else was asked
            asked.clear()
            return True, ()
        others = [p for p in asked if p != peer]
        asked.clear()
        return True, others

    def piece_ready(self, piece: int) -> bool:
        progress = self.downloading.get(piece)
        return progress is not None and progress.received_count == progress.block_count

    def abort(self, piece: int, block: int, peer) -> None:
        """A request will not be answered (choke, timeout, peer gone)."""
        progress = self.downloading.get(piece)
        if progress is None or not 0 <= block < progress.block_count:
            return
        asked = progress.asked[block]
        if progress.owner == peer:
            progress.owner = None  # what it gives back may go to anyone
        if peer in asked:
            asked.remove(peer)
            if not asked and not progress.received[block]:
                progress.unrequested += 1
                progress.cursor = min(progress.cursor, block)

    def piece_verified(self, piece: int) -> None:
        self.downloading.pop(piece, None)
        if not self.have[piece]:
            self.have[piece] = 1
            self.missing -= 1

    def piece_failed(self, piece: int) -> None:
        """The piece's hash did not match: everything about it starts again."""
        self.downloading.pop(piece, None)
        self._changes = self.piece_count  # re-sort so the piece is a candidate again
