"""Fuzz targets: the event parser, the relay-frame parser and the index gate.

Each runs one bounded hypothesis pass by default (a few seconds); with VEIL_FUZZ_SECONDS
set (`make fuzz`), each repeats fresh passes until that many seconds have gone by.
Property: any input either parses or is refused with `InvalidEvent` (or a
`ProtocolViolation`); nothing else escapes, and whatever parses and verifies
serializes back to an equal event.
"""

import json
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veilstream.social.errors import InvalidEvent
from veilstream.social.events import NostrKey, parse_event_json, sign_event, verify_event
from veilstream.social import kinds
from veilstream.social.index import FeedIndex
from veilstream.social.protocol import RelaySession

FUZZ_SECONDS = float(os.environ.get("VEIL_FUZZ_SECONDS") or 0)
KEY = NostrKey()
SEED_EVENTS = [
    sign_event(KEY, 1063, "desc \u2028 é", [["i", "ab" * 32], ["title", "t"], ["t", "x"]], created_at=1_700_000_000),
    sign_event(KEY, 7, "+", [["e", "cd" * 32], ["p", KEY.nostr_pubkey]], created_at=1_700_000_000),
    sign_event(KEY, 1111, "c\n\"", [["E", "cd" * 32], ["e", "cd" * 32]], created_at=1_700_000_000),
]
SEED_JSON = [e.to_json().encode() for e in SEED_EVENTS]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_events(draw) -> bytes:
    """A valid event's bytes with a few byte-level edits, or one field swapped for junk."""
    seed = draw(st.sampled_from(SEED_JSON))
    if draw(st.booleans()):
        data = json.loads(seed)
        field = draw(st.sampled_from(sorted(data)))
        data[field] = draw(json_values)
        return json.dumps(data).encode()
    raw = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and position < len(raw):
            raw[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            raw[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif position < len(raw):
            del raw[position]
    return bytes(raw)


event_inputs = mutated_events() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())


def run_for_budget(test) -> None:
    deadline = time.monotonic() + FUZZ_SECONDS
    test()
    while time.monotonic() < deadline:
        test()


def test_fuzz_event_parser():
    @settings(max_examples=400 if not FUZZ_SECONDS else 5_000, database=None,
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(raw=event_inputs)
    def target(raw):
        try:
            event = parse_event_json(raw)
        except InvalidEvent:
            return
        try:
            verify_event(event)
        except InvalidEvent:
            return
        assert parse_event_json(event.to_json()) == event

    run_for_budget(target)


def test_fuzz_relay_frames():
    @settings(max_examples=300 if not FUZZ_SECONDS else 5_000, database=None,
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(verb=st.sampled_from(["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "AUTH", "COUNT", "X"]),
           args=st.lists(json_values | st.just("veil-1"), max_size=4), junk=st.binary(max_size=50))
    def target(verb, args, junk):
        session = RelaySession()
        session.subscribe([{}])
        for frame in (json.dumps([verb, *args]), junk):
            for relay_event in session.receive(frame):
                assert not isinstance(relay_event, Exception)
        assert session.violations <= 2

    run_for_budget(target)


def test_fuzz_index_gate(tmp_path):
    with FeedIndex(tmp_path / "fuzz.sqlite3", clock=lambda: 1_700_000_000) as index:
        for event in SEED_EVENTS:
            index.ingest(event)

        @settings(max_examples=150 if not FUZZ_SECONDS else 2_000, database=None,
                  suppress_health_check=list(HealthCheck), deadline=None)
        @given(raw=event_inputs)
        def target(raw):
            result = index.ingest(raw)
            assert result.reason == "stored" or not result.accepted

        run_for_budget(target)
        assert index.consistency_problems() == []


# Signed events with hostile tags and content: they pass the signature check, so what is
# fuzzed is every kind's reader and the SQL behind it.
tag_names = st.sampled_from(["e", "E", "p", "P", "k", "K", "i", "title", "terms", "duration", "size", "preview",
                             "t", "m", "r", "nonce", "magnet", "L", "l"])
tag_values = st.text(max_size=70) | st.sampled_from(["²", "9" * 5000, "1e400", "nan", "-1", "ab" * 32, "{}", "[" * 3000])


@st.composite
def signed_hostile_events(draw):
    tags = draw(st.lists(st.builds(lambda n, v: [n, *v], tag_names, st.lists(tag_values, max_size=4)), max_size=8))
    content = draw(st.text(max_size=200) | st.sampled_from(['{"name": "x", "veilstream_wallet": 5}', "[" * 5000, "-"]))
    kind = draw(st.sampled_from(sorted(kinds.KNOWN_KINDS)))
    return sign_event(KEY, kind, content, tags, created_at=1_700_000_000 - draw(st.integers(0, 10**6)))


def test_fuzz_kind_readers(tmp_path):
    with FeedIndex(tmp_path / "kinds.sqlite3", rate_limit=None, clock=lambda: 1_700_000_000) as index:
        for event in SEED_EVENTS:
            index.ingest(event)

        @settings(max_examples=200 if not FUZZ_SECONDS else 3_000, database=None,
                  suppress_health_check=list(HealthCheck), deadline=None)
        @given(event=signed_hostile_events())
        def target(event):
            index.ingest(event)

        run_for_budget(target)
        assert index.consistency_problems() == []
