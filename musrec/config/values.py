"""Reading configuration values: a TOML file flattened to ``section.key``, ``MUSREC_*`` variables, and each value
coerced to its field's declared type, with errors that name the key and where the value came from."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from musrec.errors import ConfigError

ENV_PREFIX = "MUSREC_"
# Environment variables with this prefix that are not config keys, and what each one chooses. Their readers are the
# modules named; the configuration only lets them through.
ENV_RESERVED = {
    "MUSREC_CONFIG": "the configuration file",
    "MUSREC_DISCORD_TOKEN": "the Discord bot's token (bot/__main__.py)",
    "MUSREC_FFMPEG": "the ffmpeg that decodes audio (musrec/audio/decode.py)",
    "MUSREC_LIBRARY_TOKEN": "the token of the Milvus server at [library] uri (musrec/library/library.py)",
    "MUSREC_NO_MPG123": "MP3s scanned and decoded with ffmpeg, not mpg123 (musrec/audio/runner.py)",
    "MUSREC_TF_VERBOSE": "TensorFlow's start-up messages on stderr (musrec/vggish/tfutil.py)",
    "MUSREC_YOUTUBE_API_KEY": "the YouTube Data API key of the video check (musrec/videos/checker.py)",
    "MUSREC_YOUTUBE_PROXY_USER": "the user name at [youtube] proxy (musrec/links/upstream.py)",
    "MUSREC_YOUTUBE_PROXY_PASSWORD": "the password at [youtube] proxy (musrec/links/upstream.py)",
}
# Config dataclass fields that are not [sections] (field metadata {SECTION: False}).
SECTION = "section"

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


def section_names(config: DataclassInstance | type[DataclassInstance]) -> list[str]:
    """The [sections] of a configuration dataclass, in order (fields marked ``{SECTION: False}`` are not)."""
    return [f.name for f in dataclasses.fields(config) if f.metadata.get(SECTION, True)]


def env_name(dotted: str) -> str:
    """The environment variable that sets ``section.key``: ``MUSREC_SECTION_KEY``."""
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def env_overrides(environ: Mapping[str, str], sections: Collection[str]) -> dict[str, str]:
    """``{"section.key": value}`` from the ``MUSREC_<SECTION>_<KEY>`` variables; the reserved ones are skipped."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            raise ConfigError(
                f"unknown environment variable {name}: expected MUSREC_<SECTION>_<KEY> for a key of "
                f"config.example.toml (sections: {', '.join(sections)}), or one of {', '.join(sorted(ENV_RESERVED))}"
            )
        out[f"{section}.{key}"] = value
    return out


def apply(config: C, flat: Mapping[str, Any], *, source: str, variable: Callable[[str], str] | None = None) -> C:
    """A copy of ``config`` (a dataclass of section dataclasses) with ``{"section.key": value}`` applied. Where the
    values came from variables (``variable`` names each key's, :func:`env_variable`), errors name the variable."""
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        sections = section_names(config)
        if section not in sections:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(sorted(sections))})")
        section_obj = getattr(config, section)
        hints = typing.get_type_hints(type(section_obj))
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(hints))})")
        shown = f"{variable(dotted)} ({dotted})" if variable else dotted
        changes.setdefault(section, {})[key] = coerce(shown, value, hints[key], source)
    updated = {}
    for section, values in changes.items():
        try:
            updated[section] = dataclasses.replace(getattr(config, section), **values)
        except ConfigError as err:
            where = f" ({', '.join(variable(f'{section}.{key}') for key in values)})" if variable else ""
            raise ConfigError(f"{source}{where}: {err}") from None
    return dataclasses.replace(config, **updated)


def env_variable(dotted: str) -> str:
    """The variable that sets a key: ``recommend.top_k`` -> ``MUSREC_RECOMMEND_TOP_K``."""
    return ENV_PREFIX + dotted.replace(".", "_").upper()


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
