"""`veil demo`: the whole pipeline on embedded defaults, in a throw-away home."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import typer
from rich.table import Table

from veilstream.content import KeyRing, PublishOptions, Terms, Torrent, decrypt_to, publish_file
from veilstream.content.crypto import key_commitment
from veilstream.content.keytree import SequentialLeafKeys, nodes_for_range
from veilstream.errors import VeilError
from veilstream.identity import generate_mnemonic
from veilstream.node.cli.common import console
from veilstream.node.sample import make_sample_video
from veilstream.vault import KdfParams, Vault, atomic_writer

DEMO_SLICE_SIZE = 64 * 1024  # small slices so a short clip spans many of them


class DemoFailed(VeilError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def demo(
    seconds: float = typer.Option(30.0, "--seconds", help="Length of the generated sample video."),
    keep: Path = typer.Option(None, "--keep", help="Keep the demo's home and files in this directory."),
) -> None:
    """Generate a sample video, publish it encrypted, open it back and verify every byte."""
    with tempfile.TemporaryDirectory(prefix="veil-demo-") as scratch:
        root = Path(keep) if keep else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        steps = Table("step", "result", "time", title="Veilstream demo: publish and open")

        def timed(label, fn):
            start = time.perf_counter()
            value, text = fn()
            steps.add_row(label, text, f"{(time.perf_counter() - start) * 1000:.0f} ms")
            return value

        sample = timed("generate sample video (PyAV)",
                       lambda: (p := make_sample_video(root / "sample.mp4", seconds), f"{p.stat().st_size:,} bytes, {seconds:g} s H.264"))
        vault = timed("create identity + vault",
                      lambda: (v := Vault.create(root / "home", "demo passphrase", generate_mnemonic(), KdfParams()),
                               f"wallet {v.identity().wallet_address}"))
        identity = vault.identity()
        options = PublishOptions(DEMO_SLICE_SIZE, terms=Terms(price_per_slice_wei=10**12, seeder_share_bps=2_000))

        def do_publish():
            with vault.workdir() as work:
                done = publish_file(sample, work, identity, options)
                vault.store_keyring(done.torrent.content_id, KeyRing((done.keys.tree_root,), done.keys.metadata_key))
                vault.adopt(work, done.torrent, "creator")
            return done, f"id {done.torrent.content_id[:16]}…, {done.torrent.piece_count} slices"

        published = timed("publish (encrypt, Merkle, torrent)", do_publish)
        cid = published.torrent.content_id
        torrent = timed("reload torrent, recheck info-hash",
                        lambda: (t := Torrent.load(vault.content_dir(cid) / f"{cid}.torrent"), f"v2 info-hash matches: {t.content_id == cid}"))
        ciphertext = vault.ciphertext_path(cid)
        plain_bytes, cipher_bytes = sample.read_bytes(), ciphertext.read_bytes()
        leaked = any(plain_bytes[i : i + 64] in cipher_bytes for i in range(0, len(plain_bytes) - 64, 4096))
        steps.add_row("scan ciphertext for plaintext", "none found" if not leaked else "[red]PLAINTEXT FOUND[/]", "")

        out = root / "opened.mp4"

        def do_open():
            with atomic_writer(out, 0o644) as handle:
                meta = decrypt_to(torrent, ciphertext, vault.keyring(cid), handle)
            return meta, f"{meta.name}, {meta.mime_type}, {meta.duration_s:.1f} s"

        timed("open (verify slices + keys, decrypt)", do_open)
        same = _sha256(out) == _sha256(sample)
        steps.add_row("byte-for-byte comparison", "[green]identical[/]" if same else "[red]DIFFERENT[/]", "")

        n = torrent.piece_count
        first, end = n // 4, n // 4 + max(1, n // 2)
        cover = nodes_for_range(published.keys.tree_root, first, end)
        walker = SequentialLeafKeys(published.keys.tree_root)
        range_ok = all(key_commitment(k.leaf_key(i)) == key_commitment(walker.key(i))
                       for k in cover for i in range(k.first_leaf, k.end_leaf))
        steps.add_row("range purchase key cover", f"slices [{first}, {end}) opened by {len(cover)} node keys", "")
        console.print(steps)
        if leaked or not same or not range_ok or torrent.content_id != cid:
            raise DemoFailed("the demo did not verify: see the table above")
        console.print(f"[green]✓ demo passed[/]: content {cid}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
