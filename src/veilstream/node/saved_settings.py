"""Settings the user changed through the API, kept in `$VEIL_HOME/node/settings.json` for the
node's next start. They come between config.toml and the flags (as the limits saved through
the API do), so config.toml is never rewritten (its comments stay) and `veil config show`
names them as from "api".

    {"swarm.max_connections": 300, "node.events_kept": 2000}

A value is checked as the loader checks config.toml's before it is saved; one that cannot
be used is refused naming the key, the value and what is allowed. The rates have an API of
their own that applies at once (`PUT /api/v1/limits`), so they are not taken here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from veilstream.atomic import replace_file
from veilstream.node.config import CONFIG_FILE, ConfigError, Source, layer_sections, load

SETTINGS_FILE = Path("node") / "settings.json"
LIVE_ELSEWHERE = {"swarm.upload_rate_limit": "PUT /api/v1/limits", "swarm.download_rate_limit": "PUT /api/v1/limits"}


def _path(home: Path) -> Path:
    return Path(home) / SETTINGS_FILE


def read_saved(home: Path) -> dict[str, Any]:
    path = _path(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}): fix it, or delete it to drop the settings saved "
                          "through the API") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold one JSON object of \"table.key\": value (or delete it)")
    return data


def _entries(home: Path, saved: dict[str, Any]) -> list[tuple[str, str, Any, Source]]:
    source = Source("api", str(_path(home)))
    return [(*dotted.split(".", 1), value, source) for dotted, value in saved.items()]


def saved_settings(home: Path) -> list[tuple[str, str, Any, Source]]:
    """The saved settings, for the config loader."""
    return _entries(home, read_saved(home))


def save_setting(home: Path, dotted: str, value: Any) -> Any:
    """Keep `dotted` = `value` for the next start, once checked with everything else the next
    start reads (config.toml, the saved limits); the value as it will be used."""
    from veilstream.node.limits import saved_settings as saved_limits

    if dotted in LIVE_ELSEWHERE:
        raise ConfigError(f"{dotted} changes at once through {LIVE_ELSEWHERE[dotted]}, and is kept there")
    table, _, key = dotted.partition(".")
    sections = layer_sections()
    if table not in sections or key not in {f.name for f in dataclasses.fields(sections[table])}:
        raise ConfigError(f"unknown setting {dotted!r} (a setting is TABLE.KEY as `veil config show` lists them)")
    saved = {**read_saved(home), dotted: value}
    config = load(sections, Path(home) / CONFIG_FILE, None, [*_entries(home, saved), *saved_limits(home)])
    replace_file(_path(home), json.dumps(saved, indent=1, sort_keys=True).encode(), mode=0o600)
    return getattr(config[table], key)


def forget_setting(home: Path, dotted: str) -> bool:
    """Drop a saved setting (config.toml's value, or the default, applies again)."""
    saved = read_saved(home)
    if saved.pop(dotted, None) is None:
        return False
    replace_file(_path(home), json.dumps(saved, indent=1, sort_keys=True).encode(), mode=0o600)
    return True
