"""Typed configuration: a TOML file, then ``MUSREC_*`` environment overrides, then command-line flags.

Each ``[section]`` of the file is a frozen dataclass below; ``config.example.toml`` documents every key. Environment
variables are named ``MUSREC_<SECTION>_<KEY>`` (``MUSREC_RECOMMEND_TOP_K=5``); lists are comma-separated. A wrong
key or value is a :class:`~musrec.errors.ConfigError` that names it. Secrets (the Discord token) never live here:
they are read from the environment by the front end that needs them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musrec.errors import ConfigError

ENV_PREFIX = "MUSREC_"
# Environment variables with this prefix that are not config keys.
ENV_RESERVED = frozenset({"MUSREC_CONFIG", "MUSREC_DISCORD_TOKEN", "MUSREC_TF_VERBOSE"})

REPRESENTATIONS = ("flatten", "mean", "meanstd")
EMBEDDERS = ("local", "max")
BACKENDS = ("auto", "annoy", "exact")
SPLITS = ("bal_train", "eval", "unbal_train")
SHORT_SEGMENT_POLICIES = ("pad", "skip")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/musrec`` or ``~/.local/share/musrec``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "musrec"


@dataclass(frozen=True)
class DataConfig:
    dir: Path | None = None  # None: default_data_dir()


@dataclass(frozen=True)
class IndexConfig:
    path: Path | None = None  # None: <data dir>/index
    backend: str = "auto"

    def __post_init__(self) -> None:
        _choice("index.backend", self.backend, BACKENDS)


@dataclass(frozen=True)
class BuildConfig:
    representation: str = "flatten"
    trees: int = 50
    target_recall: float = 0.95
    recall_queries: int = 200
    splits: tuple[str, ...] = SPLITS
    music_only: bool = False
    include_labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    min_seconds: int = 1
    short_segments: str = "pad"
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("build.representation", self.representation, REPRESENTATIONS)
        _choice("build.short_segments", self.short_segments, SHORT_SEGMENT_POLICIES)
        for split in self.splits:
            _choice("build.splits", split, SPLITS)
        _at_least("build.trees", self.trees, 1)
        _at_least("build.recall_queries", self.recall_queries, 1)
        _at_least("build.min_seconds", self.min_seconds, 1)
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"build.target_recall must be in (0, 1], got {self.target_recall}")


@dataclass(frozen=True)
class RecommendConfig:
    top_k: int = 10
    music_only: bool = False
    one_per_video: bool = True

    def __post_init__(self) -> None:
        _at_least("recommend.top_k", self.top_k, 1)
        if self.top_k > 100:
            raise ConfigError(f"recommend.top_k must be at most 100, got {self.top_k}")


@dataclass(frozen=True)
class AudioConfig:
    max_bytes: int = 64 * 1024 * 1024
    max_duration_s: float = 600.0
    min_duration_s: float = 1.0
    decode_timeout_s: float = 120.0
    window_s: float = 10.0
    search_s: float = 180.0

    def __post_init__(self) -> None:
        _at_least("audio.max_bytes", self.max_bytes, 1)
        if not 0 < self.min_duration_s < self.max_duration_s:
            raise ConfigError("audio.min_duration_s must be positive and below audio.max_duration_s")
        if not 0.975 <= self.window_s <= 60:
            raise ConfigError(f"audio.window_s must be between 0.975 and 60 seconds, got {self.window_s}")
        if self.decode_timeout_s <= 0 or self.search_s <= 0:
            raise ConfigError("audio.decode_timeout_s and audio.search_s must be positive")


@dataclass(frozen=True)
class EmbedderConfig:
    kind: str = "local"
    checkpoint: Path | None = None  # None: <data dir>/models/vggish_model.ckpt
    pca_params: Path | None = None  # None: <data dir>/models/vggish_pca_params.npz
    relu: bool = False

    def __post_init__(self) -> None:
        _choice("embedder.kind", self.kind, EMBEDDERS)


@dataclass(frozen=True)
class MaxConfig:
    urls: tuple[str, ...] = ("http://127.0.0.1:5000",)
    timeout_s: float = 60.0
    retries: int = 2

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("max.urls needs at least one URL")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"max.urls: {url!r} is not an http(s) URL")
        if self.timeout_s <= 0:
            raise ConfigError("max.timeout_s must be positive")
        _at_least("max.retries", self.retries, 0)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    max_bytes: int = 64 * 1024 * 1024
    concurrency: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be 0-65535, got {self.port}")
        _at_least("server.max_bytes", self.max_bytes, 1)
        _at_least("server.concurrency", self.concurrency, 1)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    max: MaxConfig = field(default_factory=MaxConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @property
    def data_dir(self) -> Path:
        return self.data.dir if self.data.dir is not None else default_data_dir()

    @property
    def index_path(self) -> Path:
        return self.index.path if self.index.path is not None else self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def checkpoint_path(self) -> Path:
        return self.embedder.checkpoint or self.models_dir / "vggish_model.ckpt"

    @property
    def pca_params_path(self) -> Path:
        return self.embedder.pca_params or self.models_dir / "vggish_pca_params.npz"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with ``{"section.key": value}`` applied (``None`` values are ignored: an unset flag)."""
        return _apply(self, {k: v for k, v in overrides.items() if v is not None}, source="option")


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given; a missing file is an error), then apply ``MUSREC_*`` variables from ``environ``."""
    env = os.environ if environ is None else environ
    config = Config()
    if path is not None:
        config = _apply(config, _read_toml(Path(path)), source=str(path))
    return _apply(config, _env_overrides(env), source="environment")


def _read_toml(path: Path) -> dict[str, Any]:
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


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    sections = {f.name for f in dataclasses.fields(Config)}
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


def _apply(config: Config, flat: Mapping[str, Any], *, source: str) -> Config:
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        sections = {f.name: f for f in dataclasses.fields(Config)}
        if section not in sections:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(sorted(sections))})")
        section_obj = getattr(config, section)
        hints = typing.get_type_hints(type(section_obj))
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(hints))})")
        changes.setdefault(section, {})[key] = _coerce(f"{section}.{key}", value, hints[key], source)
    updated = {}
    for section, values in changes.items():
        try:
            updated[section] = dataclasses.replace(getattr(config, section), **values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return dataclasses.replace(config, **updated)


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Convert a TOML value or an environment string to the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value == "" or value is None:
            return None
        return _coerce(name, value, inner[0], source)
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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
