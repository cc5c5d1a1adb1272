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
    from veilstream.node.cli import chain_cmds, content_cmds, demo_cmd, identity_cmds, market_cmds, social_cmds, swarm_cmds

    for module in (identity_cmds, content_cmds, chain_cmds, swarm_cmds, market_cmds, social_cmds, demo_cmd):
        module.register(app)


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
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: nothing half-written was kept")
        sys.exit(130)
