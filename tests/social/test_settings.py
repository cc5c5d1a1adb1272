"""The social settings pack: one place for the layer's tunables, each checked when set."""

import pytest

from veilstream.social import SocialError, SocialSettings
from veilstream.social.index import FeedIndex, RateLimit
from veilstream.social.protocol import RelaySession
from veilstream.social.relay_client import RelayConnection, RelayPool


def test_defaults_are_what_the_layer_runs_by(tmp_path):
    settings = SocialSettings()
    session = RelaySession()
    assert (session.event_budget, session.max_violations) == (10_000, 50)
    assert (settings.relay_event_budget, settings.relay_max_violations) == (10_000, 50)
    assert RateLimit() == RateLimit(60, 60) == RateLimit.of(settings)
    with FeedIndex(tmp_path / "i.sqlite3") as index:
        assert index.rate_limit == RateLimit(60, 60) and index.min_pow_bits == 0
        assert index.settings.max_future_s == 15 * 60


@pytest.mark.parametrize(
    "change",
    [
        {"relay_open_timeout_s": 0},
        {"relay_reply_timeout_s": -1.0},
        {"relay_event_budget": 0},
        {"relay_event_budget": 2.5},
        {"sync_card_limit": True},
        {"rate_limit_events": -1},
        {"rate_limit_window_s": 1.5},
        {"min_pow_bits": 257},
        {"preview_jpeg_quality": 100},
        {"preview_thumbnail_at_fraction": 1.5},
        {"max_blob_bytes": "64 MiB"},
    ],
)
def test_a_bad_value_is_refused_with_its_name(change):
    (name,) = change
    with pytest.raises(SocialError, match=name):
        SocialSettings().but(**change)


def test_zero_turns_a_guard_off(tmp_path):
    assert RateLimit.of(SocialSettings(rate_limit_events=0)) is None
    with FeedIndex(tmp_path / "i.sqlite3", settings=SocialSettings(rate_limit_events=0)) as index:
        assert index.rate_limit is None


def test_keyword_arguments_override_the_settings(tmp_path):
    settings = SocialSettings(relay_open_timeout_s=1.0, relay_event_budget=5, min_pow_bits=4)
    connection = RelayConnection("ws://127.0.0.1:1", settings=settings, open_timeout=3.0)
    assert connection.settings.relay_open_timeout_s == 3.0 and connection.session.event_budget == 5
    pool = RelayPool(["ws://127.0.0.1:1"], settings=settings, reply_timeout=0.5, event_budget=7)
    assert (pool.settings.relay_reply_timeout_s, pool.settings.relay_event_budget) == (0.5, 7)
    assert pool.settings.relay_open_timeout_s == 1.0
    with FeedIndex(tmp_path / "i.sqlite3", settings=settings, min_pow_bits=8, rate_limit=None) as index:
        assert index.min_pow_bits == 8 and index.rate_limit is None
    with pytest.raises(SocialError, match="relay_open_timeout_s"):
        RelayConnection("ws://127.0.0.1:1", open_timeout=0)
