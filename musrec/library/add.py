"""``musrec library add``: every recording under some paths into a library, resumable and robust.

A reader thread hashes, checks and decodes the next recordings while the current one is embedded and stored, so
the model rarely waits for ffmpeg. A recording already in the library (the same content, under any name) costs
only its hash. An interrupted add (Ctrl-C, a crash, kill -9) loses at most the recording being written: complete
tracks are complete, and the next add finishes the rest, replacing any segments the interrupted one left. A file
that cannot be read or decoded is one line of the report, never the end of the run; a store or embedding service
that fails ends it (every file would fail alike).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from musrec.errors import DecodeError, TooLongError, TooShortError
from musrec.library.errors import LibraryError
from musrec.library.results import AddProgress, AddReport
from musrec.library.store import valid_library_name
from musrec.library.tracks import TrackInfo, find_files, looks_like_audio

if TYPE_CHECKING:
    from musrec.library.library import Library, Prepared

log = logging.getLogger(__name__)

Progress = Callable[[AddProgress], None]
READ_AHEAD = 2  # recordings decoded ahead of the one being embedded (each at most max_track_s of 16-kHz floats)
FLUSH_EVERY = 200  # tracks between flushes of a long add (the write-ahead log keeps them meanwhile)
AUDIO_ERRORS = (DecodeError, TooLongError, TooShortError)


def add_paths(lib: Library, paths: Sequence[Path], *, library: str, progress: Progress | None = None) -> AddReport:
    """Add every recording in ``paths`` (files, and folders recursively) to ``library``: see the module's text.
    Raises LibraryNameError, LibraryBusyError and LibraryError (the store failed), EmbedderError (the embedding
    service failed); KeyboardInterrupt after saving what is complete."""
    valid_library_name(library)
    found = find_files(paths)
    failed: list[tuple[str, str]] = [(p, "no such file or folder") for p in found.missing]
    added = present = completed = segments = 0
    not_audio = found.skipped
    started = time.monotonic()
    reader = ThreadPoolExecutor(1, thread_name_prefix="library-read")
    pending: deque[tuple[Path, Future[Prepared | TrackInfo]]] = deque()
    files = iter(found.files)

    def read_ahead() -> None:
        while len(pending) < READ_AHEAD + 1:
            file = next(files, None)
            if file is None:
                return
            pending.append((file, reader.submit(lib.prepare, file, library=library)))

    try:
        read_ahead()
        done = 0
        while pending:
            file, future = pending.popleft()
            read_ahead()
            try:
                prepared = future.result()
                if isinstance(prepared, TrackInfo):
                    present += 1
                else:
                    result = lib.store_prepared(prepared, library=library)
                    log.info("stored track %s: %s (%d segments)", result.track.track_id, file, result.track.segments)
                    added += result.added
                    present += not result.added
                    segments += result.track.segments if result.added else 0
                    completed += result.completed
            except AUDIO_ERRORS as err:
                if looks_like_audio(file):
                    failed.append((str(file), str(err)))
                    log.info("%s: %s", file, err)
                else:
                    not_audio += 1
                    log.debug("not audio: %s (%s)", file, err)
            done += 1
            if added and added % FLUSH_EVERY == 0:
                lib.store.flush()
            if progress is not None:
                progress(AddProgress(done, len(found.files), added, present, len(failed),
                                     time.monotonic() - started))  # fmt: skip
        lib.store.flush()
    except BaseException:
        with contextlib.suppress(LibraryError):  # keep what is complete, if the store still answers
            lib.store.flush()
        raise
    finally:
        for _, future in pending:
            future.cancel()
        reader.shutdown(wait=True)
    return AddReport(added, present, completed, not_audio, tuple(failed), time.monotonic() - started, segments)
