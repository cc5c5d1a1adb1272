"""The node's configuration: every layer's settings pack, from `$VEIL_HOME/config.toml`,
overridden by command-line flags, each value remembering where it came from.

    [swarm]
    listen_port = 6881
    [market]
    credit_window_slices = 3

One TOML table per layer, keys as the settings dataclasses name them (units in the names).
A value from the file or a flag is checked against the field's type, then the whole pack
against its own rules; a bad one is a `ConfigError` of one line naming the key, the value
and what is allowed. Unknown tables and keys are refused (a typo must not be ignored).
Amounts of bytes (`..._bytes`) and rate limits (`..._rate_limit`, bytes/s) may also be
written as sizes: "500KiB", "2MiB".

Between the file and the flags come the limits the user set through the running node's
API (`node/limits.json`): they outlive a restart, and `veil config show` names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veilstream.errors import VeilError

CONFIG_FILE = "config.toml"
MAX_PORT = 65_535


def layer_sections() -> dict[str, type]:
    """Every layer's settings pack, by its table name in config.toml."""
    from veilstream.chain import ChainClientSettings
    from veilstream.market.settings import MarketSettings
    from veilstream.node.settings import NodeSettings
    from veilstream.social import SocialSettings
    from veilstream.swarm.settings import SwarmSettings

    return {"swarm": SwarmSettings, "market": MarketSettings, "chain": ChainClientSettings, "social": SocialSettings,
            "node": NodeSettings}


def load_node_config(home: Path, flags: dict[str, tuple[str, str]] | None = None) -> Config:
    """`home`/config.toml over the defaults, the settings and limits saved through the API
    over those, `flags` over all."""
    from veilstream.node import limits, saved_settings

    return load(layer_sections(), home / CONFIG_FILE, flags,
                [*saved_settings.saved_settings(home), *limits.saved_settings(home)])


class ConfigError(VeilError):
    """A configuration value that cannot be used."""

    exit_code = 2


@dataclass(frozen=True)
class Source:
    """Where an effective value came from: `default`, the config file, or a flag."""

    kind: str  # "default" | "file" | "flag"
    where: str = ""  # the file's path or the flag's spelling

    def __str__(self) -> str:
        return self.kind if not self.where else f"{self.kind} {self.where}"


DEFAULT = Source("default")


@dataclass(frozen=True)
class Config:
    """The effective settings of every layer, and where each value came from."""

    packs: dict[str, Any]  # table name → its settings dataclass instance
    sources: dict[tuple[str, str], Source]  # (table, key) → where its value came from

    def __getitem__(self, table: str) -> Any:
        return self.packs[table]

    def rows(self) -> list[tuple[str, Any, Source]]:
        """("table.key", value, source) for every setting, in declaration order."""
        return [(f"{table}.{field.name}", getattr(pack, field.name), self.sources.get((table, field.name), DEFAULT))
                for table, pack in self.packs.items() for field in dataclasses.fields(pack)]


def load(sections: dict[str, type], path: Path | None, flags: dict[str, tuple[str, str]] | None = None,
         saved: list[tuple[str, str, Any, Source]] = ()) -> Config:
    """Build each table's pack from its defaults, then `path` (if it exists), then `saved`
    ((table, key, value, source): values a running node kept), then `flags`
    ({"table.key": (text, "--flag")}, text parsed by the field's type)."""
    values: dict[str, dict[str, Any]] = {table: {} for table in sections}
    sources: dict[tuple[str, str], Source] = {}
    if path is not None and path.exists():
        where = str(path)
        for table, key, value in _read_file(path, sections):
            values[table][key] = _coerce(sections[table], table, key, value, where)
            sources[(table, key)] = Source("file", where)
    for table, key, value, source in saved:
        _field(sections[table], table, key, str(source))
        values[table][key] = _coerce(sections[table], table, key, value, str(source))
        sources[(table, key)] = source
    for dotted, (text, flag) in (flags or {}).items():
        table, key = _split_key(dotted, sections, flag)
        values[table][key] = _coerce(sections[table], table, key, _parse_text(sections[table], key, text), flag)
        sources[(table, key)] = Source("flag", flag)
    packs = {}
    for table, cls in sections.items():
        try:
            packs[table] = cls(**values[table])
        except (VeilError, ValueError, TypeError) as exc:
            named = [k for k in values[table] if k in str(exc)]
            origin = f" (from {sources[(table, named[0])]})" if named and (table, named[0]) in sources else ""
            raise ConfigError(f"[{table}]: {exc}{origin}") from None
    return Config(packs, sources)


def _read_file(path: Path, sections: dict[str, type]):
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for table, entries in data.items():
        if table not in sections:
            raise ConfigError(f"{path}: unknown table [{table}] (known: {', '.join(sections)})")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: `{table}` must be a table ([{table}]), not a value")
        for key, value in entries.items():
            _field(sections[table], table, key, str(path))
            yield table, key, value


def _split_key(dotted: str, sections: dict[str, type], where: str) -> tuple[str, str]:
    table, _, key = dotted.partition(".")
    if table not in sections or not key:
        raise ConfigError(f"{where}: unknown setting {dotted!r} (a setting is TABLE.KEY, tables: {', '.join(sections)})")
    _field(sections[table], table, key, where)
    return table, key


def _field(cls: type, table: str, key: str, where: str) -> dataclasses.Field:
    for field in dataclasses.fields(cls):
        if field.name == key:
            return field
    close = [f.name for f in dataclasses.fields(cls) if key.split("_")[0] in f.name][:4]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"{where}: unknown setting {table}.{key}{hint}")


def _hint(cls: type, key: str):
    return typing.get_type_hints(cls)[key]


def _kinds(hint) -> tuple[list, bool]:
    """The non-None types a field allows, and whether None is one of them."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _parse_text(cls: type, key: str, text: str) -> Any:
    """A flag's text as the field's type would write it in TOML."""
    kinds, optional = _kinds(_hint(cls, key))
    if optional and text.strip().lower() in ("", "none"):
        return None
    kind = kinds[0]
    origin = typing.get_origin(kind)
    if kind is bool:
        lowered = text.strip().lower()
        return True if lowered in ("1", "true", "yes", "on") else False if lowered in ("0", "false", "no", "off") else text
    if kind is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            return text
    if kind is float:
        try:
            return float(text)
        except ValueError:
            return text
    if origin in (tuple, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def is_byte_amount(key: str) -> bool:
    """Is the setting an amount of bytes (or bytes/s), which may be written as a size?"""
    return key.endswith(("_bytes", "_rate_limit"))


def _describe(hint, key: str = "") -> str:
    kinds, optional = _kinds(hint)
    names = []
    for kind in kinds:
        origin = typing.get_origin(kind)
        if kind is bool:
            names.append("true or false")
        elif kind is int:
            names.append("a whole number" + (" of bytes or a size such as 500KiB or 2MiB" if is_byte_amount(key) else ""))
        elif kind is float:
            names.append("a number")
        elif kind is str:
            names.append("a string")
        elif origin in (tuple, list):
            names.append(f"a list of {_describe(typing.get_args(kind)[0])}s")
        else:
            names.append(getattr(kind, "__name__", str(kind)))
    return " or ".join(names) + (" (or none)" if optional else "")


def _coerce(cls: type, table: str, key: str, value: Any, where: str) -> Any:
    hint = _hint(cls, key)
    kinds, optional = _kinds(hint)
    if value is None and optional:
        return None
    for kind in kinds:
        origin = typing.get_origin(kind)
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return _in_range(table, key, value, where)
        if kind is int and isinstance(value, str) and is_byte_amount(key):
            from veilstream.node.units import SizeError, parse_size  # (units imports the chain: only when needed)

            try:
                return _in_range(table, key, parse_size(value), where)
            except SizeError:
                pass
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return _in_range(table, key, float(value), where)
        if kind is str and isinstance(value, str):
            return value
        if origin in (tuple, list) and isinstance(value, list):
            item = typing.get_args(kind)[0]
            if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                return tuple(value) if origin is tuple else list(value)
    raise ConfigError(f"{where}: {table}.{key} = {value!r} is not allowed: it must be {_describe(hint, key)}")


def _in_range(table: str, key: str, value: int | float, where: str) -> int | float:
    # Every count, size, duration and rate in the packs is non-negative; ports fit in 16 bits.
    if value < 0:
        raise ConfigError(f"{where}: {table}.{key} = {value!r} is not allowed: it must be 0 or more")
    if key.endswith("_port") and value > MAX_PORT:
        raise ConfigError(f"{where}: {table}.{key} = {value!r} is not allowed: a port is 0 (any free one) to {MAX_PORT}")
    return value


def render_toml(config: Config) -> str:
    """The effective configuration as a config.toml (each value with its source)."""
    lines = []
    for table, pack in config.packs.items():
        lines.append(f"[{table}]")
        for field in dataclasses.fields(pack):
            value = getattr(pack, field.name)
            source = config.sources.get((table, field.name), DEFAULT)
            rendered = _toml_value(value)
            lines.append(f"{field.name} = {rendered}  # {source}" if rendered is not None
                         else f"# {field.name} = (none)  # {source}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # TOML basic strings escape as JSON does, and DEL too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) or '""' for v in value) + "]"
    return _toml_value(str(value))
