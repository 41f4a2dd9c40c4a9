"""A link's query: its window from the embedding cache when the cache has it (no network, no model), else fetched,
embedded and kept there for the next time.

:class:`~musrec.pipeline.Musrec` resolves every link through one :class:`LinkQueries`, which owns the cache file
(opened on first use) for the pipeline's whole life.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from musrec.audio.window import Window
from musrec.cache import CacheKey, EmbeddingCache
from musrec.config import Config
from musrec.configured import embedder_identity
from musrec.errors import TooShortError
from musrec.links.fetch import LinkTarget
from musrec.recommend.results import Query, Resolved

if TYPE_CHECKING:
    from musrec.embedding.base import Embedder

__all__ = ["LinkQueries"]

log = logging.getLogger(__name__)


class LinkQueries:
    """Links resolved to their embedding rows, through the link-embedding cache (``[youtube] cache_max_entries``).

    ``embedder`` is called only when a window has to be embedded, so a cached link never loads the model.
    """

    def __init__(self, config: Config, *, embedder: Callable[[], Embedder]) -> None:
        self.config = config
        self._embedder = embedder
        self._cache: EmbeddingCache | None = None
        self._cache_opened = False
        self._lock = threading.Lock()

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

    def resolve(self, target: LinkTarget, *, start_s: float | None, duration_s: float | None) -> Resolved:
        """The window of ``target`` from ``start_s`` (else the link's ``t=``, else its default start), lasting
        ``duration_s`` (else ``audio.window_s``). Raises TooShortError for a video under a second, and what
        :func:`~musrec.links.fetch.fetch_window` raises when it has to fetch."""
        from musrec.links.fetch import fetch_window  # yt-dlp, imported when a link is first fetched

        start_s = start_s if start_s is not None else target.start_s
        duration_s = duration_s or self.config.audio.window_s
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
            rows = self._embedder().embed(fetched.samples, fetched.sample_rate)
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

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
