"""Piece verification without IO: blocks in, verdicts out.

Each block of a piece being downloaded is copied into the piece's buffer as it arrives
and, for deadline pieces, hashed at once (still hot in the cache); bulk pieces may be
hashed elsewhere (a thread) and their block hashes handed back. Once a piece is whole,
its blocks' Merkle root is checked against the piece layer, and the verifier answers:

    Verified(index, buffer, bytes_by_sender)    store it, announce it
    Bad(index, culprits, reason)                ban these peers (they sent bad blocks)
    NeedBlockHashes(index, request, suspects)   several peers shared a bad piece: ask an
                                                uninvolved peer for its block hashes,
                                                proven up to the piece hash
    HashElsewhere(index, buffer)                hash the blocks off the event loop, then
                                                call `hashes_computed`

A `NeedBlockHashes` is settled by `tracing` and then `block_hashes_arrived` (which names
the liars), or, if nobody can be asked, by `untraceable` (strikes: a peer found in
repeated bad pieces is banned).

The verifier never talks to peers or touches the disk: the swarm acts on its verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import sha256

from veilstream.content.merkle import BLOCK_SIZE
from veilstream.content.torrent import Torrent
from veilstream.swarm import wire
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.hashes import TreeShape, block_layer_request, chain_root, piece_root_from_block_hashes

HASH_FAILURE_STRIKES = 2  # shared in two pieces that failed without a culprit found: banned


@dataclass(frozen=True, slots=True)
class Verified:
    index: int
    buffer: bytearray  # the piece, to be stored (the store takes ownership)
    bytes_by_sender: tuple[tuple[int, int], ...]  # (conn, bytes of the piece it sent), most first


@dataclass(frozen=True, slots=True)
class Bad:
    index: int
    culprits: tuple[int, ...]  # conns to ban (may be empty: no one reached its strikes)
    reason: str


@dataclass(frozen=True, slots=True)
class NeedBlockHashes:
    index: int
    request: wire.HashRequest | None  # to ask a peer that has the piece; None: one block per piece, nothing to trace
    suspects: frozenset[int]
    evidence: tuple = field(default=(), repr=False)  # (block hashes, senders) the answer is compared with


@dataclass(frozen=True, slots=True)
class HashElsewhere:
    index: int
    buffer: bytearray


Verdict = Verified | Bad | NeedBlockHashes | HashElsewhere


class _Assembly:
    """A piece's blocks, held in memory until the piece verifies."""

    __slots__ = ("buffer", "hashes", "senders", "inline", "missing")

    def __init__(self, buffer: bytearray, blocks: int, inline: bool) -> None:
        self.buffer = buffer
        self.inline = inline
        self.hashes: list[bytes | None] = [None] * blocks
        self.senders: list[int | None] = [None] * blocks  # all set once the piece is whole
        self.missing = blocks


class PieceVerifier:
    """The pieces of one torrent being assembled and checked.

    `new_buffer(size)` gives the buffer a piece is assembled in (the store's recycled,
    page-aligned ones). With `hash_elsewhere(index)` true for a piece, its blocks are
    not hashed as they arrive: the whole piece comes back as `HashElsewhere`."""

    def __init__(self, torrent: Torrent, new_buffer: Callable[[int], bytearray],
                 hash_elsewhere: Callable[[int], bool] | None = None) -> None:
        self.torrent = torrent
        self.shape = TreeShape(torrent.length, torrent.piece_length)
        self.hash_elsewhere = hash_elsewhere
        self._new_buffer = new_buffer
        self._assemblies: dict[int, _Assembly] = {}
        self._hashing: dict[int, _Assembly] = {}  # complete pieces whose hashes are computed elsewhere
        self._suspects: dict[int, tuple[list[bytes | None], list[int | None]]] = {}  # piece → block hashes, senders
        self._strikes: dict[int, int] = {}  # conn → bad pieces it shared in, culprit unknown

    # -- geometry ------------------------------------------------------------------------------
    def piece_size(self, index: int) -> int:
        return min(self.torrent.piece_length, self.torrent.length - index * self.torrent.piece_length)

    def block_length(self, index: int, number: int) -> int:
        return min(BLOCK_SIZE, self.piece_size(index) - number * BLOCK_SIZE)

    # -- blocks in ----------------------------------------------------------------------------
    def add_block(self, index: int, number: int, begin: int, data: bytes | memoryview, sender: int) -> Verdict | None:
        """Block `number` (at `begin`) of piece `index`, new (the picker had not had it),
        from `sender`. None until the piece is whole. The hot path: one call per block."""
        assembly = self._assemblies.get(index)
        if assembly is None:
            size = self.piece_size(index)
            # Deadline pieces are hashed here, block by block as they come: handing them
            # to a thread would make the player wait for GIL hand-offs. Bulk pieces go
            # elsewhere (when the transport offers it) and hash in parallel with the network.
            inline = self.hash_elsewhere is None or not self.hash_elsewhere(index)
            assembly = self._assemblies[index] = _Assembly(self._new_buffer(size), -(-size // BLOCK_SIZE), inline)
        assembly.buffer[begin : begin + len(data)] = data
        if assembly.inline:
            assembly.hashes[number] = sha256(data).digest()
        assembly.senders[number] = sender
        assembly.missing -= 1
        if assembly.missing:
            return None
        del self._assemblies[index]
        if not assembly.inline:
            self._hashing[index] = assembly
            return HashElsewhere(index, assembly.buffer)
        return self._check(index, assembly)

    def hashes_computed(self, index: int, block_hashes: list[bytes]) -> Verdict | None:
        """The block hashes of a piece answered with `HashElsewhere`; None if the piece
        was discarded meanwhile (its sender was banned)."""
        assembly = self._hashing.pop(index, None)
        if assembly is None or len(block_hashes) != len(assembly.hashes):
            return None
        assembly.hashes = list(block_hashes)
        return self._check(index, assembly)

    def discard_blocks_from(self, conn: int) -> list[int]:
        """A banned peer's unverified blocks go: every piece it contributed to starts
        over. Returns those pieces."""
        dropped = []
        for pending in (self._assemblies, self._hashing):
            for index, assembly in list(pending.items()):
                if conn in assembly.senders:
                    del pending[index]
                    dropped.append(index)
        return dropped

    # -- checking ------------------------------------------------------------------------------
    def _check(self, index: int, assembly: _Assembly) -> Verdict:
        senders = assembly.senders
        if piece_root_from_block_hashes(assembly.hashes, self.shape) == self.torrent.piece_hash(index):
            delivered: dict[int, int] = {}
            for sender in senders:  # whole blocks; only a piece's last block may be short
                delivered[sender] = delivered.get(sender, 0) + BLOCK_SIZE
            delivered[senders[-1]] -= BLOCK_SIZE - self.block_length(index, len(senders) - 1)
            ranked = tuple(sorted(delivered.items(), key=lambda item: item[1], reverse=True))
            return Verified(index, assembly.buffer, ranked)
        suspects = frozenset(senders)
        if len(suspects) == 1:
            return Bad(index, tuple(suspects), f"sent a bad block in piece {index}")
        request = block_layer_request(self.shape, self.torrent.pieces_root, index) if self.shape.blocks_per_piece > 1 else None
        return NeedBlockHashes(index, request, suspects, (assembly.hashes, senders))

    def tracing(self, verdict: NeedBlockHashes) -> None:
        """`verdict.request` went to a peer: keep the evidence to compare its answer with."""
        self._suspects[verdict.index] = verdict.evidence

    def block_hashes_arrived(self, index: int, message: wire.Hashes) -> Bad | None:
        """A peer's answer to a `NeedBlockHashes` request: the senders whose blocks differ.
        Raises `RemoteProtocolError` (ban) if the answer does not chain to the piece hash."""
        suspects = self._suspects.pop(index, None)
        if suspects is None:
            return None
        key = (message.base_layer, message.index, message.length, message.proof_layers)
        if chain_root(message.hashes, *key) != self.torrent.piece_hash(index):
            raise RemoteProtocolError("block hashes do not chain to the piece hash", ban=True)
        hashes, senders = suspects
        liars = []
        for number, got in enumerate(hashes):
            if got is not None and got != message.hashes[32 * number : 32 * number + 32]:
                if senders[number] not in liars:
                    liars.append(senders[number])
        return Bad(index, tuple(liars), f"sent a bad block in piece {index}")

    def untraceable(self, index: int, suspects: Iterable[int]) -> Bad:
        """Nobody can be asked for block hashes of failed piece `index`: each suspect
        (still connected) takes a strike, and those with too many are to be banned."""
        out = []
        for conn in suspects:
            strikes = self._strikes[conn] = self._strikes.get(conn, 0) + 1
            if strikes >= HASH_FAILURE_STRIKES:
                out.append(conn)
        return Bad(index, tuple(out), "shared in repeated bad pieces")

    def forget_peer(self, conn: int) -> None:
        """A peer left: its strikes go with it (a connection id may be used again)."""
        self._strikes.pop(conn, None)
