"""Libraries of one's own recordings, searched as AudioSet is, stored in Milvus (Milvus Lite embedded by default).

with Library.from_config(config) as lib:
    lib.add_track(Path("song.flac"), library="home")        # add_paths (musrec.library.add): folders, resumable
    matches = lib.search(musrec.resolve("clip.mp3").rows, library="home", k=5)
"""

from __future__ import annotations

from musrec.library.errors import (
    LibraryBusyError,
    LibraryError,
    LibraryFormatError,
    LibraryNameError,
    UnknownTrackError,
)
from musrec.library.library import LIBRARY_PREFIX, Library, TrackQuery
from musrec.library.results import (
    AddProgress,
    AddReport,
    AddResult,
    CheckReport,
    LibraryMatch,
    LibraryRecommendation,
)
from musrec.library.store import valid_library_name
from musrec.library.tracks import TrackInfo

__all__ = [
    "LIBRARY_PREFIX",
    "AddProgress",
    "AddReport",
    "AddResult",
    "CheckReport",
    "Library",
    "LibraryBusyError",
    "LibraryError",
    "LibraryFormatError",
    "LibraryMatch",
    "LibraryNameError",
    "LibraryRecommendation",
    "TrackInfo",
    "TrackQuery",
    "UnknownTrackError",
    "valid_library_name",
]
