"""The approximate structures behind an index (Annoy, faiss IVF) and the honest tuning of their search parameter.

Issue: "Full AudioSet on one machine: 2 million segments, high recall, fast queries".
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments
from tolerances import dot_tolerance

from musrec.audioset.labels import default_labels
from musrec.audioset.records import write_records
from musrec.audioset.representation import represent
from musrec.audioset.synthetic import SyntheticAudioSet
from musrec.cli import main
from musrec.errors import ConfigError, IndexFormatError
from musrec.index import backends as backends_module
from musrec.index import search as index_module
from musrec.index.backends import ExactBackend, IvfBackend, ScanBackend, TopN
from musrec.index.build import BuildOptions, build_index
from musrec.index.layout import HOLDOUT_FILE, IVF_FILE, MANIFEST, MUSIC_FILE
from musrec.index.search import Index, exact_search_many
from musrec.index.structures import AUTO_IVF_MIN_COUNT, Sample, auto_ivf_lists, choose_ann

LABELS = default_labels()
HELD_OUT_START = 10**9  # synthetic segments generated from here on are not in any test index


def build(out: Path, count: int, **options: object) -> Index:
    build_index(
        SyntheticAudioSet().segments(count, chunk=2000),
        out,
        labels=LABELS,
        options=BuildOptions(**options),  # type: ignore[arg-type]
        sources=["synthetic"],
    )
    return Index(out)


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ivf") / "idx"
    build(out, 6000, backend="ivf", representation="flatten", recall_queries=150)
    return out


@pytest.fixture(scope="module")
def annoy_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("annoy") / "idx"
    build(out, 3000, backend="annoy", representation="mean", trees=8, recall_queries=100)
    return out


def new_queries(representation: str, count: int = 60) -> np.ndarray:
    rows, _ = SyntheticAudioSet().rows(HELD_OUT_START, count)
    return represent(rows, representation)


@pytest.mark.parametrize("representation", ["flatten", "meanstd"])
def test_ivf_neighbours_of_new_queries_match_exact_search(tmp_path: Path, representation: str) -> None:
    out = tmp_path / "idx"
    index = build(out, 4000, backend="ivf", representation=representation, recall_queries=100)
    m = index.manifest
    assert (m.ann, m.preferred_backend in ("ivf", "exact"), m.trees, m.search_k) == ("ivf", True, 0, 0)
    assert (out / IVF_FILE).is_file() and not (out / "annoy.ann").exists()
    ivf = Index(out, backend="ivf")
    assert isinstance(ivf.backend, IvfBackend)
    queries = new_queries(representation)
    truth, truth_scores = exact_search_many(ivf.embeddings, representation, queries, 10)
    hits = best = 0
    for q, want, want_scores in zip(queries, truth, truth_scores, strict=True):
        ids, scores = ivf.search(q, 10)
        hits += len(set(ids.tolist()) & set(want.tolist()))
        tolerance = dot_tolerance(len(q))  # another BLAS kernel sums in another order
        best += abs(float(scores[0]) - float(want_scores[0])) <= tolerance
        # Candidates are re-scored from the raw rows: the scores are exact cosine similarities, best first.
        exact = represent(np.asarray(ivf.embeddings[ids]), representation) @ q
        assert np.allclose(scores, exact, rtol=0, atol=tolerance) and np.all(np.diff(scores) <= 0)
    assert hits / (10 * len(queries)) >= 0.9 and best >= 0.9 * len(queries)


def test_ivf_tuning_is_measured_on_held_out_segments_and_recorded(ivf_index: Path) -> None:
    m = Index(ivf_index).manifest
    on_disk = json.loads((ivf_index / MANIFEST).read_text())
    assert on_disk["format_version"] == 1 and on_disk["ann"] == "ivf" and on_disk["nprobe"] == m.nprobe
    tried = {int(k): v for k, v in m.extra["nprobe_tried"].items()}
    assert m.held_out == m.recall_queries == 150
    assert tried[m.nprobe] == pytest.approx(m.recall_at_10, abs=1e-4) and m.recall_at_10 >= m.target_recall
    assert all(v < m.target_recall for k, v in tried.items() if k < m.nprobe)  # the smallest that reached it
    assert m.recall_leave_one_out is not None and 0.0 < m.recall_leave_one_out <= 1.0
    assert 1 <= m.nprobe <= m.ivf_lists == auto_ivf_lists(6000 - 150) and m.rerank == 50
    assert set(m.query_ms) == {"ivf", "exact"}


def test_held_out_segments_are_searchable_after_the_build(ivf_index: Path, annoy_index: Path) -> None:
    for directory in (ivf_index, annoy_index):
        index = Index(directory, backend=Index(directory).manifest.ann)
        sample = Sample.choose(len(index), index.manifest.recall_queries, seed=0)
        assert len(sample.held_out) == index.manifest.held_out
        for item in sample.held_out[:20].tolist():
            ids, scores = index.search(index.item_vector(item), 3)
            # A vector's cosine with itself: 1 up to float32 rounding, whoever sums it.
            self_tolerance = dot_tolerance(index.manifest.dimension)
            assert ids[0] == item and scores[0] == pytest.approx(1.0, abs=self_tolerance)


def test_annoy_keeps_its_held_out_segments_beside_the_forest(annoy_index: Path) -> None:
    index = Index(annoy_index, backend="annoy")
    m = index.manifest
    held = np.load(annoy_index / HOLDOUT_FILE)
    assert len(held) == m.held_out == 100 and m.ann == "annoy" and m.search_k >= 1
    tried = {int(k): v for k, v in m.extra["search_k_tried"].items()}
    assert tried[m.search_k] == pytest.approx(m.recall_at_10, abs=1e-4) and m.recall_at_10 >= 0.95
    # New queries: the merged answer (forest plus held-out segments) agrees with exact search.
    queries = new_queries("mean")
    truth, _ = exact_search_many(index.embeddings, "mean", queries, 10)
    hits = sum(len(set(index.search(q, 10)[0].tolist()) & set(w.tolist())) for q, w in zip(queries, truth, strict=True))
    assert hits / (10 * len(queries)) >= 0.9


def test_each_index_loads_with_its_own_structure_or_exact_search(ivf_index: Path, annoy_index: Path) -> None:
    assert Index(ivf_index, backend="exact").backend.name == "exact"
    assert Index(annoy_index, backend="exact").backend.name == "exact"
    with pytest.raises(IndexFormatError, match="built with the ivf backend, not annoy.*--backend annoy"):
        Index(ivf_index, backend="annoy")
    with pytest.raises(IndexFormatError, match="built with the annoy backend, not ivf"):
        Index(annoy_index, backend="ivf")
    with pytest.raises(IndexFormatError, match="unknown backend"):
        Index(ivf_index, backend="hnsw")
    (ivf_index / IVF_FILE).rename(ivf_index / "moved")
    try:
        with pytest.raises(IndexFormatError, match=f"has no {IVF_FILE}"):
            Index(ivf_index, backend="exact")  # an incomplete index is refused whatever backend is asked for
        (ivf_index / IVF_FILE).write_bytes(b"not a faiss index")
        with pytest.raises(IndexFormatError, match=f"cannot load {IVF_FILE}"):
            Index(ivf_index, backend="ivf")
    finally:
        (ivf_index / "moved").replace(ivf_index / IVF_FILE)


def test_index_written_before_the_ivf_backend_still_loads(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build(out, 800, backend="annoy", trees=5)
    manifest = json.loads((out / MANIFEST).read_text())
    for key in ("ann", "nprobe", "ivf_lists", "rerank", "recall_leave_one_out", "held_out"):
        del manifest[key]
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / HOLDOUT_FILE).unlink()
    (out / MUSIC_FILE).unlink()
    index = Index(out, backend="annoy")
    assert index.manifest.ann == "annoy" and len(index.music_mask) == 800
    ids, _ = index.search(index.item_vector(3), 5)
    assert 3 in ids.tolist()


def test_large_indexes_stream_exact_search_instead_of_holding_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "EXACT_MEMORY_BUDGET", 0)
    index = build(tmp_path / "idx", 2500, backend="ivf", representation="mean", recall_queries=50)
    m = index.manifest
    # Too big for memory: the build neither times nor prefers exact search, and exact search scans the raw rows.
    assert set(m.query_ms) == {"ivf"} and m.preferred_backend == "ivf"
    scan = Index(tmp_path / "idx", backend="exact")
    assert isinstance(scan.backend, ScanBackend)
    full = ExactBackend(scan.all_vectors())
    whole_chunks = backends_module.iter_vectors
    for chunk in (backends_module._CHUNK, 300, 5):  # one chunk; several; fewer rows a chunk than results (issue 22)
        monkeypatch.setattr(backends_module, "iter_vectors", functools.partial(whole_chunks, chunk=chunk))
        for q in new_queries("mean", 5):
            ids, scores = scan.search(q, 7)
            want_ids, want_scores = full.search(q, 7)
            assert ids.tolist() == want_ids.tolist() and np.allclose(scores, want_scores, atol=1e-6)


def test_ivf_build_is_atomic_when_it_fails_after_ingest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        build_index(
            SyntheticAudioSet().segments(500), tmp_path / "idx", labels=LABELS, options=BuildOptions(backend="x")
        )
    seen = 0

    def interrupt(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4096:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(
            SyntheticAudioSet().segments(10_000),
            tmp_path / "idx",
            labels=LABELS,
            options=BuildOptions(backend="ivf"),
            progress=interrupt,
        )
    assert list(tmp_path.iterdir()) == []


def test_sample_holds_out_a_tenth_at_most_and_never_overlaps() -> None:
    s = Sample.choose(1000, 200, seed=3)
    assert len(s.held_out) == 100 and len(s.indexed) == 200 and s.k == 10
    assert not set(s.held_out.tolist()) & set(s.indexed.tolist())
    tiny = Sample.choose(5, 200, seed=0)
    assert len(tiny.held_out) == 0 and len(tiny.indexed) == 5 and tiny.k == 4
    assert choose_ann("auto", AUTO_IVF_MIN_COUNT - 1) == "annoy" and choose_ann("auto", AUTO_IVF_MIN_COUNT) == "ivf"
    assert choose_ann("annoy", 10**7) == "annoy"
    assert auto_ivf_lists(1_000_000) == 2048 and auto_ivf_lists(100) == 2


def test_streaming_top_n_skips_excluded_items() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    queries = vectors[:3]
    acc = TopN(queries, 4, exclude=np.array([0, 1, 2, 250]))
    for lo in range(0, 500, 64):
        acc.update(lo, vectors[lo : lo + 64])
    ids, scores = acc.result()
    full = queries @ vectors.T
    full[:, [0, 1, 2, 250]] = -np.inf
    assert ids.tolist() == np.argsort(-full, axis=1)[:, :4].tolist()
    assert np.allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_streaming_top_n_is_the_exact_top_n_whatever_the_chunks(seed: int) -> None:
    """Chunks of any size (1 to more than n), excluded items, ties (rounded vectors) and fewer items than n."""
    rng = np.random.default_rng(seed)
    count, n = int(rng.integers(1, 300)), int(rng.integers(1, 15))
    vectors = rng.normal(size=(count, 8)).astype(np.float32)
    if seed % 2:
        vectors = np.round(vectors)  # many equal scores: any of the tied items may be kept, with the same score
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    excluded = np.sort(rng.choice(count, size=min(count, int(rng.integers(0, 10))), replace=False))
    acc = TopN(queries, n, exclude=excluded)
    chunk = int(rng.integers(1, 64))
    for lo in range(0, count, chunk):
        acc.update(lo, vectors[lo : lo + chunk])
    ids, scores = acc.result()
    full = queries @ vectors.T
    full[:, excluded] = -np.inf
    kept = min(n, count - len(excluded))
    assert ids.shape == (7, kept)
    # BLAS sums a chunk's products and the whole matrix's in different orders: float32 rounding of dot products of
    # size about 10, so a few 1e-6.
    assert np.allclose(np.take_along_axis(full, ids, axis=1), scores, rtol=0, atol=1e-5)  # the ids found score so
    assert np.allclose(scores, -np.sort(-full, axis=1)[:, :kept], rtol=0, atol=1e-5)  # and those are the top scores


def test_cli_builds_each_backend_and_reports_the_tuning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    features = tmp_path / "eval.tfrecord"  # one file: reading hundreds of shards would dominate the test
    write_records(features, make_segments(900, split="eval", seed=4))
    base = ["index", "build", str(features), "--no-progress", "--recall-queries", "60"]
    assert main([*base, "--out", str(tmp_path / "ivf"), "--backend", "ivf", "--ivf-lists", "8", "--rerank", "30"]) == 0
    text = capsys.readouterr().out
    assert "ivf, 8 lists, nprobe" in text and "held-out segments" in text and "leave-one-out" in text
    m = Index(tmp_path / "ivf").manifest
    assert (m.ann, m.ivf_lists, m.rerank, m.held_out) == ("ivf", 8, 30, 60)

    assert main([*base, "--out", str(tmp_path / "annoy"), "--backend", "annoy", "--trees", "4"]) == 0
    assert "annoy, 4 trees, search_k" in capsys.readouterr().out
    assert Index(tmp_path / "annoy").manifest.ann == "annoy"

    # The configuration chooses it too; the command line wins over it.
    monkeypatch.setenv("MUSREC_BUILD_BACKEND", "ivf")
    assert main([*base, "--out", str(tmp_path / "env")]) == 0
    assert Index(tmp_path / "env").manifest.ann == "ivf"
    monkeypatch.setenv("MUSREC_BUILD_BACKEND", "faiss")
    assert main([*base, "--out", str(tmp_path / "bad")]) != 0
    assert "build.backend must be one of auto, annoy, ivf" in capsys.readouterr().err

    monkeypatch.delenv("MUSREC_BUILD_BACKEND")
    item = Index(tmp_path / "ivf").store.get(7)
    query = f"audioset:{item.video_id}@{item.start_s:g}"
    for backend in ("ivf", "exact"):
        code = main(["recommend", query, "--index", str(tmp_path / "ivf"), "--backend", backend, "--json"])
        assert code == 0
        assert json.loads(capsys.readouterr().out)["matches"]


def test_config_validates_the_build_keys() -> None:
    from musrec.config import BuildConfig, IndexConfig

    assert BuildConfig(backend="ivf", ivf_lists=64, rerank=20).backend == "ivf"
    assert IndexConfig(backend="ivf").backend == "ivf"
    with pytest.raises(ConfigError, match="build.rerank must be at least 10"):
        BuildConfig(rerank=5)
    with pytest.raises(ConfigError, match="build.ivf_lists"):
        BuildConfig(ivf_lists=-1)


@pytest.mark.slow
def test_ivf_at_200k_flatten_beats_exact_search_at_the_target_recall(tmp_path: Path) -> None:
    import time

    index = build(tmp_path / "idx", 200_000, backend="ivf", representation="flatten")
    queries = new_queries("flatten", 100)
    exact = ExactBackend(index.all_vectors())
    truth, _ = exact_search_many(index.embeddings, "flatten", queries, 10, matrix=exact.vectors)
    index.warm()
    t0 = time.perf_counter()
    found = [index.search(q, 10)[0] for q in queries]
    ivf_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries[:20]:
        exact.search(q, 10)
    exact_s = (time.perf_counter() - t0) * len(queries) / 20
    recall = sum(len(set(f.tolist()) & set(w.tolist())) for f, w in zip(found, truth, strict=True)) / 1000
    assert recall >= 0.93 and exact_s / ivf_s >= 5
