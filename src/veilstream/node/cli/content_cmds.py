"""`veil publish`, `veil open`, `veil list`, `veil rm`: content in and out of the vault (publishing
itself is node/publishing.py's, shared with the API)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from veilstream.content import CipherSuite, PublishError, decrypt_to, parse_content_id
from veilstream.content.publish import check_source
from veilstream.errors import VeilError
from veilstream.node.cli.chain_cmds import ChainDeployment, ChainRpc, _wallet_lock
from veilstream.node.cli.common import console, hold_content, open_vault, this_command, unlock_identity
from veilstream.node.cli.progress import byte_progress
from veilstream.node.publishing import REMUXING, publish_into_vault, publish_options
from veilstream.vault import atomic_writer, user_file_mode

class ContentCommandError(VeilError):
    pass


def publish(
    file: Path = typer.Argument(..., help="The file to publish.", show_default=False, readable=False),
    slice_size: str = typer.Option("1MiB", "--slice-size", help="Ciphertext slice (piece) size: a power of two, 16KiB–16MiB."),
    price: str = typer.Option("0", "--price", help="Price per slice with its unit, e.g. 1000gwei or 0.000001eth."),
    seeder_share: str = typer.Option("20%", "--seeder-share", help="Seeder's share of each payment: 20% or 2000bps."),
    suite: CipherSuite = typer.Option(CipherSuite.AES_256_GCM, "--suite", help="AEAD cipher suite."),
    tracker: list[str] = typer.Option([], "--tracker", help="Tracker URL to announce to (repeatable)."),
    again: bool = typer.Option(False, "--again", help="Publish a file this vault already published as a new content."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (content id, magnet, …) for scripts."),
    rpc: ChainRpc = None,
    deployment: ChainDeployment = None,
) -> None:
    """Encrypt FILE into slices and add it to the vault; print its content id and magnet;
    register it on chain (priced content) so that nobody else can, and viewers can pay.

    Example: veil publish clip.mp4 --price 1000gwei --seeder-share 20% --chain-rpc URL --chain-deployment FILE
    """
    options = publish_options(slice_size=slice_size, price=price, seeder_share=seeder_share, suite=suite,
                              trackers=tuple(tracker))
    price_wei = options.terms.price_per_slice_wei
    check_source(file)  # before the passphrase: a typo in the path should not cost an unlock
    vault, identity = unlock_identity()
    earlier = vault.published_as(file)
    if earlier and not again:
        raise PublishError(f"{file} is already published as {earlier[-1]} (`veil list`); --again publishes it "
                           "as a new content")
    with byte_progress() as bar:
        task = None

        def on_stage(stage: str, total: int) -> None:
            nonlocal task
            if task is not None:
                bar.remove_task(task)
            what = "remuxing (faststart)" if stage == REMUXING else "publishing"
            task = bar.add_task(f"{what} {file.name}", total=total)

        done = publish_into_vault(vault, identity, file, options, purpose=this_command(), on_stage=on_stage,
                                  on_bytes=lambda n: bar.advance(task, n))
    vault.note_published(file, done.torrent.content_id)
    torrent = done.torrent
    registered = _register(vault, identity, torrent, rpc, deployment) if price_wei else None
    if as_json:
        print(json.dumps({**done.summary(), "on_chain": registered}))
        return
    table = Table(show_header=False, box=None)
    table.add_row("content id", f"[bold]{torrent.content_id}[/]")
    table.add_row("magnet", torrent.magnet)
    table.add_row("slices", f"{torrent.piece_count} × {torrent.piece_length // 1024} KiB ({suite.value})")
    table.add_row("torrent", str(done.torrent_file))
    table.add_row("ciphertext", str(done.ciphertext_file))
    if done.remuxed:
        table.add_row("remuxed", "to faststart (its index now comes first, so it plays while it streams)")
    if registered is not None:
        table.add_row("on chain", registered)
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
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Verify and decrypt content from the vault with the keys the vault holds."""
    cid = parse_content_id(content_id)
    if str(out) != "-" and out.exists() and not force:
        raise ContentCommandError(f"{out} exists: choose another --out, or --force to replace it")
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


def list_contents(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for scripts."),
) -> None:
    """List the contents this vault holds, and the ciphertext kept from plays."""
    vault = open_vault()
    held, partial = vault.contents(), vault.partial_plays()
    if as_json:
        print(json.dumps({"contents": [{"content_id": h.content_id, "role": h.role, "slices": h.slice_count,
                                        "ciphertext_bytes": h.ciphertext_length} for h in held],
                          "played": [{"content_id": cid, "ciphertext_bytes": size} for cid, size in partial.items()]}))
        return
    table = Table("content id", "role", "slices", "ciphertext")
    for h in held:
        table.add_row(h.content_id, h.role, str(h.slice_count), f"{h.ciphertext_length / 2**20:.1f} MiB")
    for cid, size in partial.items():
        table.add_row(cid, "played", "", f"{size / 2**20:.1f} MiB")
    console.print(table)
    if partial:
        console.print("played: ciphertext kept so that playing again downloads nothing (`veil rm` frees it)")


def remove(
    content_id: str = typer.Argument(..., help="Content id (or magnet)."),
) -> None:
    """Remove a content's ciphertext and torrent, and what plays of it kept, from the vault.
    Keys stay (they were paid for): a later play or fetch needs no new purchase."""
    cid = parse_content_id(content_id)
    vault = open_vault()
    if cid not in {h.content_id for h in vault.contents()} and cid not in vault.partial_plays():
        raise ContentCommandError(f"content {cid[:16]}… is not in this vault (`veil list`)")
    with hold_content(vault, cid):  # a running node seeding it is named: `DELETE /api/v1/contents/ID` removes it there
        freed = vault.remove(cid)
    console.print(f"removed {cid}: {freed / 2**20:.1f} MiB freed; its keys stay in the vault")


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("open")(open_content)
    app.command("list")(list_contents)
    app.command("rm")(remove)
