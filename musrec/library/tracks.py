"""A library's tracks as files: which files to try, what their tags say, and their identity (a content hash).

A track's identity is the SHA-256 of its bytes, so the same recording added again, or a renamed copy, is the same
track. Tags are read with mutagen (title, artist, album), whatever the container: ID3, Vorbis comments, MP4 atoms.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TRACK_ID_DIGITS = 16  # of the SHA-256, in hex: 64 bits, no collision among any one library's tracks
MIN_PREFIX = 6  # the shortest track-id prefix a user may type
HASH_CHUNK = 1 << 20
TAG_CHARS = 200  # a tag longer than this is cut (the store's fields and Discord's embeds have limits)

# Files that are certainly not audio, skipped without running ffmpeg (a music folder's covers, cue sheets, notes).
# Anything else is tried: ffmpeg's refusal is the test of the rest.
_NOT_AUDIO = (
    ".jpg .jpeg .png .gif .bmp .webp .tif .tiff .heic .svg .ico .txt .nfo .log .md .pdf .doc .docx .rtf .html .htm "
    ".xml .json .yaml .yml .toml .ini .cfg .csv .cue .m3u .m3u8 .pls .xspf .sfv .md5 .sha1 .sha256 .par2 .torrent "
    ".db .sqlite .sqlite3 .lrc .srt .ass .sub .zip .rar .7z .tar .gz .bz2 .xz .zst .exe .dll .so .py .sh .bat "
    ".ds_store .url .lnk .accurip .ffp .iso .bin .dat"
)
NOT_AUDIO = frozenset(_NOT_AUDIO.split())
# Extensions of formats people keep music in: a file with one of these that ffmpeg refuses is damaged (reported);
# any other file that ffmpeg refuses was simply not audio (counted, not reported one by one).
_AUDIO = (
    ".mp3 .flac .ogg .oga .opus .m4a .m4b .mp4 .aac .wav .wave .aif .aiff .aifc .wma .ape .wv .mka .mkv .webm "
    ".alac .ac3 .dts .mp2 .mpc .tta .caf .amr .au .snd .mov .avi .3gp"
)
AUDIO_EXTENSIONS = frozenset(_AUDIO.split())


@dataclass(frozen=True)
class Tags:
    title: str | None = None
    artist: str | None = None
    album: str | None = None


@dataclass(frozen=True)
class TrackInfo:
    """One complete track of a library. ``file`` is where it was added from (a path, or an upload's name);
    ``duration_s`` is the part stored (at most ``[library] max_track_s``)."""

    library: str
    track_id: str
    title: str
    artist: str | None
    album: str | None
    file: str
    duration_s: float
    segments: int
    added_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "library": self.library,
            "track_id": self.track_id,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "file": self.file,
            "duration_s": round(self.duration_s, 3),
            "segments": self.segments,
            "added_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.added_at)),
        }


def content_id(data: Path | bytes) -> str:
    """The track id of a file's or an upload's bytes: the first :data:`TRACK_ID_DIGITS` hex digits of their SHA-256.
    OSError if the file cannot be read."""
    digest = hashlib.sha256()
    if isinstance(data, bytes):
        digest.update(data)
    else:
        with data.open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:TRACK_ID_DIGITS]


def read_tags(data: Path | bytes) -> Tags:
    """Title, artist and album from the file's tags (mutagen's easy interface); what is missing is None. A file
    mutagen does not know, or whose tags are damaged, has no tags (decoding decides whether it is audio)."""
    import mutagen

    try:
        found = mutagen.File(io.BytesIO(data) if isinstance(data, bytes) else data, easy=True)
    except (mutagen.MutagenError, OSError, ValueError, EOFError) as err:  # damaged tags are no tags
        log.debug("no tags read: %s", err)
        return Tags()
    if found is None or not found.tags:
        return Tags()
    return Tags(**{key: _first(found.tags.get(key)) for key in ("title", "artist", "album")})


def _first(values: object) -> str | None:
    if not isinstance(values, list | tuple) or not values:
        return None
    text = " ".join(str(values[0]).split())  # one line: no newlines or tabs from a tag into a listing
    return text[:TAG_CHARS] or None


def title_of(tags: Tags, name: str) -> str:
    """The title to show: the tag's, else the file name without its extension."""
    return tags.title or (Path(name).stem or name)[:TAG_CHARS]


@dataclass(frozen=True)
class Found:
    """The files a walk found: those to try, and how many were skipped by their extension alone."""

    files: tuple[Path, ...]
    skipped: int
    missing: tuple[str, ...]


def find_files(paths: Iterable[Path]) -> Found:
    """Every file under ``paths`` (files as given, folders recursively, in a stable order; hidden entries and
    symbolic links to folders skipped, so a loop of links ends), less those certainly not audio."""
    files: list[Path] = []
    missing: list[str] = []
    skipped = 0
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            candidates: Iterable[Path] = _walk(path)
        elif path.is_file():
            candidates = [path]
        else:
            missing.append(str(path))
            continue
        for file in candidates:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            if file.suffix.lower() in NOT_AUDIO:
                skipped += 1
            else:
                files.append(file)
    return Found(tuple(files), skipped, tuple(missing))


def _walk(top: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(top, onerror=lambda err: log.warning("cannot read %s", err.filename)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def looks_like_audio(path: Path) -> bool:
    """Whether the file's extension is one music is kept in (a refusal then means a damaged file)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS
