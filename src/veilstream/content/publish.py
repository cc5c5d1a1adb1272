"""Publishing: plaintext file → encrypted slices, Merkle trees, manifest, v2 torrent.

The file is streamed one slice at a time (memory stays flat whatever its size). Hashing
and writing of slice i run on a worker thread while slice i+1 is encrypted: hashlib and
file writes release the GIL, so the two overlap on two cores.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from veilstream.content import merkle
from veilstream.content.crypto import SALT_SIZE, TAG_SIZE, CipherSuite, ContentKeys, key_commitment, seal_slice
from veilstream.content.keytree import SequentialLeafKeys
from veilstream.content.manifest import Manifest, Metadata, Terms
from veilstream.content.torrent import Torrent, check_piece_length
from veilstream.errors import VeilError
from veilstream.identity import Identity

DEFAULT_SLICE_SIZE = 1024 * 1024
Progress = Callable[[int], None]  # called with the number of plaintext bytes just consumed


class PublishError(VeilError):
    """The input cannot be published (missing, unreadable, empty) or the output not written."""


@dataclass(frozen=True)
class PublishOptions:
    slice_size: int = DEFAULT_SLICE_SIZE
    suite: CipherSuite = CipherSuite.AES_256_GCM
    terms: Terms = Terms()
    trackers: tuple[str, ...] = ()
    display_name: str | None = None  # the true name recorded in the metadata; default: the file's


@dataclass(frozen=True)
class Published:
    torrent: Torrent
    keys: ContentKeys
    metadata: Metadata
    torrent_path: Path
    ciphertext_path: Path


def probe_media(path: Path) -> tuple[str, float | None]:
    """MIME type and duration (seconds) where PyAV can tell; never fails."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    duration = None
    if mime.split("/")[0] in ("video", "audio"):
        try:
            import av

            with av.open(str(path)) as container:
                if container.duration is not None:
                    duration = container.duration / 1_000_000
        except Exception:  # noqa: BLE001 - a file PyAV cannot parse simply has no duration
            duration = None
    return mime, duration


def _open_source(source: Path):
    try:
        handle = open(source, "rb")
    except FileNotFoundError:
        raise PublishError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise PublishError(f"{source} is a directory; publish one file") from None
    except PermissionError:
        raise PublishError(f"cannot read {source}: permission denied") from None
    except OSError as exc:
        raise PublishError(f"cannot read {source}: {exc.strerror}") from None
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        handle.close()
        raise PublishError(f"{source} is empty: nothing to publish")
    return handle, size


def check_source(source: Path) -> int:
    """Size of a publishable file, or `PublishError` saying why it is not one."""
    handle, size = _open_source(Path(source))
    handle.close()
    return size


def _read_full(handle, buffer: bytearray) -> int:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = handle.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def publish_file(
    source: Path,
    out_dir: Path,
    creator: Identity,
    options: PublishOptions = PublishOptions(),
    progress: Progress | None = None,
) -> Published:
    """Encrypt `source` into `out_dir` (ciphertext file + `<content id>.torrent`).

    `out_dir` should be a fresh private directory: the caller moves it into place once
    this returns, so a crash never leaves a half-published content anywhere visible."""
    source = Path(source)
    check_piece_length(options.slice_size)
    handle, size = _open_source(source)
    try:
        mime, duration = probe_media(source)
        return _publish_stream(handle, size, out_dir, creator, options, progress,
                               Metadata(options.display_name or source.name, mime, size, duration))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise PublishError(f"disk full while writing to {out_dir}; nothing was published") from None
        raise PublishError(f"I/O error while publishing {source}: {exc.strerror or exc}") from None
    finally:
        handle.close()


def _publish_stream(handle, size, out_dir, creator, options, progress, metadata) -> Published:
    piece_length = options.slice_size
    plain_length = piece_length - TAG_SIZE
    slice_count = -(-size // plain_length)
    salt = secrets.token_bytes(SALT_SIZE)
    keys = ContentKeys.derive(creator.creator_seed, salt, slice_count)
    leaf_keys = SequentialLeafKeys(keys.tree_root)
    name = f"veil-{salt.hex()}"
    ciphertext_path = out_dir / name
    ciphertext_length = size + TAG_SIZE * slice_count

    piece_hashes: list[bytes] = []
    commitments: list[bytes] = []
    buffer = bytearray(plain_length)

    def hash_and_write(ciphertext: bytes) -> None:
        if ciphertext_length <= piece_length:
            piece_hashes.append(merkle.small_file_root(ciphertext))
        else:
            piece_hashes.append(merkle.piece_hash(ciphertext, piece_length))
        out.write(ciphertext)

    with open(ciphertext_path, "wb") as out, ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for index in range(slice_count):
            got = _read_full(handle, buffer)
            expected = min(plain_length, size - index * plain_length)
            if got != expected:
                raise PublishError("the file changed size while being published; try again")
            slice_key = leaf_keys.key(index)
            commitments.append(key_commitment(slice_key))
            ciphertext = seal_slice(options.suite, slice_key, salt, index, memoryview(buffer)[:got])
            if pending is not None:
                pending.result()
            pending = writer.submit(hash_and_write, ciphertext)
            if progress:
                progress(got)
        if pending is not None:
            pending.result()
        if handle.read(1):
            raise PublishError("the file grew while being published; try again")
        out.flush()
        os.fsync(out.fileno())

    if ciphertext_length <= piece_length:
        pieces_root, piece_layer = piece_hashes[0], b""
    else:
        pieces_root = merkle.pieces_root(piece_hashes, piece_length, ciphertext_length)
        piece_layer = b"".join(piece_hashes)
    manifest = Manifest(
        suite=options.suite,
        salt=salt,
        piece_length=piece_length,
        slice_count=slice_count,
        ciphertext_length=ciphertext_length,
        key_root=merkle.root(commitments),
        creator_address=bytes.fromhex(creator.wallet_address[2:]),
        creator_nostr=bytes.fromhex(creator.nostr_pubkey),
        terms=options.terms,
        encrypted_metadata=Manifest.seal(options.suite, keys.metadata_key, salt, metadata),
    )
    torrent = Torrent(name, piece_length, ciphertext_length, pieces_root, piece_layer, manifest, options.trackers)
    torrent_path = out_dir / f"{torrent.content_id}.torrent"
    with open(torrent_path, "wb") as f:
        f.write(torrent.to_bytes())
        f.flush()
        os.fsync(f.fileno())
    return Published(torrent, keys, metadata, torrent_path, ciphertext_path)
