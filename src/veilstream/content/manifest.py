"""The public manifest and the encrypted metadata of a content.

The manifest sits inside the torrent's info dict under `veilstream`, so the content id
(the v2 info-hash) commits to it. It tells a seeder how the ciphertext is laid out and a
viewer how to check keys and pay; it says nothing of what the content is: that is in the
encrypted metadata, readable only with the content's metadata key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from veilstream.content.crypto import SALT_SIZE, TAG_SIZE, CipherSuite, open_metadata, seal_metadata
from veilstream.errors import VeilError

MANIFEST_VERSION = 1
MAX_BASIS_POINTS = 10_000
ZERO_ADDRESS = bytes(20)


class ManifestError(VeilError):
    """A manifest or torrent is malformed or inconsistent."""


@dataclass(frozen=True)
class Terms:
    """What a slice costs and how the payment splits, registered on chain with the content."""

    price_per_slice_wei: int = 0
    seeder_share_bps: int = 2_000

    def __post_init__(self) -> None:
        if self.price_per_slice_wei < 0:
            raise ManifestError("price per slice cannot be negative")
        if not 0 <= self.seeder_share_bps <= MAX_BASIS_POINTS:
            raise ManifestError(f"seeder share is in basis points, 0–{MAX_BASIS_POINTS}")


MAX_METADATA_TEXT = 4096  # characters of a name or MIME type
MAX_METADATA_BYTES = 16 * 1024  # a name, a MIME type and two numbers, with room to spare
MAX_METADATA_BRACKETS = 64  # one object; names may hold a few brackets of their own


@dataclass(frozen=True)
class Metadata:
    """What the content is. Encrypted: a seeder never learns it."""

    name: str
    mime_type: str
    size: int
    duration_s: float | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Metadata:
        """Parse decrypted metadata; anything but the fields of `to_bytes` is `ManifestError`."""
        # A creator writes these bytes and every viewer parses them: bound the work, and
        # the nesting (deeply nested JSON exhausts the C stack under a raised recursion limit).
        if len(raw) > MAX_METADATA_BYTES or raw.count(b"[") + raw.count(b"{") > MAX_METADATA_BRACKETS:
            raise ManifestError("metadata is malformed: too large or too deeply nested")
        try:
            fields = json.loads(raw)
            if not isinstance(fields, dict):
                raise TypeError("not an object")
            name, mime, size, duration = fields["name"], fields["mime_type"], fields["size"], fields.get("duration_s")
            if not isinstance(name, str) or not isinstance(mime, str):
                raise TypeError("name and MIME type must be text")
            if len(name) > MAX_METADATA_TEXT or len(mime) > MAX_METADATA_TEXT:
                raise ValueError("name or MIME type too long")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
                raise ValueError("size must be a whole number of bytes")
            if duration is not None:
                if isinstance(duration, bool) or not isinstance(duration, int | float):
                    raise TypeError("duration must be a number")
                duration = float(duration)
                if not 0 <= duration < 1e12:  # also refuses NaN and infinities
                    raise ValueError("duration out of range")
            meta = cls(name=name, mime_type=mime, size=size, duration_s=duration)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise ManifestError(f"metadata is malformed: {exc}") from None
        return meta


@dataclass(frozen=True)
class Manifest:
    suite: CipherSuite
    salt: bytes
    piece_length: int
    slice_count: int
    ciphertext_length: int
    key_root: bytes
    creator_address: bytes
    creator_nostr: bytes
    terms: Terms
    encrypted_metadata: bytes
    registry_address: bytes = ZERO_ADDRESS
    version: int = MANIFEST_VERSION

    @property
    def plain_slice_length(self) -> int:
        """Plaintext bytes per slice (all but the last): a player's byte range maps to slices by it."""
        return self.piece_length - TAG_SIZE

    @property
    def plaintext_length(self) -> int:
        return self.ciphertext_length - TAG_SIZE * self.slice_count

    def slice_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of ciphertext slice `index`."""
        if not 0 <= index < self.slice_count:
            raise IndexError(f"slice {index} outside 0..{self.slice_count - 1}")
        offset = index * self.piece_length
        return offset, min(self.piece_length, self.ciphertext_length - offset)

    def metadata(self, metadata_key: bytes) -> Metadata:
        return Metadata.from_bytes(open_metadata(self.suite, metadata_key, self.salt, self.encrypted_metadata))

    @staticmethod
    def seal(suite: CipherSuite, metadata_key: bytes, salt: bytes, meta: Metadata) -> bytes:
        return seal_metadata(suite, metadata_key, salt, meta.to_bytes())

    def to_bencodable(self) -> dict[bytes, object]:
        return {
            b"v": self.version,
            b"suite": self.suite.value.encode(),
            b"salt": self.salt,
            b"slice count": self.slice_count,
            b"key root": self.key_root,
            b"creator": self.creator_address,
            b"creator nostr": self.creator_nostr,
            b"price per slice": self.price_per_slice_bytes(),
            b"seeder share bps": self.terms.seeder_share_bps,
            b"registry": self.registry_address,
            b"metadata": self.encrypted_metadata,
        }

    def price_per_slice_bytes(self) -> bytes:
        # wei amounts may exceed 64 bits; bencode ints are unbounded but many parsers are not
        return self.terms.price_per_slice_wei.to_bytes(32, "big")

    @classmethod
    def from_bencodable(cls, raw: object, piece_length: int, ciphertext_length: int) -> Manifest:
        if not isinstance(raw, dict):
            raise ManifestError("manifest is not a dictionary")

        def field(name: bytes, kind: type, size: int | None = None):
            value = raw.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ManifestError(f"manifest field {name.decode()!r} is missing or mistyped")
            if size is not None and len(value) != size:
                raise ManifestError(f"manifest field {name.decode()!r} must be {size} bytes")
            return value

        version = field(b"v", int)
        if version != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {version} is not supported (this node reads {MANIFEST_VERSION})")
        try:
            suite = CipherSuite(field(b"suite", bytes).decode())
        except (ValueError, UnicodeDecodeError):
            raise ManifestError("unknown cipher suite") from None
        manifest = cls(
            suite=suite,
            salt=field(b"salt", bytes, SALT_SIZE),
            piece_length=piece_length,
            slice_count=field(b"slice count", int),
            ciphertext_length=ciphertext_length,
            key_root=field(b"key root", bytes, 32),
            creator_address=field(b"creator", bytes, 20),
            creator_nostr=field(b"creator nostr", bytes, 32),
            terms=Terms(
                price_per_slice_wei=int.from_bytes(field(b"price per slice", bytes, 32), "big"),
                seeder_share_bps=field(b"seeder share bps", int),
            ),
            encrypted_metadata=field(b"metadata", bytes),
            registry_address=field(b"registry", bytes, 20),
            version=version,
        )
        expected_slices = -(-ciphertext_length // piece_length)
        if manifest.slice_count != expected_slices:
            raise ManifestError(f"manifest claims {manifest.slice_count} slices; the file layout has {expected_slices}")
        last = ciphertext_length - (expected_slices - 1) * piece_length
        if last <= TAG_SIZE:
            raise ManifestError("the last slice is too short to hold an authentication tag")
        return manifest
