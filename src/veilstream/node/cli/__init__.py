"""`veil`: one program runs every role of a node.

Each command group lives in its own module with a `register(app)` function; this module
only assembles them and turns every `VeilError` into one red line and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer._click import exceptions as parse_errors  # typer ≥ 0.29 vendors click here

from veilstream.errors import VeilError
from veilstream.node.cli.common import err_console

app = typer.Typer(
    name="veil",
    help="Veilstream: publish, seed, stream and pay for encrypted content.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    from veilstream.node.cli import (
        chain_cmds, config_cmds, content_cmds, demo_cmd, identity_cmds, market_cmds, node_cmds, social_cmds, swarm_cmds,
    )

    for module in (identity_cmds, content_cmds, chain_cmds, swarm_cmds, market_cmds, social_cmds, node_cmds,
                   config_cmds, demo_cmd):
        module.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"veil {version('veilstream')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Veilstream: publish, seed, stream and pay for encrypted content.

    Start with `veil init`, then `veil publish FILE` or `veil play MAGNET --out FILE`;
    `veil COMMAND --help` shows each command's options and an example."""


_register_all()


def main() -> None:
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except parse_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "")
        sys.exit(0)
    except parse_errors.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message() + hint)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except parse_errors.ClickException as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("[bold red]aborted[/]")
        sys.exit(1)
    except VeilError as exc:
        # The message may quote the user's input or a relay's answer: text, never markup.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except BaseExceptionGroup as group:  # tasks that failed together: report what a user can act on
        errors, _ = group.split(VeilError)
        if errors is None:
            raise
        first = _leaves(errors)[0]
        err_console.print(f"[bold red]error:[/] {first}", highlight=False, soft_wrap=True)
        sys.exit(first.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: nothing half-written was kept")
        sys.exit(130)


def _leaves(group: BaseExceptionGroup) -> list:
    return [leaf for exc in group.exceptions for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])]
