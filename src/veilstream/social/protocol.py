"""The client side of the NIP-01 relay protocol, sans-IO.

`RelaySession` is a pure state machine: the caller hands it each text frame received
(`receive`) and sends what it asks (`publish`, `subscribe`, `close`, and `outgoing` after
every `receive`). It never touches a socket or a clock, so every hostile relay behaviour
(garbage, lies about subscriptions, floods) is tested by feeding it strings.

A relay is a stranger: a bad frame becomes a `ProtocolViolation` with a reason, never an
exception; a subscription that brings more than its budget of events is closed; a relay
that keeps misbehaving is marked for disconnection.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from veilstream.social.events import MAX_EVENT_BYTES, Event
from veilstream.social.settings import SocialSettings

MAX_FRAME_BYTES = MAX_EVENT_BYTES + 1024  # one event and its ["EVENT", sub_id, ...] wrapping


# --- what the session reports -------------------------------------------------------------


@dataclass(frozen=True)
class EventReceived:
    subscription_id: str
    event: dict[str, Any]  # unverified: the index verifies before use


@dataclass(frozen=True)
class PublishAcknowledged:
    event_id: str
    accepted: bool
    message: str


@dataclass(frozen=True)
class EndOfStoredEvents:
    subscription_id: str


@dataclass(frozen=True)
class SubscriptionClosed:
    subscription_id: str
    message: str


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class AuthRequested:
    challenge: str


@dataclass(frozen=True)
class ProtocolViolation:
    reason: str
    subscription_id: str | None = None


# What the relay protocol core reports (its "events", as h11 calls them), not a Nostr event:
# a signed note is an `events.Event`, carried inside an `EventReceived`.
RelayEvent = (
    EventReceived | PublishAcknowledged | EndOfStoredEvents | SubscriptionClosed | Notice | AuthRequested
    | ProtocolViolation
)


# --- the session --------------------------------------------------------------------------


def _frame(*items: Any) -> str:
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Subscription:
    budget: int
    received: int = 0


@dataclass
class RelaySession:
    event_budget: int = SocialSettings.relay_event_budget
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_violations: int = SocialSettings.relay_max_violations
    violations: int = 0
    outgoing: list[str] = field(default_factory=list)
    _subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    _pending_publishes: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def should_disconnect(self) -> bool:
        return self.violations >= self.max_violations

    @property
    def open_subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    # --- what we send ---

    def publish(self, event: Event) -> str:
        self._pending_publishes.add(event.id)
        return '["EVENT",' + event.to_json() + "]"

    def subscribe(self, filters: list[dict[str, Any]], event_budget: int | None = None) -> tuple[str, str]:
        """A new subscription: its id and the REQ frame to send."""
        subscription_id = f"veil-{next(self._ids)}"
        self._subscriptions[subscription_id] = _Subscription(event_budget or self.event_budget)
        return subscription_id, _frame("REQ", subscription_id, *filters)

    def close(self, subscription_id: str) -> str | None:
        if self._subscriptions.pop(subscription_id, None) is None:
            return None
        return _frame("CLOSE", subscription_id)

    # --- what we receive ---

    def receive(self, frame: str | bytes) -> list[RelayEvent]:
        reported = self._receive(frame)
        for relay_event in reported:
            if isinstance(relay_event, ProtocolViolation):
                self.violations += 1
        return reported

    def _receive(self, frame: str | bytes) -> list[RelayEvent]:
        if len(frame) > self.max_frame_bytes:
            return [ProtocolViolation(f"oversized frame ({len(frame)} bytes)")]
        try:
            message = json.loads(frame, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return [ProtocolViolation("malformed JSON")]
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            return [ProtocolViolation("a relay message is a JSON array starting with a string")]
        verb, args = message[0], message[1:]
        handler = _HANDLERS.get(verb)
        if handler is None:
            return [ProtocolViolation(f"unknown message {verb[:20]!r}")]
        return handler(self, args)

    def _on_event(self, args: list) -> list[RelayEvent]:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], dict):
            return [ProtocolViolation("EVENT is [sub_id, event]")]
        subscription_id, event = args
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            return [ProtocolViolation("event for a subscription we do not have", subscription_id)]
        subscription.received += 1
        if subscription.received > subscription.budget:
            closing = self.close(subscription_id)
            if closing:
                self.outgoing.append(closing)
            return [
                ProtocolViolation(f"flood: more than {subscription.budget} events", subscription_id),
                SubscriptionClosed(subscription_id, "closed by us: flood"),
            ]
        return [EventReceived(subscription_id, event)]

    def _on_ok(self, args: list) -> list[RelayEvent]:
        if len(args) < 2 or not isinstance(args[0], str) or not isinstance(args[1], bool):
            return [ProtocolViolation("OK is [event_id, bool, message]")]
        event_id, accepted = args[0], args[1]
        message = args[2] if len(args) > 2 and isinstance(args[2], str) else ""
        if event_id not in self._pending_publishes:
            # Some relays (nostr-relay 1.14) blank the id when refusing an event whose
            # signature fails; with one publish in flight the refusal can only be for it.
            if not accepted and event_id == "" and len(self._pending_publishes) == 1:
                event_id = next(iter(self._pending_publishes))
            else:
                return [ProtocolViolation("OK for an event we did not send")]
        self._pending_publishes.discard(event_id)
        return [PublishAcknowledged(event_id, accepted, message)]

    def _on_eose(self, args: list) -> list[RelayEvent]:
        if len(args) != 1 or not isinstance(args[0], str):
            return [ProtocolViolation("EOSE is [sub_id]")]
        if args[0] not in self._subscriptions:
            return []  # EOSE racing our CLOSE is normal
        return [EndOfStoredEvents(args[0])]

    def _on_closed(self, args: list) -> list[RelayEvent]:
        if not args or not isinstance(args[0], str):
            return [ProtocolViolation("CLOSED is [sub_id, message]")]
        message = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        if self._subscriptions.pop(args[0], None) is None:
            return []
        return [SubscriptionClosed(args[0], message)]

    def _on_notice(self, args: list) -> list[RelayEvent]:
        if not args or not isinstance(args[0], str):
            return [ProtocolViolation("NOTICE is [message]")]
        return [Notice(args[0][:500])]

    def _on_auth(self, args: list) -> list[RelayEvent]:
        if not args or not isinstance(args[0], str):
            return [ProtocolViolation("AUTH is [challenge]")]
        return [AuthRequested(args[0][:500])]

    def _on_count(self, args: list) -> list[RelayEvent]:
        return []  # NIP-45 answers; we never ask


_HANDLERS = {
    "EVENT": RelaySession._on_event,
    "OK": RelaySession._on_ok,
    "EOSE": RelaySession._on_eose,
    "CLOSED": RelaySession._on_closed,
    "NOTICE": RelaySession._on_notice,
    "AUTH": RelaySession._on_auth,
    "COUNT": RelaySession._on_count,
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
