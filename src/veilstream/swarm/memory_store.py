"""Verified pieces of one torrent, in memory: a `PieceStorage` that needs no disk.

For the protocol core's tests (two cores joined in memory, and never a file), and for
anything small and short-lived. Like the disk store, it is written only through
`write_verified_piece`, so what it holds is exactly what the core let through.
"""

from __future__ import annotations

from veilstream.content.torrent import Torrent
from veilstream.swarm.errors import PieceStorageError
from veilstream.swarm.storage import PieceBits


class MemoryPieceStore(PieceBits):
    def __init__(self, torrent: Torrent, data: bytearray, have: bytearray) -> None:
        if len(data) != torrent.length or len(have) != torrent.piece_count:
            raise PieceStorageError("the data and the have bits do not fit the torrent")
        self.torrent = torrent
        self._data = data
        self._view = memoryview(data)
        self.have = have
        self.have_count = sum(have)

    @classmethod
    def for_seeding(cls, torrent: Torrent, data: bytes) -> MemoryPieceStore:
        """A complete ciphertext to serve; a piece that does not verify is not offered."""
        if len(data) != torrent.length:
            raise PieceStorageError(f"{len(data)} bytes, the torrent says {torrent.length}: not this content's ciphertext")
        pl = torrent.piece_length
        have = bytearray(torrent.verify_piece(i, data[i * pl : (i + 1) * pl]) for i in range(torrent.piece_count))
        return cls(torrent, bytearray(data), have)

    @classmethod
    def for_download(cls, torrent: Torrent) -> MemoryPieceStore:
        return cls(torrent, bytearray(torrent.length), bytearray(torrent.piece_count))

    # -- PieceStorage -------------------------------------------------------------------------
    def piece_buffer(self, size: int) -> bytearray:
        return bytearray(size)

    def write_verified_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        if self.have[index]:
            return
        size = self.piece_size(index)
        if len(data) < size:
            raise PieceStorageError(f"piece {index} is {size} bytes, not {len(data)}")
        start = index * self.torrent.piece_length
        self._view[start : start + size] = memoryview(data)[:size]
        self.have[index] = 1
        self.have_count += 1

    def read_piece(self, index: int) -> memoryview | None:
        if not 0 <= index < len(self.have) or not self.have[index]:
            return None
        start = index * self.torrent.piece_length
        return self._view[start : start + self.piece_size(index)]

    def read_block(self, index: int, begin: int, length: int) -> memoryview | None:
        piece = self.read_piece(index)
        if piece is None or begin + length > len(piece):
            return None
        return piece[begin : begin + length]

    def save_resume(self, *, background: bool = False) -> None:
        pass  # nothing outlives the process

    def keep_recent_pieces(self, budget_bytes: int) -> None:
        pass  # everything is in memory already

    # -- for tests and callers that want the bytes -------------------------------------------
    def contents(self) -> bytes:
        """Every byte, verified or still zero where a piece is missing."""
        return bytes(self._data)
