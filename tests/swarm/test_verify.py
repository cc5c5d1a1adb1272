"""Piece verification as a machine of its own: blocks in, verdicts out, no peers, no disk,
no clock. A piece is Verified only when its blocks reach the piece hash; a bad piece
names its culprit, or asks for block hashes to find one, or hands out strikes."""

import pytest

from veilstream.content.merkle import BLOCK_SIZE, block_hashes
from veilstream.swarm import wire
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.hashes import HashServer, block_layer_request
from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.verify import (
    HASH_FAILURE_STRIKES,
    Bad,
    HashElsewhere,
    NeedBlockHashes,
    PieceVerifier,
    Verified,
)

from .conftest import ciphertext


def piece_blocks(content, index, senders=(1,), lie_in=()):
    """(number, begin, data, sender) for each block of piece `index`; blocks whose number
    is in `lie_in` have one byte flipped. Senders take turns."""
    pl = content.torrent.piece_length
    data = ciphertext(content)[index * pl : (index + 1) * pl]
    out = []
    for number, begin in enumerate(range(0, len(data), BLOCK_SIZE)):
        block = bytearray(data[begin : begin + BLOCK_SIZE])
        if number in lie_in:
            block[0] ^= 0xFF
        out.append((number, begin, bytes(block), senders[number % len(senders)]))
    return out


def feed(verifier, index, blocks):
    """Every block in; all but the last must give no verdict."""
    verdicts = [verifier.add_block(index, number, begin, data, sender) for number, begin, data, sender in blocks]
    assert verdicts[:-1] == [None] * (len(verdicts) - 1)
    return verdicts[-1]


def make(content, hash_elsewhere=None):
    return PieceVerifier(content.torrent, bytearray, hash_elsewhere)


def answer_for(content, request):
    """What an honest peer holding the content answers to a hash request."""
    torrent = content.torrent
    server = HashServer(torrent, MemoryPieceStore.for_seeding(torrent, ciphertext(content)).read_piece)
    fields = (request.pieces_root, request.base_layer, request.index, request.length, request.proof_layers)
    return wire.Hashes(*fields, server.answer(request))


def test_a_whole_good_piece_is_verified_with_what_each_sender_gave(content):
    verifier = make(content)
    pl = content.torrent.piece_length
    verdict = feed(verifier, 3, piece_blocks(content, 3, senders=(1, 1, 2, 1)))
    assert isinstance(verdict, Verified) and verdict.index == 3
    assert bytes(verdict.buffer) == ciphertext(content)[3 * pl : 4 * pl]
    assert verdict.bytes_by_sender == ((1, 3 * BLOCK_SIZE), (2, BLOCK_SIZE))


def test_the_short_last_piece_counts_its_short_blocks(content):
    torrent = content.torrent
    last = torrent.piece_count - 1
    size = torrent.length - last * torrent.piece_length
    verdict = feed(make(content), last, piece_blocks(content, last))
    assert isinstance(verdict, Verified)
    assert len(verdict.buffer) == size and verdict.bytes_by_sender == ((1, size),)


def test_blocks_in_any_order_verify_the_same(content):
    verdict = feed(make(content), 2, list(reversed(piece_blocks(content, 2))))
    assert isinstance(verdict, Verified)


def test_a_bad_piece_from_one_sender_names_it(content):
    verdict = feed(make(content), 4, piece_blocks(content, 4, senders=(7,), lie_in={2}))
    assert verdict == Bad(4, (7,), "sent a bad block in piece 4")


def test_a_bad_piece_from_several_asks_for_block_hashes_and_they_name_the_liar(content):
    verifier = make(content)
    verdict = feed(verifier, 5, piece_blocks(content, 5, senders=(1, 2), lie_in={1}))  # block 1 came from 2
    assert isinstance(verdict, NeedBlockHashes)
    assert verdict.suspects == {1, 2}
    shape = verifier.shape
    assert verdict.request == block_layer_request(shape, content.torrent.pieces_root, 5)
    verifier.tracing(verdict)
    liars = verifier.block_hashes_arrived(5, answer_for(content, verdict.request))
    assert liars == Bad(5, (2,), "sent a bad block in piece 5")
    assert verifier.block_hashes_arrived(5, answer_for(content, verdict.request)) is None  # settled once


def test_block_hashes_that_do_not_chain_to_the_piece_hash_are_a_lie(content):
    verifier = make(content)
    verdict = feed(verifier, 6, piece_blocks(content, 6, senders=(1, 2), lie_in={0}))
    verifier.tracing(verdict)
    honest = answer_for(content, verdict.request)
    forged = wire.Hashes(honest.pieces_root, honest.base_layer, honest.index, honest.length, honest.proof_layers,
                         bytes(32) + honest.hashes[32:])
    with pytest.raises(RemoteProtocolError) as caught:
        verifier.block_hashes_arrived(6, forged)
    assert caught.value.ban


def test_with_nobody_to_ask_suspects_take_strikes_and_repeat_offenders_are_banned(content):
    verifier = make(content)
    first = feed(verifier, 7, piece_blocks(content, 7, senders=(1, 2), lie_in={0}))
    assert verifier.untraceable(7, first.suspects) == Bad(7, (), "shared in repeated bad pieces")
    second = feed(verifier, 8, piece_blocks(content, 8, senders=(2, 3), lie_in={0}))
    banned = verifier.untraceable(8, second.suspects)
    assert HASH_FAILURE_STRIKES == 2 and banned.culprits == (2,)  # 1 and 3 were in only one
    verifier.forget_peer(1)  # gone: a new connection with its id starts clean
    third = feed(verifier, 9, piece_blocks(content, 9, senders=(1, 4), lie_in={0}))
    assert verifier.untraceable(9, third.suspects).culprits == ()


def test_bulk_pieces_are_hashed_elsewhere_and_checked_the_same(content):
    verifier = make(content, hash_elsewhere=lambda index: index >= 5)  # a window of pieces 0..4
    assert isinstance(feed(verifier, 0, piece_blocks(content, 0)), Verified)
    handed = feed(verifier, 5, piece_blocks(content, 5))
    assert isinstance(handed, HashElsewhere) and handed.index == 5
    assert verifier.hashes_computed(5, block_hashes(handed.buffer)[:1]) is None  # wrong count: ignored
    handed = feed(verifier, 6, piece_blocks(content, 6, lie_in={3}))
    assert verifier.hashes_computed(6, block_hashes(handed.buffer)) == Bad(6, (1,), "sent a bad block in piece 6")
    handed = feed(verifier, 10, piece_blocks(content, 10))
    assert isinstance(verifier.hashes_computed(10, block_hashes(handed.buffer)), Verified)


def test_a_banned_peers_unverified_blocks_are_discarded(content):
    verifier = make(content, hash_elsewhere=lambda index: index == 12)
    blocks11 = piece_blocks(content, 11, senders=(1, 2))
    for number, begin, data, sender in blocks11[:2]:
        assert verifier.add_block(11, number, begin, data, sender) is None
    handed = feed(verifier, 12, piece_blocks(content, 12, senders=(2,)))
    assert isinstance(handed, HashElsewhere)
    assert verifier.discard_blocks_from(2) == [11, 12]
    assert verifier.hashes_computed(12, block_hashes(handed.buffer)) is None  # discarded meanwhile
    # piece 11 starts over: the remaining blocks alone do not complete it
    for number, begin, data, _ in blocks11[2:]:
        assert verifier.add_block(11, number, begin, data, 1) is None
    assert verifier.discard_blocks_from(3) == []
