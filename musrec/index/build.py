"""Building an index: stream segments in, build an approximate structure, tune it against exact search, publish.

Ingest streams the segments to the raw-row file and the metadata database. Then one pass over the memory-mapped rows
builds the approximate structure: an Annoy forest for small and medium indexes, a faiss IVF index (8-bit codes,
candidates re-scored exactly from the raw rows) from :data:`~musrec.index.structures.AUTO_IVF_MIN_COUNT` segments, or
whichever ``options.backend`` names. Its search parameter (Annoy's ``search_k``, IVF's ``nprobe``) is the smallest
whose recall@10 against exact search, on segments held out of the structure, reaches the target; Annoy's default
(trees x k) reads barely one leaf at high dimension, so an untuned index returns poor neighbours. See
:mod:`musrec.index.structures` for why held-out queries, not leave-one-out ones, set the parameter.

The build writes into a hidden sibling directory and swaps it into place only when complete (see
:mod:`musrec.index.layout`): a crash or Ctrl-C never leaves a half-written index where a running bot would load it, the
path is never empty, and a later build removes what a killed one left behind.

Memory is bounded (:mod:`musrec.index.memory`): a build is refused, before it reads a feature, where the machine gives
it less than its estimated peak; the hidden directory records the step a build is in, so that the next build after
one was killed anyway says so instead of starting again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from musrec import __version__
from musrec.audioset.labels import Labels
from musrec.audioset.records import DamagedArchiveError, IngestReport, Segment, SegmentFilter, read_segments
from musrec.audioset.representation import dimension
from musrec.errors import DataError, is_disk_full
from musrec.index.backends import SYNC_BYTES
from musrec.index.layout import (
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    LABELS_FILE,
    MANIFEST,
    MUSIC_FILE,
    SEGMENTS_FILE,
    Manifest,
    check,
    open_embeddings,
    publish,
    staging,
)
from musrec.index.memory import (
    BuildState,
    Estimate,
    MemoryLimit,
    estimate,
    in_memory_units,
    killed_build,
    memory_limit,
    segments_in_sources,
    too_small,
)
from musrec.index.store import LabelsWriter, SegmentInfo, SegmentWriter
from musrec.index.structures import Sample, build_structure, choose_ann
from musrec.progress import human_bytes

log = logging.getLogger(__name__)

_BATCH = 4096
_ROOM_MARGIN = 1 << 20  # bytes left free beyond the estimate: the manifest, the held-out ids


@dataclass(frozen=True)
class BuildOptions:
    representation: str = "flatten"
    trees: int = 50
    target_recall: float = 0.95
    recall_queries: int = 200
    seed: int = 0
    # "annoy", "ivf", or "auto": Annoy below ann_build.AUTO_IVF_MIN_COUNT segments, IVF from there.
    backend: str = "auto"
    ivf_lists: int = 0  # 0: about 2 sqrt(count), a power of two
    rerank: int = 50  # IVF candidates re-scored exactly from the raw rows, per 10 results


def build_index(
    segments: Iterable[Segment],
    out: Path,
    *,
    labels: Labels,
    options: BuildOptions = BuildOptions(),
    sources: Iterable[str] = (),
    filters: dict[str, Any] | None = None,
    report: IngestReport | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    need: Estimate | None = None,
) -> Manifest:
    """Build an index from ``segments`` (each with exactly 10 rows) into directory ``out``.

    ``need`` is the memory estimated before reading (:func:`build_from_sources`); it is measured again on the
    segments read. Raises :class:`DataError` when ``out`` exists (without ``force``), when the last build of ``out``
    was killed (without ``force``), when the memory or the disk is too small, or when no segment is left.
    """
    out = out.resolve()
    if out.exists() and not force:
        raise DataError(f"{out} already exists: pass --force to replace it")
    killed = killed_build(out)
    if killed is not None and not force:
        killed.prune()
        raise DataError(killed.message(retry="`musrec index build --force`"))
    started = time.monotonic()
    limit = memory_limit()
    with _stopped_cleanly(), _full_disk_is_one_line(out.parent), staging(out) as tmp:
        state = BuildState(tmp, need, limit)
        state.step("ingest")
        count = _ingest(segments, tmp, labels=labels, options=options, progress=progress)
        if count == 0:
            raise DataError("no segments left to index: check the sources and filters")
        need = build_estimate(count, options, limit)
        trouble = too_small(need, limit, what="this index")
        if trouble is not None:
            raise DataError(trouble)
        log.info("%d segments read; the build needs about %s of %s", count, in_memory_units(need.peak), limit)
        embeddings = open_embeddings(tmp, count)
        ann = choose_ann(options.backend, count)
        _check_room(tmp, ann=ann, count=count, options=options)
        sample = Sample.choose(count, options.recall_queries, seed=options.seed)
        built = build_structure(
            tmp,
            embeddings,
            ann=ann,
            representation=options.representation,
            trees=options.trees,
            ivf_lists=options.ivf_lists,
            rerank=options.rerank,
            target=options.target_recall,
            sample=sample,
            seed=options.seed,
            keep_matrix=need.exact_matrix,
            on_step=state.step,
        )
        tuning = built.tuning
        preferred = ann
        reached = tuning.recall >= options.target_recall
        if "exact" in built.query_ms and (built.query_ms["exact"] <= built.query_ms[ann] or not reached):
            preferred = "exact"  # exact and no slower, or the approximate structure could not reach the target
        tried = {str(k): round(v, 4) for k, v in sorted(tuning.tried.items())}
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            representation=options.representation,
            dimension=dimension(options.representation),
            count=count,
            trees=options.trees if ann == "annoy" else 0,
            search_k=tuning.value if ann == "annoy" else 0,
            recall_at_10=round(tuning.recall, 4),
            target_recall=options.target_recall,
            recall_queries=len(sample.held_out) or len(sample.indexed),
            preferred_backend=preferred,
            query_ms=built.query_ms,
            sources=list(sources),
            filters=filters or {},
            ingest=asdict(report) if report is not None else {},
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 2),
            musrec_version=__version__,
            extra={"search_k_tried" if ann == "annoy" else "nprobe_tried": tried},
            ann=ann,
            nprobe=tuning.value if ann == "ivf" else 0,
            ivf_lists=built.ivf_lists,
            rerank=options.rerank if ann == "ivf" else 0,
            recall_leave_one_out=round(tuning.recall_leave_one_out, 4),
            held_out=len(sample.held_out),
        )
        del embeddings
        state.done()
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        check(tmp)  # what every reader checks, before anything is replaced
        publish(tmp, out)
    log.info(
        "built %s: %d segments, %s tuned to %d, recall@10 %.3f held out, %.3f leave-one-out",
        out,
        count,
        ann,
        tuning.value,
        tuning.recall,
        tuning.recall_leave_one_out,
    )
    return manifest


@contextlib.contextmanager
def _stopped_cleanly() -> Iterator[None]:
    """SIGTERM (``docker stop``, systemd) ends a build as Ctrl-C does, removing its hidden directory: the next start
    does not take it for a build that was killed. Only the main thread can catch a signal; elsewhere it stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _full_disk_is_one_line(where: Path) -> Iterator[None]:
    """A write that found the disk full becomes a DataError that says so (the staged build is gone by then)."""
    try:
        yield
    except OSError as err:
        if not is_disk_full(err):
            raise
        raise DataError(_disk_full(where)) from None


def _structure_bytes(ann: str, *, count: int, dim: int, trees: int) -> int:
    """About how large the approximate structure's file will be.

    Annoy stores every item as a node of 4 dim + 12 bytes, and each tree adds split nodes; measured on AudioSet-shaped
    data (20k x 1280, 200k x 128), 1 + 4 trees / (dim + 2) times the item nodes is within 10% or above. IVF stores an
    8-bit code and an 8-byte id per item.
    """
    if ann == "annoy":
        return int(count * (4 * dim + 12) * (1 + 4 * trees / (dim + 2)))
    return count * (dim + 8)


def _check_room(tmp: Path, *, ann: str, count: int, options: BuildOptions) -> None:
    """Refuse, before it starts, a structure the disk cannot hold.

    Annoy writes its forest through a memory map: on a full disk that is a crash (SIGBUS), not an error to report.
    """
    need = _structure_bytes(ann, count=count, dim=dimension(options.representation), trees=options.trees)
    free = shutil.disk_usage(tmp).free
    if free < need * 1.1 + _ROOM_MARGIN:
        raise DataError(_disk_full(tmp.parent, need=need))


def _disk_full(where: Path, *, need: int | None = None) -> str:
    free = human_bytes(shutil.disk_usage(where).free) if where.exists() else "no space"
    needed = f" (the structure needs about {human_bytes(need)})" if need is not None else ""
    return (
        f"not enough disk space in {where} to build the index: {free} free{needed}; free some space or build "
        "elsewhere (--out or index.path). The current index, if any, was left as it was"
    )


def build_estimate(count: int, options: BuildOptions, limit: MemoryLimit | None = None) -> Estimate:
    """The memory a build of ``count`` segments with ``options`` needs (see :mod:`musrec.index.memory`)."""
    return estimate(
        count,
        representation=options.representation,
        backend=options.backend,
        ivf_lists=options.ivf_lists,
        trees=options.trees,
        queries=options.recall_queries,
        limit=limit,
    )


def _ingest(
    segments: Iterable[Segment],
    tmp: Path,
    *,
    labels: Labels,
    options: BuildOptions,
    progress: Callable[[int], None] | None,
) -> int:
    writer = SegmentWriter(tmp / SEGMENTS_FILE)
    label_lists = LabelsWriter()
    count = unsynced = 0
    batch: list[Segment] = []

    def flush() -> None:
        nonlocal count, unsynced
        rows = np.stack([s.rows for s in batch])
        raw.write(rows.data)
        unsynced += rows.nbytes
        if unsynced >= SYNC_BYTES:
            raw.flush()
            os.fdatasync(raw.fileno())
            unsynced = 0
        label_lists.add([s.labels for s in batch])
        music = [labels.is_music(s.labels) for s in batch]
        flags.write(bytes(music))
        for i, segment in enumerate(batch):
            item = count + i
            writer.add(
                SegmentInfo(
                    item=item,
                    video_id=segment.video_id,
                    start_s=segment.start_s,
                    end_s=segment.end_s,
                    split=segment.split,
                    labels=segment.labels,
                    music=music[i],
                )
            )
        count += len(batch)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    # The music flags are also written as one byte per item, so that loading a large index skips a table scan.
    with (tmp / EMBEDDINGS_FILE).open("wb") as raw, (tmp / MUSIC_FILE).open("wb") as flags:
        for segment in segments:
            batch.append(segment)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()
    writer.close()
    label_lists.save(tmp / LABELS_FILE)
    return count


def build_from_sources(
    sources: Sequence[Path],
    out: Path,
    *,
    labels: Labels,
    options: BuildOptions,
    segment_filter: SegmentFilter,
    force: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, IngestReport]:
    """Read ``sources`` (files, directories, tarballs) through ``segment_filter`` and build ``out``."""
    filt = segment_filter
    filters = {
        "splits": sorted(filt.splits),
        "music_only": filt.music_only,
        "include_labels": sorted(labels.names[i] for i in filt.include_labels),
        "exclude_labels": sorted(labels.names[i] for i in filt.exclude_labels),
        "min_seconds": filt.min_seconds,
        "short_segments": filt.short_segments,
    }
    limit = memory_limit()
    need = build_estimate(segments_in_sources(sources, filt.splits), options, limit)
    trouble = too_small(need, limit, what=f"an index of {', '.join(str(s) for s in sources)}")
    if trouble is not None:
        raise DataError(trouble)
    report = IngestReport()
    manifest = build_index(
        _whole(read_segments(list(sources), labels=labels, filt=filt, report=report), report),
        out,
        labels=labels,
        options=options,
        sources=[str(s) for s in sources],
        filters=filters,
        report=report,
        force=force,
        progress=progress,
        need=need,
    )
    return manifest, report


def _whole(segments: Iterator[Segment], report: IngestReport) -> Iterator[Segment]:
    """``segments``, then a DataError if a tarball ended early: an index of part of an archive is not published."""
    yield from segments
    if report.truncated:
        raise DamagedArchiveError(
            "; ".join(report.truncated) + ". Nothing was built: download the file again, or copy it whole (`musrec "
            "setup` fetches AudioSet's and checks it to the end), then build again",
            reasons=report.archive_errors,
        )
