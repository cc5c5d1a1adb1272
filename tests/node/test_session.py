"""The session core: cookies that expire and are not kept, the oldest session going first,
CSRF tokens compared in constant time, and unlock tries that get slower past a few
failures."""

from hypothesis import given
from hypothesis import strategies as st

from veilstream.node.session import Sessions, UnlockThrottle, cookie_name, csrf_matches


def sessions(**changes) -> Sessions:
    return Sessions(**{"idle_s": 60.0, "max_s": 600.0, "kept": 3, **changes})


def test_a_session_is_found_by_its_cookie_only_and_the_cookie_is_not_kept():
    table = sessions()
    cookie, session = table.open(now=0.0)
    assert table.find(cookie, now=1.0) is session
    assert table.find(cookie + "x", now=1.0) is None and table.find("", now=1.0) is None and table.find(None, 1.0) is None
    assert cookie not in repr(table._open)  # only its hash is held


def test_a_session_ends_when_idle_and_at_its_maximum_age_even_if_used():
    table = sessions()
    cookie, _ = table.open(now=0.0)
    assert table.find(cookie, now=61.0) is None and len(table) == 0
    cookie, _ = table.open(now=0.0)
    for now in range(30, 600, 30):  # used every 30 s: never idle
        assert table.find(cookie, now=float(now)) is not None
    assert table.find(cookie, now=601.0) is None


def test_the_oldest_session_goes_when_too_many_are_open_and_a_closed_one_is_gone():
    table = sessions()
    cookies = [table.open(now=float(i))[0] for i in range(4)]
    assert table.find(cookies[0], now=5.0) is None
    assert all(table.find(c, now=5.0) for c in cookies[1:])
    table.close(cookies[1])
    assert table.find(cookies[1], now=5.0) is None and len(table) == 2


def test_csrf_tokens_must_match_exactly():
    table = sessions()
    _, session = table.open(now=0.0)
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None) and not csrf_matches(session, "") and not csrf_matches(session, session.csrf[:-1])
    assert table.open(now=0.0)[1].csrf != session.csrf


def test_two_nodes_of_one_machine_name_their_cookies_apart():
    assert cookie_name(8467) != cookie_name(8468)


@given(free=st.integers(0, 6), failures=st.integers(0, 20), base=st.floats(0.1, 10), cap=st.floats(1, 600))
def test_the_wait_after_failures_doubles_past_the_free_ones_up_to_the_cap(free, failures, base, cap):
    throttle = UnlockThrottle(free_failures=free, base_delay_s=base, max_delay_s=cap)
    for _ in range(failures):
        throttle.failed(now=100.0)
    over = failures - free
    expected = 0.0 if over <= 0 else min(cap, base * 2 ** (over - 1))
    assert abs(throttle.wait_s(now=100.0) - expected) < 1e-9
    assert throttle.wait_s(now=100.0 + expected) == 0.0
    throttle.succeeded()
    assert throttle.wait_s(now=100.0) == 0.0 and throttle.failures == 0
