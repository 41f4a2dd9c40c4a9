"""The library's store on the real Milvus Lite (issue 25): adds are idempotent by content, removal takes a track's
segments and nothing else, libraries never see each other, an interrupted add is completed, a store of another
version or held by another process is refused in one line. One store per module (Milvus Lite starts in about a
second); each test works in libraries of its own."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from library_fixtures import Recording, assert_one_per_track_when_crowded, excerpt, recording

from musrec.audio.limits import AudioLimits
from musrec.config.library import LibraryConfig
from musrec.errors import DecodeError
from musrec.library import (
    Library,
    LibraryBusyError,
    LibraryFormatError,
    LibraryNameError,
    UnknownTrackError,
)
from musrec.library.add import add_paths
from musrec.library.results import AddProgress
from musrec.library.segments import Segments, decode_track, embed_segments, windows_of
from musrec.library.store import SCHEMA_KEY, SCHEMA_VERSION, MilvusStore


def open_library(uri: Path, embedder: Any) -> Library:
    store = MilvusStore(str(uri))
    return Library(store, options=LibraryConfig(uri=str(uri)), limits=AudioLimits(), embedder=embedder)


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> list[Recording]:
    root = tmp_path_factory.mktemp("music")
    return [
        recording(root, "a.mp3", seed=11, seconds=32, title="Alpha", artist="One", album="First"),
        recording(root, "b.flac", seed=12, seconds=25, title="Beta", artist="Two"),
        recording(root, "c.ogg", seed=13, seconds=24),
    ]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, local_embedder: Any) -> Iterator[Library]:
    library = open_library(tmp_path_factory.mktemp("store") / "library.db", local_embedder)
    yield library
    library.close()


def test_segments_lie_on_audiosets_grid() -> None:
    # 10-s windows from 0 s; a last part of at least 1 s is a segment of its own, a shorter one is dropped.
    assert [(w.start_s, w.end_s) for w in windows_of(25.0)] == [(0, 10), (10, 20), (20, 25)]
    assert [(w.start_s, w.end_s) for w in windows_of(20.5)] == [(0, 10), (10, 20)]


def test_add_reads_tags_and_a_renamed_copy_adds_nothing(lib: Library, music: list[Recording], tmp_path: Path) -> None:
    first = lib.add_track(music[0].path, library="idem")
    assert first.added and (first.track.title, first.track.artist, first.track.album) == ("Alpha", "One", "First")
    assert first.track.segments == 4 and first.track.duration_s == pytest.approx(32, abs=0.1)
    copy = tmp_path / "renamed.mp3"
    shutil.copy(music[0].path, copy)
    again = lib.add_track(copy, library="idem")
    assert not again.added and again.track.track_id == first.track.track_id and again.track.file == str(music[0].path)
    bytes_too = lib.add_track(music[0].path.read_bytes(), library="idem", name="upload.mp3")
    assert not bytes_too.added
    untagged = lib.add_track(music[2].path, library="idem")
    assert untagged.track.title == "c" and untagged.track.artist is None  # no title tag: the file's name
    assert lib.count("idem") == 2 and lib.store.segment_count("idem") == 4 + 3


def test_removing_a_track_takes_all_its_segments_and_nothing_else(lib: Library, music: list[Recording]) -> None:
    a, b = (lib.add_track(r.path, library="rm").track for r in music[:2])
    other = lib.add_track(music[0].path, library="rm-other").track  # the same recording in another library
    removed = lib.remove("rm", [a.track_id[:8]])
    assert [t.track_id for t in removed] == [a.track_id]
    assert lib.store.segment_count("rm", a.track_id) == 0
    assert lib.store.segment_count("rm", b.track_id) == b.segments == 3
    assert lib.store.segment_count("rm-other", other.track_id) == other.segments == 4
    assert [t.track_id for t in lib.tracks("rm")] == [b.track_id]
    with pytest.raises(UnknownTrackError, match="names no track in library rm"):
        lib.remove("rm", [a.track_id])
    with pytest.raises(UnknownTrackError, match="not a track id"):
        lib.remove("rm", ["12"])


def test_a_library_never_sees_another(lib: Library, music: list[Recording], tmp_path: Path) -> None:
    lib.add_track(music[1].path, library="mine")
    theirs = lib.add_track(music[0].path, library="theirs").track
    rows = lib.embedder.embed(decode_track(str(music[0].path), max_track_s=10, limits=lib.limits).samples, 16000)
    assert [m.track.track_id for m in lib.search(rows, library="theirs", k=5)] == [theirs.track_id]
    mine = lib.search(rows, library="mine", k=5)
    assert mine and theirs.track_id not in {m.track.track_id for m in mine}
    assert lib.search(rows, library="nobody", k=5) == []
    assert lib.count("nobody") == 0 and lib.tracks("nobody") == []
    with pytest.raises(LibraryNameError):
        lib.search(rows, library='x" or library != "', k=5)


def test_an_excerpt_finds_its_track_first_one_match_per_track(
    lib: Library, music: list[Recording], tmp_path: Path
) -> None:
    for r in music:
        lib.add_track(r.path, library="find")
    clip = excerpt(music[1], tmp_path / "clip.wav", start_s=10)
    rows = lib.embedder.embed(decode_track(str(clip), max_track_s=10, limits=lib.limits).samples, 16000)
    matches = lib.search(rows, library="find", k=10)
    assert matches[0].track.title == "Beta" and (matches[0].start_s, matches[0].end_s) == (10, 20)
    assert len({m.track.track_id for m in matches}) == len(matches) == 3  # one per track
    segments = lib.search(rows, library="find", k=10, one_per_track=False)
    assert len(segments) == 4 + 3 + 3  # every segment of the three tracks
    assert all(a.score >= b.score for a, b in zip(segments, segments[1:], strict=False))


@pytest.mark.parametrize("index", ["FLAT", "HNSW"])
def test_one_match_per_track_when_one_track_fills_the_nearest(index: str, tmp_path: Path) -> None:
    store = MilvusStore(str(tmp_path / "crowded.db"), index=index)
    try:
        assert_one_per_track_when_crowded(store)
    finally:
        store.close()


def test_a_track_of_the_library_as_the_query(lib: Library, music: list[Recording]) -> None:
    tracks = [lib.add_track(r.path, library="bytrack").track for r in music]
    query = lib.resolve_track(f"library:{tracks[0].track_id[:7]}@12", library="bytrack")
    assert (query.start_s, query.end_s) == (10, 20) and query.query.extra["title"] == "Alpha"
    result = lib.recommend_track(query, library="bytrack", k=5)
    assert {m.track.track_id for m in result.matches} == {t.track_id for t in tracks[1:]}  # itself left out
    with pytest.raises(UnknownTrackError):
        lib.resolve_track("library:ffffffffff", library="bytrack")


def test_an_interrupted_add_is_completed_by_the_next(lib: Library, music: list[Recording]) -> None:
    # A crash between a track's segments and its row: the segments are there, the track is not (never listed, never
    # found); the next add replaces them and completes the track, once.
    prepared = lib.prepare(music[0].path, library="crash")
    assert not isinstance(prepared, type(None))
    segments = embed_segments(prepared.audio, lib.embedder)  # type: ignore[union-attr]
    partial = Segments(segments.windows[:2], segments.vectors[:2])
    lib.store.write_segments("crash", prepared.track_id, partial)  # type: ignore[union-attr]
    assert lib.tracks("crash") == [] and lib.search(np.full((10, 128), 128, np.uint8), library="crash") == []
    result = lib.add_track(music[0].path, library="crash")
    assert result.added and result.completed
    assert lib.store.segment_count("crash") == result.track.segments == 4


def test_ctrl_c_finishes_the_tracks_being_stored_and_the_next_add_the_rest(lib: Library, tmp_path: Path) -> None:
    """Two recordings are embedded at once: Ctrl-C after the first is done lets those being stored finish (their
    segments and their rows), starts no other, and the next add stores each of the rest once."""
    folder = tmp_path / "six"
    for i in range(6):
        recording(folder, f"{i}.wav", seed=40 + i, seconds=11)

    def interrupt(progress: AddProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_paths(lib, [folder], library="ctrlc", progress=interrupt)
    kept = lib.tracks("ctrlc")
    assert 1 <= len(kept) < 6
    assert lib.store.segment_count("ctrlc") == sum(t.segments for t in kept)  # no segments without their track
    report = add_paths(lib, [folder], library="ctrlc")
    assert (report.added, report.present, report.completed) == (6 - len(kept), len(kept), 0)
    tracks = lib.tracks("ctrlc")
    assert len({t.track_id for t in tracks}) == len(tracks) == 6
    assert lib.store.segment_count("ctrlc") == sum(t.segments for t in tracks)


def test_damaged_and_non_audio_files_are_lines_of_the_report(
    lib: Library, music: list[Recording], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(music[1].path.parent, folder, ignore=shutil.ignore_patterns(".*"))
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    (folder / "readme.xyz").write_text("not audio at all\n" * 50)
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.flac").write_bytes(b"fLaC" + bytes(2000))
    report = add_paths(lib, [folder, tmp_path / "missing.mp3"], library="report")
    assert report.added == 3 and report.present == 0 and report.not_audio == 2
    assert sorted(Path(f).name for f, _ in report.failed) == ["broken.flac", "missing.mp3"]
    assert all("\n" not in reason for _, reason in report.failed)
    again = add_paths(lib, [folder], library="report")
    assert again.added == 0 and again.present == 3
    with pytest.raises(DecodeError):
        lib.add_track(folder / "sub" / "broken.flac", library="report")


def test_a_store_of_another_version_is_refused_in_one_line(tmp_path: Path, local_embedder: Any) -> None:
    from pymilvus import MilvusClient

    uri = tmp_path / "old.db"
    open_library(uri, local_embedder).close()
    client = MilvusClient(str(uri))
    client.alter_collection_properties("musrec_segments", properties={SCHEMA_KEY: str(SCHEMA_VERSION - 1)})
    client.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(uri))
    with pytest.raises(LibraryFormatError) as refused:
        open_library(uri, local_embedder)
    message = str(refused.value)
    assert "older musrec" in message and "new library" in message and "\n" not in message


def test_a_file_another_process_holds_is_refused_in_one_line(tmp_path: Path, local_embedder: Any) -> None:
    uri = tmp_path / "held.db"
    open_library(uri, local_embedder).close()  # made, then released: the other process can take it
    hold = f"from pymilvus import MilvusClient\nMilvusClient({str(uri)!r})\nprint('held', flush=True)\ninput()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LibraryBusyError) as busy:
            open_library(uri, local_embedder)
        assert "in use by another process" in str(busy.value) and "\n" not in str(busy.value)
    finally:
        holder.communicate("\n", timeout=60)
    open_library(uri, local_embedder).close()  # free again


def test_a_batch_of_segments_embeds_as_each_alone(local_embedder: Any, music: list[Recording]) -> None:
    # Segments of a track go through the network together (issue 25's throughput); each gives the rows it gives
    # alone. Tolerance: one quantisation step on a few values, as batches of other sizes may round the network's last
    # float bits differently (oneDNN picks kernels by batch size).
    audio = decode_track(str(music[1].path), max_track_s=600, limits=AudioLimits())
    clips = [audio.samples[: 16000 * 10], audio.samples[16000 * 10 : 16000 * 20], audio.samples[16000 * 20 :]]
    together = local_embedder.embed_batch(clips, 16000)
    for clip, rows in zip(clips, together, strict=True):
        alone = local_embedder.embed(clip, 16000)
        assert rows.shape == alone.shape and rows.dtype == np.uint8
        difference = np.abs(rows.astype(int) - alone.astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert local_embedder.embed_batch([np.zeros(100)], 16000)[0].shape == (0, 128)


def test_a_recording_embedded_alone_runs_its_forward_passes_at_once(
    local_embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first and the last recording of an add are embedded alone: their batches of examples (32 each) go through
    # the network on the library's threads at once (one per forward pass the add runs), so every core the model was
    # given works. The model waits at a barrier for two: it passes only if two batches run at once, and otherwise
    # fails after its timeout. 70 s give 70 examples, three batches.
    music = recording(tmp_path, "long.wav", seed=21, seconds=70)
    audio = decode_track(str(music.path), max_track_s=600, limits=AudioLimits())
    one_by_one = embed_segments(audio, local_embedder)
    model = local_embedder.model
    together = threading.Barrier(2, timeout=60)
    calls = itertools.count()
    threads: set[str] = set()

    def at_once(examples: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        if next(calls) < 2:
            together.wait()  # the first two batches meet here, which they can only if they run at once
        return model(examples)

    monkeypatch.setattr(local_embedder, "_model", at_once)
    monkeypatch.setattr("musrec.library.library.add_workers", lambda: 2)  # as on any machine of two cores or more
    library = open_library(tmp_path / "library.db", local_embedder)
    try:
        added = library.add_track(music.path, library="alone")
        stored = np.stack([vector for _, _, vector in library.store.segment_vectors("alone", added.track.track_id)])
    finally:
        library.close()
    assert added.added and added.track.segments == 7 and len(threads) == 2 and not together.broken
    # The segments of one batch after another, to a quantisation step on a few values: oneDNN may split a product
    # among fewer threads when two run at once, which can round the network's last float bits differently. A step on
    # 1% of a segment's 1,280 values moves its unit vector's cosine by about 1e-5.
    assert np.min(np.sum(stored * one_by_one.vectors, axis=1)) > 1 - 1e-4


def test_a_link_is_added_once_by_what_it_links_to(lib: Library, music: list[Recording], tmp_path: Path) -> None:
    # A media link on a loopback server (the host policy's own path, as the bot's /library add link: takes): the
    # whole track, titled by the link, found by itself; the same link again adds nothing, with no download.
    from youtube_fixtures import loopback_options, media_server

    from musrec.links.fetch import link_target

    shutil.copy(music[1].path, tmp_path / "song.flac")
    options = loopback_options()
    with media_server(tmp_path) as served:
        target = link_target(f"{served.url}/media/song.flac", options=options)
        added = lib.add_link(target, library="links", options=options)
        fetched = len(served.requests)
        again = lib.add_link(target, library="links", options=options)
        assert len(served.requests) == fetched  # nothing fetched the second time
    assert added.added and not again.added and again.track.track_id == added.track.track_id
    assert added.track.segments == 3 and added.track.file == target.url
    assert lib.count("links") == 1


@pytest.mark.parametrize(
    ("words", "said"),
    [
        ("[Errno 28] No space left on device: '/srv/lib.db/collections/x/wal.log'", "the disk that holds the library "
         "/srv/lib.db is full: free some space, then try again"),
        ("[Errno 30] Read-only file system: '/srv/lib.db/LOCK'", "the library /srv/lib.db may not be read or written "
         "by this user ([Errno 30] Read-only file system: 'LOCK'): check its owner and permissions"),
        ("schema file '/srv/lib.db/collections/t/schema.json' is not valid JSON: Expecting value", "the library "
         "/srv/lib.db is damaged (schema file 'collections/t/schema.json' is not valid JSON: Expecting value): keep a "
         "copy of it, move it away"),
        ("collection not found", "the library's store answered collection not found"),
    ],
)  # fmt: skip
def test_a_milvus_lite_failure_says_what_to_do(words: str, said: str) -> None:
    """Milvus Lite's own words, as pymilvus raises them, in one line: a full disk, a store this user may not
    write, a damaged store (its files named within it, shortened), anything else as it was said."""
    from pymilvus.exceptions import MilvusException

    from musrec.library.milvus import WORDS_MAX, local_failure

    line = str(local_failure("add the track", "/srv/lib.db", MilvusException(message=words)))
    assert line.startswith(f"could not add the track: {said}"), line
    long = str(local_failure("open the library", "/srv/lib.db", MilvusException(message="Parquet " + "x" * 500)))
    assert "x" * (WORDS_MAX - 10) in long and "x" * WORDS_MAX not in long and "…)" in long
