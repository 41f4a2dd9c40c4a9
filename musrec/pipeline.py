"""The musrec pipeline as one long-lived object: any source in, recommendations out.

:class:`Musrec` holds the heavy parts (the embedder, the index), each loaded once on first use and shared by every
request, so the CLI, the embedding server and the Discord bot all call the same code::

    musrec = Musrec.from_config(load_config("config.toml"))
    result = musrec.recommend("song.mp3", k=5)        # a file, encoded bytes, a link, or audioset:VIDEO_ID[@START]

Every source goes through :meth:`Musrec.resolve`, the one query path: an indexed segment is looked up, a link is
checked against the host policy and answered from the embedding cache or fetched, and audio is decoded with the
query window chosen in one place (:func:`~musrec.audio.window.choose_window`). A query that needs no model (an
indexed segment) never loads one, and one that needs no index (``musrec embed``) never opens it.

It is synchronous and thread-safe; async front ends run it in worker threads.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import decode
from musrec.audio.limits import AudioLimits, decode_deadline
from musrec.audio.scan import decode_loudest
from musrec.audio.window import Window, cut
from musrec.compare import Comparison, compare_rows
from musrec.config import Config
from musrec.configured import make_embedder
from musrec.errors import MusrecError, TooShortError
from musrec.index.layout import Manifest
from musrec.index.search import Index
from musrec.link_queries import LinkQueries
from musrec.links.fetch import LinkTarget, link_target
from musrec.links.parse import MAX_LINK_CHARS
from musrec.links.parse import is_link as is_link_text
from musrec.recommend.blend import blend
from musrec.recommend.live import Search, live_result
from musrec.recommend.nearest import recommend_resolved
from musrec.recommend.results import Filters, Query, Recommendation, Resolved
from musrec.recommend.segments import AUDIOSET_PREFIX, resolve_segment
from musrec.vggish.frontend import SAMPLE_RATE
from musrec.videos.checker import VideoChecker
from musrec.videos.store import StoreCounts

if TYPE_CHECKING:
    from musrec.audioset.labels import Labels
    from musrec.embedding.base import Embedder

__all__ = [
    "Comparison",
    "Filters",
    "LinkTarget",
    "MAX_LINK_CHARS",
    "Manifest",
    "Musrec",
    "Query",
    "Recommendation",
    "Resolved",
    "Source",
    "StoreCounts",
    "is_link",
]

log = logging.getLogger(__name__)

Source = str | Path | bytes | LinkTarget  # a LinkTarget is a link that passed the host policy (check_link)


def is_link(source: object) -> bool:
    return isinstance(source, str) and is_link_text(source)


def is_segment(source: object) -> bool:
    return isinstance(source, str) and source.startswith(AUDIOSET_PREFIX)


class Musrec:
    """Configuration + embedder + index: the whole pipeline. The embedder and the index load on first use."""

    def __init__(
        self,
        *,
        config: Config,
        index: Index | None = None,
        embedder: Embedder | None = None,
        labels: Labels | None = None,
        videos: VideoChecker | None = None,
    ) -> None:
        self.config = config
        self._index = index
        self._embedder = embedder
        self._labels = labels
        self._videos, self._videos_opened = videos, videos is not None
        self._lock = threading.Lock()
        self._links = LinkQueries(config, embedder=lambda: self.embedder)
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
    def videos(self) -> VideoChecker | None:
        """The check of matches' videos, made on first use (None when ``[videos] check`` is off)."""
        with self._lock:
            if not self._videos_opened:
                self._videos_opened = True
                if self.config.videos.check:
                    self._videos = VideoChecker.from_config(self.config.videos, path=self.config.videos_path)
            return self._videos

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
        deadline: float | None = None,
    ) -> Resolved:
        """The embedding rows of any source and what they are: an indexed segment (``audioset:VIDEO_ID[@START]``),
        a link (or one :meth:`check_link` passed), a file path, or encoded audio (bytes, shown as ``name``).

        Without ``duration_s`` the query window is used: ``audio.window_s`` from ``start_s``, else the loudest
        window of the first ``audio.search_s`` seconds (a link: ``t=``, else its default start). With it, exactly
        that span from ``start_s`` (or the beginning) is embedded.

        Decoding a file has one budget, ``audio.decode_timeout_s``, or less if ``deadline`` (a
        :func:`time.monotonic` value shared by the sounds of one request) comes first.
        """
        if isinstance(source, LinkTarget):
            return self._links.resolve(source, start_s=start_s, duration_s=duration_s)
        if is_segment(source):
            return resolve_segment(str(source), index=self.index, labels=self.labels)
        if is_link(source):
            return self._links.resolve(self.check_link(str(source)), start_s=start_s, duration_s=duration_s)
        data: Path | bytes = source if isinstance(source, bytes) else Path(source)
        if isinstance(data, Path):
            _check_file(data)
        rows, window = self._embed_audio(
            data, start_s=start_s, duration_s=duration_s, deadline=decode_deadline(self.config.audio, deadline)
        )
        label = name or (data.name if isinstance(data, Path) else "upload")
        chosen: dict[str, object] = {"window": "loudest" if start_s is None else "start"}
        if duration_s is not None:  # a span asked for (musrec embed), not a query window
            chosen = {}
        query = Query(
            kind="file", source=label, start_s=round(window.start_s, 3), end_s=round(window.end_s, 3), extra=chosen
        )
        return Resolved(rows=rows, query=query)

    def check_link(self, text: str) -> LinkTarget:
        """The link in ``text`` if the host policy lets it be fetched (no network); UnsupportedLinkError if not (a
        link longer than :data:`MAX_LINK_CHARS` among them)."""
        return link_target(text, options=self.config.youtube)

    def _embed_audio(
        self, data: Path | bytes, *, start_s: float | None, duration_s: float | None, deadline: float
    ) -> tuple[npt.NDArray[np.uint8], Window]:
        """Decode ``data`` and embed the query window (or the span); the window in seconds of the source."""
        a = self.config.audio
        limits: AudioLimits = a
        if duration_s is not None:
            whole = math.isinf(duration_s)  # to the end, within the duration limit
            audio = decode(
                data, start_s=start_s, duration_s=None if whole else duration_s, limits=limits, deadline=deadline
            )
            window = Window(0.0, audio.duration_s)
        else:
            # With a start only that window is decoded (ffmpeg seeks); without, the first search_s seconds are scanned
            # cheaply and only their loudest window is decoded exactly, so a long file costs little more than a clip.
            if start_s is not None:
                audio = decode(data, start_s=start_s, duration_s=a.window_s, limits=limits, deadline=deadline)
            else:
                search_s = min(a.search_s, a.max_duration_s)
                audio = decode_loudest(data, duration_s=a.window_s, search_s=search_s, limits=limits, deadline=deadline)
            window = Window(0.0, audio.duration_s)
        rows = self.embedder.embed(cut(audio.samples, window), SAMPLE_RATE)
        if len(rows) == 0:
            raise TooShortError("the audio is too short to embed: at least one second is needed")
        return rows, Window(audio.offset_s + window.start_s, audio.offset_s + window.end_s)

    # ---- what front ends ask for --------------------------------------------------------------------------------

    def filters(
        self,
        *,
        music_only: bool | None = None,
        one_per_video: bool | None = None,
        label: Sequence[str] = (),
        exclude_label: Sequence[str] = (),
    ) -> Filters:
        """The filters asked for, with ``[recommend]``'s defaults for what is unset; unknown labels refused."""
        r = self.config.recommend
        filters = Filters(
            music_only=r.music_only if music_only is None else music_only,
            one_per_video=r.one_per_video if one_per_video is None else one_per_video,
            labels=tuple(self.labels.names[self.labels.index_of(x)] for x in label),
            not_labels=tuple(self.labels.names[self.labels.index_of(x)] for x in exclude_label),
        )
        return filters

    def recommend(
        self,
        source: Source,
        *,
        name: str | None = None,
        start_s: float | None = None,
        k: int | None = None,
        music_only: bool | None = None,
        one_per_video: bool | None = None,
        label: Sequence[str] = (),
        exclude_label: Sequence[str] = (),
    ) -> Recommendation:
        """Recommendations for any source (see :meth:`resolve`); unset options come from ``[recommend]``.

        ``label`` keeps segments with one of these labels or a kind of one ("Rock music" takes "Heavy metal"),
        ``exclude_label`` drops those with one of these (or a kind of one); the filters apply inside the search.
        """
        filters = self.filters(
            music_only=music_only, one_per_video=one_per_video, label=label, exclude_label=exclude_label
        )
        return self.search(self.resolve(source, name=name, start_s=start_s), k=k, filters=filters)

    def search(
        self,
        resolved: Resolved,
        *,
        k: int | None = None,
        filters: Filters | None = None,
        exclude: Collection[int] = (),
    ) -> Recommendation:
        """Recommendations for a query already resolved (its rows kept, nothing embedded again), leaving out
        ``exclude`` (indexed items already shown): "more like this" and "more" of the same query. Matches whose
        videos are known to be gone are left out (:func:`~musrec.recommend.live.live_result`)."""
        filters = filters or self.filters()
        return self._live(
            lambda n, left_out, gone: recommend_resolved(
                resolved, index=self.index, k=n, filters=filters, exclude=left_out, labels=self.labels, gone=gone
            ),  # fmt: skip
            k=k,
            exclude=exclude,
        )

    def _live(self, search: Search, *, k: int | None, exclude: Collection[int]) -> Recommendation:
        k = self.config.recommend.top_k if k is None else k
        return live_result(search, k=k, exclude=exclude, checker=self.videos, budget_s=self.config.videos.budget_s)

    def blend(
        self,
        sources: Sequence[Source],
        *,
        names: Sequence[str | None] = (),
        starts: Sequence[float | None] = (),
        k: int | None = None,
        filters: Filters | None = None,
        method: str = "mean",
    ) -> Recommendation:
        """The segments that sound like all of two or three sounds, each match with how close it is to every one."""
        sounds = self.resolve_sounds(sources, names=names, starts=starts)
        return self.search_blend(sounds, k=k, filters=filters, method=method)

    def resolve_sounds(
        self,
        sources: Sequence[Source],
        *,
        names: Sequence[str | None] = (),
        starts: Sequence[float | None] = (),
    ) -> list[Resolved]:
        """Several sounds resolved in turn (a blend's, a comparison's). A user's error names the sound it came from
        ("the second sound (b.ogg): the file is empty"), so whoever gave three knows which one to fix. The sounds
        share one decoding budget, ``audio.decode_timeout_s`` in all (a request holds a worker for that long at
        most, however many sounds it has)."""
        deadline = decode_deadline(self.config.audio)
        sounds = []
        for i, source in enumerate(sources):
            name = names[i] if i < len(names) else None
            start_s = starts[i] if i < len(starts) else None
            try:
                sounds.append(self.resolve(source, name=name, start_s=start_s, deadline=deadline))
            except MusrecError as err:
                if err.expected:
                    err.args = (f"the {_ORDINALS[i]} sound ({_shown_name(source, name)}): {err}",)
                raise
        return sounds

    def search_blend(
        self,
        sounds: Sequence[Resolved],
        *,
        k: int | None = None,
        filters: Filters | None = None,
        method: str = "mean",
        exclude: Collection[int] = (),
    ) -> Recommendation:
        """A blend of sounds already resolved (nothing embedded again), leaving out ``exclude`` (indexed items
        already shown): "more" of the same blend. Gone videos are left out, as in :meth:`search`."""
        filters = filters or self.filters()
        return self._live(
            lambda n, left_out, gone: blend(
                sounds,
                index=self.index,
                k=n,
                filters=filters,
                labels=self.labels,
                method=method,
                exclude=left_out,
                gone=gone,
            ),
            k=k,
            exclude=exclude,
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
        a, b = self.resolve_sounds((first, second), names=names, starts=starts)
        return compare_rows(a.rows, b.rows, representation=self.index.representation), a.query, b.query

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        self._links.close()
        if self._videos is not None:
            self._videos.close()
        close = getattr(self._embedder, "close", None)
        if callable(close):
            close()


_ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _shown_name(source: Source, name: str | None) -> str:
    """How a sound is named in a message: the name it was given, a file's name (not its directories), else itself
    (a link, an ``audioset:`` reference), cut to a length a message can hold."""
    if name:
        shown = name
    elif isinstance(source, bytes):
        shown = "upload"
    elif isinstance(source, LinkTarget):
        shown = source.url
    elif is_segment(source) or is_link(source):
        shown = str(source)
    else:
        shown = Path(source).name
    return shown if len(shown) <= 100 else shown[:99] + "…"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MusrecError(f"no such file: {path} (expected an audio file, a YouTube link or audioset:VIDEO_ID[@START])")
    if path.is_dir():
        raise MusrecError(f"{path} is a directory, not an audio file")
