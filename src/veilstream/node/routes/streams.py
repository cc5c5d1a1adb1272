"""Paid streams: start one with a budget, watch its figures, stop it; and the content's
plaintext as an HTTP Range resource, backed by the stream (bytes leave only verified and
decrypted, within the budget)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from veilstream.errors import VeilError

if TYPE_CHECKING:
    from veilstream.node.daemon import Node


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


def router(node: Node) -> APIRouter:
    api = APIRouter()

    @api.post("/streams", status_code=201)
    async def start_stream(body: StreamRequest) -> dict[str, Any]:
        """Open a paid stream of a content with a budget; `/contents/{id}/media` then plays it."""
        return await node.start_stream(body.content, body.budget)

    @api.get("/streams")
    async def list_streams() -> list[dict[str, Any]]:
        return [viewing.stats() for viewing in node.viewings.values()]

    @api.delete("/streams/{content_id}")
    async def stop_stream(content_id: str) -> dict[str, Any]:
        return await node.stop_stream(content_id)

    @api.get("/contents/{content_id}/media")
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
            return JSONResponse({"error": str(exc)}, status_code=node.media_status(exc))
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

    return api
