"""One local relay per machine: what one vault posts, another vault's `veil feed` sees,
whether `veil relay` runs or each command starts the relay for itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

import cli_harness
from cli_harness import VEIL, content_id_of, free_port, new_vault, ok, veil_env


@pytest.fixture
def machine(tmp_path) -> dict[str, str]:
    """The environment of one machine: its own local relay store and port."""
    return {"VEIL_RELAY_DATA": str(tmp_path / "shared-relay"), "VEIL_RELAY_PORT": str(free_port())}


def veil(home: Path, machine: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return cli_harness.veil(home, *args, env=machine)


def vault(path: Path) -> Path:
    new_vault(path)
    return path


def post_a_card(home: Path, machine: dict[str, str], title: str, tmp_path: Path) -> str:
    """`veil post`'s output: the card id and the relays that took it."""
    movie = tmp_path / f"{title}.bin"
    movie.write_bytes(os.urandom(150_000))
    published = ok(veil(home, machine, "publish", str(movie), "--slice-size", "64KiB"))
    content_id = content_id_of(published)
    return ok(veil(home, machine, "post", content_id, "--title", title, "--no-previews"))


def feed_titles(home: Path, machine: dict[str, str]) -> list[str]:
    return [card["title"] for card in json.loads(ok(veil(home, machine, "feed", "--json")))["cards"]]


def test_vaults_share_the_relay_each_command_starts(tmp_path, machine):
    alice, bob = vault(tmp_path / "alice"), vault(tmp_path / "bob")
    post_a_card(alice, machine, "Alice's noise", tmp_path)
    # Alice's command and its relay are gone; Bob's command starts its own on the same store.
    assert feed_titles(bob, machine) == ["Alice's noise"]
    assert (Path(machine["VEIL_RELAY_DATA"]) / "relay.sqlite3").is_file()
    assert not (alice / "social" / "relay").exists() and not (bob / "social" / "relay").exists()


def test_vaults_share_veil_relay_wherever_it_listens(tmp_path, machine):
    alice, bob = vault(tmp_path / "alice"), vault(tmp_path / "bob")
    port = free_port()  # not VEIL_RELAY_PORT: commands find it by what it advertises in the store
    relay = subprocess.Popen([*VEIL, "relay", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=veil_env(alice, extra=machine))
    try:
        first = relay.stdout.readline()  # the first line says where it listens
        assert f"relay at ws://127.0.0.1:{port}" in first, first
        assert f"✓ ws://127.0.0.1:{port}" in post_a_card(alice, machine, "Alice's noise", tmp_path)
        assert feed_titles(bob, machine) == ["Alice's noise"]

        second = veil(bob, machine, "relay", "--listen", f"127.0.0.1:{free_port()}")
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert re.fullmatch(rf"error: the relay store .* is in use by the relay at ws://127\.0\.0\.1:{port} .*\n",
                            second.stderr), second.stderr
    finally:
        relay.send_signal(signal.SIGINT)
        out, _ = relay.communicate(timeout=30)
    assert relay.returncode == 0, out
    assert "relay stopped; events kept in" in out and "Traceback" not in out
    # What it stored outlives it: the next command's own relay serves it from the same store.
    assert feed_titles(vault(tmp_path / "carol"), machine) == ["Alice's noise"]


def test_two_commands_starting_the_relay_at_once_both_succeed(tmp_path, machine):
    alice, bob = vault(tmp_path / "alice"), vault(tmp_path / "bob")
    commands = [
        subprocess.Popen([*VEIL, "profile", "--name", name], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=veil_env(home, extra=machine))
        for home, name in ((alice, "Alice"), (bob, "Bob"))
    ]
    for command in commands:
        out, err = command.communicate(timeout=120)
        assert command.returncode == 0, err + out
        assert "profile updated" in out
    alice_key = json.loads((alice / "identity.json").read_text())["nostr_pubkey"]
    for leftover in (bob / "social").glob("index.sqlite3*"):
        leftover.unlink()  # Bob learns of Alice's profile from the relay, not from his index
    assert "Alice" in ok(veil(bob, machine, "profile", alice_key))
