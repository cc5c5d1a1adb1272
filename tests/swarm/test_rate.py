"""The token bucket as a specification: over any schedule of asks, what it grants by time t
never exceeds its burst plus rate × t; without a limit it grants everything; and it says
when to come back instead of making anyone poll."""

import pytest
from hypothesis import given, strategies as st

from veilstream.swarm.errors import LocalProtocolError
from veilstream.swarm.rate import (
    BURST_S,
    MIN_BURST_BYTES,
    NO_LIMIT_ALLOWANCE,
    RateLimits,
    Throttle,
    TokenBucket,
)

rates = st.integers(min_value=1, max_value=50 * 1024 * 1024)
# a schedule: (seconds since the last ask, bytes asked for), clocks may also stand still
asks = st.lists(st.tuples(st.floats(min_value=0, max_value=2.0, allow_nan=False), st.integers(min_value=0, max_value=1 << 22)),
                max_size=200)


@given(rate=rates, schedule=asks)
def test_granted_by_any_time_never_exceeds_burst_plus_rate_times_elapsed(rate, schedule):
    bucket = TokenBucket(rate, now=0.0)
    now = granted = 0.0
    for gap, wanted in schedule:
        now += gap
        got = bucket.grant(wanted, now)
        assert 0 <= got <= wanted
        granted += got
        assert granted <= bucket.burst_bytes + rate * now + 1e-6 * max(1.0, rate * now)


@given(rate=rates, schedule=asks)
def test_blocks_asked_whole_through_allowance_and_spend_keep_the_bound(rate, schedule):
    bucket = TokenBucket(rate, now=0.0)
    now = sent = 0.0
    for gap, wanted in schedule:
        now += gap
        block = min(wanted, MIN_BURST_BYTES)
        if bucket.allowance(now) >= block:
            bucket.spend(block, now)
            sent += block
        else:
            assert bucket.ready_at(block, now) > now  # told when, never "now" while there is no room
        assert sent <= bucket.burst_bytes + rate * now + 1e-6 * max(1.0, rate * now)


@given(schedule=asks)
def test_no_limit_grants_everything_and_counts_nothing(schedule):
    bucket = TokenBucket(0)
    now = 0.0
    for gap, wanted in schedule:
        now += gap
        assert bucket.grant(wanted, now) == wanted
        assert bucket.ready_at(wanted, now) == now
    assert bucket.allowance(now) == NO_LIMIT_ALLOWANCE and not bucket.limited


@given(rate=rates, wanted=st.integers(min_value=1, max_value=1 << 24), start=st.floats(min_value=0, max_value=1e6))
def test_ready_at_is_when_the_bytes_may_go(rate, wanted, start):
    bucket = TokenBucket(rate, now=start)
    bucket.grant(bucket.allowance(start), start)  # empty it
    at = bucket.ready_at(wanted, start)
    assert at > start
    assert bucket.allowance(at + 1e-6) >= min(wanted, bucket.burst_bytes) - 1  # float rounding of the refill


def test_burst_is_a_quarter_second_of_the_rate_and_at_least_one_block():
    assert TokenBucket(4 * 1024 * 1024).burst_bytes == int(4 * 1024 * 1024 * BURST_S)
    assert TokenBucket(1000).burst_bytes == MIN_BURST_BYTES  # 16 KiB blocks still go at 1000 bytes/s


def test_a_rate_change_takes_effect_at_once_keeping_no_more_than_the_new_burst():
    bucket = TokenBucket(1_000_000, now=0.0)
    bucket.set_rate(20_000, now=10.0)
    assert bucket.allowance(10.0) == bucket.burst_bytes == MIN_BURST_BYTES
    bucket.grant(MIN_BURST_BYTES, 10.0)
    assert bucket.grant(1 << 20, 11.0) == MIN_BURST_BYTES  # capped at the new burst, refilled at the new rate
    bucket.set_rate(0, now=11.0)
    assert bucket.grant(1 << 30, 11.0) == 1 << 30
    bucket.set_rate(100_000, now=12.0)  # from no limit: it starts full
    assert bucket.allowance(12.0) == bucket.burst_bytes


def test_a_clock_that_steps_back_grants_nothing_extra():
    bucket = TokenBucket(100_000, now=50.0)
    bucket.grant(bucket.allowance(50.0), 50.0)
    assert bucket.allowance(40.0) == 0
    assert bucket.allowance(50.0) == 0


def test_spending_beyond_the_allowance_is_our_bug():
    bucket = TokenBucket(100_000, now=0.0)
    with pytest.raises(LocalProtocolError):
        bucket.spend(bucket.burst_bytes + 1, 0.0)


@pytest.mark.parametrize("bad", [-1, 1.5, "fast", True])
def test_a_rate_is_a_whole_number_of_bytes_per_second(bad):
    with pytest.raises(LocalProtocolError, match="bytes/s"):
        TokenBucket(bad)
    limits = RateLimits(1000, 2000)
    with pytest.raises(LocalProtocolError, match="download"):
        limits.set(upload=5000, download=bad, now=0.0)
    assert limits.rates == (1000, 2000)  # neither applied


@given(own=st.integers(0, 1 << 22), shared=st.integers(0, 1 << 22), schedule=asks)
def test_a_throttle_grants_no_more_than_its_tightest_bucket(own, shared, schedule):
    own_bucket, shared_bucket = TokenBucket(own), TokenBucket(shared)
    throttle = Throttle(own_bucket, shared_bucket)
    now = sent = 0.0
    for gap, wanted in schedule:
        now += gap
        n = min(wanted, throttle.allowance(now))
        throttle.spend(n, now)
        sent += n
        for bucket in (own_bucket, shared_bucket):
            if bucket.limited:
                assert sent <= bucket.burst_bytes + bucket.rate_bytes_s * now + 1e-6 * max(1.0, bucket.rate_bytes_s * now)
    assert throttle.limited == bool(own or shared)
