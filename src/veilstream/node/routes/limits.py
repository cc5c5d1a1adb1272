"""Rate limits: the whole node's (every content's bytes together) and one content's own,
changed at once and kept across restarts (`node/limits.json`). A rate is bytes/s or a size
per second ("500KiB"); 0 is no limit; a field left out stays as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, StrictInt, StrictStr

if TYPE_CHECKING:
    from veilstream.node.daemon import Node


class RateLimitsRequest(BaseModel):
    upload: StrictInt | StrictStr | None = None  # bytes/s or e.g. "500KiB"; 0: no limit
    download: StrictInt | StrictStr | None = None


def router(node: Node) -> APIRouter:
    api = APIRouter()

    @api.get("/limits")
    async def get_limits() -> dict[str, Any]:
        """The node's upload and download limits (bytes/s, 0: none), its connection limit, and
        the contents that have limits of their own."""
        return node.limits.view()

    @api.put("/limits")
    async def set_limits(body: RateLimitsRequest) -> dict[str, Any]:
        """The whole node's limits, at once and after restarts."""
        return node.limits.set_node(body.upload, body.download)

    @api.put("/contents/{content_id}/limits")
    async def set_content_limits(content_id: str, body: RateLimitsRequest) -> dict[str, Any]:
        """One content's own limits, beside the node's; the node must hold or stream it."""
        return node.limits.set_content(content_id, body.upload, body.download)

    return api
