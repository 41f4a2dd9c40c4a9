"""The musrec pipeline as one long-lived object: audio in, recommendations out.

:class:`Musrec` holds the heavy parts (the embedder, the index) built once and shared by every request, so the
CLI, the embedding server and the Discord bot all call the same code::

    musrec = Musrec.from_config(load_config("config.toml"))
    result = musrec.recommend("song.mp3", k=5)              # a file, encoded bytes, or audioset:VIDEO_ID[@START]

It is synchronous and thread-safe; async front ends run it in worker threads.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import AudioLimits, Window, choose_window, cut, decode
from musrec.audioset.labels import Labels, default_labels
from musrec.compare import Comparison, compare_rows
from musrec.config import Config
from musrec.embedding.local import Embedder
from musrec.errors import EmbedderError, TooShortError
from musrec.index.loaded import Index
from musrec.recommend import (
    AUDIOSET_PREFIX,
    Query,
    Recommendation,
    find_segment,
    parse_audioset_ref,
    recommend_rows,
    recommend_segment,
)
from musrec.vggish.frontend import SAMPLE_RATE

if TYPE_CHECKING:
    from musrec.cache import EmbeddingCache
    from musrec.links.fetch import FetchOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowEmbedding:
    """The embedding of the query window of some audio: ``rows`` [n, 128] uint8 and where the window lies."""

    rows: npt.NDArray[np.uint8]
    window: Window  # in seconds of the source
    source_duration_s: float | None


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

    return LocalEmbedder(checkpoint, pca_params, relu=relu)


def fetch_options(config: Config) -> FetchOptions:
    """The link-fetching policy of the configuration."""
    from musrec.links.fetch import FetchOptions

    y = config.youtube
    if y.allow_private_addresses:
        log.warning("youtube.allow_private_addresses is on: links may reach private and loopback addresses")
    return FetchOptions(
        allowed_hosts=y.allowed_hosts,
        allow_private_addresses=y.allow_private_addresses,
        max_video_s=y.max_video_s,
        max_filesize=int(y.max_filesize_mb * 2**20),
        margin_s=y.margin_s,
        socket_timeout_s=y.socket_timeout_s,
        retries=y.retries,
        default_start_s=y.default_start_s,
        cookies=y.cookies,
        js_runtimes=y.js_runtimes,
    )


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


def audio_limits(config: Config) -> AudioLimits:
    a = config.audio
    return AudioLimits(
        max_bytes=a.max_bytes,
        max_duration_s=a.max_duration_s,
        min_duration_s=a.min_duration_s,
        decode_timeout_s=a.decode_timeout_s,
    )


def embed_window(
    source: Path | bytes, *, embedder: Embedder, config: Config, start_s: float | None = None
) -> WindowEmbedding:
    """Decode ``source``, pick the query window and embed it.

    With ``start_s`` only that window is decoded (ffmpeg seeks). Without, the first ``audio.search_s`` seconds
    are decoded and the loudest window among them is used, so a long file costs no more than a short one.
    """
    a = config.audio
    limits = audio_limits(config)
    span = a.window_s if start_s is not None else min(a.search_s, a.max_duration_s)
    audio = decode(source, start_s=start_s, duration_s=span, limits=limits)
    window = choose_window(
        audio.samples, start_s=0.0 if start_s is not None else None, duration_s=a.window_s, search_s=a.search_s
    )
    rows = embedder.embed(cut(audio.samples, window), SAMPLE_RATE)
    if len(rows) == 0:
        raise TooShortError("the audio is too short to embed: at least one second is needed")
    offset = audio.offset_s
    return WindowEmbedding(
        rows=rows,
        window=Window(offset + window.start_s, offset + window.end_s),
        source_duration_s=audio.source_duration_s,
    )


class Musrec:
    """Embedder + index + configuration: the whole pipeline, built once."""

    def __init__(self, *, config: Config, index: Index, embedder: Embedder, labels: Labels | None = None) -> None:
        self.config = config
        self.index = index
        self.embedder = embedder
        self.labels = labels or default_labels()
        self._cache: EmbeddingCache | None = None
        self._cache_opened = False
        self._cache_lock = threading.Lock()
        self._fetch_options: FetchOptions | None = None

    @classmethod
    def from_config(cls, config: Config) -> Musrec:
        index = Index(config.index_path, backend=config.index.backend)
        return cls(config=config, index=index, embedder=make_embedder(config))

    def warm_up(self) -> None:
        """Touch the index pages and trace the model, so the first request is as fast as the rest."""
        self.index.warm()
        warm = getattr(self.embedder, "warm_up", None)
        if callable(warm):
            warm()

    def recommend(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        start_s: float | None = None,
        k: int | None = None,
        music_only: bool | None = None,
        one_per_video: bool | None = None,
    ) -> Recommendation:
        """Recommendations for a file (path), encoded audio (bytes), a link, or ``audioset:VIDEO_ID[@START]``."""
        r = self.config.recommend
        k = r.top_k if k is None else k
        music_only = r.music_only if music_only is None else music_only
        one_per_video = r.one_per_video if one_per_video is None else one_per_video
        if isinstance(source, str) and source.startswith(AUDIOSET_PREFIX):
            return recommend_segment(
                source,
                index=self.index,
                k=k,
                music_only=music_only,
                one_per_video=one_per_video,
                labels=self.labels,
            )
        rows, query = self.embed_query(source, name=name, start_s=start_s)
        return recommend_rows(
            rows,
            query=query,
            index=self.index,
            k=k,
            music_only=music_only,
            one_per_video=one_per_video,
            labels=self.labels,
        )

    def embed_query(
        self, source: str | Path | bytes, *, name: str | None = None, start_s: float | None = None
    ) -> tuple[npt.NDArray[np.uint8], Query]:
        """The embedding rows of a query and what it was: a file, encoded bytes, or an indexed segment."""
        if isinstance(source, str) and source.startswith(AUDIOSET_PREFIX):
            video_id, start = parse_audioset_ref(source)
            seg = find_segment(self.index, video_id, start)
            query = Query(
                kind="audioset",
                source=source,
                video_id=seg.video_id,
                start_s=seg.start_s,
                end_s=seg.end_s,
                labels=tuple(self.labels.name(i) for i in seg.labels),
            )
            return np.asarray(self.index.embeddings[seg.item]), query
        if is_link(source):
            return self._embed_link(str(source), start_s=start_s)
        data: Path | bytes = source if isinstance(source, bytes) else Path(source)
        embedded = embed_window(data, embedder=self.embedder, config=self.config, start_s=start_s)
        label = name or (data.name if isinstance(data, Path) else "upload")
        query = Query(
            kind="file",
            source=label,
            start_s=round(embedded.window.start_s, 3),
            end_s=round(embedded.window.end_s, 3),
        )
        return embedded.rows, query

    def _embed_link(self, url: str, *, start_s: float | None) -> tuple[npt.NDArray[np.uint8], Query]:
        from musrec.links.fetch import embed_link

        link = embed_link(
            url,
            embedder=self.embedder,
            embedder_id=embedder_identity(self.config),
            start_s=start_s,
            duration_s=self.config.audio.window_s,
            options=self.fetch_options,
            limits=audio_limits(self.config),
            cache=self.cache,
        )
        if len(link.embedding) == 0:
            raise TooShortError("the video is too short to embed: at least one second is needed")
        extra: dict[str, object] = {"cached": link.cached}
        if link.title:
            extra["title"] = link.title
        query = Query(
            kind="url",
            source=link.url,
            video_id=link.video_id,
            start_s=round(link.window.start_s, 3),
            end_s=round(link.window.end_s, 3),
            extra=extra,
        )
        return link.embedding, query

    @property
    def fetch_options(self) -> FetchOptions:
        """The link-fetching policy, built once (its warning about private addresses is logged once)."""
        if self._fetch_options is None:
            self._fetch_options = fetch_options(self.config)
        return self._fetch_options

    @property
    def cache(self) -> EmbeddingCache | None:
        """The link-embedding cache, opened on first use (None when disabled or unusable)."""
        with self._cache_lock:
            if not self._cache_opened:
                self._cache_opened = True
                if self.config.youtube.cache_max_entries > 0:
                    from musrec.cache import EmbeddingCache

                    path = self.config.cache_path
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._cache = EmbeddingCache(path, max_entries=self.config.youtube.cache_max_entries)
            return self._cache

    def compare(
        self,
        first: str | Path | bytes,
        second: str | Path | bytes,
        *,
        names: tuple[str | None, str | None] = (None, None),
        starts: tuple[float | None, float | None] = (None, None),
    ) -> tuple[Comparison, Query, Query]:
        """How alike two sounds are, in the index's representation, with second-by-second similarities."""
        rows_a, query_a = self.embed_query(first, name=names[0], start_s=starts[0])
        rows_b, query_b = self.embed_query(second, name=names[1], start_s=starts[1])
        return compare_rows(rows_a, rows_b, representation=self.index.representation), query_a, query_b

    def close(self) -> None:
        self.index.close()
        if self._cache is not None:
            self._cache.close()
        close = getattr(self.embedder, "close", None)
        if callable(close):
            close()
