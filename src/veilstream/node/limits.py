"""The rate limits a user sets on the running node — upload and download for the whole node,
and per content — kept in `$VEIL_HOME/node/limits.json` so that they outlive a restart.

The node-wide ones are settings of the swarm pack (`swarm.upload_rate_limit`,
`swarm.download_rate_limit`, bytes/s): saved here they come between config.toml and the
flags (`saved_settings`, read by the config loader), so `veil config show` names where they
came from. A content's own limits exist only here.

    {"upload": 262144, "download": 0, "contents": {"<content id>": {"upload": 131072, "download": 0}}}

A rate is a whole number of bytes/s or a size per second ("500KiB", "2MiB"); 0 is no limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veilstream.atomic import replace_file
from veilstream.content import parse_content_id
from veilstream.errors import VeilError
from veilstream.node.config import ConfigError, Source
from veilstream.node.units import SizeError, format_size, parse_size

if TYPE_CHECKING:
    from veilstream.swarm import SwarmNode

log = logging.getLogger("veilstream.node")

LIMITS_FILE = Path("node") / "limits.json"
DIRECTIONS = ("upload", "download")
NODE_SETTINGS = {"upload": "upload_rate_limit", "download": "download_rate_limit"}  # their keys in [swarm]


class LimitError(VeilError):
    """A limit that cannot be set."""

    http_status = 400


class UnknownContent(LimitError):
    http_status = 404


def parse_rate(name: str, value: Any) -> int | None:
    """A rate as the API or the file gives it: bytes/s, or a size such as "500KiB"; None: unchanged."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = parse_size(value)
        except SizeError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LimitError(f"{name} = {value!r} is not allowed: a rate is a whole number of bytes/s or a size per "
                         "second such as 500KiB or 2MiB; 0 is no limit")
    return value


def describe_rate(rate: int) -> str:
    return f"{format_size(rate)}/s" if rate else "no limit"


def read_saved(home: Path) -> dict[str, Any]:
    """limits.json, checked: {"upload"?: int, "download"?: int, "contents": {id: {...}}}."""
    path = Path(home) / LIMITS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"contents": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}): fix it, or delete it to drop the limits set "
                          "through the API") from None
    try:
        if not isinstance(data, dict) or not isinstance(data.get("contents", {}), dict):
            raise LimitError("it must be an object with a `contents` object")
        saved: dict[str, Any] = {"contents": {}}
        for direction in DIRECTIONS:
            if direction in data:
                saved[direction] = parse_rate(direction, data[direction])
        for cid, limits in data.get("contents", {}).items():
            if not isinstance(limits, dict):
                raise LimitError(f"the limits of {cid!r} must be an object")
            saved["contents"][parse_content_id(cid)] = {d: parse_rate(f"{cid[:16]}….{d}", limits.get(d, 0)) or 0
                                                        for d in DIRECTIONS}
    except VeilError as exc:
        raise ConfigError(f"{path}: {exc} (fix it, or delete it to drop the limits set through the API)") from None
    return saved


def saved_settings(home: Path) -> list[tuple[str, str, Any, Source]]:
    """The node-wide limits saved through the API, as settings for the config loader."""
    saved = read_saved(home)
    source = Source("api", str(Path(home) / LIMITS_FILE))
    return [("swarm", NODE_SETTINGS[d], saved[d], source) for d in DIRECTIONS if d in saved]


class NodeLimits:
    """The running node's limits: applied to its swarm at once, saved for the next start."""

    def __init__(self, home: Path, swarm: SwarmNode, holds: Callable[[str], bool]) -> None:
        self.path = Path(home) / LIMITS_FILE
        self.swarm = swarm
        self._holds = holds  # is a content id held or streamed by this node?
        self._saved = read_saved(home)  # the node-wide ones are already in the swarm's settings
        for cid, limits in self._saved["contents"].items():
            swarm.set_content_rate_limits(bytes.fromhex(cid), upload=limits["upload"], download=limits["download"])

    def view(self) -> dict[str, Any]:
        upload, download = self.swarm.rate_limits
        return {"upload": upload, "download": download,
                "max_connections": self.swarm.settings.max_connections, "connections": self.swarm.connection_count,
                "contents": {cid: dict(limits) for cid, limits in sorted(self._saved["contents"].items())}}

    def set_node(self, upload: Any = None, download: Any = None) -> dict[str, Any]:
        """The whole node's limits (each None: unchanged), now and after restarts."""
        rates = {"upload": parse_rate("upload", upload), "download": parse_rate("download", download)}
        self.swarm.set_rate_limits(**rates)
        for direction, rate in rates.items():
            if rate is not None:
                self._saved[direction] = rate
        self._write()
        up, down = self.swarm.rate_limits
        log.info("node limits: upload %s, download %s", describe_rate(up), describe_rate(down))
        return self.view()

    def set_content(self, content_id: str, upload: Any = None, download: Any = None) -> dict[str, Any]:
        """One content's own limits (each None: unchanged), beside the node's."""
        cid = parse_content_id(content_id)
        if not self._holds(cid):
            raise UnknownContent(f"this node neither holds nor streams {cid[:16]}… (`veil status` lists what it does)")
        rates = {"upload": parse_rate("upload", upload), "download": parse_rate("download", download)}
        self.swarm.set_content_rate_limits(bytes.fromhex(cid), **rates)
        limits = self._saved["contents"].get(cid, {"upload": 0, "download": 0})
        limits = {d: limits[d] if rates[d] is None else rates[d] for d in DIRECTIONS}
        if any(limits.values()):
            self._saved["contents"][cid] = limits
        else:
            self._saved["contents"].pop(cid, None)
        self._write()
        log.info("limits of %s…: upload %s, download %s", cid[:16], describe_rate(limits["upload"]),
                 describe_rate(limits["download"]))
        return {"content_id": cid, **limits}

    def _write(self) -> None:
        replace_file(self.path, json.dumps(self._saved, indent=1, sort_keys=True).encode(), mode=0o600)
