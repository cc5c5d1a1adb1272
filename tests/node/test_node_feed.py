"""The node keeps the feed in sync and serves previews: real `veil up` processes, the real
embedded relay (this machine's own store and port, made for these tests), other vaults
posting with the real CLI.

- what another vault posts shows in the node's feed while it runs (the subscription is open);
- `kill -9`, posts while it is down, a restart: it catches up from its cursor;
- a relay down at start: the node runs, says so, and syncs once the relay is up; a relay
  that sends garbage and forgeries costs refusals, counted, never the node;
- preview blobs at `/<sha256>` (Blossom BUD-01): no token, but the Host and Origin checks;
  a blob corrupted on disk is not served;
- posting, reacting, commenting, reposting and following through the API reach the index
  and the relay; bad input gets a clear 4xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import cli_harness
from cli_harness import VEIL, content_id_of, free_port, new_vault, ok, veil_env
from test_node_live import SseClient
from veilstream.node.feed import FeedCursor, FeedKeeper
from veilstream.social import kinds
from veilstream.social.embedded_relay import EmbeddedRelay, store_owner
from veilstream.social.events import NostrKey
from veilstream.social.index import FeedIndex
from veilstream.social.relay_client import RelayConnection
from veilstream.social.settings import SocialSettings

START_TIMEOUT_S = 120
SYNC_TIMEOUT_S = 60  # a relay's event reaches the node's index well within this, on a loaded 2-core machine
FAST_RETRY = ["--set", "social.relay_retry_max_s=1"]


def wait_for(condition, what: str, timeout_s: float = SYNC_TIMEOUT_S):
    """`condition()`'s first truthy value, polled until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.1)


class RunningNode:
    """`veil up` in its own process on `home`, with this machine's relay settings."""

    def __init__(self, home: Path, machine: dict[str, str], *args: str) -> None:
        self.home = home
        self.process = subprocess.Popen([*VEIL, "up", "--api-port", "0", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=veil_env(home, extra=machine))
        seen = []
        deadline = time.monotonic() + START_TIMEOUT_S
        for line in self.process.stdout:  # ends at EOF if the node dies
            seen.append(line)
            found = re.search(r"API (http://\S+)/api/v1", line)
            if found:
                self.url = found[1]
                break
            if time.monotonic() > deadline:
                break
        else:
            raise AssertionError(f"veil up ended: {self.process.wait()}\n{''.join(seen)}")
        assert hasattr(self, "url"), "".join(seen)
        self.host = self.url.removeprefix("http://")
        self.port = int(self.host.rpartition(":")[2])
        self.token = (home / "node" / "api-token").read_text().strip()
        self.output = seen  # the rest is read as it comes, so that the node never blocks on a full pipe
        self._drain = threading.Thread(target=lambda: seen.extend(self.process.stdout), daemon=True)
        self._drain.start()

    def call(self, method: str, path: str, body: dict | None = None, *, token: str | None = "",
             headers: dict | None = None) -> tuple[int, dict, bytes]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        token = self.token if token == "" else token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers=sent,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, _, raw = self.call(method, f"/api/v1/{path}", body)
        return status, json.loads(raw)

    def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.api(method, path, body)
        assert status in (200, 201), (status, answer)
        return answer

    def titles(self, query: str = "") -> list[str]:
        return [card["title"] for card in self.ok("GET", f"feed?limit=200{query}")["cards"]]

    def relays(self) -> list[dict]:
        return self.ok("GET", "status")["feed"]["relays"]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._drain.join(10)
        assert self.process.returncode == 0, "".join(self.output)
        return self.process.returncode


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> dict[str, str]:
    """This machine's local relay: a store and a port of its own, for this module's nodes and commands."""
    return {"VEIL_RELAY_DATA": str(tmp_path_factory.mktemp("machine-relay")), "VEIL_RELAY_PORT": str(free_port())}


def veil(home: Path, machine: dict[str, str], *args: str) -> str:
    return ok(cli_harness.veil(home, *args, env=machine))


def publish_picture(home: Path, machine: dict[str, str], name: str, color: tuple[int, int, int]) -> str:
    """A small PNG published in the vault at `home` (a picture gets an image preview); its content id."""
    picture = home.parent / f"{name}.png"
    Image.new("RGB", (64, 48), color).save(picture)
    return content_id_of(veil(home, machine, "publish", str(picture), "--slice-size", "16KiB"))


def post_card(home: Path, machine: dict[str, str], title: str, *flags: str) -> str:
    """`veil post` of a new content titled `title` (no previews); the card's id."""
    cid = publish_picture(home, machine, title.replace(" ", "-"), tuple(os.urandom(3)))
    posted = veil(home, machine, "post", cid, "--title", title, "--no-previews", *flags)
    return re.search(r"card ([0-9a-f]{64})", posted)[1]


@pytest.fixture(scope="module")
def vaults(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vaults")
    homes = {name: root / name for name in ("alice", "bob")}
    for home in homes.values():
        new_vault(home)
    return homes


@pytest.fixture(scope="module")
def alice(vaults, machine):
    """Alice's node, on the machine's local relay (which it starts: none runs yet)."""
    node = RunningNode(vaults["alice"], machine)
    yield node
    if node.process.poll() is None:
        assert node.stop() == 0


def cursor_of(home: Path) -> dict[str, int]:
    try:
        return json.loads((home / "node" / "feed-cursor.json").read_text())["relays"]
    except FileNotFoundError:
        return {}


def test_a_card_posted_by_another_vault_reaches_the_running_node(alice, vaults, machine):
    [relay] = wait_for(lambda: [r for r in alice.relays() if r["state"] == "connected"], "the relay connected")
    assert relay["url"] == f"ws://127.0.0.1:{machine['VEIL_RELAY_PORT']}"
    # The node runs the machine's relay and shares it: Bob's command uses it, it does not wait for it.
    owner = store_owner(machine["VEIL_RELAY_DATA"])
    assert owner is not None and owner.shared and owner.pid == alice.process.pid
    live = SseClient(alice)
    try:
        card_id = post_card(vaults["bob"], machine, "Bob live")
        heard = live.event_where(lambda record: record["event"] == "feed" and record["data"]["event_id"] == card_id)
    finally:
        live.close()
    bob_key = json.loads((vaults["bob"] / "identity.json").read_text())["nostr_pubkey"]
    assert heard["data"] == {"event_id": card_id, "kind": "card", "author": bob_key,
                             "created_at": heard["data"]["created_at"], "about": card_id}
    assert wait_for(lambda: "Bob live" in alice.titles(), "Bob's card in Alice's feed")
    [document] = [c for c in alice.ok("GET", "feed")["cards"] if c["id"] == card_id]
    assert document["pubkey"] == json.loads((vaults["bob"] / "identity.json").read_text())["nostr_pubkey"]
    assert alice.ok("GET", "status")["feed"]["events_stored"] >= 1
    shown = veil(alice.home, machine, "status")
    assert f"relay {relay['url']}: connected since" in shown
    schema = json.loads(alice.call("GET", "/api/v1/openapi.json")[2])
    assert {"/api/v1/feed", "/api/v1/cards/{card_id}/comments", "/api/v1/follows/{pubkey}"} <= set(schema["paths"])


def test_kill_9_then_posts_while_down_then_a_restart_catches_up(alice, vaults, machine):
    bob = vaults["bob"]
    card_id = post_card(bob, machine, "Bob before the crash")
    [card] = wait_for(lambda: [c for c in alice.ok("GET", "feed")["cards"] if c["id"] == card_id], "the card")
    url = f"ws://127.0.0.1:{machine['VEIL_RELAY_PORT']}"
    overlap_s = SocialSettings().feed_catch_up_overlap_s
    wait_for(lambda: cursor_of(alice.home).get(url, 0) >= card["created_at"] - overlap_s, "the cursor past the card")
    alice.kill()
    before = cursor_of(alice.home)[url]  # what the restart finds
    # The node's relay goes with it; Bob's next command starts its own on the store.
    wait_for(lambda: store_owner(machine["VEIL_RELAY_DATA"]) is None, "the node's relay gone")
    post_card(bob, machine, "Bob while Alice was down")
    post_card(bob, machine, "Bob again while down")
    again = RunningNode(alice.home, machine)
    alice.__dict__.update(again.__dict__)  # the module's node, restarted
    wait_for(lambda: {"Bob while Alice was down", "Bob again while down"} <= set(alice.titles()), "the catch-up")
    after = wait_for(lambda: (cursor_of(alice.home).get(url) or 0) > before and cursor_of(alice.home)[url],
                     "the cursor moved forward")
    assert after > before
    log = (alice.home / "logs" / "node.log").read_text()
    assert f"relay {url}: following the feed since {before}" in log  # the restart caught up from the cursor


def test_blobs_are_served_by_hash_to_anyone_on_the_node_s_own_host(alice, machine):
    cid = publish_picture(alice.home, machine, "sunset", (250, 120, 40))
    veil(alice.home, machine, "post", cid, "--title", "Sunset")  # the CLI makes the previews, into the vault
    [card] = wait_for(lambda: [c for c in alice.ok("GET", "feed?q=sunset")["cards"] if c["content_id"] == cid],
                      "Alice's card in her feed")
    [preview] = card["previews"]
    sha = preview["sha256"]
    stored = alice.home / "social" / "blobs" / sha[:2] / sha
    status, headers, data = alice.call("GET", f"/{sha}", token=None)  # public: no token
    assert status == 200 and hashlib.sha256(data).hexdigest() == sha and data == stored.read_bytes()
    assert headers["content-type"] == "image/jpeg" and headers["content-length"] == str(len(data))
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, data = alice.call("HEAD", f"/{sha}", token=None)
    assert status == 200 and data == b"" and headers["content-length"] == str(preview["size"])
    assert alice.call("GET", f"/{sha}.jpg", token=None)[0] == 200  # BUD-01: an extension may follow the hash
    assert alice.call("GET", f"/{sha}.html", token=None)[1]["content-type"] == "image/jpeg"  # bytes decide, not names

    status, _, raw = alice.call("GET", f"/{'ab' * 32}", token=None)
    assert status == 404 and "no blob" in json.loads(raw)["error"]
    for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
        status, _, raw = alice.call("GET", f"/{sha}", token=None, headers=headers)
        assert status == 403 and json.loads(raw)["error"]
    assert alice.call("GET", "/api/v1/feed", token=None)[0] == 401  # the rest still needs the token

    stored.write_bytes(b"\xff\xd8\xff" + os.urandom(200))  # the disk (or someone) changed it
    status, _, raw = alice.call("GET", f"/{sha}", token=None)
    assert status == 500 and "corrupt" in json.loads(raw)["error"]
    assert not stored.exists()
    assert "corrupt" in (alice.home / "logs" / "node.log").read_text()


async def _relay_events(url: str, filters: list[dict]) -> list[dict]:
    async with RelayConnection(url) as relay:
        return (await relay.fetch(filters)).events


def test_posting_reacting_commenting_and_following_through_the_api(alice, vaults, machine):
    bob = vaults["bob"]
    bob_key = json.loads((bob / "identity.json").read_text())["nostr_pubkey"]
    bob_card = post_card(bob, machine, "Bob for the API")
    wait_for(lambda: "Bob for the API" in alice.titles(), "Bob's card at Alice's")

    cid = publish_picture(alice.home, machine, "api-dawn", (10, 20, 200))
    posted = alice.ok("POST", "cards", {"content": cid, "title": "Dawn by API", "tags": ["sky"]})
    assert [r["accepted"] for r in posted["relays"]] == [True]
    assert posted["card"]["title"] == "Dawn by API" and posted["card"]["tags"] == ["sky"]
    [preview] = posted["card"]["previews"]  # the same previews `veil post` makes
    assert alice.call("GET", f"/{preview['sha256']}", token=None)[0] == 200

    assert alice.ok("POST", f"cards/{bob_card}/reactions", {"emoji": "🔥"})["relays"][0]["accepted"]
    first = alice.ok("POST", f"cards/{bob_card}/comments", {"text": "lovely"})
    alice.ok("POST", f"cards/{bob_card}/comments", {"text": "and a reply", "reply_to": first["event_id"]})
    alice.ok("POST", f"cards/{bob_card[:12]}/reposts")  # a unique prefix names a card too
    assert alice.ok("POST", "follows", {"pubkey": bob_key})["following"] == [bob_key]
    profile = alice.ok("PUT", "profile", {"name": "Alice", "about": "sunsets"})
    assert profile["profile"]["name"] == "Alice" and profile["profile"]["wallet_verified"] is True

    detail = alice.ok("GET", f"cards/{bob_card}")
    assert detail["counts"] == {"reactions": 1, "comments": 2, "reposts": 1, "views": 0}
    # (in the same second, comments are in id order)
    assert {c["text"]: c["parent_id"] for c in detail["comments"]} == {"lovely": bob_card,
                                                                         "and a reply": first["event_id"]}
    assert [p["pubkey"] for p in alice.ok("GET", "following")["following"]] == [bob_key]
    following = alice.titles("&tab=following")
    assert "Bob for the API" in following and "Dawn by API" not in following
    identity = alice.ok("GET", "identity")
    assert identity["npub"].startswith("npub1") and identity["wallet_address"].startswith("0x")

    # On the relay, where every other client sees them:
    seen = json.loads(veil(bob, machine, "card", bob_card, "--json"))
    assert seen["counts"] == detail["counts"] and sorted(c["text"] for c in seen["comments"]) == ["and a reply", "lovely"]
    assert "Dawn by API" in [c["title"] for c in json.loads(veil(bob, machine, "feed", "--json"))["cards"]]
    relay_url = f"ws://127.0.0.1:{machine['VEIL_RELAY_PORT']}"
    [follow_list] = asyncio.run(_relay_events(relay_url, [{"kinds": [kinds.FOLLOW_LIST], "authors": [identity["nostr_pubkey"]]}]))
    assert ["p", bob_key] in [tag[:2] for tag in follow_list["tags"]]

    assert alice.ok("DELETE", f"follows/{bob_key}")["following"] == []
    assert alice.ok("GET", "feed?tab=following")["cards"] == []


def test_paging_the_feed(alice):
    everything = alice.titles()
    first = alice.ok("GET", "feed?limit=2")
    assert [c["title"] for c in first["cards"]] == everything[:2]
    second = alice.ok("GET", f"feed?limit=2&before={first['next']['before']}")
    assert [c["title"] for c in second["cards"]] == everything[2:4]
    assert [c["title"] for c in alice.ok("GET", "feed?limit=2&offset=2")["cards"]] == everything[2:4]
    top = alice.ok("GET", "feed?sort=top&limit=1")["cards"]
    assert top[0]["title"] == "Bob for the API"  # the most engaged: a reaction, two comments, a repost


@pytest.mark.parametrize("method, path, body, status, message", [
    ("GET", f"cards/{'cd' * 32}", None, 404, "is on none of the relays"),
    ("GET", "cards/cdcdcdcdcd", None, 404, "no card starting 'cdcdcdcdcd'"),
    ("POST", f"cards/{'cd' * 32}/reactions", {"emoji": "+"}, 404, "is on none of the relays"),
    ("POST", f"cards/{'cd' * 32}/comments", {"text": "hello?"}, 404, "is on none of the relays"),
    ("GET", "cards/not-a-card", None, 400, "is not a card id"),
    ("POST", "follows", {"pubkey": "npub1notakey"}, 422, "is not a Nostr public key"),
    ("POST", "follows", {"pubkey": "ab" * 31}, 422, "is not a Nostr public key"),
    ("DELETE", "follows/xyz", None, 400, "is not a Nostr public key"),
    ("POST", f"cards/{'cd' * 32}/comments", {"text": "   "}, 422, "a comment cannot be empty"),
    ("POST", f"cards/{'cd' * 32}/comments", {"text": "hi", "reply_to": "nope"}, 422, "reply_to"),
    ("POST", "cards", {"content": "ef" * 32, "title": "not mine"}, 404, "does not hold"),
    ("POST", "cards", {"content": "ef" * 32, "title": " "}, 422, "title cannot be empty"),
    ("PUT", "profile", {}, 400, "at least one of name, about, picture"),
    ("PUT", "profile", {"picture": "javascript:alert(1)"}, 422, "not an http"),
    ("GET", "feed?tab=friends", None, 422, "tab"),
    ("GET", "feed?limit=0", None, 422, "limit"),
    ("GET", "feed?sort=top&before=" + "ab" * 32, None, 400, "before"),
])
def test_bad_input_gets_a_clear_4xx(alice, method, path, body, status, message):
    got, answer = alice.api(method, path, body)
    assert got == status, answer
    assert message in answer["error"], answer


def test_a_reply_must_answer_a_comment_on_the_same_card(alice, vaults, machine):
    # Its own cards: under xdist the tests of this module may run on different workers.
    one = post_card(vaults["bob"], machine, "Bob reply target")
    other = post_card(vaults["bob"], machine, "Bob other card")
    assert wait_for(lambda: {"Bob reply target", "Bob other card"} <= set(alice.titles()), "Bob's two cards")
    status, answer = alice.api("POST", f"cards/{one}/comments", {"text": "misplaced", "reply_to": other})
    assert status == 400 and "is not a comment on" in answer["error"]


class HostileRelay:
    """A relay on loopback that answers every REQ with garbage frames, forged and malformed
    events, and one good card; in a thread of its own."""

    def __init__(self) -> None:
        author = NostrKey()
        self.good = kinds.build_card(author, kinds.ContentCard(content_id="42" * 32, title="Honest card from a liar"))
        other = kinds.build_card(author, kinds.ContentCard(content_id="43" * 32, title="x"))
        forged = dict(other.to_dict(), content="tampered")  # its id no longer matches
        wrong_sig = dict(self.good.to_dict(), sig=other.sig)  # the id matches, the signature is another event's
        self.events = [forged, wrong_sig, {"id": "nonsense"}, self.good.to_dict()]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, websocket) -> None:
        try:
            async for frame in websocket:
                message = json.loads(frame)
                if message[0] == "REQ":
                    for junk in ("}{", '["EVENT"]', "[1, 2]"):
                        await websocket.send(junk)
                    for event in self.events:
                        await websocket.send(json.dumps(["EVENT", message[1], event]))
                    await websocket.send(json.dumps(["EOSE", message[1]]))
                elif message[0] == "EVENT":
                    await websocket.send(json.dumps(["OK", message[1]["id"], False, "blocked: liars only"]))
        except Exception:  # the node hanging up is part of the test
            pass

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        async def main() -> None:
            async with serve(self._handler, "127.0.0.1", 0, compression=None) as server:
                self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
                self._stop = asyncio.Event()
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def __enter__(self) -> HostileRelay:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_a_relay_down_at_start_and_a_lying_one_cost_the_node_nothing(tmp_path, vaults, machine):
    carol = tmp_path / "carol"
    new_vault(carol)
    port = free_port()
    down = f"ws://127.0.0.1:{port}"
    with HostileRelay() as liar:
        (carol / "social").mkdir()
        (carol / "social" / "relays.json").write_text(json.dumps({"relays": [down, liar.url]}))
        node = RunningNode(carol, machine, *FAST_RETRY)
        try:
            states = wait_for(lambda: (s := {r["url"]: r for r in node.relays()})[down]["failures"]
                              and s[liar.url]["state"] == "connected" and s, "the liar connected, the other tried")
            assert states[down]["state"] == "down" and "cannot reach" in states[down]["last_error"]
            shown = veil(carol, machine, "status")
            assert f"relay {down}: DOWN since" in shown

            # The liar's good card is taken; its forgeries are refused, counted, and the node goes on.
            wait_for(lambda: "Honest card from a liar" in node.titles(), "the good card")
            feed = wait_for(lambda: (f := node.ok("GET", "status")["feed"])["events_refused"] >= 3 and f, "refusals")
            assert {"bad-id", "bad-signature", "malformed-event"} <= set(feed["refused_by_reason"])

            # Publishing while no relay takes it: a clear error naming each relay, at once.
            started = time.monotonic()
            status, answer = node.api("PUT", "profile", {"name": "Carol"})
            assert status == 503 and f"{down}: down since" in answer["error"] and "liars only" in answer["error"]
            assert time.monotonic() - started < 15

            # The relay comes up; Bob posts to it; the node finds it and syncs.
            relay = subprocess.Popen([*VEIL, "relay", "--listen", f"127.0.0.1:{port}", "--data", str(tmp_path / "late")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=veil_env(carol, extra=machine))
            try:
                assert "relay at" in relay.stdout.readline()
                post_card(vaults["bob"], machine, "Bob on the late relay", "--relay", down)
                wait_for(lambda: {r["url"]: r["state"] for r in node.relays()}[down] == "connected", "reconnected")
                wait_for(lambda: "Bob on the late relay" in node.titles(), "the late relay's card")
                # one relay takes it, the other refuses: each relay's outcome comes back
                outcomes = {r["relay"]: r for r in node.ok("PUT", "profile", {"name": "Carol"})["relays"]}
                assert outcomes[down]["accepted"] and not outcomes[liar.url]["accepted"]
                assert "liars only" in outcomes[liar.url]["message"]
            finally:
                relay.send_signal(signal.SIGINT)
                relay.communicate(timeout=30)
            assert node.process.poll() is None
        finally:
            assert node.stop() == 0


def test_when_the_node_running_the_local_relay_stops_another_node_runs_it(alice, vaults, machine, tmp_path):
    # runs last of the tests on Alice's node: it stops it
    dave = tmp_path / "dave"
    new_vault(dave)
    node = RunningNode(dave, machine, *FAST_RETRY)
    try:
        wait_for(lambda: node.relays()[0]["state"] == "connected", "Dave's node on the local relay")
        assert store_owner(machine["VEIL_RELAY_DATA"]).pid == alice.process.pid  # Alice's node runs it
        assert alice.stop() == 0
        wait_for(lambda: (owner := store_owner(machine["VEIL_RELAY_DATA"])) and owner.pid == node.process.pid,
                 "Dave's node running the local relay")
        wait_for(lambda: node.relays()[0]["state"] == "connected", "Dave's node reconnected")
        post_card(vaults["bob"], machine, "Bob after Alice left")
        wait_for(lambda: "Bob after Alice left" in node.titles(), "Bob's card at Dave's")
    finally:
        assert node.stop() == 0
    assert store_owner(machine["VEIL_RELAY_DATA"]) is None  # it stopped the relay it ran


async def _until(condition, what: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def test_others_hear_of_new_events_through_subscribe(tmp_path):
    author = NostrKey()
    cards = [kinds.build_card(author, kinds.ContentCard(content_id=f"{i:064x}", title=f"heard {i}")) for i in (1, 2)]
    settings = SocialSettings(feed_cursor_flush_s=0.05)

    async def scenario(url: str) -> list:
        heard = []
        with FeedIndex(tmp_path / "index.sqlite3") as index:
            keeper = FeedKeeper(tmp_path / "home", index, NostrKey().nostr_pubkey, [url], settings=settings)
            unsubscribe = keeper.subscribe(heard.append)
            async with asyncio.TaskGroup() as group:
                running = group.create_task(keeper.run())
                await _until(lambda: keeper.pool.status()[0]["state"] == "connected", "connected")
                async with RelayConnection(url) as other:
                    assert (await other.publish(cards[0])).accepted
                    await _until(lambda: heard, "the first card heard")
                    unsubscribe()
                    assert (await other.publish(cards[1])).accepted
                    await _until(lambda: index.card(cards[1].id) is not None, "the second card indexed")
                await _until(lambda: (tmp_path / "home" / "node" / "feed-cursor.json").exists(), "the cursor written")
                running.cancel()
        return heard

    with EmbeddedRelay(tmp_path / "relay") as relay:
        heard = asyncio.run(scenario(relay.url))
    assert [event.id for event in heard] == [cards[0].id]  # and nothing after unsubscribing
    cursor = json.loads((tmp_path / "home" / "node" / "feed-cursor.json").read_text())["relays"]
    assert cursor[relay.url] == max(card.created_at for card in cards) - settings.feed_catch_up_overlap_s


def test_the_cursor_moves_only_forward_and_never_past_now(tmp_path):
    now = [1_800_000_000]
    cursor = FeedCursor(tmp_path / "feed-cursor.json", overlap_s=120, clock=lambda: now[0])
    cursor.advance("ws://a", now[0] - 1000)
    cursor.advance("ws://a", now[0] - 5000)  # an older event, from a slower subscription: no step back
    assert cursor.since("ws://a") == now[0] - 1120
    cursor.advance("ws://a", now[0] + 10**6)  # dated ahead (the index allows some drift): no further than now
    assert cursor.since("ws://a") == now[0] - 120 and cursor.since("ws://b") is None
    cursor.flush()
    assert FeedCursor(tmp_path / "feed-cursor.json", overlap_s=120).document() == {"ws://a": now[0] - 120}
    (tmp_path / "feed-cursor.json").write_text("{not json")  # a torn file cannot be (replace_file), a bad one may be
    assert FeedCursor(tmp_path / "feed-cursor.json", overlap_s=120).document() == {}
