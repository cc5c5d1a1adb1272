"""Ciphertext on disk, one verified piece at a time.

A download writes into `<name>.part` (sparse, full length) and records which pieces are
complete in `<name>.resume`, replaced atomically (write, fsync, rename) and only after
the data file itself was synced, so a marked piece is on disk. Only pieces whose hash
was checked are ever written, and on restart every marked piece is hashed again before
it counts, so neither a crash nor a tampered file can make an unverified byte count as
complete. When the last piece is in, `.part` is renamed to `<name>`.

Verified pieces are written with O_DIRECT from page-aligned buffers where the filesystem
allows it (as publish does, see `veilstream.content.sink`): on this kind of VM a buffered
write into fresh page-cache pages costs 0.3–2.6 s of kernel time per GiB, a direct one
~0.05 s, and a download must not evict everything else from the cache.

This is the swarm's own storage (the vault sits above the swarm): a directory per
content; the CLI puts it wherever the vault or `--out` says. `PieceStorage` names what
the protocol core needs of any storage; `PieceStore` here is the disk one, and
`memory_store.MemoryPieceStore` keeps pieces in memory.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from veilstream.atomic import replace_file
from veilstream.content import bencode
from veilstream.content.sink import DIRECT_ALIGNMENT, aligned_buffer
from veilstream.content.torrent import Torrent
from veilstream.swarm.errors import PieceStorageError

RESUME_VERSION = 1
PART_SUFFIX = ".part"
RESUME_SUFFIX = ".resume"
MAX_RESUME_BYTES = 4 * 1024 * 1024  # a bitfield of 32 M pieces; anything larger is not ours
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
MAX_UNWRITTEN_BYTES = 128 * 1024 * 1024  # verified pieces held in memory while the disk catches up
WRITE_THREADS = 2  # writes of different pieces proceed in parallel (libtorrent uses several disk threads)
# Piece buffers are recycled rather than freed: a fresh one page-faults on every 4 KiB it
# is filled with, which cost the event loop more than parsing the blocks. Spares are kept
# up to what was in flight at once (a handful when the disk keeps up), at most this much.
MAX_SPARE_BYTES = MAX_UNWRITTEN_BYTES


def _describe(exc: OSError, path: Path) -> str:
    if exc.errno in DISK_FULL_ERRNOS:
        return f"disk full while writing {path}; free some space and run the command again to resume"
    return f"cannot use {path}: {exc.strerror or exc}"


def bits_to_bytes(have: bytearray) -> bytes:
    """0/1-per-piece array → BEP 3 bitfield (high bit first, spare bits zero)."""
    n = len(have)
    if n == 0:
        return b""
    size = (n + 7) // 8
    text = bytes(have).translate(_TO_ASCII) + b"0" * (size * 8 - n)
    return int(text, 2).to_bytes(size, "big")


def bytes_to_bits(raw: bytes, n: int) -> bytearray | None:
    """BEP 3 bitfield → 0/1-per-piece array, or None if its size or spare bits are wrong."""
    if len(raw) != (n + 7) // 8:
        return None
    if n == 0:
        return bytearray()
    text = bin(int.from_bytes(raw, "big"))[2:].zfill(len(raw) * 8).encode()
    if b"1" in text[n:]:
        return None
    return bytearray(text[:n].translate(_FROM_ASCII))


_TO_ASCII = bytes.maketrans(b"\x00\x01", b"01")
_FROM_ASCII = bytes.maketrans(b"01", b"\x00\x01")


class PieceStorage(Protocol):
    """What the swarm core uses of a torrent's storage, and nothing more. Only pieces
    whose hash the core checked are written; reads return None for a piece not held."""

    have: bytearray  # 0/1 per piece; the core's picker starts from a copy
    have_count: int

    @property
    def complete(self) -> bool: ...

    def bitfield(self) -> bytes:
        """The BEP 3 bitfield of `have`."""
        ...

    def piece_buffer(self, size: int) -> bytearray:
        """A writable buffer of `size` bytes to assemble a piece in (handed back to
        `write_verified_piece` once it verifies, or dropped)."""
        ...

    def write_verified_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Store a verified piece (the store may keep `data` itself); raises `PieceStorageError`."""
        ...

    def read_piece(self, index: int) -> memoryview | None: ...

    def read_block(self, index: int, begin: int, length: int) -> memoryview | None: ...

    def save_resume(self, *, background: bool = False) -> None:
        """Persist which pieces are held, if the store outlives the process."""
        ...

    def keep_recent_pieces(self, budget_bytes: int) -> None:
        """A player reads as pieces arrive: keep about this much of the newest in memory."""
        ...


class PieceBits:
    """What every store derives from its `torrent`, `have` and `have_count` alike."""

    torrent: Torrent
    have: bytearray
    have_count: int

    @property
    def complete(self) -> bool:
        return self.have_count == self.torrent.piece_count

    def bitfield(self) -> bytes:
        return bits_to_bytes(self.have)

    def piece_size(self, index: int) -> int:
        return min(self.torrent.piece_length, self.torrent.length - index * self.torrent.piece_length)


class PieceStore(PieceBits):
    """Verified pieces of one torrent, in one file (a `PieceStorage`)."""

    def __init__(self, torrent: Torrent, data_path: Path, *, final_path: Path, resume_path: Path | None,
                 have: bytearray, read_cache_pieces: int = 8) -> None:
        self.torrent = torrent
        self.data_path = data_path
        self.final_path = final_path
        self.resume_path = resume_path
        self.have = have
        self.have_count = sum(have)
        self.resumed_count = self.have_count  # pieces found (and verified) on disk when opened
        self._cache: OrderedDict[int, memoryview] = OrderedDict()
        self._cache_size = max(1, read_cache_pieces)
        self._resume_dirty = False
        self._saving: Future | None = None
        self._saver: ThreadPoolExecutor | None = None
        self._writes: deque[Future] = deque()
        self._unwritten: dict[int, bytes | bytearray | mmap.mmap] = {}  # verified pieces on their way to disk
        self._unwritten_bytes = 0
        self._worker_error: PieceStorageError | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._spare: deque[mmap.mmap] = deque()
        self._just_written: deque[tuple[int, bytes | bytearray | mmap.mmap]] = deque()  # from the writer threads
        self._recent: OrderedDict[int, bytes | bytearray | mmap.mmap] = OrderedDict()  # written, still in memory
        self._recent_size = 0  # pieces kept once written; set when a player starts reading
        self._direct_fd = -1
        try:
            self._fd = os.open(data_path, os.O_RDWR if resume_path else os.O_RDONLY)
        except OSError as exc:
            raise PieceStorageError(_describe(exc, data_path)) from None
        if resume_path is not None and hasattr(os, "O_DIRECT") and torrent.piece_length % DIRECT_ALIGNMENT == 0:
            try:
                self._direct_fd = os.open(data_path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                pass  # tmpfs and some network filesystems refuse O_DIRECT: buffered writes only

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def for_seeding(cls, torrent: Torrent, path: Path, *, read_cache_pieces: int = 8,
                    progress: Callable[[int], None] | None = None) -> PieceStore:
        """A complete ciphertext file to serve; every piece is hashed first, and a piece
        that fails (a corrupt or truncated file) is simply not offered."""
        path = Path(path)
        if not path.is_file():
            raise PieceStorageError(f"no ciphertext at {path}: the torrent's file must sit beside it")
        if path.stat().st_size != torrent.length:
            raise PieceStorageError(f"{path} is {path.stat().st_size} bytes, the torrent says {torrent.length}: not this content's ciphertext")
        have = _verify_pieces(torrent, path, range(torrent.piece_count), progress)
        return cls(torrent, path, final_path=path, resume_path=None, have=have, read_cache_pieces=read_cache_pieces)

    @classmethod
    def for_download(cls, torrent: Torrent, directory: Path, *, read_cache_pieces: int = 8,
                     progress: Callable[[int], None] | None = None) -> PieceStore:
        """Storage for fetching `torrent` into `directory`, resuming what a previous run
        completed (each such piece is re-verified)."""
        directory = Path(directory)
        final = directory / torrent.name
        part = directory / (torrent.name + PART_SUFFIX)
        resume = directory / (torrent.name + RESUME_SUFFIX)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if final.is_file() and not part.exists():
                # finished earlier: check it and keep it
                store = cls.for_seeding(torrent, final, read_cache_pieces=read_cache_pieces, progress=progress)
                if store.complete:
                    return store
                store.close()
                os.replace(final, part)
            left_before = part.exists()
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != torrent.length:
                    os.ftruncate(fd, torrent.length)  # sparse: no space is taken until written
            finally:
                os.close(fd)
        except OSError as exc:
            raise PieceStorageError(_describe(exc, part)) from None
        candidates = _load_resume(resume, torrent)
        if left_before and not resume.exists():
            # a run that died before its first resume save (they come at most every
            # `resume_save_interval_s`): what it wrote is checked too, piece by piece
            candidates = _pieces_with_data(part, torrent)
        have = _verify_pieces(torrent, part, candidates, progress)
        return cls(torrent, part, final_path=final, resume_path=resume, have=have, read_cache_pieces=read_cache_pieces)

    # -- writing ----------------------------------------------------------------------------
    def write_verified_piece(self, index: int, data: bytes | bytearray | mmap.mmap | memoryview) -> None:
        """Store piece `index`, whose hash the caller has checked against the torrent.
        The store takes ownership of `data` (a bytearray or a `piece_buffer` is kept, not
        copied).

        The write runs on the store's worker thread (pwrite releases the GIL, so the disk
        copy overlaps with receiving the next piece); until it lands, reads are served
        from memory. The worker runs writes and resume saves in order, so a saved resume
        state only names pieces whose writes came before it."""
        if self.resume_path is None:
            raise PieceStorageError("this store is read-only (seeding)")
        self._raise_worker_error()
        if self.have[index]:
            return
        piece = data if isinstance(data, (bytes, bytearray, mmap.mmap)) else bytes(data)
        self._unwritten[index] = piece
        self._unwritten_bytes += len(piece)
        self.have[index] = 1
        self.have_count += 1
        self._resume_dirty = True
        self._writes.append(self._writer().submit(self._write, index, piece))
        while self._unwritten_bytes > MAX_UNWRITTEN_BYTES and self._writes:
            self._writes.popleft().result()  # the disk is slower than the network: wait for it
        while self._writes and self._writes[0].done():
            self._writes.popleft()

    def _write(self, index: int, piece: bytes | bytearray | mmap.mmap) -> None:
        if self._worker_error is not None:
            return
        offset = index * self.torrent.piece_length
        view = memoryview(piece)
        try:
            if self._direct_fd >= 0 and isinstance(piece, mmap.mmap) and len(view) % DIRECT_ALIGNMENT == 0:
                try:
                    written = os.pwrite(self._direct_fd, view, offset)
                except OSError:
                    # O_DIRECT says EINVAL where a buffered write names the real trouble
                    # (a full disk, a file-size limit): go on buffered, get that error
                    written = 0
                view, offset = view[written:], offset + written
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            self._worker_error = PieceStorageError(_describe(exc, self.data_path))
            return
        self._just_written.append((index, piece))  # before it leaves `_unwritten`: readers always find it
        self._unwritten.pop(index, None)
        self._unwritten_bytes -= len(piece)

    def keep_recent_pieces(self, budget_bytes: int) -> None:
        """A player reads this store as it fills: keep about `budget_bytes` of what was
        just written in memory (`SwarmSettings.recent_pieces_kept_bytes`)."""
        self._recent_size = max(1, budget_bytes // self.torrent.piece_length)

    def _take_written(self) -> None:
        """Move what the writer threads finished into the recent pieces (on the loop's
        thread); the oldest go back to the buffer pool."""
        while self._just_written:
            index, piece = self._just_written.popleft()
            self._recent[index] = piece
        while len(self._recent) > self._recent_size:
            _, piece = self._recent.popitem(last=False)
            if (isinstance(piece, mmap.mmap) and len(piece) == self.torrent.piece_length
                    and len(self._spare) * len(piece) < MAX_SPARE_BYTES):
                self._spare.append(piece)

    def piece_buffer(self, size: int) -> bytearray | mmap.mmap:
        """A buffer to assemble a piece in: page-aligned (so it can be written with
        O_DIRECT) and recycled when possible (fresh 1 MiB allocations page-fault on every
        use; a recycled buffer is overwritten whole)."""
        if size == self.torrent.piece_length:
            self._take_written()
            try:
                return self._spare.pop()
            except IndexError:
                return aligned_buffer(size)
        return bytearray(size)

    def _writer(self) -> ThreadPoolExecutor:
        if self._write_pool is None:
            self._write_pool = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="veil-write")
        return self._write_pool

    def _worker(self) -> ThreadPoolExecutor:
        if self._saver is None:
            self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-resume")
        return self._saver

    def _raise_worker_error(self) -> None:
        if self._worker_error is not None:
            raise self._worker_error

    def drain(self) -> None:
        """Wait until every queued write and save has reached the disk (or failed)."""
        while self._writes:
            self._writes.popleft().result()
        self._wait_saver()
        self._raise_worker_error()

    def save_resume(self, *, background: bool = False) -> None:
        """Persist which pieces are complete, after making their bytes durable.

        The bitfield is snapshotted first and the save queued behind every write already
        queued: each piece it names was fully written before the data file is synced,
        so the saved state never claims a byte that is not on disk. With `background`
        the caller does not wait (fdatasync can take a second on a busy disk; the event
        loop must not); a save still in progress makes this call a no-op, and a failure
        surfaces on the next call."""
        if self.resume_path is None:
            return
        self._raise_worker_error()
        if self._saving is not None:
            if not self._saving.done() and background:
                return
            saving, self._saving = self._saving, None
            saving.result()  # raises the worker's PieceStorageError, if any
        if not self._resume_dirty:
            return
        snapshot = self.bitfield()
        self._resume_dirty = False
        self._saving = self._worker().submit(self._persist, snapshot, list(self._writes))
        if not background:
            saving, self._saving = self._saving, None
            saving.result()

    def _persist(self, snapshot: bytes, writes: list[Future]) -> None:
        for write in writes:  # every piece in the snapshot was queued before this save
            write.result()
        if self._worker_error is not None:
            return
        try:
            os.fdatasync(self._fd)
            body = {b"version": RESUME_VERSION, b"info hash": self.torrent.info_hash,
                    b"pieces": self.torrent.piece_count, b"have": snapshot}
            replace_file(self.resume_path, bencode.encode(body))
        except OSError as exc:
            self._resume_dirty = True
            raise PieceStorageError(_describe(exc, self.resume_path)) from None

    def finish(self) -> Path:
        """Once complete: sync, move `.part` to its final name, drop the resume file."""
        if self.resume_path is None or self.data_path == self.final_path:
            return self.final_path
        if not self.complete:
            raise PieceStorageError("cannot finish an incomplete download")
        self.drain()
        try:
            os.fsync(self._fd)
            os.replace(self.data_path, self.final_path)
            self.resume_path.unlink(missing_ok=True)
        except OSError as exc:
            raise PieceStorageError(_describe(exc, self.final_path)) from None
        self.data_path = self.final_path
        self._resume_dirty = False
        self._spare.clear()
        return self.final_path

    # -- reading ------------------------------------------------------------------------------
    def read_piece(self, index: int) -> memoryview | None:
        """A whole verified piece (from the cache when hot), or None if we lack it."""
        if not 0 <= index < len(self.have) or not self.have[index]:
            return None
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        in_memory = self._in_memory(index)
        if in_memory is not None:
            # a copy: the buffer is recycled for another piece once it is on disk
            data = bytes(in_memory)
        else:
            size = self.piece_size(index)
            try:
                data = os.pread(self._fd, size, index * self.torrent.piece_length)
            except OSError as exc:
                raise PieceStorageError(_describe(exc, self.data_path)) from None
            if len(data) != size:
                raise PieceStorageError(f"{self.data_path} was truncated while in use")
        view = memoryview(data)
        self._cache[index] = view
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return view

    def _in_memory(self, index: int) -> bytes | bytearray | mmap.mmap | None:
        """The buffer of a piece on its way to disk or just written, if it is still held."""
        buffer = self._unwritten.get(index)
        if buffer is None:
            self._take_written()
            buffer = self._recent.get(index)
        return buffer

    def piece_view(self, index: int) -> memoryview | None:
        """A whole verified piece without copying it when it is in memory: valid only
        until the caller next lets the event loop run (its buffer is then recycled)."""
        if not 0 <= index < len(self.have) or not self.have[index]:
            return None
        buffer = self._cache.get(index)
        if buffer is None:
            buffer = self._in_memory(index)
        if buffer is None:
            return self.read_piece(index)
        return memoryview(buffer)[: self.piece_size(index)]

    def read_block(self, index: int, begin: int, length: int) -> memoryview | None:
        piece = self.read_piece(index)
        if piece is None or begin + length > len(piece):
            return None
        return piece[begin : begin + length]

    def read(self, offset: int, length: int) -> bytes:
        """Verified bytes [offset, offset+length); every covering piece must be present."""
        pl = self.torrent.piece_length
        if offset % pl == 0 and length == self.piece_size(offset // pl):  # a whole piece: no copy
            piece = self.read_piece(offset // pl)
            if piece is not None and isinstance(piece.obj, bytes) and len(piece.obj) == length:
                return piece.obj
        out = bytearray()
        pl = self.torrent.piece_length
        end = min(offset + length, self.torrent.length)
        while offset < end:
            index, begin = divmod(offset, pl)
            piece = self.read_piece(index)
            if piece is None:
                raise PieceStorageError(f"piece {index} is not here yet")
            take = min(end - offset, len(piece) - begin)
            out += piece[begin : begin + take]
            offset += take
        return bytes(out)

    def _wait_saver(self) -> None:
        if self._saving is not None:
            saving, self._saving = self._saving, None
            try:
                saving.result()
            except PieceStorageError:
                self._resume_dirty = True

    def close(self) -> None:
        try:
            while self._writes:
                try:
                    self._writes.popleft().result()
                except PieceStorageError:
                    pass
            self._wait_saver()
            if self.data_path != self.final_path and self._worker_error is None:
                self.save_resume()
        finally:
            for pool in (self._write_pool, self._saver):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._write_pool = self._saver = None
            self._spare.clear()
            self._just_written.clear()
            self._recent.clear()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._direct_fd >= 0:
                os.close(self._direct_fd)
                self._direct_fd = -1
            self._cache.clear()


def _load_resume(path: Path, torrent: Torrent) -> list[int]:
    """Pieces a previous run marked complete (to be re-verified); [] if none or unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PieceStorageError(_describe(exc, path)) from None
    if len(raw) > MAX_RESUME_BYTES:
        return []
    try:
        body = bencode.decode(raw)
    except bencode.BencodeError:
        return []  # a torn or foreign file: start over, verification makes this safe
    if not isinstance(body, dict) or body.get(b"info hash") != torrent.info_hash:
        return []
    bits = body.get(b"have")
    have = bytes_to_bits(bits, torrent.piece_count) if isinstance(bits, bytes) else None
    if have is None:
        return []
    return [i for i in range(torrent.piece_count) if have[i]]


def _pieces_with_data(path: Path, torrent: Torrent) -> list[int]:
    """Pieces of a sparse file that hold any written data (SEEK_DATA): the holes of a
    download never written need no hashing."""
    pl, pieces = torrent.piece_length, set()
    if not hasattr(os, "SEEK_DATA"):  # no way to tell the holes: every piece is hashed
        return list(range(torrent.piece_count))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PieceStorageError(_describe(exc, path)) from None
    try:
        offset = 0
        while offset < torrent.length:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
                end = min(os.lseek(fd, start, os.SEEK_HOLE), torrent.length)
            except OSError:  # ENXIO: no data past `offset`
                break
            pieces.update(range(start // pl, (max(start, end - 1)) // pl + 1))
            offset = end
    finally:
        os.close(fd)
    return sorted(i for i in pieces if i < torrent.piece_count)


def _verify_pieces(torrent: Torrent, path: Path, pieces, progress) -> bytearray:
    have = bytearray(torrent.piece_count)
    pl = torrent.piece_length
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PieceStorageError(_describe(exc, path)) from None
    try:
        for index in pieces:
            size = min(pl, torrent.length - index * pl)
            try:
                data = os.pread(fd, size, index * pl)
            except OSError as exc:
                raise PieceStorageError(_describe(exc, path)) from None
            if torrent.verify_piece(index, data):
                have[index] = 1
            if progress:
                progress(size)
    finally:
        os.close(fd)
    return have
