"""Preview blobs, Blossom (BUD-01) style: `GET` and `HEAD /<sha256>` (an extension after the
hash is allowed), at the root of the node's server, from the vault's blob store.

Previews are public (their hashes are on the relays), so these need no API token; the
guard's Host and Origin checks still apply. Every read re-hashes the file: a blob that no
longer matches its name is removed, logged, and answered 500, never served. The type is
told from the bytes (the handful of preview formats), not from the extension asked for, so
no request can make the node's origin serve HTML or script.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from veilstream.node.cards import blob_store
from veilstream.social.blobs import BlobCorrupt, BlobMissing

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

log = logging.getLogger("veilstream.node.blobs")

_BLOB_NAME = r"[0-9a-f]{64}(?:\.[A-Za-z0-9]{1,8})?"
_BLOB_PATH = re.compile(rf"/{_BLOB_NAME}")
# Magic numbers of what previews are (social/previews.py makes JPEG and MP4), and a few
# images a Blossom client may hold; anything else goes out as bytes.
_SIGNATURES = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF8", "image/gif"),
    (4, b"ftyp", "video/mp4"),
)


class _BlobName(Convertor):
    regex = _BLOB_NAME

    def convert(self, value: str) -> str:
        return value[:64]

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("blob", _BlobName())


def is_blob_path(path: str) -> bool:
    return _BLOB_PATH.fullmatch(path) is not None


def content_type(data: bytes) -> str:
    for offset, magic, mime in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def router(node: Node) -> APIRouter:
    api = APIRouter()
    store = blob_store(node.home)

    @api.api_route("/{digest:blob}", methods=["GET", "HEAD"], include_in_schema=False)
    async def blob(digest: str, request: Request) -> Response:
        """A preview by its SHA-256 (Blossom BUD-01), checked against its name as it is read."""
        try:
            data = await asyncio.to_thread(store.get, digest)
        except BlobCorrupt as exc:
            log.warning("blob request: %s", exc)
            raise
        except BlobMissing:
            raise BlobMissing(f"no blob {digest} on this node") from None
        headers = {"Content-Length": str(len(data)), "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "default-src 'none'; sandbox",
                   "Cache-Control": "public, max-age=31536000, immutable"}  # a name that is a hash never changes
        body = b"" if request.method == "HEAD" else data
        return Response(body, media_type=content_type(data), headers=headers)

    return api
