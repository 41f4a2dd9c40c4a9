"""``musrec library add``: every recording under some paths into a library, resumable and robust.

A reader thread hashes, checks and decodes the next recordings while others are embedded and stored, so the model
rarely waits for the decoder. Two recordings are embedded at once (:data:`~musrec.library.segments.ADD_WORKERS`),
each forward pass on its share of the cores (``musrec library add`` sizes TensorFlow's threads so): one pass spread
over every core stalls whenever the decoder takes a core, as its threads wait for each other, while two passes each
on their own core just share. NumPy's BLAS (the products around the network, such as the PCA of each track's
embeddings) runs on one thread meanwhile: its extra threads only took cores from the model (0.93 against 0.86-0.89 s
a 3-minute track, two runs each). bench/library_bench.py measures the add against the model's bound.

A recording already in the library (the same content, under any name) costs only its hash. An interrupted add
(Ctrl-C, a crash, kill -9) loses at most the recordings being written: complete tracks are complete, and the next
add finishes the rest, replacing any segments the interrupted one left. A file that cannot be read or decoded is
one line of the report, never the end of the run; a store or embedding service that fails ends it (every file
would fail alike).
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

from threadpoolctl import threadpool_limits

from musrec.errors import DecodeError, TooLongError, TooShortError
from musrec.library.errors import LibraryError
from musrec.library.results import AddProgress, AddReport, AddResult
from musrec.library.segments import add_workers
from musrec.library.store import valid_library_name
from musrec.library.tracks import TrackInfo, find_files, looks_like_audio

if TYPE_CHECKING:
    from musrec.library.library import Library, Prepared

log = logging.getLogger(__name__)

Progress = Callable[[AddProgress], None]
READ_AHEAD = 2  # recordings decoded ahead of those being embedded (each at most max_track_s of 16-kHz floats)
FLUSH_EVERY = 200  # tracks between flushes of a long add (the write-ahead log keeps them meanwhile)
AUDIO_ERRORS = (DecodeError, TooLongError, TooShortError)


def add_paths(lib: Library, paths: Sequence[Path], *, library: str, progress: Progress | None = None) -> AddReport:
    """Add every recording in ``paths`` (files, and folders recursively) to ``library``: see the module's text.
    Raises LibraryNameError, LibraryBusyError and LibraryError (the store failed), EmbedderError (the embedding
    service failed); KeyboardInterrupt after saving what is complete."""
    valid_library_name(library)
    with threadpool_limits(limits=1, user_api="blas"):
        return _add_paths(lib, paths, library=library, progress=progress)


def _add_paths(lib: Library, paths: Sequence[Path], *, library: str, progress: Progress | None) -> AddReport:
    found = find_files(paths)
    failed: list[tuple[str, str]] = [(p, "no such file or folder") for p in found.missing]
    added = present = completed = segments = cut = 0
    not_audio = found.skipped
    started = time.monotonic()
    workers = add_workers()
    reader = ThreadPoolExecutor(1, thread_name_prefix="library-read")
    embedders = ThreadPoolExecutor(workers, thread_name_prefix="library-add")
    pending: deque[tuple[Path, Future[AddResult | TrackInfo]]] = deque()
    files = iter(found.files)

    def read_ahead() -> None:
        while len(pending) < workers + READ_AHEAD:
            file = next(files, None)
            if file is None:
                return
            read = reader.submit(lib.prepare, file, library=library)
            pending.append((file, embedders.submit(_stored, lib, read, library)))

    def stop() -> None:
        """Nothing more started; what is being stored is finished."""
        for _, future in pending:
            future.cancel()
        embedders.shutdown(wait=True)

    try:
        read_ahead()
        done = 0
        while pending:
            file, future = pending.popleft()
            read_ahead()
            try:
                outcome = future.result()
                if isinstance(outcome, TrackInfo):
                    present += 1
                else:
                    log.info("stored track %s: %s (%d segments)", outcome.track.track_id, file, outcome.track.segments)
                    added += outcome.added
                    present += not outcome.added
                    segments += outcome.track.segments if outcome.added else 0
                    completed += outcome.completed
                    cut += outcome.cut
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
        stop()  # the recordings being stored are finished first
        with contextlib.suppress(LibraryError):  # keep what is complete, if the store still answers
            lib.store.flush()
        raise
    finally:
        stop()
        reader.shutdown(wait=True)
    return AddReport(added, present, completed, not_audio, tuple(failed), time.monotonic() - started, segments, cut)


def _stored(lib: Library, read: Future[Prepared | TrackInfo], library: str) -> AddResult | TrackInfo:
    """A recording read by the reader thread, embedded and stored; the track already there as it is."""
    prepared = read.result()
    if isinstance(prepared, TrackInfo):
        return prepared
    return lib.store_prepared(prepared, library=library)
