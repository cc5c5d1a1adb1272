"""What the node holds and seeds: pause and resume seeding per content."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

if TYPE_CHECKING:
    from veilstream.node.daemon import Node


def router(node: Node) -> APIRouter:
    api = APIRouter()

    @api.post("/contents/{content_id}/pause")
    async def pause(content_id: str) -> dict[str, Any]:
        """Stop seeding the content (and selling its keys) from this node, until resumed."""
        return await node.pause(content_id)

    @api.post("/contents/{content_id}/resume")
    async def resume(content_id: str) -> dict[str, Any]:
        return node.resume(content_id)

    return api
