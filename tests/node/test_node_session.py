"""The browser app's way in, attacked on a real node: a page of another site in the same
browser, a forged or stolen-looking cookie, a change without the CSRF token, and a
passphrase guessed over and over (one at a time and all at once)."""

from __future__ import annotations

import http.client
import json
import threading
from http.cookies import SimpleCookie

import pytest

from cli_harness import PASS, new_vault
from test_node import RunningNode

FREE_FAILURES = 2
BASE_DELAY_S = 120  # far longer than the test takes: a throttled try stays throttled while it runs


class Browser:
    """What a browser sends for the node's own page: its cookie jar, the node's Host."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict | None = None,
                headers: dict | None = None) -> tuple[int, http.client.HTTPResponse, dict]:
        sent = {"Host": f"127.0.0.1:{self.node.port}", "Content-Type": "application/json", **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=60)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=sent)
            response = connection.getresponse()
            answer = json.loads(response.read() or b"{}")
        finally:
            connection.close()
        for header in response.headers.get_all("set-cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value.strip('"'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response.status, response, answer

    def unlock(self, passphrase: str = PASS) -> tuple[int, dict]:
        status, _, answer = self.request("POST", "/api/v1/session", {"passphrase": passphrase})
        return status, answer


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = tmp_path_factory.mktemp("session") / "home"
    new_vault(home)
    running = RunningNode(home, "--set", f"node.unlock_free_failures={FREE_FAILURES}",
                          "--set", f"node.unlock_base_delay_s={BASE_DELAY_S}")
    yield running
    if running.process.poll() is None:
        running.stop()


def test_unlocking_gives_an_httponly_samesite_strict_cookie_named_for_the_node_s_port(node):
    browser = Browser(node)
    status, response, answer = browser.request("POST", "/api/v1/session", {"passphrase": PASS})
    assert status == 201, answer
    [header] = response.headers.get_all("set-cookie")
    [(name, morsel)] = SimpleCookie(header).items()
    assert name == f"veil_session_{node.port}"
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
    assert answer["csrf_token"] and answer["csrf_token"] not in header
    assert browser.request("GET", "/api/v1/status")[0] == 200  # a read needs only the cookie
    assert browser.request("GET", "/api/v1/session")[2] == {"via": "session", "csrf_token": answer["csrf_token"]}


def test_a_change_with_the_cookie_alone_or_a_wrong_csrf_token_is_refused(node):
    browser = Browser(node)
    csrf = browser.unlock()[1]["csrf_token"]
    change = ("PUT", "/api/v1/limits", {"upload": "1MiB"})
    # a form or fetch from another page of the browser could carry the cookie, never the token
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": csrf[:-1]}, {"X-CSRF-Token": "x" * len(csrf)}):
        status, _, answer = browser.request(*change, headers=headers)
        assert status == 403 and "CSRF" in answer["error"], (headers, answer)
    assert browser.request("GET", "/api/v1/limits")[2]["upload"] == 0  # nothing changed
    status, _, answer = browser.request(*change, headers={"X-CSRF-Token": csrf})
    assert status == 200 and answer["upload"] == 1024 * 1024
    status, _, answer = browser.request("PUT", "/api/v1/limits", {"upload": 0}, headers={"X-CSRF-Token": csrf})
    assert status == 200 and answer["upload"] == 0


def test_a_forged_cookie_or_another_session_s_token_gets_nothing(node):
    forger = Browser(node)
    forger.cookies[f"veil_session_{node.port}"] = "made-up-value"
    status, _, answer = forger.request("GET", "/api/v1/status")
    assert status == 401 and "unlock" in answer["error"]
    one, other = Browser(node), Browser(node)
    one.unlock()
    other_csrf = other.unlock()[1]["csrf_token"]
    assert one.request("PUT", "/api/v1/limits", {"upload": 0}, headers={"X-CSRF-Token": other_csrf})[0] == 403


def test_a_foreign_page_cannot_unlock_and_its_try_costs_the_user_nothing(node):
    browser = Browser(node)
    for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
        status, _, answer = browser.request("POST", "/api/v1/session", {"passphrase": PASS}, headers=headers)
        assert status == 403 and answer["error"] and not browser.cookies
    assert node.get("/api/v1/status")[0] == 200  # the token still works, with no CSRF token: it is no cookie


def test_locking_ends_the_session(node):
    browser = Browser(node)
    csrf = browser.unlock()[1]["csrf_token"]
    stolen = dict(browser.cookies)
    status, _, _ = browser.request("DELETE", "/api/v1/session", headers={"X-CSRF-Token": csrf})
    assert status == 200 and not browser.cookies
    browser.cookies = stolen  # the old cookie, kept
    assert browser.request("GET", "/api/v1/status")[0] == 401


def test_guessing_the_passphrase_is_throttled_one_at_a_time_and_all_at_once(node):
    # runs last: it leaves the unlock throttled
    browser = Browser(node)
    assert browser.unlock()[0] == 201  # a success: the count starts from nothing
    for _ in range(FREE_FAILURES):
        assert browser.unlock("guess")[0] == 401
    # many guesses at once: tries go one at a time, so only one more is checked before the wait
    outcomes: list[tuple[int, dict]] = []
    guesses = [threading.Thread(target=lambda: outcomes.append(Browser(node).unlock("guess"))) for _ in range(8)]
    for guess in guesses:
        guess.start()
    for guess in guesses:
        guess.join(timeout=120)
    statuses = sorted(status for status, _ in outcomes)
    assert statuses == [401] + [429] * 7, outcomes
    late = Browser(node)
    status, answer = late.unlock(PASS)  # even the right one waits now
    assert status == 429 and 0 < answer["retry_after_s"] <= BASE_DELAY_S and "try again" in answer["error"]
    assert not late.cookies
    assert browser.request("GET", "/api/v1/status")[0] == 200  # a session opened before goes on
