import math
import struct
import wave
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from veilstream.identity import Identity
from veilstream.social.embedded_relay import EmbeddedRelay
from veilstream.social.events import NostrKey

SOCIAL_WORDS = "legal winner thank year wave sausage worth useful legal winner thank yellow"


@pytest.fixture(scope="session")
def identity() -> Identity:
    return Identity.from_mnemonic(SOCIAL_WORDS)


@pytest.fixture
def stranger() -> NostrKey:
    return NostrKey()


@pytest.fixture(scope="session")
def relay(tmp_path_factory) -> EmbeddedRelay:
    """One real `nostr-relay` server on loopback per test process."""
    with EmbeddedRelay(tmp_path_factory.mktemp("relay")) as running:
        yield running


def write_wav(path: Path, seconds: float, rate: int = 22_050) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(i * 2 * math.pi * 440 / rate))) for i in range(int(seconds * rate))
            )
        )
    return path


def write_video(path: Path, wav: Path, seconds: int = 12, size=(160, 120), fps: int = 10) -> Path:
    """A small MP4 (MPEG-4 video + AAC audio) with a colour ramp and a tone."""
    with av.open(str(path), "w") as sink, av.open(str(wav)) as tone:
        video = sink.add_stream("mpeg4", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        audio = sink.add_stream("aac", rate=22_050, layout="mono")
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_image(Image.new("RGB", size, ((i * 7) % 255, 80, 160)))
            frame.pts, frame.time_base = i, Fraction(1, fps)
            sink.mux(video.encode(frame))
        sink.mux(video.encode(None))
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=22_050)
        samples = 0
        for decoded in tone.decode(audio=0):
            for chunk in resampler.resample(decoded):
                chunk.pts, chunk.time_base = samples, Fraction(1, 22_050)
                samples += chunk.samples
                sink.mux(audio.encode(chunk))
        sink.mux(audio.encode(None))
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    song = write_wav(root / "song.wav", 40)
    video = write_video(root / "clip.mp4", write_wav(root / "tone.wav", 12), seconds=12)
    image = root / "photo.png"
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(image)
    junk = root / "notes.bin"
    junk.write_bytes(b"\x00\x01not media at all" * 100)
    return {"video": video, "audio": song, "image": image, "junk": junk}
