"""Recordings made for the library's tests, a configuration that keeps the library under a test's directory, and
a shared Milvus Lite store per module (starting one costs about half a second), and a check that a search for one
match per track answers as many tracks as asked for when one track crowds the nearest segments."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymilvus  # noqa: F401 - see below
from audio_fixtures import ffmpeg

from musrec.library.store import MilvusStore

# pymilvus's first import reconfigures logging (logging.config.dictConfig), which closes every handler there is;
# absl's (TensorFlow's) then closes its stream unless it is the current sys.stderr. Under pytest's capture that stream
# is the session's capture file while a test's capsys is sys.stderr: imported inside such a test, pymilvus would
# close pytest's own output. Imported here, at collection, it closes nothing of the kind.

RATE = 22050
NOTE_S = 0.25

# suffix -> encoder arguments (tags are written by every one of these containers)
CODECS: dict[str, tuple[str, ...]] = {
    "mp3": ("-c:a", "libmp3lame", "-b:a", "128k"),
    "flac": ("-c:a", "flac"),
    "ogg": ("-c:a", "libvorbis", "-q:a", "4"),
    "m4a": ("-c:a", "aac", "-b:a", "128k"),
    "wav": ("-c:a", "pcm_s16le"),
}


@dataclass(frozen=True)
class Recording:
    path: Path
    seed: int
    seconds: float
    title: str | None
    artist: str | None


def melody(seed: int, seconds: float, *, rate: int = RATE) -> np.ndarray:
    """A melody of its own for each seed: short notes of random pitch and timbre (harmonics), with a pulse of noise,
    so every 10 s of one recording and every recording sound different to VGGish."""
    rng = np.random.default_rng(seed)
    n_notes = int(np.ceil(seconds / NOTE_S))
    t = np.arange(int(NOTE_S * rate)) / rate
    envelope = np.exp(-t * rng.uniform(3, 12))
    harmonics = rng.uniform(0, 1, 6)
    notes = []
    for _ in range(n_notes):
        f0 = 110 * 2 ** (rng.integers(0, 48) / 12)
        note = sum(h * np.sin(2 * np.pi * f0 * (i + 1) * t) for i, h in enumerate(harmonics))
        noise = rng.standard_normal(len(t)) * rng.uniform(0, 0.3) * np.exp(-t * 30)
        notes.append(envelope * note / harmonics.sum() + noise)
    samples = np.concatenate(notes)[: int(seconds * rate)]
    return (0.6 * samples / np.max(np.abs(samples))).astype(np.float64)


def write_wav(path: Path, samples: np.ndarray, *, rate: int = RATE) -> Path:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def recording(
    directory: Path,
    name: str,
    *,
    seed: int,
    seconds: float = 35.0,
    title: str | None = None,
    artist: str | None = None,
    album: str | None = None,
) -> Recording:
    """``directory/name`` (its suffix chooses the codec): :func:`melody` ``seed``, tagged as given."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = write_wav(path.with_name(f".{path.stem}-raw.wav"), melody(seed, seconds))
    tags = [("title", title), ("artist", artist), ("album", album)]
    metadata = [arg for key, value in tags if value for arg in ("-metadata", f"{key}={value}")]
    ffmpeg("-i", str(raw), *metadata, *CODECS[path.suffix.lstrip(".")], str(path))
    raw.unlink()
    return Recording(path, seed, seconds, title, artist)


def excerpt(source: Recording, path: Path, *, start_s: float, seconds: float = 10.0) -> Path:
    """``seconds`` of a recording's melody from ``start_s``, encoded on its own (another file, other bytes)."""
    samples = melody(source.seed, source.seconds)[int(start_s * RATE) : int((start_s + seconds) * RATE)]
    raw = write_wav(path.with_name(f".{path.stem}-raw.wav"), samples)
    ffmpeg("-i", str(raw), *CODECS[path.suffix.lstrip(".")], str(path))
    raw.unlink()
    return path


def write_config(path: Path, *, data_dir: Path, checkpoint: Path, pca_params: Path, extra: str = "") -> Path:
    """A configuration: the random-weight VGGish files, everything written under ``data_dir``."""
    path.write_text(
        f'[data]\ndir = "{data_dir}"\n\n[embedder]\ncheckpoint = "{checkpoint}"\npca_params = "{pca_params}"\n' + extra
    )
    return path


def assert_one_per_track_when_crowded(store: MilvusStore) -> None:
    """One track's 200 segments are all nearer the query than any other track's, in library "crowded": a search for
    one match per track still answers the three nearest tracks, the crowding one first at its best segment, whether
    the server groups by track fully (Milvus 2.4+), only among the nearest segments (Milvus Lite: one track's fill
    them) or not at all (2.3): the store then groups, fetching more segments (24, 192, then 1,536) until three
    tracks are among them. Leaving that track out answers the others."""
    rng = np.random.default_rng(7)
    query = rng.standard_normal(1280).astype(np.float32)
    near = query + 0.05 * rng.standard_normal((200, 1280)).astype(np.float32)
    far = rng.standard_normal((3, 1280)).astype(np.float32) + 0.2 * query
    spans = np.array([[10.0 * i, 10.0 * i + 10] for i in range(200)], np.float32)
    store.insert_segments("crowded", ["a" * 16] * 200, spans, near)
    store.insert_segments("crowded", ["b" * 16, "c" * 16, "d" * 16], np.zeros((3, 2), np.float32), far)
    for _ in range(2):  # the second search after the store has seen how the server groups
        hits = store.search(query, library="crowded", limit=3, one_per_track=True)
        assert hits[0][0] == "a" * 16 and len({hit[0] for hit in hits}) == len(hits) == 3
        (best,) = store.search(query, library="crowded", limit=1, one_per_track=False, exact=True)
        assert hits[0][:3] == best[:3]
    others = store.search(query, library="crowded", limit=5, one_per_track=True, exclude_tracks=["a" * 16])
    assert sorted(hit[0][0] for hit in others) == ["b", "c", "d"]
