"""config.toml and flags over every layer's settings pack: each value checked, each with its
source, a bad one a single line naming the key, the value and what is allowed."""

from dataclasses import dataclass

import pytest
from hypothesis import given, strategies as st

from cli_harness import veil
from veilstream.chain import ChainClientSettings
from veilstream.market.settings import MarketSettings
from veilstream.node.config import DEFAULT, ConfigError, Source, load, load_node_config, render_toml
from veilstream.social import SocialSettings
from veilstream.swarm.settings import SwarmSettings


@dataclass(frozen=True)
class Pack:
    count: int = 3
    rate_s: float = 1.5
    name: str = "x"
    on: bool = True
    urls: tuple[str, ...] = ()
    limit: int | None = None
    listen_port: int = 0


SECTIONS = {"pack": Pack}


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_flags_each_with_its_source(tmp_path):
    path = write(tmp_path, '[pack]\ncount = 5\nname = "file"\nrate_s = 2\n')
    config = load(SECTIONS, path, {"pack.name": ("flag", "--name"), "pack.urls": ("a, b", "--set pack.urls")})
    pack = config["pack"]
    assert (pack.count, pack.name, pack.rate_s, pack.urls, pack.on) == (5, "flag", 2.0, ("a", "b"), True)
    assert isinstance(pack.rate_s, float)
    sources = {key: source for key, _, source in config.rows()}
    assert sources["pack.count"] == Source("file", str(path))
    assert sources["pack.name"] == Source("flag", "--name")
    assert sources["pack.on"] == DEFAULT


def test_a_missing_file_is_all_defaults(tmp_path):
    assert load(SECTIONS, tmp_path / "none.toml")["pack"] == Pack()


@pytest.mark.parametrize("text, message", [
    ("[pack]\ncount = 'many'\n", "pack.count = 'many' is not allowed: it must be a whole number"),
    ("[pack]\ncount = true\n", "pack.count = True is not allowed: it must be a whole number"),
    ("[pack]\ncount = -1\n", "pack.count = -1 is not allowed: it must be 0 or more"),
    ("[pack]\nrate_s = nan\n", "pack.rate_s = nan is not allowed: it must be a number"),
    ("[pack]\non = 1\n", "pack.on = 1 is not allowed: it must be true or false"),
    ("[pack]\nurls = [1, 2]\n", "pack.urls = [1, 2] is not allowed: it must be a list of a strings"),
    ("[pack]\nlisten_port = 70000\n", "pack.listen_port = 70000 is not allowed: a port is 0 (any free one) to 65535"),
    ("[pack]\ncuont = 1\n", "unknown setting pack.cuont"),
    ("[pakc]\ncount = 1\n", "unknown table [pakc] (known: pack)"),
    ("pack = 1\n", "`pack` must be a table"),
    ("[pack\n", "is not valid TOML"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load(SECTIONS, write(tmp_path, text))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_flags_are_parsed_by_the_field_type(tmp_path):
    pack = load(SECTIONS, None, {"pack.on": ("off", "--on"), "pack.limit": ("none", "--limit"),
                                 "pack.count": ("1_000", "--count")})["pack"]
    assert (pack.on, pack.limit, pack.count) == (False, None, 1000)
    with pytest.raises(ConfigError, match=r"--on: pack.on = 'maybe' is not allowed: it must be true or false"):
        load(SECTIONS, None, {"pack.on": ("maybe", "--on")})
    with pytest.raises(ConfigError, match="unknown setting 'nope.count'"):
        load(SECTIONS, None, {"nope.count": ("1", "--set nope.count")})


def test_every_layer_pack_loads_with_its_defaults_and_round_trips_through_toml(tmp_path):
    config = load_node_config(tmp_path)
    assert config["swarm"] == SwarmSettings() and config["market"] == MarketSettings()
    assert config["chain"] == ChainClientSettings() and config["social"] == SocialSettings()
    (tmp_path / "config.toml").write_text(render_toml(config))
    again = load_node_config(tmp_path)
    assert again.packs == config.packs
    assert all(source.kind == "file" for _, _, source in again.rows())


@given(count=st.integers(min_value=0, max_value=10**12), rate=st.floats(min_value=0, max_value=1e9),
       name=st.text(max_size=20), urls=st.lists(st.text(max_size=10), max_size=4))
def test_rendered_toml_reads_back_the_same_values(tmp_path_factory, count, rate, name, urls):
    tmp = tmp_path_factory.mktemp("cfg")
    config = load(SECTIONS, write(tmp, f"[pack]\ncount = {count}\n"), None)
    config.packs["pack"] = Pack(count=count, rate_s=rate, name=name, urls=tuple(urls))
    again = load(SECTIONS, write(tmp, render_toml(config)))
    assert again["pack"] == config["pack"]


def test_veil_config_show_prints_each_value_with_its_source_and_a_bad_file_is_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[market]\ncredit_window_slices = 3\n")
    shown = veil(home, "config", "show", "--set", "swarm.listen_port=6881", passphrase=None)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if line.count("│") >= 3}
    assert "3" in lines["market.credit_window_slices"] and "config.toml" in lines["market.credit_window_slices"]
    assert "6881" in lines["swarm.listen_port"] and "--set swarm.listen_port" in lines["swarm.listen_port"]
    assert "default" in lines["swarm.listen_host"]
    (home / "config.toml").write_text("[chain]\nrpc_timeout_s = 0\n")  # the pack's own rule
    refused = veil(home, "config", "show", passphrase=None)
    assert refused.returncode == 2 and "[chain]: rpc_timeout_s must be a positive number of seconds" in refused.stderr
    (home / "config.toml").write_text("[market]\ncredit_window_slices = 'three'\n")
    bad = veil(home, "config", "show", passphrase=None)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0
    assert "market.credit_window_slices = 'three' is not allowed: it must be a whole number" in bad.stderr
