"""Public blobs (previews) named by their SHA-256: a store, a Blossom-style server, a fetcher.

A blob's name is its hash, so whoever serves it needs no trust: every read, local or
remote, re-hashes the bytes and refuses a mismatch. The server answers `GET /<sha256>`
and `HEAD /<sha256>` (an extension after the hash is allowed, as in Blossom) and nothing
else; it is deliberately small and sits behind the node's own HTTP server later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

from veilstream.atomic import replace_file
from veilstream.social.errors import SocialError
from veilstream.social.settings import SocialSettings

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"/([0-9a-f]{64})(\.[A-Za-z0-9]{1,8})?")


class BlobMissing(SocialError):
    http_status = 404


class BlobCorrupt(SocialError):
    """A stored blob no longer hashes to its name (the disk, or someone, changed it)."""

    http_status = 500


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs on disk at `root/ab/abcdef…`, written atomically, verified on every read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if not _SHA256.fullmatch(digest):
            raise SocialError(f"{digest!r} is not a SHA-256 blob name")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.is_file():
            return digest
        replace_file(target, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes; a blob that no longer matches its name is removed and refused."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest[:16]}… in {self.root}") from None
        if sha256_hex(data) != digest:
            path.unlink(missing_ok=True)
            raise BlobCorrupt(f"blob {digest[:16]}… was corrupt on disk and has been removed")
        return data


def fetch_blob(base_url: str, digest: str, *, store: BlobStore | None = None, timeout: float | None = None,
               max_bytes: int | None = None, settings: SocialSettings = SocialSettings()) -> bytes:
    """`GET base_url/<digest>`, refused unless the bytes hash to `digest`; kept in `store` if given.
    `timeout` and `max_bytes` override `settings`."""
    timeout = settings.blob_fetch_timeout_s if timeout is None else timeout
    max_bytes = settings.max_blob_bytes if max_bytes is None else max_bytes
    if not _SHA256.fullmatch(digest):
        raise SocialError(f"{digest!r} is not a SHA-256 blob name")
    if store is not None and store.has(digest):
        try:
            return store.get(digest)
        except SocialError:
            pass  # corrupt copy removed; fetch again
    url = f"{base_url.rstrip('/')}/{digest}"
    if not url.startswith(("http://", "https://")):
        raise SocialError(f"{base_url!r} is not an http(s) blob server")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise SocialError(f"blob server {base_url}: {exc.code} for {digest[:16]}…") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SocialError(f"blob server {base_url} unreachable: {getattr(exc, 'reason', exc)}") from None
    if len(data) > max_bytes:
        raise SocialError(f"blob {digest[:16]}… from {base_url} is larger than {max_bytes} bytes")
    if sha256_hex(data) != digest:
        raise SocialError(f"blob server {base_url} sent bytes that do not hash to {digest[:16]}…")
    if store is not None:
        store.put(data)
    return data


# --- the server: request parsing is pure, the asyncio part only moves bytes -----------------


def parse_request_head(head: bytes) -> tuple[str, str] | tuple[int, str]:
    """(method, blob digest) for a valid blob request, or (status, reason) to refuse it."""
    try:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return 400, "Bad Request"
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400, "Bad Request"
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return 405, "Method Not Allowed"
    match = _BLOB_PATH.fullmatch(target)
    if match is None:
        return 404, "Not Found"
    return method, match.group(1)


def _response(status: int, reason: str, body: bytes = b"", *, length: int | None = None,
              content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Access-Control-Allow-Origin: *\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BlobServer:
    """`GET /<sha256>` over a `BlobStore`, on 127.0.0.1 by default."""

    def __init__(self, store: BlobStore, host: str = "127.0.0.1", port: int = 0, *,
                 settings: SocialSettings = SocialSettings()) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.settings = settings
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> BlobServer:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=self.settings.blob_request_head_bytes
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> BlobServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.settings.blob_request_timeout_s)
            writer.write(self._answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, asyncio.TimeoutError):
            writer.write(_response(400, "Bad Request", b"bad request\n"))
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    def _answer(self, head: bytes) -> bytes:
        parsed = parse_request_head(head)
        if isinstance(parsed[0], int):
            status, reason = parsed
            return _response(status, reason, f"{reason}\n".encode())
        method, digest = parsed
        try:
            data = self.store.get(digest)
        except SocialError as exc:
            log.info("blob request %s: %s", digest[:16], exc)
            return _response(404, "Not Found", b"not found\n")
        body = data if method == "GET" else b""
        return _response(200, "OK", body, length=len(data), content_type="application/octet-stream")
