"""The picker: the playback window first (earliest deadline, fast peers), rarest first
outside it, `seek()` moves the window at once, endgame duplicates only at the tail."""

import random

from veilstream.swarm.picker import PiecePicker

PL = 4 * 16384  # 4 blocks per piece


def picker(pieces=20, window=2, have=None):
    return PiecePicker(pieces, PL, pieces * PL - 1000, window, have, rng=random.Random(1))


def everything(n=20):
    return bytearray([1] * n)


def test_window_pieces_come_first_in_deadline_order():
    p = picker()
    assert p.pick("a", everything(), 8) == [(0, b) for b in range(4)] + [(1, b) for b in range(4)]


def test_seek_moves_the_window_at_once():
    p = picker()
    p.pick("a", everything(), 2)
    p.seek(10)
    assert [piece for piece, _ in p.pick("a", everything(), 8)] == [10] * 4 + [11] * 4


def test_outside_the_window_rarest_goes_first():
    p = picker(window=1)
    p.add_peer(everything())
    common = bytearray(20)
    common[13] = 1
    p.add_peer(common)  # piece 13 is held by two peers, every other piece by one
    order = [piece for piece, block in p.pick("a", everything(), 80) if block == 0]
    assert order[0] == 0  # the window first
    assert order[-1] == 13  # the most common piece last


def test_slow_peers_get_no_window_pieces_while_others_remain():
    p = picker(window=2)
    picks = p.pick("slow", everything(), 4, fast=False)
    assert all(piece >= 2 for piece, _ in picks)


def test_a_late_window_block_is_asked_of_a_second_peer():
    p = picker(window=1)
    p.deadline_rerequest_s = 1.0
    first = p.pick("slow", everything(), 4, now=0.0)
    assert [piece for piece, _ in first] == [0] * 4
    assert all(piece != 0 for piece, _ in p.pick("fast", everything(), 4, now=0.5))
    late = p.pick("fast", everything(), 8, now=2.0)
    assert [(0, b) for b in range(4)] == late[:4]


def test_endgame_duplicates_outstanding_blocks_only_at_the_end():
    p = picker(pieces=2, window=2)
    assert len(p.pick("a", everything(2), 100)) == 8
    dup = p.pick("b", everything(2), 100)
    assert len(dup) == 8  # every block is outstanding at a: b may duplicate them
    new, others = p.block_received(0, 0, "b")
    assert new and others == ["a"]
    assert p.block_received(0, 0, "a") == (False, [])


def test_abort_makes_blocks_requestable_again():
    p = picker(pieces=1, window=1)
    picks = p.pick("a", everything(1), 4)
    for piece, block in picks:
        p.abort(piece, block, "a")
    assert p.pick("b", everything(1), 4) == picks


def test_verified_and_failed_pieces():
    p = picker(pieces=2, window=2)
    for piece, block in p.pick("a", everything(2), 4):
        p.block_received(piece, block, "a")
    assert p.piece_ready(0)
    p.piece_failed(0)
    assert [piece for piece, _ in p.pick("a", everything(2), 4)] == [0] * 4
    for block in range(4):
        p.block_received(0, block, "a")
    p.piece_verified(0)
    assert p.have[0] and p.missing == 1 and not p.complete


def test_peers_lacking_pieces_get_nothing_and_last_block_is_short():
    p = picker()
    assert p.pick("a", bytearray(20), 10) == []
    assert p.block_length(19, 3) == 16384 - 1000


def test_whole_pieces_keep_a_started_piece_with_its_peer():
    p = picker(window=4)
    p.whole_pieces = True
    assert p.pick("a", everything(), 2) == [(0, 0), (0, 1)]
    assert [piece for piece, _ in p.pick("b", everything(), 4)] == [1] * 4  # not the rest of piece 0
    assert p.pick("a", everything(), 2) == [(0, 2), (0, 3)]
    p.whole_pieces = False
    q = picker(window=4)
    q.pick("a", everything(), 2)
    assert q.pick("b", everything(), 2) == [(0, 2), (0, 3)]  # without it, b takes over half of piece 0


def test_whole_pieces_go_to_another_peer_once_given_back_or_late():
    p = picker(window=2)
    p.whole_pieces = True
    p.deadline_rerequest_s = 1.0
    p.pick("a", everything(), 1, now=0.0)
    p.abort(0, 0, "a")  # a gave its block back: the piece is anyone's
    assert p.pick("b", everything(), 4, now=0.1)[:4] == [(0, b) for b in range(4)]
    q = picker(window=2)
    q.whole_pieces = True
    q.deadline_rerequest_s = 1.0
    q.pick("a", everything(), 1, now=0.0)
    assert (0, 1) not in q.pick("b", everything(), 4, now=0.5)
    assert (0, 1) in q.pick("c", everything(), 8, now=2.0)  # a is late with a window piece


def test_without_endgame_outstanding_blocks_are_not_duplicated():
    p = picker(pieces=2, window=2)
    p.endgame = False
    assert len(p.pick("a", everything(2), 100)) == 8
    assert p.pick("b", everything(2), 100) == []


def test_sequential_takes_pieces_in_order_from_the_position_and_slow_peers_from_the_end():
    p = picker(pieces=20, window=2)
    p.sequential = True
    p.seek(5)
    firsts = [piece for piece, block in p.pick("a", everything(), 4 * 8) if block == 0]
    assert firsts == [5, 6, 7, 8, 9, 10, 11, 12]  # the window, then in order
    slow = [piece for piece, block in p.pick("b", everything(), 8, fast=False) if block == 0]
    assert slow == [4, 3]  # what the player needs last (after the end, the pieces before the seek)
