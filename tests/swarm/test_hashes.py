"""BEP 52 hash requests: what we answer chains to the root, for every tree shape, in
libtorrent's layout; malformed requests are rejected, never answered wrongly."""

import os
from types import SimpleNamespace

import pytest

from veilstream.content import merkle
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.hashes import (
    HashServer,
    TreeShape,
    block_layer_request,
    chain_root,
    piece_layer_requests,
    piece_root_from_block_hashes,
)
from veilstream.swarm.wire import HashRequest


def fake_torrent(length, piece_length):
    data = os.urandom(length)
    pieces = [data[i : i + piece_length] for i in range(0, length, piece_length)]
    if length <= piece_length:
        hashes = [merkle.small_file_root(data)]
        root = hashes[0]
    else:
        hashes = [merkle.piece_hash(p, piece_length) for p in pieces]
        root = merkle.pieces_root(hashes, piece_length, length)
    torrent = SimpleNamespace(length=length, piece_length=piece_length, pieces_root=root,
                              piece_hash=lambda i: hashes[i])
    return torrent, pieces, hashes


SHAPES = [(5 * 65536 + 100, 65536), (3 * 16384, 65536), (1 << 20, 16384), (1200 * 32768, 32768)]


@pytest.mark.parametrize("length, piece_length", SHAPES)
def test_piece_layer_answers_chain_to_the_root(length, piece_length):
    torrent, pieces, hashes = fake_torrent(length, piece_length)
    shape = TreeShape(length, piece_length)
    server = HashServer(torrent, lambda i: pieces[i])
    layer = b""
    if shape.piece_count > 1:
        for request in piece_layer_requests(shape, torrent.pieces_root):
            answer = server.answer(request)
            assert chain_root(answer, request.base_layer, request.index, request.length, request.proof_layers) == torrent.pieces_root
            layer += answer[: 32 * request.length]
        assert layer[: 32 * shape.piece_count] == b"".join(hashes)


@pytest.mark.parametrize("length, piece_length", SHAPES)
def test_block_hashes_chain_to_their_piece_hash(length, piece_length):
    torrent, pieces, hashes = fake_torrent(length, piece_length)
    shape = TreeShape(length, piece_length)
    server = HashServer(torrent, lambda i: pieces[i])
    for index in range(min(shape.piece_count, 5)):
        assert piece_root_from_block_hashes(merkle.block_hashes(pieces[index]), shape) == hashes[index]
        if shape.blocks_per_piece > 1 or shape.piece_count == 1:
            request = block_layer_request(shape, torrent.pieces_root, index)
            answer = server.answer(request)
            assert chain_root(answer, 0, request.index, request.length, request.proof_layers) == hashes[index]


def test_requests_we_cannot_answer_are_rejected():
    torrent, pieces, _ = fake_torrent(5 * 65536, 65536)
    server = HashServer(torrent, lambda i: None)  # we hold no piece data
    root = torrent.pieces_root
    assert server.answer(HashRequest(root, 0, 0, 4, 1)) is None  # block hashes need data we lack
    assert server.answer(HashRequest(b"x" * 32, 2, 0, 8, 0)) is None  # another file
    assert server.answer(HashRequest(root, 2, 0, 3, 0)) is None  # length not a power of two
    assert server.answer(HashRequest(root, 2, 1, 2, 0)) is None  # index not aligned
    assert server.answer(HashRequest(root, 2, 0, 16, 0)) is None  # past the layer
    assert server.answer(HashRequest(root, 2, 0, 8, 9)) is None  # proof above the root
    assert server.answer(HashRequest(root, 2, 0, 8, 2)) is not None


def test_a_short_answer_is_the_peers_fault():
    with pytest.raises(RemoteProtocolError):
        chain_root(bytes(32 * 3), 0, 0, 4, 0)
