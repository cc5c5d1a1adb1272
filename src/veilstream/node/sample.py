"""A generated sample video (PyAV + Pillow), so the demo and tests need no media files."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image, ImageDraw


def make_sample_video(path: Path, seconds: float = 10.0, width: int = 640, height: int = 360, fps: int = 24,
                      *, faststart: bool = True) -> Path:
    """An H.264 MP4 of a moving pattern over film grain with a running clock; every frame
    differs, so it has a realistic bitrate (about 1 Mbit/s) rather than compressing to nothing.
    Its index comes first (it streams) unless `faststart` is False: then last, as muxers write it."""
    grain = [Image.effect_noise((width, height), 40).convert("RGB") for _ in range(8)]
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for n in range(int(seconds * fps)):
            image = Image.new("RGB", (width, height), ((n * 3) % 256, 40, (255 - n * 2) % 256))
            draw = ImageDraw.Draw(image)
            x = int((width - 60) * (0.5 + 0.5 * ((n % (2 * fps)) / fps - 1)))
            draw.rectangle([abs(x), height // 3, abs(x) + 60, height // 3 + 60], fill=(250, 220, 40))
            draw.text((10, 10), f"Veilstream sample  {n / fps:05.2f} s", fill=(255, 255, 255))
            image = Image.blend(image, grain[n % len(grain)], 0.12)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
