"""The node's HTTP API (FastAPI), versioned under /api/v1, for its own user only.

A web page in the same browser must not act for the user (spend the wallet, read the
library), so every request must come to the node's own host name (DNS rebinding is
refused), from no foreign `Origin`, and — except `GET /api/v1/health` — carry the node's
API token (`Authorization: Bearer`, the token in `$VEIL_HOME/node/api-token`, mode 0600,
new at every start). Answers are JSON; errors are `{"error": "..."}` with a status.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from veilstream.errors import VeilError

if TYPE_CHECKING:
    from veilstream.node.daemon import Node

API_PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """`Host` header values that name this node: its address and, on loopback, localhost."""
    names = {host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


class StreamRequest(BaseModel):
    content: str  # content id or magnet
    budget: str | None = None  # most to spend, e.g. "0.01" (ETH) or "5000gwei"; default: the whole content's cost


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """[start, end) of a `Range: bytes=...` header (its first range), None for no header;
    `RangeNotSatisfiable` if it asks for nothing inside `total` bytes."""
    if header is None:
        return None
    found = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?", header)
    if found is None or (not found[1] and not found[2]):
        raise RangeNotSatisfiable(header)
    if not found[1]:  # the last N bytes
        length = int(found[2])
        if length == 0:
            raise RangeNotSatisfiable(header)
        return max(0, total - length), total
    start = int(found[1])
    end = min(total, int(found[2]) + 1) if found[2] else total
    if start >= total or start >= end:
        raise RangeNotSatisfiable(header)
    return start, end


def create_app(node: Node) -> FastAPI:
    """The API over a running node."""
    app = FastAPI(title="Veilstream node", openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        hosts = node.api_hosts
        host = request.headers.get("host", "")
        if host not in hosts:
            return _refuse(403, f"this node answers to {sorted(hosts)[0]} only, not Host {host!r}")
        origin = request.headers.get("origin")
        if origin is not None and origin.split("//", 1)[-1] not in hosts:
            return _refuse(403, f"requests from {origin!r} are refused: only the node's own pages may call it")
        if request.url.path not in OPEN_PATHS and not _has_token(request, node.api_token):
            return _refuse(401, "a valid API token is needed: Authorization: Bearer <$VEIL_HOME/node/api-token>")
        return await call_next(request)

    @app.exception_handler(VeilError)
    async def user_error(request: Request, exc: VeilError):
        return _refuse(getattr(exc, "http_status", 400), str(exc))

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{API_PREFIX}/status")
    async def node_status() -> dict[str, Any]:
        return node.status()

    @app.post(f"{API_PREFIX}/streams", status_code=201)
    async def start_stream(body: StreamRequest) -> dict[str, Any]:
        """Open a paid stream of a content with a budget; `/contents/{id}/media` then plays it."""
        return await node.start_stream(body.content, body.budget)

    @app.get(f"{API_PREFIX}/streams")
    async def list_streams() -> list[dict[str, Any]]:
        return [viewing.stats() for viewing in node.viewings.values()]

    @app.delete(f"{API_PREFIX}/streams/{{content_id}}")
    async def stop_stream(content_id: str) -> dict[str, Any]:
        return await node.stop_stream(content_id)

    @app.post(f"{API_PREFIX}/contents/{{content_id}}/pause")
    async def pause(content_id: str) -> dict[str, Any]:
        """Stop seeding the content (and selling its keys) from this node, until resumed."""
        return await node.pause(content_id)

    @app.post(f"{API_PREFIX}/contents/{{content_id}}/resume")
    async def resume(content_id: str) -> dict[str, Any]:
        return node.resume(content_id)

    @app.get(f"{API_PREFIX}/contents/{{content_id}}/media")
    async def media(content_id: str, request: Request):
        """The content's plaintext, as an HTTP Range resource (206, Content-Range): bytes
        leave only verified and decrypted, paid within the stream's budget."""
        viewing = node.viewing(content_id)
        total = viewing.plaintext_length
        try:
            wanted = parse_range(request.headers.get("range"), total)
        except RangeNotSatisfiable:
            return JSONResponse({"error": f"range not satisfiable: the content has {total} bytes"}, status_code=416,
                                headers={"Content-Range": f"bytes */{total}"})
        start, end = wanted if wanted is not None else (0, total)
        chunks = viewing.read(start, end)
        try:
            first = await anext(chunks)
        except VeilError as exc:
            await chunks.aclose()
            return _refuse(node.media_status(exc), str(exc))
        meta = viewing.stream.metadata()

        async def body():
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()

        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start), "Cache-Control": "no-store"}
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        return StreamingResponse(body(), status_code=206 if wanted is not None else 200, headers=headers,
                                 media_type=meta.mime_type if meta and meta.mime_type else "application/octet-stream")

    return app


def _has_token(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _refuse(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)
