"""Upload slots (BEP 3 choking), without IO: which peers we serve.

A bounded number of interested peers are unchoked. Every rechoke interval the best
`slots - 1` keep theirs (ranked by what they give us, or by what they take from us once
we seed: tit-for-tat, then fastest-out), and one more slot is the optimistic unchoke, a
peer picked at random that rotates every optimistic interval so newcomers get a chance
to prove themselves. Between rechokes a peer that becomes interested takes a free slot
at once, and a slot given up is passed on to the best waiting peer.

The choker decides; the swarm sends the Choke/Unchoke messages. It is handed the peers
each time (anything with the `UploadCandidate` attributes) and returns which of them to
choke and unchoke; it keeps only the rechoke clock and who holds the optimistic slot.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Protocol, TypeVar


class UploadCandidate(Protocol):
    conn: int
    download_rate: float  # bytes/s it gives us
    upload_rate: float  # bytes/s we give it

    @property
    def active(self) -> bool: ...  # handshake done, not closed

    @property
    def am_choking(self) -> bool: ...  # we choke it

    @property
    def peer_interested(self) -> bool: ...  # it wants what we have


Candidate = TypeVar("Candidate", bound=UploadCandidate)


class Choker:
    def __init__(self, slots: int, rechoke_interval_s: float, optimistic_interval_s: float,
                 rng: random.Random | None = None) -> None:
        self.slots = slots
        self.rechoke_interval_s = rechoke_interval_s
        self.optimistic_interval_s = optimistic_interval_s
        self._rng = rng or random.Random()
        self._last_rechoke = self._last_optimistic = 0.0
        self._optimistic: set[int] = set()  # conns unchoked optimistically

    @staticmethod
    def unchoked_count(peers: Iterable[UploadCandidate]) -> int:
        return sum(1 for p in peers if not p.am_choking and p.active)

    def has_free_slot(self, peers: Iterable[UploadCandidate]) -> bool:
        """May a peer that just became interested be unchoked at once?"""
        return self.unchoked_count(peers) < self.slots

    def fill_free_slots(self, peers: Iterable[Candidate]) -> list[Candidate]:
        """Peers to unchoke into slots given up since the last rechoke, best givers first."""
        peers = list(peers)
        waiting = [p for p in peers if p.active and p.am_choking and p.peer_interested]
        free = self.slots - self.unchoked_count(peers)
        return sorted(waiting, key=lambda p: -p.download_rate)[: max(0, free)]

    def rechoke_due(self, now: float) -> bool:
        return now - self._last_rechoke >= self.rechoke_interval_s

    def rechoke(self, peers: Iterable[Candidate], *, seeding: bool, now: float) -> tuple[list[Candidate], list[Candidate]]:
        """Every choke interval: (to unchoke, to choke). Keeps the best `slots - 1`
        interested peers unchoked (by what they give us, or take from us once we seed),
        plus one optimistic unchoke that rotates every optimistic interval."""
        self._last_rechoke = now
        peers = list(peers)
        interested = [p for p in peers if p.active and p.peer_interested]
        ranked = sorted(interested, key=lambda p: -(p.upload_rate if seeding else p.download_rate))
        regular = {p.conn for p in ranked[: max(0, self.slots - 1)]}
        rotate = now - self._last_optimistic >= self.optimistic_interval_s
        current = [p for p in interested if p.conn in self._optimistic and p.conn not in regular]
        if rotate or not current:
            others = [p for p in interested if p.conn not in regular]
            for p in current:
                self._optimistic.discard(p.conn)
            current = [self._rng.choice(others)] if others else []
            if current:
                self._optimistic.add(current[0].conn)
            self._last_optimistic = now
        keep = regular | {p.conn for p in current}
        unchoke, choke = [], []
        for peer in peers:
            if not peer.active:
                continue
            if peer.conn in keep and peer.am_choking:
                unchoke.append(peer)
            elif peer.conn not in keep and not peer.am_choking:
                choke.append(peer)
        return unchoke, choke

    def choked(self, conn: int) -> None:
        """`conn` was choked (or left): it no longer holds the optimistic slot."""
        self._optimistic.discard(conn)
