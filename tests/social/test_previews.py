"""Previews (PyAV, Pillow) and SHA-256-named blobs: made, stored, served, verified."""

import asyncio
import io

import av
import pytest
from PIL import Image

from veilstream.social.blobs import BlobServer, BlobStore, fetch_blob, parse_request_head, sha256_hex
from veilstream.social.errors import SocialError
from veilstream.social.previews import make_previews, store_previews


def probe(data: bytes):
    with av.open(io.BytesIO(data)) as container:
        return {s.type: (s.codec_context.name, float(s.duration * s.time_base)) for s in container.streams}, container


def test_video_gets_a_thumbnail_and_a_ten_second_clip(media):
    previews = {p.role: p for p in make_previews(media["video"])}
    assert set(previews) == {"thumbnail", "clip"}
    thumbnail = Image.open(io.BytesIO(previews["thumbnail"].data))
    assert thumbnail.format == "JPEG" and thumbnail.size == (160, 120)
    streams, _ = probe(previews["clip"].data)
    assert streams["video"][0] == "h264" and streams["audio"][0] == "aac"
    assert 9.5 <= streams["video"][1] <= 10.2
    assert previews["clip"].mime == "video/mp4"
    assert len(previews["clip"].data) < 12 * 60_000  # low bitrate: under ~500 kbit/s


def test_audio_gets_a_thirty_second_clip(media):
    (clip,) = make_previews(media["audio"])
    streams, _ = probe(clip.data)
    assert clip.role == "clip" and clip.mime == "audio/mp4" and set(streams) == {"audio"}
    assert 29.5 <= streams["audio"][1] <= 30.2  # the source is 40 s long


def test_image_gets_a_resized_copy_and_junk_gets_nothing(media):
    (image,) = make_previews(media["image"])
    resized = Image.open(io.BytesIO(image.data))
    assert image.role == "image" and resized.format == "JPEG" and max(resized.size) == 1024
    assert make_previews(media["junk"]) == []


def test_blob_store_verifies_every_read(tmp_path, media):
    store = BlobStore(tmp_path / "blobs")
    refs = store_previews(make_previews(media["image"]), store)
    digest = refs[0].sha256
    assert store.get(digest) == store.path(digest).read_bytes()
    store.path(digest).write_bytes(b"rotted")
    with pytest.raises(SocialError, match="corrupt"):
        store.get(digest)
    assert not store.has(digest)
    with pytest.raises(SocialError):
        store.path("../../etc/passwd")


def test_request_parsing_is_strict():
    digest = "ab" * 32
    assert parse_request_head(f"GET /{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode()) == ("GET", digest)
    assert parse_request_head(f"HEAD /{digest}.jpg HTTP/1.1\r\n\r\n".encode()) == ("HEAD", digest)
    assert parse_request_head(f"PUT /{digest} HTTP/1.1\r\n\r\n".encode())[0] == 405
    assert parse_request_head(b"GET /../secret HTTP/1.1\r\n\r\n")[0] == 404
    assert parse_request_head(b"\xff\xfe\r\n\r\n")[0] == 400
    assert parse_request_head(b"GET /\r\n\r\n")[0] == 400


def test_blob_server_serves_and_fetch_verifies(tmp_path):
    store = BlobStore(tmp_path / "served")
    data = b"preview bytes" * 1000
    digest = store.put(data)
    missing = sha256_hex(b"nobody has this")

    async def lying_server(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        body = b"not what you asked for"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def scenario():
        liar = await asyncio.start_server(lying_server, "127.0.0.1", 0)
        liar_url = f"http://127.0.0.1:{liar.sockets[0].getsockname()[1]}"
        async with BlobServer(store) as server, liar:
            cache = BlobStore(tmp_path / "cache")
            fetched = await asyncio.to_thread(fetch_blob, server.url, digest, store=cache)
            assert fetched == data and cache.get(digest) == data
            with pytest.raises(SocialError, match="404"):
                await asyncio.to_thread(fetch_blob, server.url, missing)
            with pytest.raises(SocialError, match="do not hash"):
                await asyncio.to_thread(fetch_blob, liar_url, digest)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"HEAD /{digest} HTTP/1.1\r\n\r\n".encode())
            head = await reader.read()
            writer.close()
            assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(data)}".encode() in head
            assert head.endswith(b"\r\n\r\n")

    asyncio.run(scenario())
