"""Rate limits in the protocol core, on a fake clock and no sockets: a limited upload sends
no more than its bucket allows by each moment and goes on when the clock moves; a limited
download asks for no more; the node's limit is shared by its contents; a content's own
limit and a change at runtime take effect at once; and no limit leaves the core as it was."""

import pytest

from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.node import new_peer_id
from veilstream.swarm.rate import BURST_S, MIN_BURST_BYTES, RateLimits
from veilstream.swarm.settings import SwarmSettings, SwarmSettingsError
from veilstream.swarm.swarm import Swarm

from .conftest import ciphertext, connect, leecher_core, seeder_core

KIB = 1024
STEP_S = 0.05  # the fake clock's step


def burst(rate):
    return max(MIN_BURST_BYTES, int(rate * BURST_S))


def run_clock(links, done, *, bound=None, limit_s=60.0):
    """Move the fake clock in steps, ticking each core and pumping each link, until
    `done()`; `bound(now)` is checked after every step. Returns the time it took."""
    now = 0.0
    for link in links:
        link.now = now
        link.pump()
    while not done():
        now += STEP_S
        assert now < limit_s, "the transfer stalled"
        for core in {c for link in links for c in (link.a, link.b)}:
            core.tick(now)
        for link in links:
            link.now = now
            link.pump()
        if bound is not None:
            bound(now)
    return now


def test_a_limited_upload_sends_no_more_than_allowed_and_resumes_when_the_clock_moves(content):
    rate = 256 * KIB
    seeder = seeder_core(content, SwarmSettings(upload_rate_limit=rate))
    leecher = leecher_core(content)
    link = connect(leecher, seeder)
    link.pump()
    assert seeder.uploaded_bytes == burst(rate)  # the bucket starts full: one burst, then it waits
    wake = seeder.rate_wake_at
    assert wake is not None and wake > 0.0  # it says when to come back: no polling
    link.pump()
    assert seeder.uploaded_bytes == burst(rate)  # the same moment again: nothing more
    seeder.rate_refilled(wake)
    link.now = wake
    link.pump()
    assert burst(rate) < seeder.uploaded_bytes <= burst(rate) + rate * wake + 1
    assert leecher.store.have_count < content.torrent.piece_count


def test_a_limited_upload_takes_at_least_size_over_rate_and_never_exceeds_the_bucket(content):
    rate = 256 * KIB
    seeder = seeder_core(content, SwarmSettings(upload_rate_limit=rate))
    leecher = leecher_core(content)
    length = content.torrent.length

    def bound(now):
        assert seeder.uploaded_bytes <= burst(rate) + rate * now

    took = run_clock([connect(leecher, seeder)], lambda: leecher.finished, bound=bound)
    assert took >= (length - burst(rate)) / rate
    assert took <= length / rate + 1.0  # and it is not slower than the limit needs
    assert leecher.store.contents() == ciphertext(content)


def test_a_limited_download_asks_for_no_more_than_allowed(content):
    rate = 192 * KIB
    seeder = seeder_core(content)
    leecher = leecher_core(content, settings=SwarmSettings(download_rate_limit=rate))
    length = content.torrent.length

    def bound(now):
        assert leecher.downloaded_bytes <= burst(rate) + rate * now

    took = run_clock([connect(leecher, seeder)], lambda: leecher.finished, bound=bound)
    assert took >= (length - burst(rate)) / rate
    assert leecher.store.contents() == ciphertext(content)


def test_the_node_limit_is_shared_by_every_content(content, one_piece_content):
    rate = 256 * KIB
    shared = RateLimits(upload_bytes_s=rate)
    seeders = [Swarm(c.torrent.info_hash, peer_id=new_peer_id(), torrent=c.torrent, shared_limits=shared,
                     store=MemoryPieceStore.for_seeding(c.torrent, ciphertext(c))) for c in (content, one_piece_content)]
    leechers = [leecher_core(c) for c in (content, one_piece_content)]
    links = [connect(leecher, seeder) for leecher, seeder in zip(leechers, seeders)]

    def bound(now):
        assert sum(s.uploaded_bytes for s in seeders) <= burst(rate) + rate * now

    total = content.torrent.length + one_piece_content.torrent.length
    took = run_clock(links, lambda: all(leecher.finished for leecher in leechers), bound=bound)
    assert took >= (total - burst(rate)) / rate


def test_a_contents_own_limit_applies_beside_an_unlimited_node(content):
    rate = 128 * KIB
    seeder = seeder_core(content)
    seeder.set_rate_limits(upload=rate, now=0.0)
    leecher = leecher_core(content)
    link = connect(leecher, seeder)
    link.pump()
    assert seeder.uploaded_bytes == burst(rate)
    assert seeder.rate_limits.rates == (rate, 0) and seeder.shared_limits.rates == (0, 0)


def test_a_limit_lifted_at_runtime_lets_the_rest_go_at_once(content):
    seeder = seeder_core(content, SwarmSettings(upload_rate_limit=64 * KIB))
    leecher = leecher_core(content)
    link = connect(leecher, seeder)
    link.pump()
    assert not leecher.finished and seeder.rate_wake_at is not None
    seeder.shared_limits.set(upload=0, now=0.0)
    seeder.rate_refilled(0.0)  # what the node does after changing its limits
    link.pump()
    assert leecher.finished  # the clock never moved


def test_a_limit_set_at_runtime_holds_from_then_on(content):
    rate = 64 * KIB
    seeder = seeder_core(content)
    leecher = leecher_core(content)
    link = connect(leecher, seeder)
    seeder.set_rate_limits(upload=rate, now=0.0)
    link.pump()
    assert seeder.uploaded_bytes == burst(rate)
    seeder.set_rate_limits(upload=0, now=0.0)
    link.pump()
    assert leecher.finished


def test_a_block_waiting_on_the_limit_is_not_charged_by_the_upload_gate(content):
    # The market's gate counts a yes as a charge for a block that must then go: a block held
    # by the rate limit must never have been put to the gate.
    seeder = seeder_core(content, SwarmSettings(upload_rate_limit=64 * KIB))
    asked = []
    seeder.upload_gate = lambda conn, piece, length: asked.append(length) or True
    link = connect(leecher_core(content), seeder)
    link.pump()
    assert sum(asked) == seeder.uploaded_bytes == burst(64 * KIB)


def test_without_limits_nothing_waits(content):
    seeder, leecher = seeder_core(content), leecher_core(content)
    connect(leecher, seeder).pump()
    assert leecher.finished
    assert seeder.rate_wake_at is None and leecher.rate_wake_at is None


@pytest.mark.parametrize("key, value, allowed", [
    ("upload_rate_limit", -1, "0 for no limit"),
    ("download_rate_limit", 1.5, "whole number of bytes/s"),
    ("upload_rate_limit", "2MiB", "whole number of bytes/s"),
    ("max_connections", 0, "1 or more"),
])
def test_a_bad_limit_setting_is_one_line_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(SwarmSettingsError) as caught:
        SwarmSettings(**{key: value})
    message = str(caught.value)
    assert message.startswith(f"{key} = {value!r} is not allowed") and allowed in message and "\n" not in message
