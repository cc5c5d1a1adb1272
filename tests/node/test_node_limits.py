"""Limits on a running `veil up`, through its API: the node's upload and download rates and a
content's own, changed at once, kept across a restart in node/limits.json, shown by
`veil status` and `veil config show`; config.toml takes rates as bytes/s or sizes; a bad
value is a clear 4xx (or one line), never a traceback."""

import json
import os
import urllib.error
import urllib.request

import pytest

from cli_harness import content_id_of, ok, veil
from test_node import Home, RunningNode
from veilstream.node.config import ConfigError, load_node_config

KIB, MIB = 1024, 1024 * 1024


def call(node: RunningNode, method: str, path: str, body=None, *, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"{node.url}/api/v1{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {node.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("limits") / "home")
    ok(veil(home, "init"))
    ok(veil(home, "wallet", "faucet", "1"))
    media = tmp_path_factory.mktemp("media") / "clip.bin"
    media.write_bytes(os.urandom(50_000))
    home.content_id = content_id_of(ok(veil(home, "publish", str(media), "--slice-size", "16KiB", "--price", "1000wei")))
    return home


@pytest.fixture(scope="module")
def node(home):
    running = RunningNode(home)
    yield running
    if running.process.poll() is None:
        running.stop()


def test_with_nothing_set_there_is_no_limit(node):
    status, limits = call(node, "GET", "/limits")
    assert status == 200
    assert limits == {**limits, "upload": 0, "download": 0, "max_connections": 200, "contents": {}}


def test_the_nodes_limits_change_at_once_and_are_saved(node, home):
    status, limits = call(node, "PUT", "/limits", {"upload": "256KiB", "download": 1_000_000})
    assert status == 200 and (limits["upload"], limits["download"]) == (256 * KIB, 1_000_000)
    status, limits = call(node, "PUT", "/limits", {"download": 0})  # one left out stays as it is
    assert (limits["upload"], limits["download"]) == (256 * KIB, 0)
    assert call(node, "GET", "/limits")[1]["upload"] == 256 * KIB
    saved = home / "node" / "limits.json"
    assert json.loads(saved.read_text())["upload"] == 256 * KIB
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


def test_a_contents_own_limits_need_a_content_the_node_holds(node, home):
    status, own = call(node, "PUT", f"/contents/{home.content_id}/limits", {"upload": 64 * KIB})
    assert status == 200 and own == {"content_id": home.content_id, "upload": 64 * KIB, "download": 0}
    assert call(node, "GET", "/limits")[1]["contents"] == {home.content_id: {"upload": 64 * KIB, "download": 0}}
    status, body = call(node, "PUT", f"/contents/{'ab' * 32}/limits", {"upload": 1})
    assert status == 404 and "neither holds nor streams" in body["error"]
    status, body = call(node, "PUT", "/contents/not-a-content/limits", {"upload": 1})
    assert status == 400 and "64 hex digits" in body["error"]


@pytest.mark.parametrize("body, status, says", [
    ({"upload": -1}, 400, "upload = -1 is not allowed: a rate is a whole number of bytes/s"),
    ({"download": "fast"}, 400, "download = 'fast' is not allowed"),
    ({"upload": "1.5MiB"}, 400, "upload = '1.5MiB' is not allowed"),
    ({"upload": 1.5}, 422, "upload"),
    ({"upload": True}, 422, "upload"),
    ({"upload": [1]}, 422, "upload"),
])
def test_a_bad_limit_is_a_clear_error_and_changes_nothing(node, body, status, says):
    before = call(node, "GET", "/limits")[1]
    got, answer = call(node, "PUT", "/limits", body)
    assert got == status and says in answer["error"] and "\n" not in answer["error"]
    assert call(node, "GET", "/limits")[1] == before


def test_a_body_that_is_not_json_is_a_clear_error(node):
    status, answer = call(node, "PUT", "/limits", raw=b"{not json")
    assert status == 422 and answer["error"]


def test_veil_status_shows_the_limits(node, home):
    shown = ok(veil(home, "status"))
    assert "limits: upload 256 KiB/s · download no limit" in shown
    assert f"{home.content_id[:16]}…: upload 64 KiB/s" in shown


def test_veil_config_show_names_the_api_as_the_source(node, home):
    shown = ok(veil(home, "config", "show", passphrase=None))
    lines = {line.split("│")[1].strip(): line for line in shown.splitlines() if line.count("│") >= 3}
    assert str(256 * KIB) in lines["swarm.upload_rate_limit"] and "api" in lines["swarm.upload_rate_limit"]
    assert "limits.json" in lines["swarm.upload_rate_limit"]
    assert "default" in lines["swarm.max_connections"]


def test_the_limits_outlive_a_restart(node, home):
    # runs last: it stops the module's node
    assert node.stop()[0] == 0
    again = RunningNode(home)
    try:
        limits = call(again, "GET", "/limits")[1]
        assert (limits["upload"], limits["download"]) == (256 * KIB, 0)
        assert limits["contents"] == {home.content_id: {"upload": 64 * KIB, "download": 0}}
        assert call(again, "PUT", f"/contents/{home.content_id}/limits", {"upload": 0})[0] == 200
        assert call(again, "GET", "/limits")[1]["contents"] == {}  # no limit left: nothing kept for it
    finally:
        assert again.stop()[0] == 0


# -- config.toml -----------------------------------------------------------------------------


def test_config_takes_rates_as_bytes_per_second_or_sizes(tmp_path):
    (tmp_path / "config.toml").write_text('[swarm]\nupload_rate_limit = "2MiB"\ndownload_rate_limit = 500000\n'
                                          "max_connections = 50\n")
    swarm = load_node_config(tmp_path)["swarm"]
    assert (swarm.upload_rate_limit, swarm.download_rate_limit, swarm.max_connections) == (2 * MIB, 500_000, 50)
    flagged = load_node_config(tmp_path, {"swarm.download_rate_limit": ("500KiB", "--set swarm.download_rate_limit")})
    assert flagged["swarm"].download_rate_limit == 500 * KIB


@pytest.mark.parametrize("text, says", [
    ('upload_rate_limit = "fast"', "swarm.upload_rate_limit = 'fast' is not allowed: it must be a whole number "
                                   "of bytes or a size such as 500KiB or 2MiB"),
    ("download_rate_limit = -5", "swarm.download_rate_limit = -5 is not allowed: it must be 0 or more"),
    ("max_connections = 0", "[swarm]: max_connections = 0 is not allowed: it must be a whole number, 1 or more"),
])
def test_a_bad_limit_in_config_is_one_line_naming_key_value_and_what_is_allowed(tmp_path, text, says):
    (tmp_path / "config.toml").write_text(f"[swarm]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_node_config(tmp_path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_damaged_limits_file_is_one_line_saying_what_to_do(tmp_path):
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "limits.json").write_text('{"upload": "lots"}')
    with pytest.raises(ConfigError, match=r"limits.json: upload = 'lots' is not allowed.*delete it"):
        load_node_config(tmp_path)
    result = veil(tmp_path, "up", "--api-port", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "limits.json" in result.stderr
