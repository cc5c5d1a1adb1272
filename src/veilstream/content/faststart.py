"""Faststart: an MP4/MOV whose `moov` atom (the index) sits after `mdat` (the media) cannot
start playing until the whole file is in; a viewer pays per slice, in order, so it would
pay for everything before seeing anything. Such a file is remuxed (stream copy, no
re-encode: ffmpeg's `-c copy -movflags +faststart`) before it is published.

`top_level_atoms` walks the top-level boxes (ISO/IEC 14496-12 §4.2: a 32-bit size and a
type, size 1 meaning a 64-bit size follows, size 0 meaning "to the end of the file"); it
reads only the headers, so a file of any size costs a few reads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from veilstream.content.publish import PublishError

HEADER_BYTES = 8  # size (32 bits) and type (4 characters)
LARGE_HEADER_BYTES = 16  # size 1: a 64-bit size follows the type
MAX_TOP_LEVEL_ATOMS = 100_000  # a real file has a handful; a hostile one could claim millions of empty boxes
MP4_SUFFIXES = frozenset({".mp4", ".m4v", ".m4a", ".mov", ".qt"})
QUICKTIME_BRAND = b"qt  "

Read = Callable[[int, int], bytes]  # (offset, length) → at most `length` bytes from there


class CorruptMp4(PublishError):
    """The file says it is an MP4/MOV but its boxes do not add up."""


@dataclass(frozen=True)
class Atom:
    kind: bytes  # the four-character type, such as b"moov"
    offset: int
    size: int  # header included


def top_level_atoms(read: Read, length: int) -> Iterator[Atom]:
    """The top-level atoms of a file of `length` bytes, in order; `CorruptMp4` for a box
    that is shorter than its header or runs past the end."""
    offset = count = 0
    while offset < length:
        count += 1
        if count > MAX_TOP_LEVEL_ATOMS:
            raise CorruptMp4(f"more than {MAX_TOP_LEVEL_ATOMS} top-level boxes")
        header = read(offset, HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            raise CorruptMp4(f"a box header is cut short at byte {offset}")
        size, kind = struct.unpack(">I4s", header)
        header_size = HEADER_BYTES
        if size == 1:
            large = read(offset + HEADER_BYTES, 8)
            if len(large) < 8:
                raise CorruptMp4(f"a 64-bit box size is cut short at byte {offset}")
            size, header_size = struct.unpack(">Q", large)[0], LARGE_HEADER_BYTES
        elif size == 0:
            size = length - offset
        if size < header_size:
            raise CorruptMp4(f"the {_name(kind)} box at byte {offset} is smaller than its header ({size} bytes)")
        if offset + size > length:
            raise CorruptMp4(f"the {_name(kind)} box at byte {offset} runs past the end of the file")
        yield Atom(kind, offset, size)
        offset += size


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def needs_faststart(atoms: Iterator[Atom]) -> bool:
    """Whether the index (`moov`) comes after the media (`mdat`), so the file must be
    remuxed to stream; `CorruptMp4` if it has no `moov`. Every box is walked, so a box
    that does not add up anywhere in the file is found before anything is published."""
    kinds = [atom.kind for atom in atoms]
    if b"moov" not in kinds:
        raise CorruptMp4("it has no index (moov) box")
    return b"mdat" in kinds and kinds.index(b"mdat") < kinds.index(b"moov")


def _file_reader(handle) -> Read:
    def read(offset: int, size: int) -> bytes:
        handle.seek(offset)
        return handle.read(size)

    return read


def looks_like_mp4(path: Path) -> bool:
    """An MP4/MOV by its name, or by an `ftyp` box first."""
    if Path(path).suffix.lower() in MP4_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        return handle.read(HEADER_BYTES)[4:] == b"ftyp"


def file_needs_faststart(path: Path) -> bool:
    """For an MP4/MOV file: does its moov come after its mdat? (`CorruptMp4` if its boxes
    do not add up.)"""
    with open(path, "rb") as handle:
        length = handle.seek(0, 2)
        return needs_faststart(top_level_atoms(_file_reader(handle), length))


def _muxer_of(path: Path) -> str:
    with open(path, "rb") as handle:
        first = handle.read(12)
    return "mov" if first[4:8] == b"ftyp" and first[8:12] == QUICKTIME_BRAND or Path(path).suffix.lower() in (
        ".mov", ".qt") else "mp4"


def remux_faststart(source: Path, target: Path) -> None:
    """Copy every stream of `source` into `target` with the index first (no re-encode);
    `CorruptMp4` if PyAV cannot read it through."""
    import av

    try:
        with av.open(str(source)) as given, av.open(str(target), "w", format=_muxer_of(source),
                                                     options={"movflags": "+faststart"}) as out:
            copies = {}
            for stream in given.streams:
                if stream.type in ("video", "audio", "subtitle"):
                    copies[stream.index] = out.add_stream_from_template(stream)
            if not copies:
                raise CorruptMp4("it holds no audio or video stream")
            for packet in given.demux([given.streams[i] for i in copies]):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = copies[packet.stream.index]
                out.mux(packet)
    except av.error.FFmpegError as exc:
        raise CorruptMp4(f"PyAV cannot read it: {exc.strerror or exc}") from None
    if file_needs_faststart(target):
        raise CorruptMp4("the remuxed file still has its index last")
