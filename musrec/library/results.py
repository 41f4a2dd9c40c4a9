"""What the library's operations return: frozen dataclasses, each with ``to_json()``."""

from __future__ import annotations

from dataclasses import dataclass

from musrec.library.tracks import TrackInfo
from musrec.recommend.results import Query


@dataclass(frozen=True)
class AddResult:
    """One recording added: ``added`` False when the same content was already in the library (nothing written);
    ``cut`` when the recording is longer than ``[library] max_track_s``, so that only its first part is stored."""

    track: TrackInfo
    added: bool
    completed: bool = False  # an interrupted add had left segments of it, now replaced
    cut: bool = False


@dataclass(frozen=True)
class AddProgress:
    """Where an add of many files stands, after each file."""

    done: int
    total: int
    added: int
    present: int
    failed: int
    seconds: float

    @property
    def tracks_per_min(self) -> float:
        """Tracks embedded and stored per minute (those already there cost only their hash, not counted)."""
        return 60.0 * self.added / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class AddReport:
    """An add of many files: tracks ``added``, already ``present``, ``completed`` (an interrupted add's leftovers
    replaced), ``not_audio`` (files ffmpeg refused whose names did not say audio, or skipped by their extension),
    ``failed``: (file, one-line reason) for each damaged file, and ``cut``: tracks added that are longer than
    ``[library] max_track_s`` (their first part is stored)."""

    added: int
    present: int
    completed: int
    not_audio: int
    failed: tuple[tuple[str, str], ...]
    seconds: float
    segments: int
    cut: int = 0

    @property
    def tracks_per_min(self) -> float:
        return 60.0 * self.added / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "added": self.added,
            "present": self.present,
            "completed": self.completed,
            "not_audio": self.not_audio,
            "failed": [{"file": f, "reason": r} for f, r in self.failed],
            "segments": self.segments,
            "cut": self.cut,
            "seconds": round(self.seconds, 3),
            "tracks_per_min": round(self.tracks_per_min, 2),
        }


@dataclass(frozen=True)
class LostSegments:
    """A complete track of which the store holds ``stored`` segments where it recorded ``track.segments``."""

    track: TrackInfo
    stored: int

    def to_json(self) -> dict[str, object]:
        return {**self.track.to_json(), "stored_segments": self.stored}


@dataclass(frozen=True)
class CheckReport:
    """A library checked: its ``tracks`` (complete), those whose segments are not all stored (``damaged``: a damaged
    store lost them; they are found by what is left, or not at all), and the segments of ``unfinished`` adds (never
    found; an add of their file replaces them). ``repaired``: the damaged tracks were removed."""

    library: str
    tracks: int
    damaged: tuple[LostSegments, ...]
    unfinished: int
    unfinished_segments: int
    repaired: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "library": self.library,
            "tracks": self.tracks,
            "damaged": [d.to_json() for d in self.damaged],
            "unfinished_tracks": self.unfinished,
            "unfinished_segments": self.unfinished_segments,
            "repaired": self.repaired,
        }


@dataclass(frozen=True)
class LibraryMatch:
    """A track that sounds like the query, at its best segment: ``score`` is the cosine similarity, as the
    AudioSet search's."""

    track: TrackInfo
    start_s: float
    end_s: float
    score: float

    def to_json(self) -> dict[str, object]:
        t = self.track
        return {
            "track_id": t.track_id,
            "title": t.title,
            "artist": t.artist,
            "album": t.album,
            "file": t.file,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class LibraryRecommendation:
    """A library's answer to a query."""

    query: Query
    library: str
    matches: tuple[LibraryMatch, ...]

    def to_json(self) -> dict[str, object]:
        return {"query": self.query.to_json(), "library": self.library, "matches": [m.to_json() for m in self.matches]}
