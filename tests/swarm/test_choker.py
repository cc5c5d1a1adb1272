"""Upload slots as a pure decision: given the peers (rates, interest, who is choked) and
`now`, the choker says whom to unchoke and whom to choke. No peers on the wire, no clock."""

import random
from dataclasses import dataclass

from veilstream.swarm.choker import Choker

CHOKE_S, OPTIMISTIC_S = 10.0, 30.0


@dataclass
class Candidate:
    conn: int
    download_rate: float = 0.0
    upload_rate: float = 0.0
    active: bool = True
    am_choking: bool = True
    peer_interested: bool = True


def choker(slots=3, seed=1):
    return Choker(slots, CHOKE_S, OPTIMISTIC_S, random.Random(seed))


def apply(result):
    """What the swarm does with a rechoke's answer."""
    unchoke, choke = result
    for peer in unchoke:
        peer.am_choking = False
    for peer in choke:
        peer.am_choking = True
    return {p.conn for p in unchoke}, {p.conn for p in choke}


def unchoked(peers):
    return {p.conn for p in peers if not p.am_choking}


def test_an_interested_peer_takes_a_free_slot_at_once_until_they_are_full():
    c = choker(slots=2)
    peers = [Candidate(1, am_choking=False), Candidate(2), Candidate(3, am_choking=False, active=False)]
    assert c.has_free_slot(peers)  # the closed one holds no slot
    peers[1].am_choking = False
    assert not c.has_free_slot(peers)


def test_a_slot_given_up_goes_to_the_best_waiting_giver():
    c = choker(slots=2)
    peers = [Candidate(1, am_choking=False), Candidate(2, download_rate=5.0), Candidate(3, download_rate=9.0),
             Candidate(4, download_rate=99.0, peer_interested=False), Candidate(5, download_rate=50.0, active=False)]
    assert [p.conn for p in c.fill_free_slots(peers)] == [3]
    peers[0].am_choking = True
    assert [p.conn for p in c.fill_free_slots(peers)] == [3, 2]


def test_rechoke_keeps_the_best_givers_plus_one_optimistic():
    c = choker(slots=3)
    peers = [Candidate(i, download_rate=float(i)) for i in range(1, 7)]
    assert c.rechoke_due(CHOKE_S) and not choker().rechoke_due(CHOKE_S - 1)
    up, down = apply(c.rechoke(peers, seeding=False, now=CHOKE_S))
    assert {6, 5} <= up and len(up) == 3 and not down  # two regular, one optimistic from 1..4
    assert not c.rechoke_due(CHOKE_S + 1) and c.rechoke_due(2 * CHOKE_S)


def test_a_seeder_ranks_by_what_peers_take_from_it():
    c = choker(slots=2)
    peers = [Candidate(1, download_rate=100.0, upload_rate=1.0), Candidate(2, upload_rate=50.0), Candidate(3)]
    up, _ = apply(c.rechoke(peers, seeding=True, now=CHOKE_S))
    assert 2 in up and len(up) == 2


def test_the_optimistic_slot_holds_until_its_interval_then_rotates():
    c = choker(slots=2, seed=7)
    peers = [Candidate(1, download_rate=10.0)] + [Candidate(i) for i in range(2, 12)]
    up, _ = apply(c.rechoke(peers, seeding=False, now=OPTIMISTIC_S))
    (optimistic,) = up - {1}
    for now in (OPTIMISTIC_S + CHOKE_S, OPTIMISTIC_S + 2 * CHOKE_S):  # within the interval: nothing moves
        assert apply(c.rechoke(peers, seeding=False, now=now)) == (set(), set())
    assert unchoked(peers) == {1, optimistic}
    rotated = set()
    for round_ in range(1, 30):  # each interval the slot may move to another peer (seeded: it does)
        up, down = apply(c.rechoke(peers, seeding=False, now=OPTIMISTIC_S * (round_ + 1)))
        assert len(unchoked(peers)) == 2 and 1 in unchoked(peers)
        rotated |= up
    assert rotated - {optimistic}


def test_peers_no_longer_interested_or_ranked_are_choked_and_closed_ones_ignored():
    c = choker(slots=2)
    peers = [Candidate(1, download_rate=5.0), Candidate(2, download_rate=1.0, am_choking=False, peer_interested=False),
             Candidate(3, am_choking=False, active=False)]
    up, down = apply(c.rechoke(peers, seeding=False, now=CHOKE_S))
    assert up == {1} and down == {2}
    assert not peers[2].am_choking  # a closed connection is not the choker's business


def test_an_optimistic_peer_that_is_choked_frees_the_slot_for_another_at_the_next_rechoke():
    c = choker(slots=1)  # no regular slot: the optimistic one only
    peers = [Candidate(1), Candidate(2)]
    up, _ = apply(c.rechoke(peers, seeding=False, now=OPTIMISTIC_S))
    (first,) = up
    chosen = next(p for p in peers if p.conn == first)
    chosen.am_choking, chosen.peer_interested = True, False  # it lost interest and was choked
    c.choked(first)
    up, _ = apply(c.rechoke(peers, seeding=False, now=OPTIMISTIC_S + CHOKE_S))  # before the interval is out
    assert up == {3 - first}
