"""Where a library lives: Milvus, through pymilvus's MilvusClient, embedded (Milvus Lite, a local directory) or a
server (``http(s)://host:19530``, standalone or a cluster): only the URI and the token change.

Two collections, every library in each (its name is the partition key, so millions of libraries share them and a
search reads only its own): ``<prefix>_segments`` holds one row per 10-s segment (the vector, the track it belongs
to, its start and end), ``<prefix>_tracks`` one row per complete track (its tags and file; Milvus wants a vector in
every collection, so a constant 2-d one). A track is written segments first, then its row: a track row is the mark
that the track is complete, and a crash between the two leaves segments without a row, which searches never show
and the next add of that file replaces. Removal goes the other way: the row, then the segments.

The schema's version is a property of both collections; a store of another version is refused in one line.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec.config.library import NAME_HELP, NAME_PATTERN, is_local
from musrec.library.errors import LibraryError, LibraryFormatError, LibraryNameError
from musrec.library.milvus import connect, failure, logged, release
from musrec.library.segments import REPRESENTATION, Segments
from musrec.library.tracks import TRACK_ID_DIGITS, TrackInfo

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_KEY = "musrec.library_schema"
REPRESENTATION_KEY = "musrec.representation"
RECALL_KEY = "musrec.recall_at_10"
DIMENSION = 1280
MARK = [1.0, 0.0]  # the tracks collection's constant vector
TEXT_CHARS = 256
FILE_CHARS = 1024
QUERY_LIMIT = 16_384  # Milvus's largest limit for one query or search
INSERT_ROWS = 2_000  # rows per insert call: about 10 MB of vectors
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
HNSW_EF = 128
IVF_PROBE = 32
# A Milvus server's default (Bounded) lets a read miss writes of the last few seconds: a copy added twice in one run,
# a removed track still listed, a track just added not found. Strong waits for them (Milvus Lite is so already).
CONSISTENCY = "Strong"
GROUP_FETCH = 8  # grouping by track in the client: segments fetched per track asked for, then that many times more

Hit = tuple[str, float, float, float]  # track id, segment start and end, cosine similarity


def valid_library_name(name: str) -> str:
    """``name`` if it can name a library (a Discord server's id as a string does), else LibraryNameError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LibraryNameError(f"a library name is {NAME_HELP} characters, not {str(name)[:70]!r}")
    return name


def _quoted(text: str) -> str:
    """A string literal for a Milvus filter: only names and ids already checked get here, but quote safely anyway."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusStore:
    """The two collections at one URI. Thread-safe as pymilvus's client is."""

    def __init__(self, uri: str, *, token: str | None = None, prefix: str = "musrec", index: str = "auto",
                 timeout_s: float = 30.0, create: bool = True) -> None:  # fmt: skip
        """The collections are made if missing, unless ``create`` is false: ``made`` then says whether they exist
        (a store that has none is only looked at: nothing else may be called)."""
        self.uri = uri
        self.local = is_local(uri)
        self.segments_name = f"{prefix}_segments"
        self.tracks_name = f"{prefix}_tracks"
        # Milvus Lite: FLAT (exact) by default, about 0.14 s a query at 20,000 segments; its IVF_FLAT (faiss) is
        # faster from there on (0.26 s against about 1 s at 100,000, recall@10 1.000: bench/library_bench.py) but
        # trains on every small flushed segment and faiss then warns on stderr. A server builds HNSW as it goes.
        self.index_type = index if index != "auto" else ("FLAT" if self.local else "HNSW")
        self.timeout_s = timeout_s
        self.with_token = bool(token)  # what a refusal says (the token itself is not kept)
        self.groups = True  # whether to ask the server to group a search by track (until it is seen to fall short)
        self.made = True
        self._client = connect(uri, token=token, local=self.local, timeout_s=timeout_s)
        try:
            self._open_collections(create=create)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection; the last store of a Milvus Lite directory in this process also stops its embedded
        server, which releases the directory's lock for other processes."""
        client, self._client = getattr(self, "_client", None), None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.close()
        if self.local:
            release(self.uri)

    # ---- schema -------------------------------------------------------------------------------------------------

    def _open_collections(self, *, create: bool) -> None:
        with self._errors("open the library"):
            existing = set(self._c.list_collections(timeout=self.timeout_s))
            if not create and not {self.segments_name, self.tracks_name} <= existing:
                self.made = False
                return
            for name in (self.segments_name, self.tracks_name):
                if name in existing:
                    self._check_version(name)
                    if not self._c.list_indexes(name, timeout=self.timeout_s):  # made, then its index refused
                        self._c.create_index(name, self._index_params(name), timeout=self.timeout_s)
                else:
                    self._create(name)
                self._c.load_collection(name, timeout=self.timeout_s)

    def _check_version(self, name: str) -> None:
        properties = self._c.describe_collection(name, timeout=self.timeout_s).get("properties", {})
        found = properties.get(SCHEMA_KEY)
        if found == str(SCHEMA_VERSION):
            return
        where = self.uri if self.local else f"collection {name} at {self.uri}"
        if found is None or not str(found).isdigit():
            raise LibraryFormatError(f"{where} is not a musrec library: point [library] uri elsewhere")
        if int(found) > SCHEMA_VERSION:
            raise LibraryFormatError(
                f"the library at {where} was written by a newer musrec (library schema {found}; this one reads "
                f"{SCHEMA_VERSION}): upgrade musrec"
            )
        raise LibraryFormatError(
            f"the library at {where} was written by an older musrec (library schema {found}; this one reads "
            f"{SCHEMA_VERSION}): add the tracks again into a new library ([library] uri)"
        )

    def _create(self, name: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, max_length=160, is_primary=True)
        schema.add_field("library", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("track", DataType.VARCHAR, max_length=TRACK_ID_DIGITS)
        if name == self.segments_name:
            schema.add_field("start_s", DataType.FLOAT)
            schema.add_field("end_s", DataType.FLOAT)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIMENSION)
        else:
            for field in ("title", "artist", "album"):
                schema.add_field(field, DataType.VARCHAR, max_length=TEXT_CHARS)
            schema.add_field("file", DataType.VARCHAR, max_length=FILE_CHARS)
            schema.add_field("duration_s", DataType.FLOAT)
            schema.add_field("segments", DataType.INT64)
            schema.add_field("added_at", DataType.DOUBLE)
            schema.add_field("mark", DataType.FLOAT_VECTOR, dim=len(MARK))
        properties = {SCHEMA_KEY: str(SCHEMA_VERSION), REPRESENTATION_KEY: REPRESENTATION}
        # A server makes the collection, then its index: if the index is refused (a privilege missing, the server
        # gone), the next open makes it.
        self._c.create_collection(name, schema=schema, index_params=self._index_params(name), properties=properties,
                                  consistency_level=CONSISTENCY, timeout=self.timeout_s)  # fmt: skip
        log.info(
            "created %s (%s) at %s", name, self.index_type if name == self.segments_name else "catalogue", self.uri
        )

    def _index_params(self, name: str) -> Any:
        index = self._c.prepare_index_params()
        if name == self.segments_name:
            params = (
                HNSW_PARAMS if self.index_type == "HNSW" else {"nlist": 1024} if self.index_type == "IVF_FLAT" else {}
            )
            index.add_index("vector", index_type=self.index_type, metric_type="COSINE", params=params)
        else:
            index.add_index("mark", index_type="FLAT", metric_type="L2")
        return index

    # ---- writing ------------------------------------------------------------------------------------------------

    def write_segments(self, library: str, track_id: str, segments: Segments) -> int:
        """A track's segments, replacing any an interrupted add left (the track is not complete until
        :meth:`mark_complete`); how many such leftovers there were."""
        leftovers = self.delete_segments(library, track_id)
        n = len(segments.windows)
        self.insert_segments(
            library,
            [track_id] * n,
            np.array([[w.start_s, w.end_s] for w in segments.windows], dtype=np.float32).reshape(n, 2),
            segments.vectors,
        )
        return leftovers

    def insert_segments(self, library: str, track_ids: Sequence[str], spans: npt.NDArray[np.float32],
                        vectors: npt.NDArray[np.float32]) -> None:  # fmt: skip
        """Segment rows as they are (the one insert path): ``spans[i]`` is (start, end) of ``vectors[i]`` in track
        ``track_ids[i]``; a track's segments are numbered in order of their start."""
        number: dict[str, int] = {}
        rows = []
        for track_id, (start, end), vector in zip(track_ids, spans.tolist(), vectors, strict=True):
            i = number[track_id] = number.get(track_id, -1) + 1
            rows.append({"pk": f"{library}/{track_id}/{i}", "library": library, "track": track_id,
                         "start_s": start, "end_s": end, "vector": vector})  # fmt: skip
        with self._errors("store the track's segments"):
            for first in range(0, len(rows), INSERT_ROWS):
                self._c.insert(self.segments_name, rows[first : first + INSERT_ROWS], timeout=self.timeout_s)

    def mark_complete(self, track: TrackInfo) -> None:
        """The track's row: from now on it is listed and found."""
        row = {
            "pk": f"{track.library}/{track.track_id}", "library": track.library, "track": track.track_id,
            "title": track.title[:TEXT_CHARS], "artist": (track.artist or "")[:TEXT_CHARS],
            "album": (track.album or "")[:TEXT_CHARS], "file": track.file[:FILE_CHARS],
            "duration_s": track.duration_s, "segments": track.segments, "added_at": track.added_at, "mark": MARK,
        }  # fmt: skip
        with self._errors("store the track"):
            self._c.insert(self.tracks_name, [row], timeout=self.timeout_s)

    def delete_tracks(self, library: str, track_ids: Sequence[str]) -> None:
        """The tracks' rows first (they stop being found), then all their segments."""
        if not track_ids:
            return
        with self._errors("remove the tracks"):
            self._c.delete(self.tracks_name, filter=self._tracks_filter(library, track_ids), timeout=self.timeout_s)
        for track_id in track_ids:
            self.delete_segments(library, track_id)

    def delete_segments(self, library: str, track_id: str) -> int:
        """Every segment row of one track; how many there were."""
        with self._errors("remove the track's segments"):
            deleted = self._c.delete(self.segments_name, filter=self._tracks_filter(library, [track_id]),
                                     timeout=self.timeout_s)  # fmt: skip
        return len(deleted) if isinstance(deleted, list) else int(dict(deleted).get("delete_count", 0))

    def flush(self) -> None:
        """Persist what was written: Milvus Lite's write-ahead log into its files. A server has kept what it
        acknowledged in its own log (a Milvus standalone killed after an add comes back with every track: tested);
        its flush would only seal segments early, about 1.5 s a collection, so it is not asked for."""
        if not self.local:
            return
        with self._errors("save the library"):
            for name in (self.segments_name, self.tracks_name):
                self._c.flush(name, timeout=self.timeout_s)

    # ---- reading ------------------------------------------------------------------------------------------------

    def tracks(self, library: str, track_ids: Sequence[str] | None = None) -> list[TrackInfo]:
        """Complete tracks of ``library`` (all, or those of ``track_ids`` that are complete)."""
        if track_ids is not None and not track_ids:
            return []
        expr = self._tracks_filter(library, track_ids) if track_ids is not None else f"library == {_quoted(library)}"
        fields = ["track", "title", "artist", "album", "file", "duration_s", "segments", "added_at"]
        with self._errors("read the library"):
            rows = self._query_all(self.tracks_name, expr, fields)
        return [_track(library, row) for row in rows]

    def track_ids(self, library: str, prefix: str) -> list[str]:
        """Ids of complete tracks that start with ``prefix`` (hex digits only: checked by the caller)."""
        expr = f"library == {_quoted(library)} and track like {_quoted(prefix + '%')}"
        with self._errors("read the library"):
            return sorted(row["track"] for row in self._query_all(self.tracks_name, expr, ["track"]))

    def counts(self, library: str | None = None) -> dict[str, int]:
        """Complete tracks per library (one library's, or every library's)."""
        expr = f"library == {_quoted(library)}" if library is not None else 'library != ""'
        with self._errors("read the library"):
            if library is not None:
                rows = self._c.query(self.tracks_name, filter=expr, output_fields=["count(*)"], **self._read)
                return {library: int(rows[0]["count(*)"])} if rows and rows[0]["count(*)"] else {}
            counts: dict[str, int] = {}
            for row in self._query_all(self.tracks_name, expr, ["library"]):
                counts[row["library"]] = counts.get(row["library"], 0) + 1
            return counts

    def segment_count(self, library: str | None = None, track_id: str | None = None) -> int:
        """Segment rows of a library, or of one of its tracks (complete or not), or of every library."""
        expr = self._tracks_filter(library, [track_id]) if library and track_id else 'library != ""'
        if library and not track_id:
            expr = f"library == {_quoted(library)}"
        with self._errors("read the library"):
            rows = self._c.query(self.segments_name, filter=expr, output_fields=["count(*)"], **self._read)
        return int(rows[0]["count(*)"]) if rows else 0

    def segments_per_track(self, library: str) -> dict[str, int]:
        """Segment rows of each track of ``library`` (complete or not), by track id: every row's track read."""
        with self._errors("read the library"):
            rows = self._query_all(self.segments_name, f"library == {_quoted(library)}", ["track"], batch=QUERY_LIMIT)
        return dict(Counter(row["track"] for row in rows))

    def segment_vectors(self, library: str, track_id: str) -> list[tuple[float, float, npt.NDArray[np.float32]]]:
        """A track's stored segments: (start, end, vector), by start."""
        with self._errors("read the library"):
            rows = self._query_all(
                self.segments_name, self._tracks_filter(library, [track_id]), ["start_s", "end_s", "vector"]
            )
        return sorted((float(r["start_s"]), float(r["end_s"]), np.asarray(r["vector"], np.float32)) for r in rows)

    def search(self, vector: npt.NDArray[np.float32], *, library: str, limit: int, one_per_track: bool,
               exclude_tracks: Collection[str] = (), exact: bool = False) -> list[Hit]:  # fmt: skip
        """The nearest segments of ``library``: (track id, start, end, cosine similarity), best first; with
        ``one_per_track``, only each track's nearest. ``exact`` searches every vector of the library (what recall is
        measured against)."""
        expr = f"library == {_quoted(library)}"
        if exclude_tracks:
            expr += f" and track not in [{', '.join(_quoted(t) for t in sorted(exclude_tracks))}]"
        limit = min(limit, QUERY_LIMIT)
        if not one_per_track:
            return self._search(vector, expr, limit, exact=exact)
        if not self.groups:
            return self._first_per_track(vector, expr, limit, exact=exact)
        hits = self._search(vector, expr, limit, exact=exact, group=True)
        tracks = len({hit[0] for hit in hits})
        if tracks == len(hits) == limit:
            return hits
        # Fewer tracks than asked for: the library may have no more, or the server grouped only the nearest segments
        # (Milvus Lite: one track's segments can fill them all). Segments of one track more than once: the server
        # ignored group_by_field (Milvus before 2.4). Either way, group here; from now on, once the server is seen
        # to fall short.
        grouped = self._first_per_track(vector, expr, limit, exact=exact)
        if tracks < len(hits) or len(grouped) > tracks:
            self.groups = False
            log.info("the Milvus server at %s does not group a search by track fully: grouping here", self.uri)
        return grouped

    def _first_per_track(self, vector: npt.NDArray[np.float32], expr: str, limit: int, *, exact: bool) -> list[Hit]:
        """Each track's nearest segment, the ``limit`` nearest tracks: from the nearest segments, fetched in growing
        numbers until ``limit`` tracks are among them or every segment of the library has been seen."""
        fetch = min(limit * GROUP_FETCH, QUERY_LIMIT)
        while True:
            hits = self._search(vector, expr, fetch, exact=exact)
            first: dict[str, Hit] = {}
            for hit in hits:
                first.setdefault(hit[0], hit)
            if len(first) >= limit or len(hits) < fetch or fetch == QUERY_LIMIT:
                return list(first.values())[:limit]
            fetch = min(fetch * GROUP_FETCH, QUERY_LIMIT)

    def _search(self, vector: npt.NDArray[np.float32], expr: str, limit: int, *, exact: bool,
                group: bool = False) -> list[Hit]:  # fmt: skip
        options: dict[str, Any] = {"search_params": self._search_params(exact, limit)}
        if group:
            options["group_by_field"] = "track"
        with self._errors("search the library"):
            hits = self._c.search(self.segments_name, data=[vector.tolist()], limit=limit, filter=expr,
                                  output_fields=["track", "start_s", "end_s"], **self._read, **options)  # fmt: skip
        return [
            (
                hit["entity"]["track"],
                float(hit["entity"]["start_s"]),
                float(hit["entity"]["end_s"]),
                float(hit["distance"]),
            )
            for hit in hits[0]
        ]

    def _search_params(self, exact: bool, limit: int) -> dict[str, Any]:
        if self.index_type == "IVF_FLAT":
            return {"params": {"nprobe": 1024 if exact else IVF_PROBE}}
        if self.index_type == "HNSW":  # ef is at least the number of results (Milvus refuses less)
            return {"params": {"ef": QUERY_LIMIT if exact else max(HNSW_EF, limit)}}
        return {}

    def sample_segments(self, count: int) -> list[tuple[str, npt.NDArray[np.float32]]]:
        """Up to ``count`` stored segments, whichever Milvus returns first: (library, vector)."""
        with self._errors("read the library"):
            rows = self._c.query(self.segments_name, filter='library != ""', output_fields=["library", "vector"],
                                 limit=count, **self._read)  # fmt: skip
        return [(row["library"], np.asarray(row["vector"], np.float32)) for row in rows]

    def record_recall(self, recall_at_10: float) -> None:
        """Keep the measured recall@10 of the index against exact search with the collection."""
        with self._errors("save the library"):
            self._c.alter_collection_properties(self.segments_name, properties={RECALL_KEY: f"{recall_at_10:.4f}"},
                                                timeout=self.timeout_s)  # fmt: skip

    def recorded_recall(self) -> float | None:
        with self._errors("read the library"):
            described = self._c.describe_collection(self.segments_name, timeout=self.timeout_s)
            value = described.get("properties", {}).get(RECALL_KEY)
        return float(value) if value is not None else None

    # ---- helpers ------------------------------------------------------------------------------------------------

    @property
    def _c(self) -> Any:
        if self._client is None:
            raise LibraryError("the library is closed")
        return self._client

    @property
    def _read(self) -> dict[str, Any]:
        """Every read sees every write before it (the deadline, and :data:`CONSISTENCY` also on collections made
        before it was their default)."""
        return {"timeout": self.timeout_s, "consistency_level": CONSISTENCY}

    def _tracks_filter(self, library: str, track_ids: Sequence[str] | None) -> str:
        ids = ", ".join(_quoted(t) for t in track_ids or ())
        return f"library == {_quoted(library)} and track in [{ids}]"

    def _query_all(self, collection: str, expr: str, fields: list[str], *, batch: int = 1000) -> list[dict[str, Any]]:
        """Every row that ``expr`` selects, ``batch`` rows a call (up to QUERY_LIMIT: small rows, such as one field of
        every segment, go faster in big batches)."""
        rows: list[dict[str, Any]] = []
        iterator = self._c.query_iterator(collection, batch_size=batch, filter=expr, output_fields=fields,
                                          **self._read)  # fmt: skip
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """pymilvus's failures (and gRPC's: a server that did not answer in time) as one line that names what could
        not be done; the details go to the log."""
        from grpc import RpcError
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except (MilvusException, RpcError) as err:
            log.info("could not %s at %s: %s", doing, self.uri, logged(err))
            raise failure(doing, self.uri, err, local=self.local, timeout_s=self.timeout_s,
                          token=self.with_token) from None  # fmt: skip


def _track(library: str, row: dict[str, Any]) -> TrackInfo:
    return TrackInfo(
        library=library, track_id=row["track"], title=row["title"], artist=row["artist"] or None,
        album=row["album"] or None, file=row["file"], duration_s=float(row["duration_s"]),
        segments=int(row["segments"]), added_at=float(row["added_at"]),
    )  # fmt: skip
