"""The magnet fetch as a machine of its own: what to ask a peer now, and a verdict on each
reply. The info dict must hash to the info-hash and the piece layer chain to its root;
anything else is the sender's fault (and a lie costs a ban). Explicit `now`, no peers."""

from hashlib import sha256

from veilstream.content import bencode
from veilstream.swarm import wire
from veilstream.swarm.hashes import HashServer, TreeShape, piece_layer_requests
from veilstream.swarm.magnet import (
    NEED_MORE,
    BadMetadata,
    MetadataComplete,
    MetadataFetch,
    MetadataUnusable,
    NeedPieceLayer,
)

TIMEOUT_S = 10.0


def info_of(torrent):
    raw = torrent.info_bytes
    return raw, len(raw)


def fetch_info(torrent, now=0.0):
    """A fetch past step 1: the info dict asked for and received."""
    fetch = MetadataFetch(torrent.info_hash, TIMEOUT_S)
    raw, size = info_of(torrent)
    assert fetch.metadata_requests(size, now) == [0]  # our info dicts fit one 16 KiB piece
    return fetch, fetch.metadata_received(0, size, raw)


def answer(torrent, request, tamper=False):
    server = HashServer(torrent, lambda index: None)  # the piece layer needs no piece data
    hashes = server.answer(request)
    if tamper:
        hashes = bytes(32) + hashes[32:]
    return wire.Hashes(request.pieces_root, request.base_layer, request.index, request.length, request.proof_layers,
                       hashes)


def test_nothing_is_asked_of_a_peer_that_gave_no_size_or_an_absurd_one(content):
    fetch = MetadataFetch(content.torrent.info_hash, TIMEOUT_S)
    assert fetch.metadata_requests(None, 0.0) == []
    assert fetch.metadata_requests(0, 0.0) == []
    assert fetch.metadata_requests(1 << 30, 0.0) == []


def test_metadata_pieces_are_asked_once_then_again_after_the_timeout_or_a_reject(content):
    fetch = MetadataFetch(content.torrent.info_hash, TIMEOUT_S)
    size = info_of(content.torrent)[1]
    assert fetch.metadata_requests(size, 0.0) == [0]
    assert fetch.metadata_requests(size, TIMEOUT_S - 1) == []  # asked: not of this peer too
    assert fetch.metadata_requests(size, TIMEOUT_S) == [0]
    fetch.metadata_rejected(0)
    assert fetch.metadata_requests(size, TIMEOUT_S + 1) == [0]


def test_a_one_piece_content_is_complete_with_its_info_dict(one_piece_content):
    torrent = one_piece_content.torrent
    fetch, verdict = fetch_info(torrent)
    assert isinstance(verdict, MetadataComplete)
    assert verdict.torrent.content_id == torrent.content_id
    assert verdict.torrent.piece_hash(0) == torrent.piece_hash(0)


def test_metadata_of_another_size_or_that_does_not_hash_is_refused(content):
    torrent = content.torrent
    fetch = MetadataFetch(torrent.info_hash, TIMEOUT_S)
    raw, size = info_of(torrent)
    assert fetch.metadata_received(0, size, raw) is NEED_MORE  # nothing asked yet: ignored
    fetch.metadata_requests(size, 0.0)
    assert fetch.metadata_received(0, size + 1, raw) == BadMetadata("metadata total_size differs from the handshake's", False)
    assert not fetch.metadata_received(0, size, raw[:-1]).ban  # malformed: the wrong length
    forged = raw.replace(b"piece length", b"piece lengtH")
    assert fetch.metadata_received(0, size, forged) == BadMetadata("metadata does not hash to the info-hash", True)
    assert fetch.metadata_requests(size, 1.0) == [0]  # starts over, with whoever is asked next


def test_an_info_dict_that_is_no_veilstream_torrent_is_unusable():
    raw = bencode.encode({b"name": b"not ours", b"piece length": 16384})
    fetch = MetadataFetch(sha256(raw).digest(), TIMEOUT_S)
    fetch.metadata_requests(len(raw), 0.0)
    verdict = fetch.metadata_received(0, len(raw), raw)
    assert isinstance(verdict, MetadataUnusable) and "not a Veilstream torrent" in str(verdict.error)


def test_the_piece_layer_is_asked_of_helpers_and_checked_against_the_root(content):
    torrent = content.torrent
    fetch, verdict = fetch_info(torrent)
    assert isinstance(verdict, NeedPieceLayer)
    assert fetch.metadata_requests(len(torrent.info_bytes), 100.0) == []  # step 1 is over
    assert fetch.layer_requests([], 0.0) == []  # nobody to ask: nothing marked asked
    asks = fetch.layer_requests(["peer-a", "peer-b"], 0.0)
    expected = piece_layer_requests(TreeShape(torrent.length, torrent.piece_length), torrent.pieces_root)
    assert [request for _, request in asks] == expected
    assert {helper for helper, _ in asks} <= {"peer-a", "peer-b"}
    assert fetch.layer_requests(["peer-a"], 1.0) == []  # in flight
    (helper, request), = asks  # a 21-piece layer is one request
    assert fetch.layer_received(request.index, answer(torrent, request, tamper=True)) == BadMetadata(
        "piece-layer hashes do not chain to the pieces root", True)
    done = fetch.layer_received(request.index, answer(torrent, request))
    assert isinstance(done, MetadataComplete)
    assert done.torrent.content_id == torrent.content_id
    assert [done.torrent.piece_hash(i) for i in range(torrent.piece_count)] == \
        [torrent.piece_hash(i) for i in range(torrent.piece_count)]


def test_a_lost_layer_request_is_asked_again_at_once_and_a_late_one_after_the_timeout(content):
    fetch, _ = fetch_info(content.torrent)
    (_, request), = fetch.layer_requests(["a"], 0.0)
    fetch.layer_lost(request.index)  # rejected, or its peer left
    assert [r for _, r in fetch.layer_requests(["b"], 1.0)] == [request]
    assert fetch.layer_requests(["b"], 1.0 + TIMEOUT_S - 0.5) == []
    assert [r for _, r in fetch.layer_requests(["b"], 1.0 + TIMEOUT_S)] == [request]
