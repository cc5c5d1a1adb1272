"""`veil config`: the effective configuration and where each value came from."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from veilstream.node.cli.common import console, veil_home
from veilstream.node.config import CONFIG_FILE, ConfigError, load_node_config, render_toml

config_app = typer.Typer(help="The node's configuration ($VEIL_HOME/config.toml).", no_args_is_help=True)


def parse_set_flags(assignments: list[str]) -> dict[str, tuple[str, str]]:
    """`--set TABLE.KEY=VALUE`, repeated, as `load`'s flags."""
    flags = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {assignment!r}: write it as TABLE.KEY=VALUE, e.g. market.credit_window_slices=3")
        flags[key.strip()] = (value.strip(), f"--set {key.strip()}")
    return flags


@config_app.command("show")
def show(
    assignments: list[str] = typer.Option([], "--set", metavar="TABLE.KEY=VALUE",
                                          help="Override a value, as the node's own flags do (repeatable)."),
    as_toml: bool = typer.Option(False, "--toml", help="Print a config.toml of the effective values instead."),
) -> None:
    """Every setting's effective value and its source: default, config.toml, or a flag.

    Example: veil config show --set swarm.listen_port=6881"""
    config = load_node_config(veil_home(), parse_set_flags(assignments))
    if as_toml:
        print(render_toml(config))
        return
    table = Table(title=f"{veil_home() / CONFIG_FILE}", title_justify="left")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for key, value, source in config.rows():
        table.add_row(key, escape(repr(value) if isinstance(value, str) else str(value)), escape(str(source)))
    console.print(table)


@config_app.command("path")
def path() -> None:
    """Where the config file is (it need not exist: every value has a default)."""
    print(veil_home() / CONFIG_FILE)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
