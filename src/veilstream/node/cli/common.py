"""What every command shares: consoles, the vault location, unlocking the identity."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from rich.console import Console

def _console(stream) -> Console:
    # Piped or redirected, a line is never cut at 80 columns: scripts read whole magnets and ids.
    return Console(file=stream, highlight=False, width=None if stream.isatty() else PIPED_WIDTH)


PIPED_WIDTH = 4096
MIN_PASSPHRASE_LENGTH = 8

console = _console(sys.stdout)
err_console = _console(sys.stderr)


def veil_home() -> Path:
    """`VEIL_HOME`, or `~/.veil`."""
    return Path(os.environ.get("VEIL_HOME") or Path.home() / ".veil").expanduser()


_remembered: list[str] = []  # this process's passphrase, once read from the environment


def read_passphrase(confirm: bool = False) -> str:
    """`VEIL_PASSPHRASE`, or ask on the terminal (twice when setting one)."""
    from veilstream.vault import VaultError

    # Taken out of the environment once read: child processes (relay, anvil, a shell) must
    # not inherit the passphrase.
    env = os.environ.pop("VEIL_PASSPHRASE", None)
    if env is not None:
        _remembered.append(env)
    if _remembered:
        passphrase = _remembered[0]
    else:
        import typer

        if not os.isatty(0):
            raise VaultError("no passphrase: set VEIL_PASSPHRASE or run from a terminal")
        passphrase = typer.prompt("Vault passphrase", hide_input=True, confirmation_prompt=confirm)
    if confirm and len(passphrase) < MIN_PASSPHRASE_LENGTH:  # a new passphrase guards every key in the vault
        raise VaultError(f"a vault passphrase needs at least {MIN_PASSPHRASE_LENGTH} characters")
    return passphrase


def open_vault():
    """The vault at `veil_home()`; raises `VaultError` if `veil init` was never run."""
    from veilstream.vault import Vault

    return Vault.open(veil_home())


def unlock_identity():
    """Open the vault, unlock it with the passphrase: (unlocked vault, identity)."""
    unlocked = open_vault().unlock(read_passphrase())
    return unlocked, unlocked.identity()


def this_command() -> str:
    """This process's command, as a lock's holder is named to others: `veil play`,
    `veil wallet cash` (its words, none of its arguments)."""
    words = []
    for word in sys.argv[1:4]:
        if not re.fullmatch(r"[a-z][a-z-]{0,19}", word):
            break
        words.append(word)
    return " ".join(["veil", *words])


def hold_content(vault, content_id: str):
    """This command holds the content for its run: a second process of the same vault
    working on it (fetching, playing, serving) is refused with the holder's name."""
    return vault.hold_content(content_id, this_command())
