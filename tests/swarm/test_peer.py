"""The peer record's helpers, with explicit `now`: how deep its request queue is, when
its requests time out, how many hash requests it may make, how its rates move, and the
bounds that make a hostile peer cost its connection."""

import pytest

from veilstream.swarm.connection import PeerConnection
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.extensions import ExtensionHandshake
from veilstream.swarm.peer import (
    DEFAULT_PEER_REQQ,
    HASH_REQUEST_BURST,
    HASH_REQUEST_RATE_PER_S,
    MAX_UNREQUESTED_BYTES,
    RATE_SMOOTHING,
    SNUBBED_QUEUE_DEPTH,
    Peer,
)


def peer(now=0.0):
    return Peer(1, ("127.0.0.1", 1), PeerConnection(b"i" * 20, b"p" * 20, outbound=True), now)


def test_queue_depth_follows_the_peers_reqq_our_setting_and_snubbing():
    p = peer()
    assert p.queue_depth(512) == DEFAULT_PEER_REQQ and p.queue_depth(8) == 8
    p.ext = ExtensionHandshake(request_queue=1000)
    assert p.queue_depth(512) == 512
    p.snubbed = True
    assert p.queue_depth(512) == SNUBBED_QUEUE_DEPTH


def test_requests_expire_oldest_first():
    p = peer()
    p.requests = {(0, 0): 1.0, (0, 16384): 2.0, (1, 0): 5.0}
    assert p.expired_requests(21.9, 20.0) == [(0, 0)]
    assert p.expired_requests(25.0, 20.0) == [(0, 0), (0, 16384), (1, 0)]
    assert p.expired_requests(10.0, 20.0) == []


def test_hash_requests_are_a_token_bucket():
    p = peer()
    assert all(p.take_hash_token(0.0) for _ in range(HASH_REQUEST_BURST))
    assert not p.take_hash_token(0.0)
    assert p.take_hash_token(1 / HASH_REQUEST_RATE_PER_S)  # one more per 1/rate seconds
    assert not p.take_hash_token(1 / HASH_REQUEST_RATE_PER_S)
    assert sum(p.take_hash_token(1000.0) for _ in range(2 * HASH_REQUEST_BURST)) == HASH_REQUEST_BURST  # capped


def test_rates_are_moving_averages_of_what_moved():
    p = peer()
    p.downloaded, p.uploaded = 1000, 500
    p.update_rates(1.0)
    assert p.download_rate == pytest.approx(RATE_SMOOTHING * 1000) and p.upload_rate == pytest.approx(RATE_SMOOTHING * 500)
    p.update_rates(1.0)  # nothing moved since
    assert p.download_rate == pytest.approx((1 - RATE_SMOOTHING) * RATE_SMOOTHING * 1000)


def test_floods_of_unrequested_data_are_refused():
    p = peer()
    p.count_unrequested(MAX_UNREQUESTED_BYTES)
    with pytest.raises(RemoteProtocolError, match="never asked for"):
        p.count_unrequested(1)


def test_early_haves_are_bounded(monkeypatch):
    monkeypatch.setattr("veilstream.swarm.peer.MAX_EARLY_HAVES", 3)
    p = peer()
    for index in (5, 6, 7):
        p.note_early_have(index)
    with pytest.raises(RemoteProtocolError, match="too many have"):
        p.note_early_have(8)
    assert p.early_haves == {5, 6, 7}
