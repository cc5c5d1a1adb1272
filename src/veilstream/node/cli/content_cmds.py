"""`veil publish`, `veil open`, `veil list`: content in and out of the vault."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
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
from veilstream.content.torrent import check_piece_length
from veilstream.errors import VeilError
from veilstream.node.cli.chain_cmds import ChainDeployment, ChainRpc, _wallet_lock, parse_amount
from veilstream.node.cli.common import console, hold_content, open_vault, unlock_identity
from veilstream.node.cli.progress import byte_progress
from veilstream.node.units import parse_size
from veilstream.vault import StorageError, atomic_writer, user_file_mode

class ContentCommandError(VeilError):
    pass


def parse_share(text: str) -> int:
    """'20%', '2000bps' or plain basis points -> basis points."""
    raw = text.strip().lower()
    try:
        if raw.endswith("%"):
            bps = Decimal(raw[:-1]) * 100
        else:
            bps = Decimal(raw.removesuffix("bps"))
    except InvalidOperation:
        raise PublishError(f"not a share: {text!r} (write e.g. 20% or 2000bps)") from None
    if bps != bps.to_integral_value() or not 0 <= bps <= 10_000:
        raise PublishError(f"a share is from 0% to 100% in whole basis points, not {text!r}")
    return int(bps)


def parse_price(text: str) -> int:
    """A price with its unit ('1000000000000wei', '1000gwei', '0.000001eth'); '0' is free.
    A bare number is refused: a price off by 10¹⁸ is too easy to type."""
    if text.strip() not in ("0", "") and text.strip().replace("_", "").replace(".", "", 1).isdigit():
        raise PublishError(f"say the price's unit: {text}wei, {text}gwei or {text}eth (per slice)")
    return parse_amount(text) if text.strip() else 0


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
    price_wei = parse_price(price)
    check_piece_length(parse_size(slice_size))
    options = PublishOptions(parse_size(slice_size), suite, Terms(price_wei, parse_share(seeder_share)), tuple(tracker))
    size = check_source(file)  # before the passphrase: a typo in the path should not cost an unlock
    vault, identity = unlock_identity()
    earlier = vault.published_as(file)
    if earlier and not again:
        raise PublishError(f"{file} is already published as {earlier[-1]} (`veil list`); --again publishes it "
                           "as a new content")
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
    vault.note_published(file, done.torrent.content_id)
    torrent = done.torrent
    registered = _register(vault, identity, torrent, rpc, deployment) if price_wei else None
    if as_json:
        print(json.dumps({"content_id": torrent.content_id, "magnet": torrent.magnet, "slices": torrent.piece_count,
                          "slice_size": torrent.piece_length, "price_per_slice_wei": price_wei,
                          "seeder_share_bps": options.terms.seeder_share_bps,
                          "torrent": str(folder / done.torrent_path.name),
                          "ciphertext": str(folder / done.ciphertext_path.name), "on_chain": registered}))
        return
    table = Table(show_header=False, box=None)
    table.add_row("content id", f"[bold]{torrent.content_id}[/]")
    table.add_row("magnet", torrent.magnet)
    table.add_row("slices", f"{torrent.piece_count} × {torrent.piece_length // 1024} KiB ({suite.value})")
    table.add_row("torrent", str(folder / done.torrent_path.name))
    table.add_row("ciphertext", str(folder / done.ciphertext_path.name))
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
    freed = vault.remove(cid)
    console.print(f"removed {cid}: {freed / 2**20:.1f} MiB freed; its keys stay in the vault")


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("open")(open_content)
    app.command("list")(list_contents)
    app.command("rm")(remove)
