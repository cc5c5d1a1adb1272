"""Faststart: the top-level atom walk finds where the index sits in any well-formed box
sequence and refuses one that does not add up; a real H.264 MP4 with its index last is
remuxed with the index first and still decodes."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilstream.content.faststart import (
    CorruptMp4,
    file_needs_faststart,
    looks_like_mp4,
    needs_faststart,
    remux_faststart,
    top_level_atoms,
)

KINDS = st.sampled_from([b"ftyp", b"free", b"mdat", b"moov", b"skip", b"uuid", b"wide"])


def box(kind: bytes, body: bytes, *, large: bool = False, to_end: bool = False) -> bytes:
    if to_end:
        return struct.pack(">I4s", 0, kind) + body
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(body)) + body
    return struct.pack(">I4s", 8 + len(body), kind) + body


boxes = st.lists(st.tuples(KINDS, st.binary(max_size=40), st.booleans()), max_size=12)


def reader(data: bytes):
    return lambda offset, length: data[offset:offset + length]


@given(boxes, st.booleans())
def test_the_walk_finds_every_top_level_box_in_order(spec, last_to_end):
    parts = [box(kind, body, large=large) for kind, body, large in spec]
    if last_to_end and spec:
        kind, body, _ = spec[-1]
        parts[-1] = box(kind, body, to_end=True)
    data = b"".join(parts)
    atoms = list(top_level_atoms(reader(data), len(data)))
    assert [a.kind for a in atoms] == [kind for kind, _, _ in spec]
    assert [a.size for a in atoms] == [len(p) for p in parts]
    assert sum(a.size for a in atoms) == len(data)
    kinds = [kind for kind, _, _ in spec]
    if b"moov" not in kinds:
        with pytest.raises(CorruptMp4, match="no index"):
            needs_faststart(iter(atoms))
    else:
        assert needs_faststart(iter(atoms)) == (b"mdat" in kinds and kinds.index(b"mdat") < kinds.index(b"moov"))


@given(boxes.filter(lambda spec: spec), st.data())
def test_a_cut_or_lying_box_is_corrupt_never_an_endless_walk(spec, data):
    whole = b"".join(box(kind, body, large=large) for kind, body, large in spec)
    cut = data.draw(st.integers(1, len(whole) - 1), label="cut at") if len(whole) > 1 else None
    if cut is not None and cut not in _boundaries(spec):
        with pytest.raises(CorruptMp4):
            list(top_level_atoms(reader(whole[:cut]), cut))
    lying = struct.pack(">I4s", data.draw(st.integers(2, 7)), b"mdat") + whole  # smaller than its own header
    with pytest.raises(CorruptMp4, match="smaller than its header"):
        list(top_level_atoms(reader(lying), len(lying)))


def _boundaries(spec) -> set[int]:
    ends, at = set(), 0
    for kind, body, large in spec:
        at += len(box(kind, body, large=large))
        ends.add(at)
    return ends


def test_the_walk_reads_only_headers():
    data = box(b"ftyp", b"isom") + box(b"mdat", bytes(10_000_000)) + box(b"moov", b"x" * 100)
    reads = []

    def counting(offset, length):
        reads.append(length)
        return data[offset:offset + length]

    assert needs_faststart(top_level_atoms(counting, len(data))) is True
    assert sum(reads) <= 3 * 8


def make_h264_mp4(path, frames: int = 20) -> None:
    """A small real H.264 MP4; PyAV's muxer writes the index (moov) last unless told faststart."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 10 % 256]) * plane.buffer_size)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def decoded_frames(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_real_mp4_with_its_index_last_is_remuxed_index_first_and_still_decodes(tmp_path):
    source, target = tmp_path / "clip.mp4", tmp_path / "fast.mp4"
    make_h264_mp4(source)
    assert looks_like_mp4(source) and file_needs_faststart(source)
    remux_faststart(source, target)
    assert not file_needs_faststart(target)
    assert decoded_frames(target) == decoded_frames(source) == 20


def test_a_corrupt_mp4_is_a_clear_error(tmp_path):
    source = tmp_path / "clip.mp4"
    make_h264_mp4(source)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[:-50])  # the index box runs past the end
    with pytest.raises(CorruptMp4, match="'moov' box .* runs past the end"):
        file_needs_faststart(cut)
    garbage = tmp_path / "garbage.mp4"  # boxes that add up around an index PyAV cannot read
    garbage.write_bytes(box(b"ftyp", b"isom\0\0\0\0") + box(b"mdat", b"\x01" * 64) + box(b"moov", b"\xff" * 64))
    assert file_needs_faststart(garbage)
    with pytest.raises(CorruptMp4, match="PyAV cannot read it|no audio or video stream"):
        remux_faststart(garbage, tmp_path / "out.mp4")
