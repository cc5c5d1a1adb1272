"""The sans-IO relay session, fed hostile frames directly: no sockets needed."""

import json

from veilstream.social.events import NostrKey, sign_event
from veilstream.social.protocol import (
    EndOfStoredEvents,
    EventReceived,
    Notice,
    ProtocolViolation,
    PublishAcknowledged,
    RelaySession,
    SubscriptionClosed,
)


def test_publish_and_acknowledge():
    session = RelaySession()
    event = sign_event(NostrKey(), 1, "hi")
    frame = session.publish(event)
    assert json.loads(frame) == ["EVENT", event.to_dict()]
    assert session.receive(json.dumps(["OK", event.id, True, ""])) == [PublishAcknowledged(event.id, True, "")]
    # A second OK, or one for an event never sent, is the relay's mistake.
    assert isinstance(session.receive(json.dumps(["OK", event.id, True, ""]))[0], ProtocolViolation)


def test_subscription_lifecycle():
    session = RelaySession()
    sub, frame = session.subscribe([{"kinds": [1063], "limit": 10}])
    assert json.loads(frame) == ["REQ", sub, {"kinds": [1063], "limit": 10}]
    event = sign_event(NostrKey(), 1063, "x").to_dict()
    assert session.receive(json.dumps(["EVENT", sub, event])) == [EventReceived(sub, event)]
    assert session.receive(json.dumps(["EOSE", sub])) == [EndOfStoredEvents(sub)]
    assert session.receive(json.dumps(["NOTICE", "hello"])) == [Notice("hello")]
    assert session.receive(json.dumps(["CLOSED", sub, "bye"])) == [SubscriptionClosed(sub, "bye")]
    assert session.open_subscriptions == []
    assert session.violations == 0


def test_garbage_frames_are_violations_not_exceptions():
    session = RelaySession(max_violations=8)
    sub, _ = session.subscribe([{}])
    frames = [
        "not json", "{}", "[]", "[1]", '["WHAT"]', '["EVENT", "nosuch", {}]', '["EVENT", "%s"]' % sub,
        '["OK", 5, true]', "x" * 100_000,
    ]
    for frame in frames:
        reported = session.receive(frame)
        assert len(reported) == 1 and isinstance(reported[0], ProtocolViolation), frame
    assert session.should_disconnect


def test_a_flooding_relay_gets_its_subscription_closed():
    session = RelaySession(event_budget=3)
    sub, _ = session.subscribe([{}])
    event = sign_event(NostrKey(), 1, "spam").to_dict()
    results = [session.receive(json.dumps(["EVENT", sub, event])) for _ in range(5)]
    assert all(isinstance(r[0], EventReceived) for r in results[:3])
    assert isinstance(results[3][0], ProtocolViolation) and isinstance(results[3][1], SubscriptionClosed)
    assert session.outgoing == [json.dumps(["CLOSE", sub], separators=(",", ":"))]
    assert isinstance(results[4][0], ProtocolViolation)  # anything after is for a closed subscription
