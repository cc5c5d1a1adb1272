"""`veil publish`, `veil open`, `veil list`: content in and out of the vault."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from rich.table import Table

from veilstream.content import (
    CipherSuite,
    KeyRing,
    PublishError,
    PublishOptions,
    Terms,
    decrypt_to,
    parse_content_id,
    publish_file,
)
from veilstream.content.publish import check_source
from veilstream.node.cli.chain_cmds import ChainDeployment, ChainRpc, _wallet_lock
from veilstream.node.cli.common import console, hold_content, open_vault, unlock_identity
from veilstream.node.cli.progress import byte_progress
from veilstream.vault import StorageError, atomic_writer, user_file_mode

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "k": 1 << 10, "kb": 1000, "mib": 1 << 20, "m": 1 << 20, "mb": 1000**2}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match[2].lower() not in _UNITS:
        raise PublishError(f"not a size: {text!r} (try 1MiB, 256KiB or a byte count)")
    return int(match[1]) * _UNITS[match[2].lower()]


def publish(
    file: Path = typer.Argument(..., help="The file to publish.", show_default=False, readable=False),
    slice_size: str = typer.Option("1MiB", "--slice-size", help="Ciphertext slice (piece) size: a power of two, 16KiB–16MiB."),
    price: int = typer.Option(0, "--price", min=0, help="Price per slice, in wei."),
    seeder_share: int = typer.Option(2000, "--seeder-share", min=0, max=10_000, help="Seeder's share of each payment, in basis points."),
    suite: CipherSuite = typer.Option(CipherSuite.AES_256_GCM, "--suite", help="AEAD cipher suite."),
    tracker: list[str] = typer.Option([], "--tracker", help="Tracker URL to announce to (repeatable)."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Encrypt FILE into slices and add it to the vault; print its content id and magnet;
    register it on chain (priced content) so that nobody else can, and viewers can pay."""
    options = PublishOptions(parse_size(slice_size), suite, Terms(price, seeder_share), tuple(tracker))
    size = check_source(file)  # before the passphrase: a typo in the path should not cost an unlock
    vault, identity = unlock_identity()
    with vault.workdir() as work, byte_progress() as bar:
        task = bar.add_task(f"publishing {file.name}", total=size)
        done = publish_file(file, work, identity, options, progress=lambda n: bar.advance(task, n))
        with hold_content(vault, done.torrent.content_id):
            vault.store_keyring(done.torrent.content_id, KeyRing((done.keys.tree_root,), done.keys.metadata_key))
            try:
                folder = vault.adopt(work, done.torrent, role="creator")
            except StorageError:  # a full disk: not published, so its keys go too
                vault.drop_keyring(done.torrent.content_id)
                raise
    torrent = done.torrent
    table = Table(show_header=False, box=None)
    table.add_row("content id", f"[bold]{torrent.content_id}[/]")
    table.add_row("magnet", torrent.magnet)
    table.add_row("slices", f"{torrent.piece_count} × {torrent.piece_length // 1024} KiB ({suite.value})")
    table.add_row("torrent", str(folder / done.torrent_path.name))
    table.add_row("ciphertext", str(folder / done.ciphertext_path.name))
    if price:
        table.add_row("on chain", _register(vault, identity, torrent, rpc, deployment))
    console.print(table)


def _register(vault, identity, torrent, rpc, deployment) -> str:
    """Register a priced content at once (a failure is said, and `veil serve --keys` retries)."""
    from pathlib import Path as _Path

    from veilstream.chain import ChainError, open_chain

    terms = torrent.manifest.terms
    try:
        with open_chain(_Path(vault.home) / "chain", identity.wallet, rpc_url=rpc, deployment_path=deployment) as client:
            client.sender_lock = _wallet_lock(vault)
            if client.content(torrent.info_hash) is None:
                client.register(torrent.info_bytes, price_per_slice=terms.price_per_slice_wei,
                                seeder_share_bps=terms.seeder_share_bps, slice_count=torrent.piece_count)
            return "registered (only you could: the registry reads the creator from the manifest)"
    except ChainError as exc:
        return f"[yellow]not registered yet: {exc}[/] (`veil wallet faucet` or fund the wallet, then `veil serve --keys`)"


def open_content(
    content_id: str = typer.Argument(..., help="Content id (64 hex) or magnet link."),
    out: Path = typer.Option(..., "--out", help="Where to write the plaintext (- for stdout)."),
) -> None:
    """Verify and decrypt content from the vault with the keys the vault holds."""
    cid = parse_content_id(content_id)
    vault, _ = unlock_identity()
    torrent = vault.torrent(cid)
    ring = vault.keyring(cid)
    ciphertext = vault.ciphertext_path(cid)
    if str(out) == "-":
        decrypt_to(torrent, ciphertext, ring, sys.stdout.buffer)
        return
    with byte_progress() as bar, atomic_writer(out, mode=user_file_mode()) as handle:
        task = bar.add_task("verifying and decrypting", total=torrent.manifest.plaintext_length)
        meta = decrypt_to(torrent, ciphertext, ring, handle, progress=lambda n: bar.advance(task, n))
    console.print(f"[green]✓[/] {torrent.piece_count} slices verified and decrypted → {out}")
    if meta:
        duration = f", {meta.duration_s:.1f} s" if meta.duration_s else ""
        console.print(f"  {meta.name} ({meta.mime_type}, {meta.size} bytes{duration})")


def list_contents() -> None:
    """List the contents this vault holds."""
    table = Table("content id", "role", "slices", "ciphertext")
    for held in open_vault().contents():
        table.add_row(held.content_id, held.role, str(held.slice_count), f"{held.ciphertext_length / 2**20:.1f} MiB")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("open")(open_content)
    app.command("list")(list_contents)
