"""Relays that lie, flood, drop or never answer: refused with reasons, never a crash."""

import asyncio
import json
import logging
import socket

import pytest
from websockets.asyncio.server import serve

from veilstream.social import kinds
from veilstream.social.events import NostrKey, sign_event
from veilstream.social.index import FeedIndex, RateLimit
from veilstream.social.relay_client import RelayConnection, RelayPool
from veilstream.social.settings import SocialSettings

NOW = 1_750_000_000


def signed_cards(count, author=None, start=0):
    author = author or NostrKey()
    return [
        kinds.build_card(author, kinds.ContentCard(content_id=f"{i + start:064x}", title=f"card {i + start}"), created_at=NOW + i)
        for i in range(count)
    ]


async def scripted_relay(script):
    """A WebSocket server on loopback running `script(websocket, first_message)` per connection."""

    async def handler(websocket):
        try:
            first = json.loads(await websocket.recv())
            await script(websocket, first)
        except Exception:  # the client going away mid-script is part of several tests
            pass

    server = await serve(handler, "127.0.0.1", 0, max_size=None, compression=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


def test_garbage_then_good_events_are_sorted_out(tmp_path, caplog):
    good = signed_cards(3)
    forged = dict(json.loads(signed_cards(1)[0].to_json()), content="tampered")
    wrong_sig = dict(json.loads(signed_cards(1)[0].to_json()), sig=good[0].sig)

    async def script(ws, req):
        sub = req[1]
        for frame in ["}{", '["EVENT"]', '["EVENT", "other-sub", {}]', "[1, 2]", '["NOTICE", "hi"]']:
            await ws.send(frame)
        for event in [*good, forged, wrong_sig, {"id": "nonsense"}]:
            await ws.send(json.dumps(["EVENT", sub, event if isinstance(event, dict) else event.to_dict()]))
        await ws.send(json.dumps(["EOSE", sub]))
        await ws.wait_closed()

    async def scenario():
        server, url = await scripted_relay(script)
        async with server, RelayConnection(url) as relay:
            result = await relay.fetch([{"kinds": [1063]}])
            assert result.complete and relay.session.violations == 4
            return result.events

    with caplog.at_level(logging.INFO):
        events = asyncio.run(scenario())
        with FeedIndex(tmp_path / "i.sqlite3", clock=lambda: NOW) as index:
            report = index.ingest_many(events)
            assert report.stored == 3
            assert report.by_reason["bad-id"] == 1 and report.by_reason["bad-signature"] == 1
            assert report.by_reason["malformed-event"] == 1
            assert index.consistency_problems() == []
    assert "protocol violation" in caplog.text and "bad-signature" in caplog.text


def test_a_flood_is_cut_off_and_rate_limited(tmp_path):
    author = NostrKey()
    flood = [c.to_dict() for c in signed_cards(400, author)]

    async def script(ws, req):
        for event in flood:
            await ws.send(json.dumps(["EVENT", req[1], event]))
        await ws.wait_closed()  # a flooding relay never says EOSE

    async def scenario():
        server, url = await scripted_relay(script)
        async with server, RelayConnection(url, event_budget=100) as relay:
            result = await relay.fetch([{}], timeout=30)
        return result

    result = asyncio.run(scenario())
    assert not result.complete and "flood" in result.problem
    assert len(result.events) == 100
    with FeedIndex(tmp_path / "i.sqlite3", rate_limit=RateLimit(max_events=30, window_s=3600), clock=lambda: NOW + 1000) as index:
        report = index.ingest_many(result.events)
        assert report.stored == 30 and report.by_reason["rate-limited"] == 70
        assert index.consistency_problems() == []


def test_dropped_connections_and_silent_relays_give_reasons(tmp_path):
    async def drop_mid_stream(ws, req):
        await ws.send(json.dumps(["EVENT", req[1], signed_cards(1)[0].to_dict()]))
        await ws.close(code=1011)

    async def never_answer(ws, req):
        await ws.wait_closed()

    async def oversized(ws, req):
        await ws.send(json.dumps(["NOTICE", "x" * 200_000]))
        await ws.wait_closed()

    async def scenario():
        dropping, drop_url = await scripted_relay(drop_mid_stream)
        silent, silent_url = await scripted_relay(never_answer)
        huge, huge_url = await scripted_relay(oversized)
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))
            dead_url = f"ws://127.0.0.1:{closed_port.getsockname()[1]}"  # bound, never listening
        async with dropping, silent, huge:
            async with RelayConnection(drop_url) as relay:
                dropped = await relay.fetch([{}])
            assert len(dropped.events) == 1 and "closed" in dropped.problem
            async with RelayConnection(silent_url) as relay:
                silence = await relay.fetch([{}], timeout=0.5)
                unanswered = await relay.publish(signed_cards(1)[0], timeout=0.5)
            assert "no EOSE" in silence.problem
            assert not unanswered.accepted and "no OK" in unanswered.message
            async with RelayConnection(huge_url) as relay:
                too_big = await relay.fetch([{}])
            assert "closed" in too_big.problem
            async with RelayPool([dead_url, silent_url], reply_timeout=0.5) as pool:
                outcomes = await pool.publish(signed_cards(1)[0])
                assert {o.relay for o in outcomes} == {dead_url, silent_url}
                assert not any(o.accepted for o in outcomes)
                assert dead_url in pool.unreachable

    asyncio.run(scenario())


def test_a_relay_that_keeps_breaking_the_protocol_is_hung_up_on():
    async def garbage(ws, req):
        for _ in range(10):
            await ws.send("}{")
        await ws.wait_closed()

    async def scenario():
        server, url = await scripted_relay(garbage)
        async with server, RelayConnection(url, settings=SocialSettings(relay_max_violations=5)) as relay:
            result = await relay.fetch([{}], timeout=10)
        return result, relay

    result, relay = asyncio.run(scenario())
    assert not result.complete and "too many protocol violations (5)" in result.problem
    assert relay.closed_reason == "too many protocol violations (5)"


def relay_tasks():
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("relay-")]


def test_a_bug_in_the_reader_is_raised_not_reported(monkeypatch):
    """A relay's failures are reasons; our own bug crashes loudly, and no task outlives the pool."""

    async def chatty(ws, req):
        await ws.send(json.dumps(["NOTICE", "hello"]))
        await ws.wait_closed()

    def broken_dispatch(self, relay_event):
        raise RuntimeError("a bug in dispatch")

    async def scenario():
        server, url = await scripted_relay(chatty)
        async with server:
            async with RelayPool([url], reply_timeout=0.3) as pool:
                _, (result,) = await pool.fetch([{}])
                assert "no EOSE" in result.problem
                assert relay_tasks() == [f"relay-reader {url}"]
            assert relay_tasks() == []
            monkeypatch.setattr(RelayConnection, "_dispatch", broken_dispatch)
            with pytest.raises(ExceptionGroup) as raised:
                async with RelayPool([url], reply_timeout=5) as pool:
                    await pool.fetch([{}])
            assert raised.group_contains(RuntimeError, match="a bug in dispatch")
            assert relay_tasks() == []

    asyncio.run(scenario())


def test_unknown_kinds_and_oversized_events_from_a_relay(tmp_path):
    author = NostrKey()
    unknown = sign_event(author, 30_402, "ad", created_at=NOW)
    big = sign_event(author, kinds.CARD, "y" * 70_000, created_at=NOW)
    with FeedIndex(tmp_path / "i.sqlite3", clock=lambda: NOW) as index:
        assert index.ingest(unknown.to_dict()).reason == "unknown-kind"
        assert index.ingest(big.to_json()).reason == "oversized"
        assert index.stats()["events"] == 0
