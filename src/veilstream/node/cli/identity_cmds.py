"""`veil init` and `veil backup`: create, restore and back up an identity."""

from __future__ import annotations

import os
import re
import sys

import typer
from rich.panel import Panel

from veilstream.identity import combine_shares, generate_mnemonic, split_into_shares, validate_mnemonic
from veilstream.identity.mnemonic import MnemonicError
from veilstream.node.cli.common import console, err_console, read_passphrase, unlock_identity, veil_home
from veilstream.vault import Vault


def _read_secret_lines(prompt: str, until_blank: bool) -> list[str]:
    """Lines from stdin (a pipe) or the terminal, without echo on a terminal."""
    if not os.isatty(0):
        lines = [line.strip() for line in sys.stdin.read().splitlines()]
        return [line for line in lines if line]
    lines = []
    while True:
        line = typer.prompt(prompt, hide_input=True, default="", show_default=False).strip()
        if not line or not until_blank:
            if line:
                lines.append(line)
            return lines
        lines.append(line)


def init(
    restore: bool = typer.Option(False, "--restore", help="Restore from an existing BIP-39 mnemonic (read from stdin or a prompt)."),
    restore_shares: bool = typer.Option(False, "--restore-shares", help="Restore from SLIP-39 backup shares, one per line."),
) -> None:
    """Create an identity (or restore one) and the encrypted vault that holds it."""
    home = veil_home()
    if Vault.exists(home):
        raise MnemonicError(f"a vault already exists at {home}; set VEIL_HOME to use another")
    if restore and restore_shares:
        raise MnemonicError("choose --restore or --restore-shares, not both")
    if restore:
        lines = _read_secret_lines("Mnemonic", until_blank=False)
        mnemonic = validate_mnemonic(" ".join(lines))
    elif restore_shares:
        shares = _read_secret_lines("Share (empty line when done)", until_blank=True)
        if not shares:
            raise MnemonicError("no shares given")
        mnemonic = combine_shares(shares)
    else:
        mnemonic = generate_mnemonic()
    vault = Vault.create(home, read_passphrase(confirm=True), mnemonic)
    identity = vault.identity()
    if not (restore or restore_shares):
        console.print(Panel(
            mnemonic,
            title="[bold]Your recovery mnemonic — shown once[/]",
            subtitle="write it down; anyone with these words owns your keys and earnings",
        ))
    console.print(f"[green]✓[/] vault created at {home}")
    console.print(f"  wallet address  {identity.wallet_address}")
    console.print(f"  nostr pubkey    {identity.nostr_pubkey}")


def backup(
    shares: str = typer.Option(..., "--shares", metavar="K-of-N", help="Split into N SLIP-39 shares, any K of which recover the identity."),
) -> None:
    """Print SLIP-39 Shamir shares of your mnemonic (recover with `veil init --restore-shares`)."""
    match = re.fullmatch(r"\s*(\d+)\s*-?\s*of\s*-?\s*(\d+)\s*", shares)
    if not match:
        raise MnemonicError(f"--shares takes K-of-N, such as 3-of-5; got {shares!r}")
    threshold, count = int(match[1]), int(match[2])
    _, identity = unlock_identity()
    parts = split_into_shares(identity.mnemonic, threshold, count)
    err_console.print(f"[bold]{count} shares; any {threshold} recover your identity. Keep them apart.[/]")
    for number, share in enumerate(parts, 1):
        console.print(f"share {number}: {share}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("backup")(backup)
