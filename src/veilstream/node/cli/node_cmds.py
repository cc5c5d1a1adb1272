"""`veil up`, `veil status`, `veil logs`: the long-running node and a look at it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import typer
from rich.table import Table

from veilstream.chain.errors import ChainUnavailable
from veilstream.content import parse_content_id
from veilstream.errors import VeilError
from veilstream.node.cli.common import console, err_console, open_vault, read_passphrase, veil_home
from veilstream.node.cli.config_cmds import parse_set_flags
from veilstream.node import crash
from veilstream.node.config import load_node_config
from veilstream.node.daemon import LOG_FILE, NODE_LOCK, Node, read_info, read_token
from veilstream.node.limits import describe_rate
from veilstream.node.units import format_ether
from veilstream.swarm import run
from veilstream.vault import VaultBusy

STATUS_TIMEOUT_S = 5.0
FOLLOW_POLL_S = 0.25


class NodeCommandError(VeilError):
    pass


def up(
    api_port: int = typer.Option(None, "--api-port", help="Serve the API on this port (node.api_port; 0: any free one)."),
    listen: str = typer.Option(None, "--listen", help="Where to accept peers, HOST:PORT (swarm.listen_host/port)."),
    assignments: list[str] = typer.Option([], "--set", metavar="TABLE.KEY=VALUE",
                                          help="Override any setting of config.toml (repeatable; `veil config show`)."),
) -> None:
    """Run the node: seed everything the vault holds for cheques, sell your own contents' keys,
    answer grants, cash what is owed, and serve the API, until Ctrl-C or SIGTERM.

    Example: veil up --api-port 8467"""
    flags = parse_set_flags(assignments)
    if api_port is not None:
        flags["node.api_port"] = (str(api_port), "--api-port")
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host:
            raise NodeCommandError(f"--listen {listen!r}: write it as HOST:PORT, e.g. 127.0.0.1:6881")
        flags["swarm.listen_host"] = (host.strip("[]"), "--listen")
        flags["swarm.listen_port"] = (port, "--listen")
    home = veil_home()
    config = load_node_config(home, flags)  # a bad setting is refused before the passphrase
    open_vault()  # no vault: one line saying `veil init`
    passphrase = read_passphrase()
    secrets = [passphrase]
    try:
        _run_node(home, config, passphrase, secrets)
    except (VeilError, KeyboardInterrupt):
        raise
    except BaseExceptionGroup as group:
        if group.split(VeilError)[1] is None:  # only errors a user can act on
            raise
        _crashed(home, config, group, secrets)
    except Exception as exc:
        _crashed(home, config, exc, secrets)


def _crashed(home: Path, config, error: BaseException, secrets: list[str]) -> None:
    """Something no error message foresaw: a scrubbed report on disk, sent only if the user asked."""
    path = crash.write_report(home, error, secrets, "veil up")
    url = config["node"].crash_report_url
    sent = ""
    if url:
        failed = crash.send_report(path, url)
        sent = f"; sent to {url}" if failed is None else f"; it could not be sent to {url}: {failed}"
    raise NodeCommandError(f"the node crashed ({type(error).__name__}): a report without keys, content ids or "
                           f"addresses is in {path}{sent or ' (nothing was sent anywhere)'}") from None


def _run_node(home: Path, config, passphrase: str, secrets: list[str]) -> None:
    with Node.open(home, config, passphrase) as node:
        secrets.extend(node.secrets)  # for a crash report, written once the node has closed
        stop = asyncio.Event()

        def on_ready(ready) -> None:
            console.print(f"node up: {ready.contents} content{'' if ready.contents == 1 else 's'}, "
                          f"peers at {ready.swarm_address[0]}:{ready.swarm_address[1]}")
            console.print(f"API {ready.api_url}/api/v1 (token in {home / 'node' / 'api-token'})", soft_wrap=True)
            console.print("Ctrl-C stops it (what is owed is cashed first)")
            sys.stdout.flush()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await node.serve(stop, on_ready)

        run(main())
        try:
            claimed = node.finish()
        except ChainUnavailable as down:
            cashier = node.seller.cashier
            raise NodeCommandError(f"stopped; {down}: {format_ether(cashier.uncashed_wei)} in cheques stay in the "
                                   "ledger, and the next `veil up` (or `veil wallet cash`) cashes them") from None
        if node.fatal:
            raise NodeCommandError(f"the node stopped: {node.fatal[0]}")
        console.print(f"stopped; cashed and claimed {format_ether(claimed)}")


def _running_node(home: Path) -> tuple[str, str]:
    """(API URL, token) of the node running for this vault, or a one-line error."""
    vault = open_vault()
    try:
        with vault.hold(NODE_LOCK, "veil status"):
            raise NodeCommandError("no node is running for this vault (`veil up` starts one)")
    except VaultBusy:
        pass
    info, token = read_info(home), read_token(home)
    if info is None or token is None:
        raise NodeCommandError("the node of this vault is starting (or cannot write its files): try again shortly")
    return info["api_url"], token


def api_call(home: Path, path: str, method: str = "GET") -> dict:
    url, token = _running_node(home)
    request = urllib.request.Request(f"{url}/api/v1/{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT_S) as response:  # noqa: S310 (our own node)
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            reason = f"{exc.code} {exc.reason}"
        raise NodeCommandError(f"the node refused: {reason}") from None
    except (OSError, ValueError) as exc:
        raise NodeCommandError(f"the node at {url} does not answer: {exc}") from None


def status(
    as_json: bool = typer.Option(False, "--json", help="Print the node's status as one JSON object."),
) -> None:
    """What the running node is doing: peers, contents seeded, earnings, chain connectivity."""
    state = api_call(veil_home(), "status")
    if as_json:
        print(json.dumps(state))
        return
    chain = state["chain"]
    up_for = time.time() - state["started_at"]
    console.print(f"node pid {state['pid']}, up {up_for / 60:.0f} min · wallet {state['wallet']} · "
                  f"peers at {state['swarm']['listen']} · API {state['api_url']}")
    console.print(f"chain {chain['endpoint']}: {'answers' if chain['answers'] else 'does NOT answer'} · "
                  f"uncashed {format_ether(chain['uncashed_wei'])} in {chain['uncashed_cheques']} cheques · "
                  f"cashed {format_ether(chain['paid_wei'])}")
    table = Table("content id", "role", "peers", "served", "cheques", "earned", "keys released")
    for c in state["contents"]:
        role = c["role"] + (" (paused)" if c["paused"] else "")
        table.add_row(c["content_id"][:16] + "…", role, str(c["peers"]), f"{c['bytes_served'] / 2**20:.1f} MiB",
                      str(c["cheques_accepted"]), format_ether(c["earned_wei"]),
                      str(c["keys_released"]) if c["sells_keys"] else "")
    console.print(table)
    limits = state.get("limits")
    if limits and (limits["upload"] or limits["download"] or limits["contents"]):
        console.print(f"limits: upload {describe_rate(limits['upload'])} · download {describe_rate(limits['download'])}"
                      f" · {limits['connections']} of {limits['max_connections']} connections")
        for cid, own in limits["contents"].items():
            console.print(f"  {cid[:16]}…: upload {describe_rate(own['upload'])} · "
                          f"download {describe_rate(own['download'])}")
    feed = state.get("feed")
    for relay in feed["relays"] if feed else []:
        when = time.strftime("%H:%M:%S", time.localtime(relay["since"]))
        shown = (f"connected since {when}" if relay["state"] == "connected"
                 else f"DOWN since {when}: {relay['last_error'] or 'not reached yet'}")
        console.print(f"relay {relay['url']}: {shown}", markup=False, soft_wrap=True)
    if feed:
        console.print(f"feed: {feed['events_stored']} events taken, {feed['events_refused']} refused")
    tracker = state.get("tracker")
    if tracker:
        console.print(f"tracker {tracker['url']} ({'run by this node' if tracker['ours'] else 'run by another node'})",
                      markup=False, soft_wrap=True)
    for s in state["streams"]:
        console.print(f"streaming {s['content_id'][:16]}…: {s['slices_verified']}/{s['slices']} slices verified, "
                      f"paid {format_ether(s['paid_wei'])} of {format_ether(s['budget_wei'])}, "
                      f"{s['sources']} sources")


def pause(content_id: str = typer.Argument(..., help="Content id (or magnet) the node seeds.")) -> None:
    """Stop seeding a content from the running node (and selling its keys), until `veil resume`;
    it stays paused across restarts."""
    state = api_call(veil_home(), f"contents/{parse_content_id(content_id)}/pause", "POST")
    console.print(f"paused {state['content_id']}")


def resume(content_id: str = typer.Argument(..., help="Content id (or magnet) paused with `veil pause`.")) -> None:
    """Seed a paused content again."""
    state = api_call(veil_home(), f"contents/{parse_content_id(content_id)}/resume", "POST")
    console.print(f"seeding {state['content_id']} again")


def logs(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what the node logs (Ctrl-C ends)."),
) -> None:
    """The node's log ($VEIL_HOME/logs/node.log)."""
    path = veil_home() / LOG_FILE
    if not path.exists():
        raise NodeCommandError(f"no node log yet at {path} (`veil up` writes it)")
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        sys.stdout.write(handle.read())
        sys.stdout.flush()
        if not follow:
            return
        inode = path.stat().st_ino
        try:
            while True:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
                    continue
                try:
                    if path.stat().st_ino != inode:  # rotated: go on in the new file
                        handle.close()
                        handle = path.open("r", encoding="utf-8", errors="replace")
                        inode = path.stat().st_ino
                        continue
                except FileNotFoundError:
                    pass
                time.sleep(FOLLOW_POLL_S)
        except KeyboardInterrupt:
            err_console.print("")
        finally:
            handle.close()


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("logs")(logs)
