"""The musrec pipeline as one long-lived object: any source in, recommendations out.

:class:`Musrec` holds the heavy parts (the embedder, the index), each loaded once on first use and shared by every
request, so the CLI, the embedding server and the Discord bot all call the same code::

    musrec = Musrec.from_config(load_config("config.toml"))
    result = musrec.recommend("song.mp3", k=5)        # a file, encoded bytes, a link, or audioset:VIDEO_ID[@START]

Every source goes through :meth:`Musrec.resolve`, the one query path: an indexed segment is looked up, a link is
checked against the host policy and answered from the embedding cache or fetched, and audio is decoded with the
query window chosen in one place (:func:`~musrec.audio.decode.choose_window`). A query that needs no model (an
indexed segment) never loads one, and one that needs no index (``musrec embed``) never opens it.

It is synchronous and thread-safe; async front ends run it in worker threads.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import AudioLimits, Window, choose_window, cut, decode
from musrec.cache import CacheKey, EmbeddingCache
from musrec.compare import Comparison, compare_rows
from musrec.config import Config
from musrec.errors import EmbedderError, MusrecError, TooShortError
from musrec.index.layout import Manifest
from musrec.index.loaded import Index
from musrec.links.fetch import LinkTarget, link_target
from musrec.recommend import (
    AUDIOSET_PREFIX,
    Query,
    Recommendation,
    Resolved,
    recommend_resolved,
    resolve_segment,
)
from musrec.vggish.frontend import SAMPLE_RATE

if TYPE_CHECKING:
    from musrec.audioset.labels import Labels
    from musrec.embedding.local import Embedder

__all__ = [
    "Comparison",
    "LinkSource",
    "Manifest",
    "Musrec",
    "Query",
    "Recommendation",
    "Resolved",
    "Source",
    "is_link",
    "make_embedder",
]

log = logging.getLogger(__name__)

LinkSource = LinkTarget  # a link that passed the host policy (check_link)
Source = str | Path | bytes | LinkSource


def make_embedder(config: Config) -> Embedder:
    """The embedder the configuration asks for: VGGish in process, or MAX servers."""
    if config.embedder.kind == "max":
        from musrec.embedding.max_client import MaxEmbedder

        return MaxEmbedder(config.max.urls, timeout_s=config.max.timeout_s, retries=config.max.retries)
    missing = [p for p in (config.checkpoint_path, config.pca_params_path) if not p.is_file()]
    if missing:
        names = " and ".join(p.name for p in missing)
        raise EmbedderError(
            f"VGGish model files not found ({names} in {missing[0].parent}): run `musrec setup`, "
            "or set embedder.checkpoint and embedder.pca_params"
        )
    return _local_embedder(
        config.checkpoint_path.resolve(),
        config.pca_params_path.resolve(),
        config.embedder.relu,
        _stamp(config.checkpoint_path),
        _stamp(config.pca_params_path),
    )


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=2)
def _local_embedder(checkpoint: Path, pca_params: Path, relu: bool, *stamps: tuple[int, int]) -> Embedder:
    """One loaded model per (files, variant) in a process: 300 MB of weights are not read twice.

    ``stamps`` (modification time and size) make a replaced file load afresh.
    """
    from musrec.embedding.local import LocalEmbedder
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()  # quietly, before the model's own import
    return LocalEmbedder(checkpoint, pca_params, relu=relu)


def embedder_identity(config: Config) -> str:
    """Names the embedding space, so cached link embeddings from another model or variant are never reused."""
    if config.embedder.kind == "max":
        return "max:" + ",".join(config.max.urls)
    stamp = "-".join(str(v) for p in (config.checkpoint_path, config.pca_params_path) for v in _stamp_or_none(p))
    return f"local:relu={config.embedder.relu}:{stamp}"


def _stamp_or_none(path: Path) -> tuple[int, int]:
    try:
        return _stamp(path)
    except OSError:
        return (0, 0)


def is_link(source: object) -> bool:
    return isinstance(source, str) and source.strip().lower().startswith(("http://", "https://", "<http"))


def is_segment(source: object) -> bool:
    return isinstance(source, str) and source.startswith(AUDIOSET_PREFIX)


@dataclass(frozen=True)
class _Span:
    """What to embed of a source: the query window (``duration_s`` None), or exactly a span."""

    start_s: float | None
    duration_s: float | None


class Musrec:
    """Configuration + embedder + index: the whole pipeline. The embedder and the index load on first use."""

    def __init__(
        self,
        *,
        config: Config,
        index: Index | None = None,
        embedder: Embedder | None = None,
        labels: Labels | None = None,
    ) -> None:
        self.config = config
        self._index = index
        self._embedder = embedder
        self._labels = labels
        self._cache: EmbeddingCache | None = None
        self._cache_opened = False
        self._lock = threading.Lock()
        if config.youtube.allow_private_addresses:
            log.warning("youtube.allow_private_addresses is on: links may reach private and loopback addresses")

    @classmethod
    def from_config(cls, config: Config) -> Musrec:
        return cls(config=config)

    # ---- the heavy parts, loaded once -------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        with self._lock:
            if self._index is None:
                self._index = Index(self.config.index_path, backend=self.config.index.backend)
            return self._index

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.config)
            return self._embedder

    @property
    def labels(self) -> Labels:
        if self._labels is None:
            from musrec.audioset.labels import default_labels

            self._labels = default_labels()
        return self._labels

    @property
    def cache(self) -> EmbeddingCache | None:
        """The link-embedding cache, opened on first use (None when disabled or unusable)."""
        with self._lock:
            if not self._cache_opened:
                self._cache_opened = True
                if self.config.youtube.cache_max_entries > 0:
                    path = self.config.cache_path
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._cache = EmbeddingCache(path, max_entries=self.config.youtube.cache_max_entries)
            return self._cache

    def warm_up(self) -> None:
        """Load both parts, touch the index pages and trace the model, so the first request is as fast as the rest."""
        self.index.warm()
        warm = getattr(self.embedder, "warm_up", None)
        if callable(warm):
            warm()

    # ---- the one query path -----------------------------------------------------------------------------------

    def resolve(
        self,
        source: Source,
        *,
        name: str | None = None,
        start_s: float | None = None,
        duration_s: float | None = None,
    ) -> Resolved:
        """The embedding rows of any source and what they are: an indexed segment (``audioset:VIDEO_ID[@START]``),
        a link (or one :meth:`check_link` passed), a file path, or encoded audio (bytes, shown as ``name``).

        Without ``duration_s`` the query window is used: ``audio.window_s`` from ``start_s``, else the loudest
        window of the first ``audio.search_s`` seconds (a link: ``t=``, else its default start). With it, exactly
        that span from ``start_s`` (or the beginning) is embedded.
        """
        span = _Span(start_s, duration_s)
        if isinstance(source, LinkTarget):
            return self._resolve_link(source, span)
        if is_segment(source):
            return resolve_segment(str(source), index=self.index, labels=self.labels)
        if is_link(source):
            return self._resolve_link(self.check_link(str(source)), span)
        data: Path | bytes = source if isinstance(source, bytes) else Path(source)
        if isinstance(data, Path):
            _check_file(data)
        rows, window = self._embed_audio(data, span)
        label = name or (data.name if isinstance(data, Path) else "upload")
        query = Query(kind="file", source=label, start_s=round(window.start_s, 3), end_s=round(window.end_s, 3))
        return Resolved(rows=rows, query=query)

    def check_link(self, text: str) -> LinkTarget:
        """The link in ``text`` if the host policy lets it be fetched (no network); UnsupportedLinkError if not."""
        return link_target(text, options=self.config.youtube)

    def _embed_audio(self, data: Path | bytes, span: _Span) -> tuple[npt.NDArray[np.uint8], Window]:
        """Decode ``data`` and embed the query window (or the span); the window in seconds of the source."""
        a = self.config.audio
        limits: AudioLimits = a
        if span.duration_s is not None:
            whole = math.isinf(span.duration_s)  # to the end, within the duration limit
            audio = decode(data, start_s=span.start_s, duration_s=None if whole else span.duration_s, limits=limits)
            window = Window(0.0, audio.duration_s)
        else:
            # With a start only that window is decoded (ffmpeg seeks); without, the first search_s seconds are, and
            # the loudest window among them is used, so a long file costs no more than a short one.
            decoded_s = a.window_s if span.start_s is not None else min(a.search_s, a.max_duration_s)
            audio = decode(data, start_s=span.start_s, duration_s=decoded_s, limits=limits)
            start = 0.0 if span.start_s is not None else None
            window = choose_window(audio.samples, start_s=start, duration_s=a.window_s, search_s=a.search_s)
        rows = self.embedder.embed(cut(audio.samples, window), SAMPLE_RATE)
        if len(rows) == 0:
            raise TooShortError("the audio is too short to embed: at least one second is needed")
        return rows, Window(audio.offset_s + window.start_s, audio.offset_s + window.end_s)

    def _resolve_link(self, target: LinkTarget, span: _Span) -> Resolved:
        """A link's window, from the embedding cache when it has it (no network at all), else fetched."""
        from musrec.links.fetch import fetch_window  # yt-dlp, imported when a link is first fetched

        start_s = span.start_s if span.start_s is not None else target.start_s
        duration_s = span.duration_s or self.config.audio.window_s
        key = CacheKey(
            video_id=target.cache_id,
            start_s=start_s,
            duration_s=duration_s,
            embedder=embedder_identity(self.config),
        )
        cache = self.cache
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            rows, window, title, cached = hit.embedding, Window(hit.window_start_s, hit.window_end_s), hit.title, True
        else:
            fetched = fetch_window(
                target, start_s=start_s, duration_s=duration_s, options=self.config.youtube, limits=self.config.audio
            )
            rows = self.embedder.embed(fetched.samples, fetched.sample_rate)
            window, title, cached = fetched.window, fetched.title, False
            if cache is not None:
                cache.put(
                    key,
                    rows,
                    window_start_s=window.start_s,
                    window_end_s=window.end_s,
                    title=title,
                    video_duration_s=fetched.duration_s,
                )
        if len(rows) == 0:
            raise TooShortError("the video is too short to embed: at least one second is needed")
        extra: dict[str, object] = {"cached": cached}
        if title:
            extra["title"] = title
        query = Query(
            kind="url",
            source=target.url,
            video_id=target.video_id,
            start_s=round(window.start_s, 3),
            end_s=round(window.end_s, 3),
            extra=extra,
        )
        return Resolved(rows=rows, query=query)

    # ---- what front ends ask for --------------------------------------------------------------------------------

    def recommend(
        self,
        source: Source,
        *,
        name: str | None = None,
        start_s: float | None = None,
        k: int | None = None,
        music_only: bool | None = None,
        one_per_video: bool | None = None,
    ) -> Recommendation:
        """Recommendations for any source (see :meth:`resolve`); unset options come from ``[recommend]``."""
        r = self.config.recommend
        return recommend_resolved(
            self.resolve(source, name=name, start_s=start_s),
            index=self.index,
            k=r.top_k if k is None else k,
            music_only=r.music_only if music_only is None else music_only,
            one_per_video=r.one_per_video if one_per_video is None else one_per_video,
            labels=self.labels,
        )

    def compare(
        self,
        first: Source,
        second: Source,
        *,
        names: tuple[str | None, str | None] = (None, None),
        starts: tuple[float | None, float | None] = (None, None),
    ) -> tuple[Comparison, Query, Query]:
        """How alike two sounds are, in the index's representation, with second-by-second similarities."""
        a = self.resolve(first, name=names[0], start_s=starts[0])
        b = self.resolve(second, name=names[1], start_s=starts[1])
        return compare_rows(a.rows, b.rows, representation=self.index.representation), a.query, b.query

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._cache is not None:
            self._cache.close()
        close = getattr(self._embedder, "close", None)
        if callable(close):
            close()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MusrecError(f"no such file: {path} (expected an audio file, a YouTube link or audioset:VIDEO_ID[@START])")
    if path.is_dir():
        raise MusrecError(f"{path} is a directory, not an audio file")
