from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments
from tolerances import dot_tolerance

from musrec.audioset.labels import default_labels
from musrec.audioset.representation import represent
from musrec.audioset.synthetic import SyntheticAudioSet
from musrec.errors import DataError, IndexFormatError, IndexNotFoundError
from musrec.index.build import BuildOptions, build_index
from musrec.index.layout import MANIFEST
from musrec.index.search import Index, exact_search_many

LABELS = default_labels()


def build(out: Path, count: int = 600, **options: object) -> Index:
    segments = SyntheticAudioSet().segments(count)
    build_index(segments, out, labels=LABELS, options=BuildOptions(**options), sources=["synthetic"])  # type: ignore[arg-type]
    return Index(out)


@pytest.mark.parametrize("representation", ["flatten", "mean", "meanstd"])
def test_neighbours_match_exact_search(tmp_path: Path, representation: str) -> None:
    index = build(tmp_path / "idx", count=1500, representation=representation, trees=10)
    m = index.manifest
    assert m.representation == representation and m.count == 1500
    assert m.dimension == {"flatten": 1280, "mean": 128, "meanstd": 256}[representation]
    assert m.recall_at_10 >= 0.95 and m.search_k >= 1
    assert set(m.query_ms) == {"annoy", "exact"}
    # Whatever backend it picked, results agree with exact cosine search over the dequantised vectors.
    for backend in ("annoy", "exact"):
        idx = Index(tmp_path / "idx", backend=backend)
        hits = 0
        queries = represent(np.asarray(idx.embeddings[:50]), representation)
        truth, truth_scores = exact_search_many(idx.embeddings, representation, queries, 10)
        for q, want, want_scores in zip(queries, truth, truth_scores, strict=True):
            ids, scores = idx.search(q, 10)
            hits += len(set(ids.tolist()) & set(want.tolist()))
            # Annoy, numpy and the exact scan each sum in their own order (tests/tolerances.py).
            assert scores[0] == pytest.approx(want_scores[0], abs=dot_tolerance(m.dimension))
            assert np.all(np.diff(scores) <= 0)  # best first
        assert hits / 500 >= (0.999 if backend == "exact" else 0.9)


def test_search_k_is_tuned_to_the_target_and_recorded(tmp_path: Path) -> None:
    index = build(tmp_path / "idx", count=3000, trees=4, target_recall=0.99, recall_queries=100)
    m = index.manifest
    tried = {int(k): v for k, v in m.extra["search_k_tried"].items()}
    assert tried[m.search_k] == pytest.approx(m.recall_at_10, abs=1e-4)
    assert m.recall_at_10 >= 0.99
    # It is the smallest value tried that met the target.
    assert all(v < 0.99 for k, v in tried.items() if k < m.search_k)
    on_disk = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert on_disk["search_k"] == m.search_k and on_disk["format_version"] == 1


def test_cosine_uses_dequantised_values() -> None:
    rows = np.full((2, 10, 128), 200, dtype=np.uint8)
    rows[1, :, ::2] = 10  # opposite sign on half the values after dequantisation
    v = represent(rows, "flatten")
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    # Raw uint8 codes would give cos ~0.8 here (one positive orthant); dequantised, they are far apart.
    assert float(v[0] @ v[1]) < 0.2


def test_build_is_atomic_when_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    seen = 0

    def interrupt(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4096:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(SyntheticAudioSet().segments(10_000), out, labels=LABELS, progress=interrupt)
    assert list(tmp_path.iterdir()) == []  # neither the index nor a half-written temporary directory


def test_existing_index_is_replaced_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build(out, count=300)
    with pytest.raises(DataError, match="already exists: pass --force"):
        build_index(SyntheticAudioSet().segments(10), out, labels=LABELS)
    build_index(make_segments(200, split="eval"), out, labels=LABELS, force=True, options=BuildOptions(trees=5))
    assert Index(out).manifest.count == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    stranger = tmp_path / "not-an-index"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="not a musrec index"):
        build_index(make_segments(50, split="eval"), stranger, labels=LABELS, force=True)
    assert (stranger / "keep.txt").read_text() == "mine"


def test_empty_result_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no segments left"):
        build_index(iter(()), tmp_path / "idx", labels=LABELS)
    assert list(tmp_path.iterdir()) == []


def test_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="not a musrec index"):
        Index(tmp_path / "empty")
    build(tmp_path / "idx", count=100)
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    manifest["format_version"] = 99
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format 99 is not supported"):
        Index(tmp_path / "idx")


def test_metadata_and_music_mask(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(make_segments(40, split="eval"), out, labels=LABELS, options=BuildOptions(trees=3))
    index = Index(out)
    assert index.music_mask.sum() == 20
    info = index.store.get(0)
    assert info.split == "eval" and len(info.video_id) == 11 and info.end_s - info.start_s == 10.0
    assert index.store.find(info.video_id)[0] == info
    assert index.store.find(info.video_id, info.start_s + 0.2)[0] == info
    assert index.store.find(info.video_id, info.start_s + 3) == []


# ---- what `musrec index build` read, and `musrec index info` (issue 26) -----------------------------------------


def _cli(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    from musrec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _rows(text: str) -> dict[str, str]:
    """`index info`'s rows: {key: value}."""
    return {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in text.splitlines()}


@pytest.mark.parametrize("structure", ["annoy", "ivf"])
def test_index_info_names_only_the_splits_that_were_read(tmp_path: Path, structure: str) -> None:
    """Issue 26: `index info` listed all three splits (the filter asked for) for an index of the eval split alone."""
    from audioset_fixtures import write_layout

    tree = write_layout(tmp_path / "features", {"eval": make_segments(70, split="eval", seed=4)})
    out = tmp_path / "idx"
    code, _, err = _cli(["index", "build", str(tree), "--out", str(out), "--backend", structure, "--no-progress"])
    assert code == 0, err
    code, text, _ = _cli(["index", "info", str(out)])
    rows = _rows(text)
    assert code == 0 and rows["splits"] == "eval 70"
    assert "unbal_train" not in text and "bal_train" not in text
    assert rows["structure"].startswith(structure) and "splits=" not in rows["filters"]
    # An index built before splits were counted says what its build asked for, and that it is not a count.
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["ingest"]["splits"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    code, text, _ = _cli(["index", "info", str(out)])
    assert _rows(text)["splits"] == "bal_train, eval, unbal_train (asked for; not counted by this build)"


def test_a_truncated_tarball_is_an_error_that_says_what_was_read_and_lost(tmp_path: Path) -> None:
    """Issue 26: `index build` exited 0 with "0 corrupt records skipped; damaged: features.tar.gz (truncated)"."""
    from audioset_fixtures import make_tarball, truncate, write_layout

    root = tmp_path / "features"
    write_layout(
        root,
        {
            "bal_train": make_segments(40, split="bal_train", seed=2, start=1000),
            "eval": make_segments(60, split="eval"),
        },
    )
    tarball = make_tarball(root, tmp_path / "features.tar.gz")
    truncate(tarball, 0.6)
    out = tmp_path / "idx"
    code, text, err = _cli(["index", "build", str(tarball), "--out", str(out), "--no-progress"])
    assert code == 1 and text == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("musrec: error: features.tar.gz ends early or is damaged (")
    read = re.search(r"after (\d+) whole TFRecord files \(bal_train (\d+)(?:, eval (\d+))?; (\d+) records\)", err)
    assert read, err
    files, bal, eval_, records = (int(g or 0) for g in read.groups())
    assert 0 < files < 100 and files == bal + eval_ and records >= files  # part of its 100 files, one or more each
    size = f"{tarball.stat().st_size / 1000:.1f} KB"
    assert f"whatever followed in the archive is lost ({size} on disk; AudioSet's features.tar.gz is 2.4 GB)" in err
    assert err.rstrip().endswith(
        "Nothing was built: download the file again, or copy it whole (`musrec setup` fetches AudioSet's and checks "
        "it to the end), then build again"
    )
    assert not out.exists() and not list(tmp_path.glob(".idx.*"))
