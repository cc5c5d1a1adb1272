"""BitTorrent v2 torrents (BEP 52) whose info dict carries the Veilstream manifest.

One file per torrent. The content id is the v2 info-hash: SHA-256 of the bencoded info
dict, which holds the file's Merkle root and the manifest, so the id commits to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

from veilstream.content import bencode, merkle
from veilstream.content.manifest import Manifest, ManifestError

MIN_PIECE_LENGTH = 16 * 1024  # BEP 52: at least one 16 KiB block
MAX_PIECE_LENGTH = 16 * 1024 * 1024  # DESIGN.md: slices are 16 KiB–16 MiB
MAX_TORRENT_BYTES = 64 * 1024 * 1024  # a 16 TiB file at 1 MiB pieces has a 512 MiB layer; we refuse far less
CONTENT_ID_HEX_LENGTH = 64


class TorrentError(ManifestError):
    """A torrent file is not a valid Veilstream v2 torrent."""


def check_piece_length(piece_length: int) -> None:
    if piece_length & (piece_length - 1) or not MIN_PIECE_LENGTH <= piece_length <= MAX_PIECE_LENGTH:
        raise TorrentError(f"slice size must be a power of two from 16 KiB to 16 MiB, not {piece_length}")


def parse_content_id(text: str) -> str:
    """Normalize a content id (64 hex) or a magnet link carrying one."""
    value = text.strip().lower()
    if value.startswith("magnet:"):
        for part in value.split("?", 1)[-1].split("&"):
            if part.startswith("xt=urn:btmh:1220"):
                value = part[len("xt=urn:btmh:1220") :]
                break
        else:
            raise TorrentError("the magnet link has no v2 (btmh) info-hash")
    if len(value) != CONTENT_ID_HEX_LENGTH or any(c not in "0123456789abcdef" for c in value):
        raise TorrentError(f"a content id is 64 hex digits (a v2 info-hash); got {text[:80]!r}")
    return value


@dataclass(frozen=True)
class Torrent:
    name: str
    piece_length: int
    length: int
    pieces_root: bytes
    piece_layer: bytes  # concatenated piece hashes; empty for a one-piece file
    manifest: Manifest
    trackers: tuple[str, ...] = ()

    @cached_property
    def info(self) -> dict[bytes, object]:
        return {
            b"name": self.name.encode(),
            b"piece length": self.piece_length,
            b"meta version": 2,
            b"file tree": {self.name.encode(): {b"": {b"length": self.length, b"pieces root": self.pieces_root}}},
            b"veilstream": self.manifest.to_bencodable(),
        }

    @cached_property
    def info_bytes(self) -> bytes:
        return bencode.encode(self.info)

    @cached_property
    def info_hash(self) -> bytes:
        return sha256(self.info_bytes).digest()

    @property
    def content_id(self) -> str:
        return self.info_hash.hex()

    @property
    def piece_count(self) -> int:
        return -(-self.length // self.piece_length)

    @property
    def magnet(self) -> str:
        link = f"magnet:?xt=urn:btmh:1220{self.content_id}&dn={quote(self.name)}"
        return link + "".join(f"&tr={quote(t, safe='')}" for t in self.trackers)

    def piece_hash(self, index: int) -> bytes:
        """The expected piece-layer hash of piece `index`."""
        if not 0 <= index < self.piece_count:
            raise IndexError(index)
        if self.length <= self.piece_length:
            return self.pieces_root
        return self.piece_layer[index * 32 : index * 32 + 32]

    def verify_piece(self, index: int, data: bytes | memoryview) -> bool:
        """True when `data` is exactly piece `index` of the ciphertext."""
        offset = index * self.piece_length
        if len(data) != min(self.piece_length, self.length - offset):
            return False
        if self.length <= self.piece_length:
            return merkle.small_file_root(data) == self.pieces_root
        return merkle.piece_hash(data, self.piece_length) == self.piece_hash(index)

    def to_bytes(self) -> bytes:
        top: dict[bytes, object] = {b"info": self.info, b"created by": b"veilstream"}
        if self.piece_layer:
            top[b"piece layers"] = {self.pieces_root: self.piece_layer}
        if self.trackers:
            top[b"announce"] = self.trackers[0].encode()
            top[b"announce-list"] = [[t.encode()] for t in self.trackers]
        return bencode.encode(top)

    @classmethod
    def from_bytes(cls, data: bytes) -> Torrent:
        if len(data) > MAX_TORRENT_BYTES:
            raise TorrentError("torrent file is implausibly large")
        try:
            top = bencode.decode(data)
        except bencode.BencodeError as exc:
            raise TorrentError(f"not a torrent file (bad bencoding: {exc})") from None
        if not isinstance(top, dict) or not isinstance(top.get(b"info"), dict):
            raise TorrentError("not a torrent file (no info dictionary)")
        info = top[b"info"]
        torrent = cls.from_info(info, top.get(b"piece layers", {}), _trackers(top))
        if torrent.info_bytes != bencode.encode(info):
            raise TorrentError("the info dictionary carries fields this node does not understand")
        return torrent

    @classmethod
    def from_info(cls, info: dict, piece_layers: object, trackers: tuple[str, ...] = ()) -> Torrent:
        """Build and fully verify a torrent from its info dict and piece layers (a magnet
        fetch gets these separately)."""
        if info.get(b"meta version") != 2:
            raise TorrentError("not a BitTorrent v2 torrent (meta version ≠ 2)")
        if b"veilstream" not in info:
            raise TorrentError("a BitTorrent v2 torrent, but not a Veilstream one (no manifest)")
        name = info.get(b"name")
        piece_length = info.get(b"piece length")
        tree = info.get(b"file tree")
        if not isinstance(name, bytes) or not isinstance(piece_length, int) or not isinstance(tree, dict):
            raise TorrentError("info dictionary lacks name, piece length or file tree")
        check_piece_length(piece_length)
        if list(tree) != [name]:
            raise TorrentError("a Veilstream torrent holds exactly one file, named like the torrent")
        entry = tree[name].get(b"") if isinstance(tree[name], dict) else None
        if not isinstance(entry, dict):
            raise TorrentError("file tree entry is malformed")
        length, root = entry.get(b"length"), entry.get(b"pieces root")
        if not isinstance(length, int) or length <= 0 or not isinstance(root, bytes) or len(root) != 32:
            raise TorrentError("file tree entry lacks a positive length or a 32-byte pieces root")
        layer = b""
        if length > piece_length:
            layers = piece_layers if isinstance(piece_layers, dict) else {}
            layer = layers.get(root, b"")
            piece_count = -(-length // piece_length)
            if not isinstance(layer, bytes) or len(layer) != 32 * piece_count:
                raise TorrentError("piece layer missing or of the wrong size: truncated torrent?")
            hashes = [layer[i : i + 32] for i in range(0, len(layer), 32)]
            if merkle.pieces_root(hashes, piece_length, length) != root:
                raise TorrentError("piece layer does not match the file's Merkle root")
        try:
            text_name = name.decode()
        except UnicodeDecodeError:
            raise TorrentError("torrent name is not UTF-8") from None
        if "/" in text_name or text_name in ("", ".", ".."):
            raise TorrentError("torrent name is not a plain file name")
        try:
            manifest = Manifest.from_bencodable(info[b"veilstream"], piece_length, length)
        except TorrentError:
            raise
        except ManifestError as exc:
            raise TorrentError(f"the torrent's manifest is invalid: {exc}") from None
        return cls(text_name, piece_length, length, root, layer, manifest, trackers)

    @classmethod
    def load(cls, path: Path) -> Torrent:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise TorrentError(f"no such torrent file: {path}") from None
        except OSError as exc:
            raise TorrentError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_bytes(data)


def _trackers(top: dict) -> tuple[str, ...]:
    found: list[str] = []
    tiers = top.get(b"announce-list")
    if isinstance(tiers, list):
        for tier in tiers:
            for url in tier if isinstance(tier, list) else []:
                if isinstance(url, bytes):
                    found.append(url.decode(errors="replace"))
    if not found and isinstance(top.get(b"announce"), bytes):
        found.append(top[b"announce"].decode(errors="replace"))
    return tuple(found)
