"""Reading configuration values: a TOML file flattened to ``section.key``, ``MUSREC_*`` variables, and each value
coerced to its field's declared type, with errors that name the key and where the value came from."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from musrec.errors import ConfigError

ENV_PREFIX = "MUSREC_"
# Environment variables with this prefix that are not config keys.
ENV_RESERVED = frozenset(
    {
        "MUSREC_CONFIG",
        "MUSREC_DISCORD_TOKEN",
        "MUSREC_TF_VERBOSE",
        "MUSREC_YOUTUBE_PROXY_USER",
        "MUSREC_YOUTUBE_PROXY_PASSWORD",
    }
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")  # the whole configuration: a dataclass of section dataclasses


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    flat: dict[str, Any] = {}
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
    return flat


def env_overrides(environ: Mapping[str, str], sections: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            raise ConfigError(f"unknown environment variable {name}: expected MUSREC_<SECTION>_<KEY>")
        out[f"{section}.{key}"] = value
    return out


def apply(config: C, flat: Mapping[str, Any], *, source: str) -> C:
    """A copy of ``config`` (a dataclass of section dataclasses) with ``{"section.key": value}`` applied."""
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        sections = {f.name: f for f in dataclasses.fields(config)}
        if section not in sections:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(sorted(sections))})")
        section_obj = getattr(config, section)
        hints = typing.get_type_hints(type(section_obj))
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(hints))})")
        changes.setdefault(section, {})[key] = coerce(f"{section}.{key}", value, hints[key], source)
    updated = {}
    for section, values in changes.items():
        try:
            updated[section] = dataclasses.replace(getattr(config, section), **values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return dataclasses.replace(config, **updated)


def coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Convert a TOML value or an environment string to the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value == "" or value is None:
            return None
        return coerce(name, value, inner[0], source)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool | float):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if hint is Path:
            if not isinstance(value, str | Path):
                raise ValueError
            return Path(value).expanduser()
        if origin is tuple:
            items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(items)
    except (TypeError, ValueError):
        pass
    else:
        raise TypeError(f"unsupported config type {hint!r} for {name}")
    kind = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{source}: {name} must be {kind}, got {value!r}")


def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
