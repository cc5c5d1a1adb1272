"""Previews made at publish time: what a viewer sees before paying.

- video: a JPEG thumbnail (a frame a little way in, past fades from black) and a clip of
  the first ~10 s, H.264 + AAC at a low bitrate, at most 480 px high;
- audio: a clip of the first 30 s, AAC;
- image: a resized JPEG copy.
(Lengths, sizes and rates: the `preview_*` fields of `SocialSettings`.)

A file whose kind we cannot tell, or cannot decode, gets no previews: publishing it still
works, the card just shows no picture.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageOps, UnidentifiedImageError

from veilstream.social.blobs import BlobStore, sha256_hex
from veilstream.social.kinds import PreviewRef
from veilstream.social.settings import SocialSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preview:
    role: str  # "thumbnail", "clip" or "image"
    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)

    def ref(self) -> PreviewRef:
        return PreviewRef(self.sha256, self.mime, self.role, len(self.data))


def make_previews(
    path: str | Path, mime: str | None = None, *, settings: SocialSettings = SocialSettings()
) -> list[Preview]:
    """The previews for a plaintext file (empty when it is neither video, audio nor image)."""
    path = Path(path)
    mime = mime or mimetypes.guess_type(path.name)[0] or ""
    if mime.startswith("image/"):
        image = _image_preview(path, settings)
        return [image] if image else []
    try:
        with av.open(str(path)) as container:
            has_video = any(s.type == "video" and s.codec_context is not None for s in container.streams.video)
            has_audio = bool(container.streams.audio)
    except (av.FFmpegError, OSError, ValueError) as exc:
        image = _image_preview(path, settings)  # still images that FFmpeg cannot open
        if image is None:
            log.info("no previews for %s: %s", path.name, exc)
        return [image] if image else []
    previews: list[Preview] = []
    try:
        if has_video and not mime.startswith("audio/"):
            previews.append(_video_thumbnail(path, settings))
            previews.append(_clip(path, settings.preview_video_clip_s, settings, with_video=True, with_audio=has_audio))
        elif has_audio:
            previews.append(_clip(path, settings.preview_audio_clip_s, settings, with_video=False, with_audio=True))
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("previews for %s stopped: %s", path.name, exc)
    return previews


def store_previews(previews: list[Preview], store: BlobStore) -> list[PreviewRef]:
    refs = []
    for preview in previews:
        store.put(preview.data)
        refs.append(preview.ref())
    return refs


def _jpeg(image: Image.Image, box_px: int, settings: SocialSettings) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((box_px, box_px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=settings.preview_jpeg_quality, optimize=True, progressive=True)
    return out.getvalue()


def _image_preview(path: Path, settings: SocialSettings) -> Preview | None:
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return Preview("image", "image/jpeg", _jpeg(image, settings.preview_image_px, settings))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        log.info("no image preview for %s: %s", path.name, exc)
        return None


def _video_thumbnail(path: Path, settings: SocialSettings) -> Preview:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        target = min(duration * settings.preview_thumbnail_at_fraction, settings.preview_thumbnail_at_most_s)
        if target > 0:
            container.seek(int(target * av.time_base), backward=True)
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.time is None or frame.time >= target:
                break
        if chosen is None:
            raise ValueError("the video has no decodable frame")
        return Preview("thumbnail", "image/jpeg", _jpeg(chosen.to_image(), settings.preview_thumbnail_px, settings))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _clip(path: Path, seconds: float, settings: SocialSettings, *, with_video: bool, with_audio: bool) -> Preview:
    # faststart (index before data, so a browser plays while downloading) needs a real file:
    # the muxer rewrites it in a second pass.
    with tempfile.TemporaryDirectory(prefix="veil-clip-") as scratch:
        out_path = Path(scratch) / "clip.mp4"
        _encode_clip(path, out_path, seconds, settings, with_video=with_video, with_audio=with_audio)
        data = out_path.read_bytes()
    return Preview("clip", "video/mp4" if with_video else "audio/mp4", data)


def _encode_clip(
    path: Path, out_path: Path, seconds: float, settings: SocialSettings, *, with_video: bool, with_audio: bool
) -> None:
    audio_rate = settings.preview_audio_rate_hz
    with av.open(str(path)) as source, av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"}) as sink:
        streams_in = []
        video_in = video_out = audio_in = audio_out = resampler = None
        if with_video:
            video_in = source.streams.video[0]
            width, height = video_in.codec_context.width, video_in.codec_context.height
            scale = min(1.0, settings.preview_clip_max_height_px / height) if height else 1.0
            rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
            rate = min(Fraction(rate).limit_denominator(1001), Fraction(settings.preview_clip_max_fps))
            video_out = sink.add_stream("libx264", rate=rate)
            video_out.width, video_out.height = _even(width * scale), _even(height * scale)
            video_out.pix_fmt = "yuv420p"
            video_out.bit_rate = settings.preview_clip_video_bitrate_bps
            video_out.options = {"preset": "veryfast"}
            video_out.codec_context.time_base = Fraction(1, 1000)
            streams_in.append(video_in)
        if with_audio:
            audio_in = source.streams.audio[0]
            audio_out = sink.add_stream("aac", rate=audio_rate, layout="stereo")
            audio_out.bit_rate = settings.preview_clip_audio_bitrate_bps
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=audio_rate)
            streams_in.append(audio_in)
        done = set()
        last_video_pts = -1
        audio_samples = 0
        for packet in source.demux(streams_in):
            if packet.stream in done:
                continue
            for frame in packet.decode():
                if frame.time is not None and frame.time >= seconds:
                    done.add(packet.stream)
                    break
                if packet.stream is video_in:
                    pts = round((frame.time or 0.0) * 1000)
                    if pts <= last_video_pts:
                        continue  # duplicate or reordered timestamp: the encoder needs them rising
                    last_video_pts = pts
                    out_frame = frame.reformat(video_out.width, video_out.height, format="yuv420p")
                    out_frame.pts, out_frame.time_base = pts, Fraction(1, 1000)
                    sink.mux(video_out.encode(out_frame))
                else:
                    for chunk in resampler.resample(frame):
                        chunk.pts, chunk.time_base = audio_samples, Fraction(1, audio_rate)
                        audio_samples += chunk.samples
                        sink.mux(audio_out.encode(chunk))
            if len(done) == len(streams_in):
                break
        if video_out is not None:
            sink.mux(video_out.encode(None))
        if audio_out is not None:
            for chunk in resampler.resample(None):
                chunk.pts, chunk.time_base = audio_samples, Fraction(1, audio_rate)
                audio_samples += chunk.samples
                sink.mux(audio_out.encode(chunk))
            sink.mux(audio_out.encode(None))
