"""Which relays a command talks to, and the machine's one shared local relay.

In order: `--relay URL` flags; else the list in `$VEIL_HOME/social/relays.json`
(`{"relays": ["wss://…"]}`); else the local relay. The local relay keeps its events in one
place per user, so every vault on the machine sees the same feed: `VEIL_RELAY_DATA`, else
`$XDG_DATA_HOME/veilstream/relay`, else `~/.local/share/veilstream/relay`.

Finding the local relay:
- `veil relay` runs it in the foreground and owns that store; commands use it wherever it
  listens (it advertises its address in the store).
- else, a relay already listening on 127.0.0.1:7447 (`VEIL_RELAY_PORT` overrides) is used;
- else the command starts its own relay on that port and that store, and stops it when it
  ends (a node, `veil up`, starts one that others share while it runs). The store admits one relay at a time (see `social.embedded_relay`), so a second
  command arriving meanwhile waits for the first to finish, then starts its own; run
  `veil relay` to spare commands the start and the wait.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from veilstream.social.embedded_relay import DEFAULT_PORT, STARTUP_TIMEOUT_S, EmbeddedRelay, RelayStoreBusy, store_owner
from veilstream.social.errors import SocialError
from veilstream.social.relay_client import check_relay_url

RELAYS_FILE = "relays.json"
# A command's own relay lives as long as the command: a few seconds for `post` or `feed`.
COMMAND_RELAY_WAIT_S = 60.0
OWNER_POLL_S = 0.05


def social_home(home: Path) -> Path:
    return home / "social"


def shared_relay_dir() -> Path:
    """Where the machine's local relay keeps its events (one place per user)."""
    explicit = os.environ.get("VEIL_RELAY_DATA")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser() / "veilstream" / "relay"


def relay_port() -> int:
    value = os.environ.get("VEIL_RELAY_PORT")
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SocialError(f"VEIL_RELAY_PORT must be a port number (1–65535), not {value!r}")
    return int(value)


def configured_relays(home: Path) -> list[str]:
    path = social_home(home) / RELAYS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        relays = data["relays"] if isinstance(data, dict) else data
        return [check_relay_url(str(url)) for url in relays]
    except (ValueError, KeyError, TypeError) as exc:
        raise SocialError(f"{path} is not a relay list ({{\"relays\": [\"wss://…\"]}}): {exc}") from None


def port_listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def local_relay(
    stack: ExitStack,
    *,
    wait_s: float = COMMAND_RELAY_WAIT_S,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    on_wait: Callable[[str], None] | None = None,
    shared: bool = False,
) -> str:
    """The URL of the local relay; starts one for this command (closed with `stack`) if none runs.

    `on_wait` hears, once, that another command's relay holds the store and this one waits.
    `shared`: the relay started here lives long (a node's) and other commands may use it.
    """
    data_dir, port = shared_relay_dir(), relay_port()
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        owner = store_owner(data_dir)
        if owner is None:
            if port_listening(port):  # a relay on another store, such as a node's own
                return f"ws://127.0.0.1:{port}"
            try:
                return stack.enter_context(
                    EmbeddedRelay(data_dir, port=port, shared=shared, startup_timeout_s=startup_timeout_s)
                ).url
            except RelayStoreBusy as busy:
                owner = busy.owner  # another command took it first
            except SocialError:
                if not port_listening(port):  # another program may have taken the port meanwhile
                    raise
                return f"ws://127.0.0.1:{port}"
        if owner.shared and owner.url:
            return owner.url
        # Starting, or another command's own relay, which stops when that command ends.
        if on_wait is not None and not told and not owner.shared:
            on_wait(f"waiting for another veil command (process {owner.pid or '?'}) to finish with the local relay…")
            told = True
        if time.monotonic() > deadline:
            raise SocialError(
                f"the relay store {data_dir} stayed busy for {wait_s:g} s (process {owner.pid or '?'}): "
                "run `veil relay` for one relay every command shares"
            )
        time.sleep(OWNER_POLL_S)


def resolve_relays(
    home: Path,
    cli_relays: list[str],
    stack: ExitStack,
    *,
    wait_s: float = COMMAND_RELAY_WAIT_S,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    on_wait: Callable[[str], None] | None = None,
    shared: bool = False,
) -> list[str]:
    """The relays for this command: the flags, else the configured list, else the local relay
    (`shared`: see `local_relay`)."""
    if cli_relays:
        return [check_relay_url(url) for url in cli_relays]
    configured = configured_relays(home)
    if configured:
        return configured
    return [local_relay(stack, wait_s=wait_s, startup_timeout_s=startup_timeout_s, on_wait=on_wait, shared=shared)]
