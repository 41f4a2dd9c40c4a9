"""A store of libraries of one's own recordings, searched as AudioSet is: :class:`Library`.

One object per process holds the store (a Milvus Lite file can be held by one process only) and the embedder,
each made once and shared by every call; it is thread-safe, synchronous, and front ends run it in worker threads.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import Audio, check_file
from musrec.audio.limits import AudioLimits
from musrec.config.library import LibraryConfig
from musrec.library.errors import UnknownTrackError
from musrec.library.milvus import TOKEN_VARIABLE
from musrec.library.results import AddResult, CheckReport, LibraryMatch, LibraryRecommendation, LostSegments
from musrec.library.segments import Segments, add_workers, decode_track, embed_segments, query_vector
from musrec.library.store import MilvusStore, valid_library_name
from musrec.library.tracks import MIN_PREFIX, TRACK_ID_DIGITS, Tags, TrackInfo, content_id, read_tags, title_of
from musrec.recommend.results import Query
from musrec.timecode import format_timecode

if TYPE_CHECKING:
    from musrec.config import Config
    from musrec.embedding.base import Embedder
    from musrec.links.fetch import LinkTarget
    from musrec.links.options import FetchOptions

log = logging.getLogger(__name__)

LIBRARY_PREFIX = "library:"
_TRACK_REF = re.compile(r"^library:(?P<id>[0-9a-fA-F]{1,64})(?:@(?P<start>[0-9]+(?:\.[0-9]+)?))?$")
RECALL_QUERIES = 20
RECALL_MAX_SEGMENTS = 200_000  # above, recall is measured once (exact searches take seconds each)
SEARCH_SLACK = 8  # results asked for beyond k: hits of an interrupted add's leftovers are dropped
CUT_TOLERANCE_S = 0.5  # a link's media this much longer than what was fetched is cut (codec padding is less)


@dataclass(frozen=True)
class Prepared:
    """A recording read and decoded, ready to embed (what an add's reader thread hands its writer)."""

    track_id: str
    tags: Tags
    name: str
    samples_s: float
    audio: Audio


@dataclass(frozen=True)
class Recall:
    """An index's recall@10 against exact search, measured on ``queries`` stored segments."""

    index: str
    recall_at_10: float
    queries: int


@dataclass(frozen=True)
class TrackQuery:
    """A track of the library as a query: one of its stored segments (its vector), nothing decoded again."""

    track: TrackInfo
    start_s: float
    end_s: float
    vector: npt.NDArray[np.float32]

    @property
    def query(self) -> Query:
        """As a query shown: ``library:TRACK@START``, the track's title in ``extra["title"]``."""
        source = f"{LIBRARY_PREFIX}{self.track.track_id}@{self.start_s:g}"
        extra: dict[str, object] = {"title": self.track.title, "track_id": self.track.track_id}
        if self.track.artist:
            extra["artist"] = self.track.artist
        return Query(kind="library", source=source, start_s=self.start_s, end_s=self.end_s, extra=extra)


class Library:
    """Libraries of tracks in one Milvus store, with the embedder that embeds what is added."""

    def __init__(self, store: MilvusStore, *, options: LibraryConfig, limits: AudioLimits,
                 embedder: Embedder | None = None, make_embedder: Callable[[], Embedder] | None = None,
                 embed_threads: int | None = None) -> None:  # fmt: skip
        self.store = store
        self.options = options
        # A library reads whole recordings: its own size limit, the decode budget of [audio].
        self.limits = AudioLimits(
            max_bytes=options.max_bytes,
            max_duration_s=options.max_track_s,
            min_duration_s=limits.min_duration_s,
            decode_timeout_s=limits.decode_timeout_s,
        )
        if embedder is None and make_embedder is None:
            raise ValueError("an embedder, or how to make one, is needed")
        self._embedder = embedder
        self._make_embedder = make_embedder
        self._owns_embedder = embedder is None  # made here, when first needed: closed with the library
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one check-then-write at a time: the same content is never added twice
        # MAX servers: several windows at once, so every server works. In process (None): a track's forward passes,
        # as many at once as an add runs (the command sizes the model's threads for that many).
        threads = add_workers() if embed_threads is None else max(1, embed_threads)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="library-embed")

    @classmethod
    def from_config(cls, config: Config, *, embedder: Embedder | None = None) -> Library:
        """The store at ``[library] uri`` (default: ``library.db`` in the data directory), its token from
        ``MUSREC_LIBRARY_TOKEN``. LibraryBusyError, LibraryFormatError or LibraryError if it cannot be opened."""
        from musrec.configured import make_embedder

        options = config.library
        store = MilvusStore(config.library_uri, token=os.environ.get(TOKEN_VARIABLE), prefix=options.collection,
                            index=options.index, timeout_s=options.timeout_s)  # fmt: skip
        threads = 2 * len(config.max.urls) if config.embedder.kind == "max" else None
        return cls(store, options=options, limits=config.audio, embedder=embedder,
                   make_embedder=lambda: make_embedder(config), embed_threads=threads)  # fmt: skip

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store (a Milvus Lite file's lock), the embedding threads, and an embedder this library made
        (MAX servers' sessions; one it was given is its giver's to close)."""
        self._pool.shutdown(wait=True)
        self.store.close()
        if not self._owns_embedder:
            return
        with self._lock:
            made, self._embedder = self._embedder, None
        close = getattr(made, "close", None)
        if callable(close):
            close()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                assert self._make_embedder is not None
                self._embedder = self._make_embedder()
            return self._embedder

    # ---- adding -------------------------------------------------------------------------------------------------

    def add_track(self, source: Path | bytes, *, library: str, name: str | None = None, title: str | None = None,
                  artist: str | None = None, album: str | None = None) -> AddResult:  # fmt: skip
        """Add one recording (a path, or encoded bytes shown as ``name``). The same content again adds nothing
        (``added`` False). Raises DecodeError, TooShortError, TooLongError (over ``[library] max_bytes``),
        LibraryNameError, LibraryBusyError, LibraryError."""
        valid_library_name(library)
        prepared = self.prepare(source, library=library, name=name)
        if isinstance(prepared, TrackInfo):
            return AddResult(prepared, added=False)
        tags = Tags(title or prepared.tags.title, artist or prepared.tags.artist, album or prepared.tags.album)
        return self.store_prepared(replace(prepared, tags=tags), library=library)

    def add_link(self, target: LinkTarget, *, library: str, options: FetchOptions) -> AddResult:
        """Add a link's media (a link the host policy passed: :func:`~musrec.links.fetch.link_target`), up to
        ``[library] max_track_s`` from its start, titled by the video's title. Its identity is the video (or the
        media URL), not the bytes of a download: the same video again adds nothing. fetch_window's errors."""
        from musrec.links.fetch import fetch_window  # yt-dlp, imported when a link is first added

        valid_library_name(library)
        track_id = content_id(f"link:{target.cache_id}".encode())
        present = self.store.tracks(library, [track_id])
        if present:
            return AddResult(present[0], added=False)
        fetched = fetch_window(target, start_s=0.0, duration_s=self.options.max_track_s, options=options,
                               limits=self.limits)  # fmt: skip
        # Longer than what was fetched: by the media's length where known, else by a window as long as asked for.
        fetched_s = len(fetched.samples) / fetched.sample_rate
        if fetched.duration_s is not None:
            cut = fetched.duration_s > fetched_s + CUT_TOLERANCE_S
        else:
            cut = fetched_s >= self.options.max_track_s - CUT_TOLERANCE_S
        audio = Audio(fetched.samples, sample_rate=fetched.sample_rate, source_duration_s=None if cut else fetched_s)
        tags = Tags(title=fetched.title or target.url)
        return self.store_prepared(Prepared(track_id, tags, target.url, audio.duration_s, audio), library=library)

    def prepare(self, source: Path | bytes, *, library: str, name: str | None = None) -> Prepared | TrackInfo:
        """Read a recording: its id, and the track already there if any (nothing decoded then), else its tags and
        audio. Decoding's errors; DecodeError for a file that cannot be read."""
        if isinstance(source, Path):
            check_file(source, self.limits)
        try:
            track_id = content_id(source)
        except OSError as err:
            log.debug("cannot read %s: %s", source, err)
            from musrec.errors import DecodeError

            raise DecodeError("the file cannot be read") from None
        present = self.store.tracks(library, [track_id])
        if present:
            return present[0]
        shown = name or (source.name if isinstance(source, Path) else "upload")
        file = name or (str(source) if isinstance(source, Path) else shown)  # a name given wins (an upload's)
        audio = decode_track(source if isinstance(source, bytes) else str(source),
                             max_track_s=self.options.max_track_s, limits=self.limits)  # fmt: skip
        return Prepared(track_id, read_tags(source), file, audio.duration_s, audio)

    def store_prepared(self, prepared: Prepared, *, library: str) -> AddResult:
        """Embed and store a prepared recording: its segments, then its row (the mark that it is complete).
        The same content stored meanwhile (a copy read at the same time) is not stored again."""
        segments: Segments = embed_segments(prepared.audio, self.embedder, pool=self._pool)
        with self._write_lock:
            present = self.store.tracks(library, [prepared.track_id])
            if present:
                return AddResult(present[0], added=False)
            leftovers = self.store.write_segments(library, prepared.track_id, segments)
            if leftovers:
                log.info("replaced %d segments an interrupted add left of %s", leftovers, prepared.name)
            track = TrackInfo(
            library=library, track_id=prepared.track_id, title=title_of(prepared.tags, Path(prepared.name).name),
            artist=prepared.tags.artist, album=prepared.tags.album, file=prepared.name,
                duration_s=segments.duration_s, segments=len(segments.windows), added_at=time.time(),
            )  # fmt: skip
            self.store.mark_complete(track)
        cut = prepared.audio.source_duration_s is None  # the decode stopped at max_track_s, before the end
        if cut:
            log.info("%s: longer than [library] max_track_s, its first %s stored", prepared.name,
                     format_timecode(self.options.max_track_s))  # fmt: skip
        return AddResult(track, added=True, completed=leftovers > 0, cut=cut)

    # ---- removing and listing -----------------------------------------------------------------------------------

    def remove(self, library: str, track_ids: Sequence[str]) -> list[TrackInfo]:
        """Remove tracks (ids or unique prefixes) with all their segments; what was removed. UnknownTrackError
        names an id that matches no track or several (nothing is removed then)."""
        tracks = [self.track(library, t) for t in track_ids]
        unique = list({t.track_id: t for t in tracks}.values())
        self.store.delete_tracks(library, [t.track_id for t in unique])
        self.store.flush()
        return unique

    def check(self, library: str, *, repair: bool = False) -> CheckReport:
        """Whether every complete track of the library has all the segments it was stored with (a damaged store can
        lose some: a data file lost or cut short); with ``repair``, the tracks that lost segments are removed, so
        that an add of their files stores them whole again. The segments an unfinished add left are counted, not
        removed: an add in progress on a server writes such segments, and the next add of their file replaces
        them (they are never found meanwhile)."""
        valid_library_name(library)
        tracks = self.store.tracks(library)
        stored = self.store.segments_per_track(library)
        damaged = tuple(LostSegments(t, stored.get(t.track_id, 0)) for t in tracks
                        if stored.get(t.track_id, 0) != t.segments)  # fmt: skip
        complete = {t.track_id for t in tracks}
        unfinished = {track: n for track, n in stored.items() if track not in complete}
        if repair and damaged:
            self.store.delete_tracks(library, [d.track.track_id for d in damaged])
            self.store.flush()
            log.info("removed %d damaged tracks of library %s", len(damaged), library)
        return CheckReport(library, len(tracks), damaged, len(unfinished), sum(unfinished.values()),
                           repaired=repair and bool(damaged))  # fmt: skip

    def tracks(self, library: str) -> list[TrackInfo]:
        """Every complete track of the library, by title then artist."""
        valid_library_name(library)
        return sorted(self.store.tracks(library), key=lambda t: (t.title.casefold(), (t.artist or "").casefold()))

    def track(self, library: str, track_id: str) -> TrackInfo:
        """One track by its id or a unique prefix of at least 6 hex digits; UnknownTrackError if none or several."""
        valid_library_name(library)
        wanted = track_id.strip().lower().removeprefix(LIBRARY_PREFIX)
        if not re.fullmatch(f"[0-9a-f]{{{MIN_PREFIX},{TRACK_ID_DIGITS}}}", wanted):
            raise UnknownTrackError(
                f"{track_id[:40]!r} is not a track id: {MIN_PREFIX} to {TRACK_ID_DIGITS} hex digits, "
                f"as `musrec library list` shows them"
            )
        found = self.store.track_ids(library, wanted)
        if len(found) != 1:
            why = "no track" if not found else f"{len(found)} tracks (type more of the id)"
            raise UnknownTrackError(f"{wanted} names {why} in library {library}")
        return self.store.tracks(library, found)[0]

    def count(self, library: str) -> int:
        """Complete tracks in the library (for a quota)."""
        valid_library_name(library)
        return self.store.counts(library).get(library, 0)

    def counts(self) -> dict[str, int]:
        """Complete tracks per library, every library in the store."""
        return self.store.counts()

    # ---- searching ----------------------------------------------------------------------------------------------

    def search(self, rows: npt.NDArray[np.uint8], *, library: str, k: int = 10, one_per_track: bool = True,
               exclude_tracks: Collection[str] = ()) -> list[LibraryMatch]:  # fmt: skip
        """The tracks (or segments) of ``library`` nearest to a query's [n, 128] uint8 rows, best first, leaving
        out ``exclude_tracks`` (ids: those a result already showed)."""
        return self.search_vector(query_vector(rows), library=library, k=k, one_per_track=one_per_track,
                                  exclude_tracks=exclude_tracks)  # fmt: skip

    def search_vector(self, vector: npt.NDArray[np.float32], *, library: str, k: int = 10, one_per_track: bool = True,
                      exclude_tracks: Collection[str] = ()) -> list[LibraryMatch]:  # fmt: skip
        """:meth:`search` with a vector in the library's representation (a stored segment's)."""
        valid_library_name(library)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        hits = self.store.search(vector, library=library, limit=k + SEARCH_SLACK, one_per_track=one_per_track,
                                 exclude_tracks=exclude_tracks)  # fmt: skip
        known = {t.track_id: t for t in self.store.tracks(library, sorted({h[0] for h in hits}))}
        # Segments of a track without its row are an interrupted add's: never shown.
        return [LibraryMatch(known[t], s, e, score) for t, s, e, score in hits if t in known][:k]

    def resolve_track(self, text: str, *, library: str) -> TrackQuery:
        """``library:TRACK[@START]``: the track's stored segment at START seconds (default: its middle segment, past
        any intro), nothing decoded or embedded. UnknownTrackError for no such track."""
        m = _TRACK_REF.fullmatch(text.strip())
        if m is None:
            raise UnknownTrackError(f"expected {LIBRARY_PREFIX}TRACK[@SECONDS], got {text[:60]!r}")
        track = self.track(library, m["id"])
        segments = self.store.segment_vectors(library, track.track_id)
        if not segments:
            raise UnknownTrackError(f"track {track.track_id} has no stored segments: add its file again")
        if m["start"] is None:
            start, end, vector = segments[len(segments) // 2]
        else:
            at = float(m["start"])
            start, end, vector = next((s for s in reversed(segments) if s[0] <= at), segments[0])
        return TrackQuery(track, start, end, vector)

    def recommend_track(self, query: TrackQuery, *, library: str, k: int = 10, one_per_track: bool = True,
                        exclude_tracks: Collection[str] = ()) -> LibraryRecommendation:  # fmt: skip
        """What else in the library sounds like one of its tracks (the track itself left out)."""
        left_out = {query.track.track_id, *exclude_tracks}
        matches = self.search_vector(query.vector, library=library, k=k, one_per_track=one_per_track,
                                     exclude_tracks=left_out)  # fmt: skip
        return LibraryRecommendation(query.query, library, tuple(matches))

    def recall(self) -> Recall | None:
        """The index's recall@10 against exact search: measured now on a store of up to ``RECALL_MAX_SEGMENTS``
        segments, else the last one recorded (measured now if none is)."""
        recorded = self.store.recorded_recall()
        if recorded is not None and self.store.segment_count() > RECALL_MAX_SEGMENTS:
            return Recall(self.store.index_type, recorded, 0)
        return self.measure_recall()

    def measure_recall(self, *, queries: int = RECALL_QUERIES) -> Recall | None:
        """recall@10 of the store's index against exact search, stored segments as the queries (each in its own
        library), recorded with the store (as an AudioSet index's manifest records its own). None when empty."""
        sample = self.store.sample_segments(queries)
        if not sample:
            return None
        found = 0.0
        for library, vector in sample:

            def top(
                exact: bool, library: str = library, vector: npt.NDArray[np.float32] = vector
            ) -> set[tuple[str, float]]:
                hits = self.store.search(vector, library=library, limit=10, one_per_track=False, exact=exact)
                return {(h[0], h[1]) for h in hits}

            truth = top(True)
            found += len(top(False) & truth) / max(1, len(truth))
        recall = Recall(self.store.index_type, found / len(sample), len(sample))
        self.store.record_recall(recall.recall_at_10)
        return recall

    def recommend(self, rows: npt.NDArray[np.uint8], query: Query, *, library: str, k: int = 10,
                  one_per_track: bool = True) -> LibraryRecommendation:  # fmt: skip
        """:meth:`search`, with the query it answers (a resolved file, link or AudioSet segment)."""
        matches = self.search(rows, library=library, k=k, one_per_track=one_per_track)
        return LibraryRecommendation(query, library, tuple(matches))
