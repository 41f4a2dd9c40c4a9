"""Typed configuration: a TOML file, then ``MUSREC_*`` environment overrides, then command-line flags.

The file is ``--config FILE``, else ``$MUSREC_CONFIG``, else ``./config.toml``, else the user's
``$XDG_CONFIG_HOME/musrec/config.toml`` (:func:`find_config`: the CLI, the bot and ``musrec doctor`` all ask it).
Each ``[section]`` of the file is a frozen dataclass below; ``config.example.toml`` documents every key. Environment
variables are named ``MUSREC_<SECTION>_<KEY>`` (``MUSREC_RECOMMEND_TOP_K=5``); lists are comma-separated. A wrong
key or value is a :class:`~musrec.errors.ConfigError` that names it. Secrets (the Discord token) never live here:
they are read from the environment by the front end that needs them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musrec.audio.limits import AudioLimits
from musrec.audio.window import SEARCH_S, WINDOW_S
from musrec.audioset.records import SHORT_SEGMENT_POLICIES, SPLITS, SegmentFilter
from musrec.audioset.representation import REPRESENTATION_DIMS
from musrec.config.library import DEFAULT_FILE, LibraryConfig
from musrec.config.values import (
    SECTION,
    apply,
    at_least,
    choice,
    env_overrides,
    env_variable,
    read_toml,
    section_names,
)
from musrec.errors import ConfigError
from musrec.index.build import BuildOptions
from musrec.index.structures import ANN_KINDS
from musrec.links.options import FetchOptions, parse_extractor_args
from musrec.links.upstream import check_proxy_url
from musrec.videos.checker import VideoOptions

if TYPE_CHECKING:
    from musrec.audioset.labels import Labels


REPRESENTATIONS = tuple(REPRESENTATION_DIMS)
EMBEDDERS = ("local", "max")
BUILD_BACKENDS = ("auto", *ANN_KINDS)
BACKENDS = (*BUILD_BACKENDS, "exact")


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
        choice("index.backend", self.backend, BACKENDS)


@dataclass(frozen=True)
class BuildConfig(BuildOptions):
    """The build's own options (:class:`~musrec.index.build.BuildOptions`) and which segments to read."""

    splits: tuple[str, ...] = SPLITS
    music_only: bool = False
    include_labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    min_seconds: int = 1
    short_segments: str = "pad"

    def __post_init__(self) -> None:
        choice("build.representation", self.representation, REPRESENTATIONS)
        choice("build.backend", self.backend, BUILD_BACKENDS)
        at_least("build.ivf_lists", self.ivf_lists, 0)
        at_least("build.rerank", self.rerank, 10)
        choice("build.short_segments", self.short_segments, SHORT_SEGMENT_POLICIES)
        for split in self.splits:
            choice("build.splits", split, SPLITS)
        at_least("build.trees", self.trees, 1)
        at_least("build.recall_queries", self.recall_queries, 1)
        at_least("build.min_seconds", self.min_seconds, 1)
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"build.target_recall must be in (0, 1], got {self.target_recall}")

    def segment_filter(self, labels: Labels) -> SegmentFilter:
        """Which segments to read, with label names (or ontology ids) turned into indices; unknown ones refused."""
        return SegmentFilter(
            splits=frozenset(self.splits),
            music_only=self.music_only,
            include_labels=labels.indices_of(self.include_labels),
            exclude_labels=labels.indices_of(self.exclude_labels),
            min_seconds=self.min_seconds,
            short_segments=self.short_segments,
        )


@dataclass(frozen=True)
class RecommendConfig:
    top_k: int = 10
    music_only: bool = False
    one_per_video: bool = True

    def __post_init__(self) -> None:
        at_least("recommend.top_k", self.top_k, 1)
        if self.top_k > 100:
            raise ConfigError(f"recommend.top_k must be at most 100, got {self.top_k}")


@dataclass(frozen=True, kw_only=True)
class AudioConfig(AudioLimits):
    """What decoding accepts (:class:`~musrec.audio.limits.AudioLimits`) and how the query window is chosen."""

    window_s: float = WINDOW_S
    search_s: float = SEARCH_S

    def __post_init__(self) -> None:
        at_least("audio.max_bytes", self.max_bytes, 1)
        if not 0 < self.min_duration_s < self.max_duration_s:
            raise ConfigError("audio.min_duration_s must be positive and below audio.max_duration_s")
        if not 0.975 <= self.window_s <= 60:
            raise ConfigError(f"audio.window_s must be between 0.975 and 60 seconds, got {self.window_s}")
        if self.decode_timeout_s <= 0 or self.search_s <= 0:
            raise ConfigError("audio.decode_timeout_s and audio.search_s must be positive")
        super().__post_init__()


@dataclass(frozen=True)
class EmbedderConfig:
    kind: str = "local"
    checkpoint: Path | None = None  # None: <data dir>/models/vggish_model.ckpt
    pca_params: Path | None = None  # None: <data dir>/models/vggish_pca_params.npz
    relu: bool = False
    threads: int = 0  # 0: the usable cores shared among the forward passes that run at once

    def __post_init__(self) -> None:
        choice("embedder.kind", self.kind, EMBEDDERS)
        at_least("embedder.threads", self.threads, 0)


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
        at_least("max.retries", self.retries, 0)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    max_bytes: int = 64 * 1024 * 1024
    concurrency: int = 1
    max_pending: int = 16  # predictions that may wait for a worker; more are answered 503 (busy)
    max_connections: int = 64  # open connections; more are answered 503 and closed
    header_timeout_s: float = 30.0  # a request's line and headers must arrive within this, else it is closed

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be 0-65535, got {self.port}")
        at_least("server.max_bytes", self.max_bytes, 1)
        at_least("server.concurrency", self.concurrency, 1)
        at_least("server.max_pending", self.max_pending, 0)
        at_least("server.max_connections", self.max_connections, 1)
        if not self.header_timeout_s > 0:
            raise ConfigError(f"server.header_timeout_s must be positive, got {self.header_timeout_s}")


@dataclass(frozen=True, kw_only=True)
class YouTubeConfig(FetchOptions):
    """The link-fetching policy (:class:`~musrec.links.options.FetchOptions`) and the embedding cache of links."""

    cache_path: Path | None = None  # None: <data dir>/embeddings.sqlite3
    cache_max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not self.allowed_hosts:
            raise ConfigError("youtube.allowed_hosts needs at least one host")
        for name in ("max_video_s", "max_filesize_mb", "socket_timeout_s", "fetch_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"youtube.{name} must be positive")
        if self.margin_s < 0 or self.default_start_s < 0:
            raise ConfigError("youtube.margin_s and youtube.default_start_s must not be negative")
        at_least("youtube.retries", self.retries, 0)
        at_least("youtube.cache_max_entries", self.cache_max_entries, 0)
        if self.proxy:
            try:
                check_proxy_url(self.proxy)
            except ValueError as err:
                raise ConfigError(f"youtube.proxy {err}") from None
        if self.pot_provider_url and not self.pot_provider_url.startswith(("http://", "https://")):
            raise ConfigError(f"youtube.pot_provider_url: {self.pot_provider_url!r} is not an http(s) URL")
        try:
            parse_extractor_args(self.extractor_args)
        except ValueError as err:
            raise ConfigError(f"youtube.extractor_args: {err}") from None
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class VideosConfig(VideoOptions):
    """Checking that matches' videos still play (:class:`~musrec.videos.checker.VideoOptions`)."""

    def __post_init__(self) -> None:
        for name in ("oembed_url", "api_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ConfigError(f"videos.{name}: {getattr(self, name)!r} is not an http(s) URL")
        for name in ("budget_s", "timeout_s", "alive_days", "gone_days", "rate_per_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"videos.{name} must be positive")
        at_least("videos.concurrency", self.concurrency, 1)


REPLY_MODES = ("reply", "thread")
DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")


@dataclass(frozen=True)
class BotConfig:
    sharded: bool = False
    owner_ids: tuple[str, ...] = ()
    sync_guild: str = ""
    listen_channels: tuple[str, ...] = ()
    reply_mode: str = "reply"
    workers: int = 2  # bench/bot_service_bench.py: 1.3x the answers of one worker on two cores, the same p95
    max_waiting: int = 8
    cooldown_s: float = 10.0
    answer_timeout_s: float = 840.0
    max_attachment_bytes: int = 25 * 1024 * 1024
    attachment_hosts: tuple[str, ...] = DISCORD_CDN_HOSTS

    def __post_init__(self) -> None:
        choice("bot.reply_mode", self.reply_mode, REPLY_MODES)
        for name, ids in (("bot.owner_ids", self.owner_ids), ("bot.listen_channels", self.listen_channels)):
            for value in ids:
                if not value.isdigit():
                    raise ConfigError(f"{name}: {value!r} is not a Discord id (digits only)")
        if self.sync_guild and not self.sync_guild.isdigit():
            raise ConfigError(f"bot.sync_guild: {self.sync_guild!r} is not a Discord id (digits only)")
        at_least("bot.workers", self.workers, 1)
        at_least("bot.max_waiting", self.max_waiting, 0)
        at_least("bot.max_attachment_bytes", self.max_attachment_bytes, 1)
        if self.cooldown_s < 0:
            raise ConfigError("bot.cooldown_s must not be negative")
        if not 10 <= self.answer_timeout_s <= 870:
            raise ConfigError("bot.answer_timeout_s must be 10-870 s (an interaction token lives 15 minutes)")


GOOGLE_AUDIOSET = "https://storage.googleapis.com/audioset"
MAX_BUNDLE_URL = "https://max-cdn.cdn.appdomain.cloud/max-audio-embedding-generator/1.0.0/assets.tar.gz"
# Published sha512 of Google's VGGish files (the same files are inside IBM's MAX bundle).
CHECKPOINT_SHA512 = "4e320f1b148f7ae8e08a8df17b102582e57fd8a9688ec17ce8f6077f062ce8fcaea711933c1b80192f3c2a9f7a09b40d6616e04b0f22a68d217ff1ec8ef0376f"  # noqa: E501
PCA_SHA512 = "3728bcbc45cb05b4cff527434a069f990e110f1fc9687f74fce55dc204da6aa0f0f96cb4466a96fc056c32743c63830022c839072cc501a3f14bfb44928a701c"  # noqa: E501
# AudioSet's features tarball, on three regional mirrors tried in turn.
FEATURES_URLS = tuple(
    f"https://storage.googleapis.com/{region}_audioset/youtube_corpus/v1/features/features.tar.gz"
    for region in ("us", "eu", "asia")
)


@dataclass(frozen=True)
class SetupConfig:
    checkpoint_urls: tuple[str, ...] = (f"{GOOGLE_AUDIOSET}/vggish_model.ckpt",)
    pca_urls: tuple[str, ...] = (f"{GOOGLE_AUDIOSET}/vggish_pca_params.npz",)
    bundle_urls: tuple[str, ...] = (MAX_BUNDLE_URL,)
    features_urls: tuple[str, ...] = FEATURES_URLS
    checkpoint_sha512: str = CHECKPOINT_SHA512  # "" skips the check (a model of your own)
    pca_sha512: str = PCA_SHA512
    features_sha512: str = ""  # none is published
    timeout_s: float = 60.0
    retries: int = 5
    retry_wait_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("checkpoint_urls", "pca_urls", "bundle_urls", "features_urls"):
            for url in getattr(self, name):
                if not url.startswith(("http://", "https://")):
                    raise ConfigError(f"setup.{name}: {url!r} is not an http(s) URL")
        for name in ("checkpoint_sha512", "pca_sha512", "features_sha512"):
            value = getattr(self, name)
            if value and (len(value) != 128 or any(c not in "0123456789abcdef" for c in value.lower())):
                raise ConfigError(f"setup.{name} must be 128 hexadecimal digits (a sha512) or empty")
        if self.timeout_s <= 0:
            raise ConfigError("setup.timeout_s must be positive")
        at_least("setup.retries", self.retries, 0)
        if self.retry_wait_s < 0:
            raise ConfigError("setup.retry_wait_s must not be negative")


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
    setup: SetupConfig = field(default_factory=SetupConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    youtube: YouTubeConfig = field(default_factory=YouTubeConfig)
    videos: VideosConfig = field(default_factory=VideosConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    # The TOML file these settings were read from (None: defaults and MUSREC_* variables only); not a [section].
    file: Path | None = field(default=None, compare=False, metadata={SECTION: False})

    @property
    def data_dir(self) -> Path:
        return self.data.dir if self.data.dir is not None else default_data_dir()

    @property
    def index_path(self) -> Path:
        return self.index.path if self.index.path is not None else self.data_dir / "index"

    @property
    def cache_path(self) -> Path:
        return self.youtube.cache_path or self.data_dir / "embeddings.sqlite3"

    @property
    def library_uri(self) -> str:
        """Where the libraries are stored: ``[library] uri``, else Milvus Lite's ``library.db`` in the data
        directory."""
        return self.library.uri or str(self.data_dir / DEFAULT_FILE)

    @property
    def videos_path(self) -> Path:
        return self.videos.cache_path or self.data_dir / "videos.sqlite3"

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
        return apply(self, {k: v for k, v in overrides.items() if v is not None}, source="option")


DEFAULT_CONFIG_FILE = Path("config.toml")
CONFIG_ENV = "MUSREC_CONFIG"
# Where the configuration file is looked for, in order: for --help texts and messages.
CONFIG_SEARCH = f"${CONFIG_ENV}, else ./config.toml, else $XDG_CONFIG_HOME/musrec/config.toml (~/.config/musrec)"


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user configuration file: ``$XDG_CONFIG_HOME/musrec/config.toml`` or ``~/.config/musrec/config.toml``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "musrec" / DEFAULT_CONFIG_FILE.name


def find_config(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to read: ``explicit`` (``--config``), else ``$MUSREC_CONFIG``, else ``./config.toml``
    when it exists, else :func:`user_config_file` when it exists, else none (defaults and ``MUSREC_*`` variables
    only). The CLI, the bot and the doctor all ask here, so they agree wherever they are started."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    for candidate in (DEFAULT_CONFIG_FILE, user_config_file(env)):
        if candidate.is_file():
            return candidate.absolute()
    return None


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given; a missing file is an error), then apply ``MUSREC_*`` variables from ``environ``."""
    env = os.environ if environ is None else environ
    config = Config()
    if path is not None:
        config = dataclasses.replace(apply(config, read_toml(Path(path)), source=str(path)), file=Path(path))
    return apply(config, env_overrides(env, section_names(Config)), source="environment", variable=env_variable)
