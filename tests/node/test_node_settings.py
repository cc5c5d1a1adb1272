"""Settings through a running node's API: every value with its source, as `veil config show`
has them; a change is checked, kept in node/settings.json for the next start (config.toml is
left as the user wrote it), shown from "api", and can be dropped again; a bad one is refused in
words and changes nothing."""

import json

import pytest

from cli_harness import new_vault, ok, veil
from test_node import RunningNode
from test_node_limits import call


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("settings") / "home"
    new_vault(home)
    (home / "config.toml").write_text("# mine\n[swarm]\nmax_connections = 150\n")
    return home


@pytest.fixture(scope="module")
def node(home):
    running = RunningNode(home)
    yield running
    if running.process.poll() is None:
        running.stop()


def by_key(answer: dict) -> dict[str, dict]:
    return {row["key"]: row for row in answer["settings"]}


def test_every_setting_comes_with_its_source(node, home):
    status, answer = call(node, "GET", "/settings")
    assert status == 200
    rows = by_key(answer)
    assert rows["swarm.max_connections"]["value"] == 150 and rows["swarm.max_connections"]["source"].startswith("file")
    assert rows["node.api_port"] == {"key": "node.api_port", "value": 0, "source": "flag --api-port"}
    assert rows["node.events_kept"]["source"] == "default"
    assert {row["key"] for row in answer["at_next_start"]} == {"node.api_port"}  # this run's flag only


def test_a_change_is_kept_for_the_next_start_and_config_toml_stays_as_written(node, home):
    status, answer = call(node, "PUT", "/settings", {"key": "swarm.max_connections", "value": 300})
    assert status == 200 and answer == {"key": "swarm.max_connections", "value": 300, "applies": "at the next start"}
    assert json.loads((home / "node" / "settings.json").read_text()) == {"swarm.max_connections": 300}
    assert (home / "config.toml").read_text() == "# mine\n[swarm]\nmax_connections = 150\n"
    upcoming = {row["key"]: row for row in call(node, "GET", "/settings")[1]["at_next_start"]}
    assert upcoming["swarm.max_connections"]["value"] == 300 and upcoming["swarm.max_connections"]["source"].startswith("api")
    shown = ok(veil(home, "config", "show"))
    assert "300" in next(line for line in shown.splitlines() if "swarm.max_connections" in line)
    status, answer = call(node, "DELETE", "/settings/swarm.max_connections")
    assert status == 200 and answer["forgotten"] is True
    assert by_key(call(node, "GET", "/settings")[1])["swarm.max_connections"]["value"] == 150


@pytest.mark.parametrize("body, says", [
    ({"key": "swarm.max_connections", "value": 0}, "max_connections = 0 is not allowed"),
    ({"key": "swarm.max_connections", "value": "many"}, "max_connections"),
    ({"key": "swarm.no_such_thing", "value": 1}, "unknown setting 'swarm.no_such_thing'"),
    ({"key": "nowhere", "value": 1}, "unknown setting 'nowhere'"),
    ({"key": "swarm.upload_rate_limit", "value": 1000}, "PUT /api/v1/limits"),
])
def test_a_bad_change_is_refused_in_words_and_changes_nothing(node, home, body, says):
    before = (home / "node" / "settings.json").read_text() if (home / "node" / "settings.json").exists() else None
    status, answer = call(node, "PUT", "/settings", body)
    assert status == 400 and says in answer["error"], answer
    after = (home / "node" / "settings.json").read_text() if (home / "node" / "settings.json").exists() else None
    assert after == before
