"""Settings: every layer's effective value and where it came from (as `veil config show`),
and changes kept for the node's next start (node/saved_settings.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictStr

from veilstream.node import saved_settings
from veilstream.node.config import load_node_config

if TYPE_CHECKING:
    from veilstream.node.daemon import Node


class SettingChange(BaseModel):
    key: StrictStr = Field(description="TABLE.KEY, as `veil config show` lists them", examples=["swarm.max_connections"])
    value: Any = Field(description="As config.toml would hold it: a number, a string, true/false or a list",
                       examples=[300])


def _rows(config) -> list[dict[str, Any]]:
    return [{"key": key, "value": list(value) if isinstance(value, tuple) else value, "source": str(source)}
            for key, value, source in config.rows()]


def router(node: Node) -> APIRouter:
    api = APIRouter()

    @api.get("/settings")
    async def get_settings() -> dict[str, Any]:
        """The running node's settings (value and source of each), and what a next start with no
        flags would use where that differs (config.toml or this API changed since, or a flag of
        this run)."""
        running = {row["key"]: row for row in _rows(node.config)}
        upcoming = [row for row in _rows(load_node_config(node.home))
                    if row["value"] != running[row["key"]]["value"]]
        return {"settings": list(running.values()), "at_next_start": upcoming}

    @api.put("/settings")
    async def change_setting(body: SettingChange) -> dict[str, Any]:
        """Keep a setting for the next start (checked first; a bad value changes nothing)."""
        value = saved_settings.save_setting(node.home, body.key, body.value)
        return {"key": body.key, "value": list(value) if isinstance(value, tuple) else value,
                "applies": "at the next start"}

    @api.delete("/settings/{key}")
    async def forget_setting(key: str) -> dict[str, Any]:
        """Drop a setting saved through the API: config.toml's value or the default applies again."""
        return {"key": key, "forgotten": saved_settings.forget_setting(node.home, key), "applies": "at the next start"}

    return api
