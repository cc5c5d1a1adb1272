"""Publishing a file into the vault, as `veil publish` and `POST /api/v1/contents` both do:
the options as the user writes them, the faststart remux of an MP4/MOV whose index comes
last, encryption into a scratch directory, the keys kept, the content adopted whole. On any
failure nothing is left behind: scratch directories go, and keys of a content that did not
make it into the vault are dropped.

    options = publish_options(price="1000gwei", slice_size="1MiB")
    result = publish_into_vault(vault, identity, path, options, purpose="veil publish")

`Publishes` keeps the node's publishes in progress (`GET /api/v1/publishes/{id}`) and
reports each one's progress on the live stream as `publish` events.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from veilstream.content import CipherSuite, KeyRing, PublishError, PublishOptions, Terms, Torrent, publish_file
from veilstream.content.faststart import file_needs_faststart, looks_like_mp4, remux_faststart
from veilstream.content.publish import check_source
from veilstream.content.torrent import check_piece_length
from veilstream.node.units import parse_amount, parse_size
from veilstream.vault import StorageError

DEFAULT_SLICE_SIZE = "1MiB"
DEFAULT_SEEDER_SHARE = "20%"
PROGRESS_EVENT_S = 0.25  # at most this often a publish's progress goes on the live stream (stage changes at once)
PUBLISHES_KEPT = 100  # finished publishes kept for `GET /api/v1/publishes/{id}`; older ones are forgotten

# Stages, in order; a publish ends `done` or `failed`.
UPLOADING, QUEUED, REMUXING, ENCRYPTING, SEEDING, DONE, FAILED = (
    "uploading", "queued", "remuxing", "encrypting", "seeding", "done", "failed")
Stage = Callable[[str, int], None]  # (stage, total bytes it works through)
Progress = Callable[[int], None]  # bytes just worked through


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


def publish_options(*, slice_size: str = DEFAULT_SLICE_SIZE, price: str = "0",
                    seeder_share: str = DEFAULT_SEEDER_SHARE, suite: CipherSuite = CipherSuite.AES_256_GCM,
                    trackers: tuple[str, ...] = (), name: str | None = None,
                    mime_type: str | None = None) -> PublishOptions:
    """The options of a publish as the user wrote them, or `PublishError` saying what is wrong."""
    size = parse_size(slice_size)
    check_piece_length(size)
    if mime_type and (mime_type.count("/") != 1 or len(mime_type) > 255 or not mime_type.isprintable()):
        raise PublishError(f"not a MIME type: {mime_type[:80]!r} (write e.g. video/mp4)")
    return PublishOptions(size, suite, Terms(parse_price(price), parse_share(seeder_share)), tuple(trackers),
                          display_name=name or None, mime_type=mime_type or None)


@dataclass(frozen=True)
class PublishResult:
    torrent: Torrent
    folder: Path  # the content's folder in the vault
    torrent_file: Path
    ciphertext_file: Path
    remuxed: bool  # an MP4/MOV whose index came last was remuxed to faststart first

    def summary(self) -> dict[str, Any]:
        torrent = self.torrent
        terms = torrent.manifest.terms
        return {"content_id": torrent.content_id, "magnet": torrent.magnet, "slices": torrent.piece_count,
                "slice_size": torrent.piece_length, "price_per_slice_wei": terms.price_per_slice_wei,
                "seeder_share_bps": terms.seeder_share_bps, "torrent": str(self.torrent_file),
                "ciphertext": str(self.ciphertext_file), "remuxed": self.remuxed}


def needs_remux(source: Path) -> bool:
    """Whether `source` is an MP4/MOV with its index last (`CorruptMp4`, a `PublishError`,
    if it says it is one but its boxes do not add up)."""
    return looks_like_mp4(source) and file_needs_faststart(source)


def publish_into_vault(vault, identity, source: Path, options: PublishOptions, *, purpose: str,
                       on_stage: Stage = lambda stage, total: None,
                       on_bytes: Progress = lambda n: None) -> PublishResult:
    """Publish `source` into the vault as this identity's content; `on_bytes` may raise to
    stop it (nothing is then left behind). `purpose` names the process in the content's lock."""
    source = Path(source)
    size = check_source(source)
    with ExitStack() as scratch:
        remuxed = needs_remux(source)
        if remuxed:
            on_stage(REMUXING, size)
            fast = scratch.enter_context(vault.workdir()) / source.name  # its name: the MIME type is guessed from it
            remux_faststart(source, fast)
            options = replace(options, display_name=options.display_name or source.name)
            source, size = fast, fast.stat().st_size
        on_stage(ENCRYPTING, size)
        with vault.workdir() as work:
            done = publish_file(source, work, identity, options, progress=on_bytes)
            cid = done.torrent.content_id
            with vault.hold_content(cid, purpose):
                vault.store_keyring(cid, KeyRing((done.keys.tree_root,), done.keys.metadata_key))
                try:
                    folder = vault.adopt(work, done.torrent, role="creator")
                except (StorageError, OSError):  # not published (a full disk): its keys go too
                    vault.drop_keyring(cid)
                    raise
    return PublishResult(done.torrent, folder, folder / done.torrent_path.name, folder / done.ciphertext_path.name,
                         remuxed)


class PublishJob:
    """One publish through the API, from its upload to its content seeding (or its failure)."""

    def __init__(self, publish_id: str, name: str, announce: Callable[[dict[str, Any]], None]) -> None:
        self.publish_id = publish_id
        self.name = name
        self.stage = UPLOADING
        self.done_bytes = self.total_bytes = 0
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.started_at = time.time()
        self.cancelled = threading.Event()  # the node stops: the publish gives up at its next slice
        self._announce = announce
        self._announced_at = 0.0
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        return self.stage in (DONE, FAILED)

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {"publish_id": self.publish_id, "name": self.name, "stage": self.stage,
                    "done_bytes": self.done_bytes, "total_bytes": self.total_bytes, "started_at": self.started_at,
                    "result": self.result, "error": self.error}

    def enter(self, stage: str, total_bytes: int | None = None) -> None:
        with self._lock:
            self.stage = stage
            if total_bytes is not None:
                self.total_bytes, self.done_bytes = total_bytes, 0
        self._announce_now()

    def advance(self, n: int) -> None:
        if self.cancelled.is_set():
            raise PublishError("the node is stopping: nothing was published")
        with self._lock:
            self.done_bytes += n
        if time.monotonic() - self._announced_at >= PROGRESS_EVENT_S:
            self._announce_now()

    def finish(self, result: dict[str, Any]) -> None:
        with self._lock:
            self.stage, self.result, self.done_bytes = DONE, result, self.total_bytes
        self._announce_now()

    def fail(self, error: str) -> None:
        with self._lock:
            self.stage, self.error = FAILED, error
        self._announce_now()

    def _announce_now(self) -> None:
        self._announced_at = time.monotonic()
        self._announce(self.view())


class Publishes:
    """The node's publishes: those under way and the last `PUBLISHES_KEPT` finished."""

    def __init__(self, announce: Callable[[dict[str, Any]], None]) -> None:
        self._announce = announce
        self._jobs: dict[str, PublishJob] = {}

    def new(self, name: str) -> PublishJob:
        finished = [pid for pid, job in self._jobs.items() if job.finished]
        for pid in finished[:max(0, len(finished) - PUBLISHES_KEPT + 1)]:
            del self._jobs[pid]
        job = PublishJob(secrets.token_hex(8), name, self._announce)
        self._jobs[job.publish_id] = job
        return job

    def get(self, publish_id: str) -> PublishJob | None:
        return self._jobs.get(publish_id)

    def forget(self, job: PublishJob) -> None:
        self._jobs.pop(job.publish_id, None)

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancelled.set()
