"""`musrec setup` from a fresh machine, against a download server on 127.0.0.1; ensure_ready / check_ready;
the Docker files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from setup_fixtures import (
    BUNDLE_PATH,
    CHECKPOINT_PATH,
    FEATURES_PATH,
    PCA_PATH,
    FileServer,
    Run,
    SetupFiles,
    leftovers,
    run,
    serve_all,
    setup_files,
    sha512,
    small_config,
    write_config,
)
from vggish_fixtures import music_like, shared_vggish_files

from musrec.audio.wav import to_wav_bytes
from musrec.cli import main
from musrec.config import load_config
from musrec.errors import DownloadError
from musrec.index.layout import MANIFEST
from musrec.index.search import Index
from musrec.setup.provision import check_ready, ensure_ready
from musrec.setup.state import STATE_FILE

ROOT = Path(__file__).resolve().parent.parent
STRUCTURES = ("annoy", "ivf")  # every user-level path runs on both index structures
CUT = 100 * 1000 * 1000  # the first checkpoint response stops after this many bytes


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SetupFiles:
    return setup_files(tmp_path_factory)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        yield srv


# ---- a fresh machine: interrupted, resumed, then idempotent -------------------------------------------------


@dataclass(frozen=True)
class Fresh:
    config: Path
    data: Path
    server: FileServer
    checkpoint_sha512: str
    interrupted: Run
    part_size_after_interruption: int
    final_existed_after_interruption: bool
    resumed: Run
    requests_after_resume: int
    manifest_after_resume: str
    manifest_mtime_after_resume: int
    rerun: Run


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, files: SetupFiles) -> Iterator[Fresh]:
    """The full-size random-weight checkpoint, served once: cut at 100 MB, resumed, then a third run."""
    vggish = shared_vggish_files(tmp_path_factory)
    root = tmp_path_factory.mktemp("fresh")
    with FileServer() as server:
        server.add(CHECKPOINT_PATH, vggish.checkpoint, cut_after=CUT, cuts=1)
        server.add(PCA_PATH, vggish.pca_column)
        server.add(FEATURES_PATH, files.features)
        config = write_config(
            root / "musrec.toml",
            server,
            data_dir=root / "data",
            checkpoint_sha512=sha512(vggish.checkpoint),
            pca_sha512=sha512(vggish.pca_column),
        )
        argv = ["--config", str(config), "setup", "--no-progress"]
        interrupted = run(argv)
        ckpt = root / "data" / "models" / "vggish_model.ckpt"
        part = ckpt.with_name(ckpt.name + ".part")
        part_size = part.stat().st_size if part.exists() else -1
        existed = ckpt.exists()
        resumed = run(argv)
        count = len(server.hits())
        manifest = root / "data" / "index" / "manifest.json"
        text = manifest.read_text() if manifest.exists() else ""
        mtime = manifest.stat().st_mtime_ns if manifest.exists() else 0
        rerun = run(argv)
        yield Fresh(
            config=config,
            data=root / "data",
            server=server,
            checkpoint_sha512=sha512(vggish.checkpoint),
            interrupted=interrupted,
            part_size_after_interruption=part_size,
            final_existed_after_interruption=existed,
            resumed=resumed,
            requests_after_resume=count,
            manifest_after_resume=text,
            manifest_mtime_after_resume=mtime,
            rerun=rerun,
        )


def test_an_interrupted_download_fails_in_one_line_and_keeps_only_the_part(fresh: Fresh) -> None:
    r = fresh.interrupted
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musrec: error: ")
    assert "vggish_model.ckpt" in lines[0] and "run again to resume" in lines[0]
    assert "MAX bundle failed too" in lines[0]  # the fallback was tried (it answers 404 here)
    assert not fresh.final_existed_after_interruption
    assert fresh.part_size_after_interruption == CUT
    assert "pca params: downloaded" in r.out  # what could be fetched was kept


def test_the_second_run_resumes_with_a_range_request(fresh: Fresh) -> None:
    assert fresh.resumed.code == 0, fresh.resumed.err
    ckpt_requests = fresh.server.hits(CHECKPOINT_PATH)
    assert [r.status for r in ckpt_requests] == [200, 206]
    assert ckpt_requests[1].range == f"bytes={CUT}-" and ckpt_requests[1].if_range  # If-Range guards the splice
    checkpoint = fresh.data / "models" / "vggish_model.ckpt"
    assert sha512(checkpoint) == fresh.checkpoint_sha512  # the spliced file is byte-exact
    assert "resumed at 100.0 MB" in fresh.resumed.out and "sha512 verified" in fresh.resumed.out
    assert not leftovers(fresh.data)


def test_fresh_setup_builds_a_working_index(fresh: Fresh) -> None:
    out = fresh.resumed.out
    # Read once (issue 22): downloaded, then verified by the build's own reading of it to the end.
    assert re.search(r"^features: downloaded \(.*size matches Content-Length; to be read to the end as", out, re.M)
    assert re.search(r"^features: verified \(.*tarball reads to the end \(as the index built\)", out, re.M)
    assert "labels: shipped (527 AudioSet classes" in out
    assert re.search(r"^index: built \(100 segments at ", out, re.M)
    assert out.rstrip().endswith("ready: try `musrec recommend FILE`")
    state = json.loads((fresh.data / STATE_FILE).read_text())
    assert set(state["files"]) == {
        "models/vggish_model.ckpt",
        "models/vggish_pca_params.npz",
        "audioset/features.tar.gz",
    }
    features = state["files"]["audioset/features.tar.gz"]
    assert features["tfrecords"] == {"bal_train": 40, "eval": 60}  # one shard per 2-character prefix
    assert features["size"] == (fresh.data / "audioset" / "features.tar.gz").stat().st_size
    assert check_ready(load_config(fresh.config, environ={})) == []


def test_recommend_works_after_setup(fresh: Fresh, tmp_path: Path) -> None:
    from musrec.index.search import Index

    seg = Index(fresh.data / "index").store.get(5)
    r = run(["--config", str(fresh.config), "recommend", f"audioset:{seg.video_id}@{seg.start_s:g}", "--json"])
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["matches"]) == 10
    # A new clip goes through the downloaded checkpoint and PCA file.
    clip = tmp_path / "clip.wav"
    clip.write_bytes(to_wav_bytes(music_like(11.0)))
    r = run(["--config", str(fresh.config), "recommend", str(clip), "--top-k", "3", "--json"])
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["query"]["kind"] == "file" and len(data["matches"]) == 3


def test_a_rerun_downloads_nothing_and_does_not_rebuild(fresh: Fresh) -> None:
    r = fresh.rerun
    assert r.code == 0, r.err
    assert len(fresh.server.hits()) == fresh.requests_after_resume
    manifest = fresh.data / "index" / "manifest.json"
    assert manifest.read_text() == fresh.manifest_after_resume
    assert manifest.stat().st_mtime_ns == fresh.manifest_mtime_after_resume
    assert "checkpoint: present" in r.out and "features: present" not in r.out  # not even looked at
    assert re.search(r"^index: up to date \(100 segments", r.out, re.M), r.out


# ---- downloads ----------------------------------------------------------------------------------------------


def test_resume_within_one_run(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files, cut_after=300, cuts=2)
    config = small_config(tmp_path, server, files, retries=2)
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    ranges = [h.range for h in server.hits(CHECKPOINT_PATH)]
    assert ranges == [None, "bytes=300-", "bytes=600-"]
    assert sha512(tmp_path / "data" / "models" / "vggish_model.ckpt") == files.checkpoint_sha512
    assert not leftovers(tmp_path / "data")


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files, cut_after=500, cuts=1, ignore_range=True)
    config = small_config(tmp_path, server, files, retries=1)
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    hits = server.hits(CHECKPOINT_PATH)
    assert [h.status for h in hits] == [200, 200] and hits[1].range == "bytes=500-"
    assert sha512(tmp_path / "data" / "models" / "vggish_model.ckpt") == files.checkpoint_sha512
    assert "resumed" not in r.out


def test_a_checksum_mismatch_is_an_error_and_keeps_nothing(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    serve_all(server, files)
    server.add(PCA_PATH, files.pca, wrong_bytes=True)
    config = small_config(tmp_path, server, files, bundle=False)
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert r.code == 1
    assert r.err.strip() == (
        f"musrec: error: vggish_pca_params.npz from {server.url(PCA_PATH)} does not match its sha512 "
        "(the download was discarded)"
    )
    models = tmp_path / "data" / "models"
    assert not (models / "vggish_pca_params.npz").exists()
    assert not leftovers(tmp_path / "data")  # no .part left to be resumed as if it were good
    assert not server.hits(FEATURES_PATH)  # nothing more was attempted


def test_a_corrupted_file_is_reported_and_kept_then_fetched_again_once_moved_away(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    """Issue 12: a file in place is never deleted, even one musrec downloaded itself."""
    serve_all(server, files)
    config = small_config(tmp_path, server, files)
    assert run(["--config", str(config), "setup", "--models-only", "--no-progress"]).code == 0
    pca = tmp_path / "data" / "models" / "vggish_pca_params.npz"
    pca.write_bytes(b"\0" * pca.stat().st_size)  # same size, new mtime: the state file no longer vouches for it
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 1
    assert r.err.strip() == (  # issue 26: the configuration file to edit, and the variable that does the same
        f"musrec: error: {pca} is not the file [setup] pca_sha512 names; left as it is. For a model of your own, "
        f'set pca_sha512 = "" under [setup] in {config} (or MUSREC_SETUP_PCA_SHA512= in the environment); to fetch '
        "the published file instead, move it away and run `musrec setup --models-only` (without network: "
        "`musrec setup --from DIR`)"
    )
    assert pca.read_bytes() == b"\0" * pca.stat().st_size and len(server.hits(PCA_PATH)) == 1
    pca.rename(tmp_path / "mine.npz")
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    assert "pca params: downloaded" in r.out and "checkpoint: present" in r.out
    assert sha512(pca) == files.pca_sha512 and len(server.hits(PCA_PATH)) == 2


def test_falls_back_to_the_max_bundle(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    server.add(BUNDLE_PATH, files.bundle)  # Google's two URLs are not registered: 404
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    assert [h.status for h in server.hits(CHECKPOINT_PATH)] == [404]
    assert len(server.hits(BUNDLE_PATH)) == 1  # one bundle download serves both files
    models = tmp_path / "data" / "models"
    assert sha512(models / "vggish_model.ckpt") == files.checkpoint_sha512
    assert sha512(models / "vggish_pca_params.npz") == files.pca_sha512
    assert sorted(p.name for p in models.iterdir()) == ["vggish_model.ckpt", "vggish_pca_params.npz"]
    assert "checkpoint: extracted (vggish_model.ckpt from the MAX bundle" in r.out


def test_features_mirrors_are_tried_in_turn(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files)
    server.add("/eu/features.tar.gz", b"", status=503)
    mirrors = [server.url("/us/features.tar.gz"), server.url("/eu/features.tar.gz"), server.url(FEATURES_PATH)]
    config = small_config(tmp_path, server, files, features_urls=mirrors)
    r = run(["--config", str(config), "setup", "--no-progress", "--splits", "eval"])
    assert r.code == 0, r.err
    order = [h.path for h in server.hits() if "features" in h.path]
    assert order == ["/us/features.tar.gz", "/eu/features.tar.gz", FEATURES_PATH]
    assert "features: downloaded (" in r.out and server.url(FEATURES_PATH) in r.out
    assert re.search(r"^index: built \(60 segments at .* \(eval 60\)", r.out, re.M), r.out


def test_a_broken_features_tarball_is_rejected(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files)
    data = files.features.read_bytes()
    server.add(FEATURES_PATH, data[: len(data) * 2 // 3])  # served whole, with a matching Content-Length
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert r.code == 1
    assert r.err.startswith(
        f"musrec: error: could not fetch the AudioSet features: {server.url(FEATURES_PATH)}: "
        "the download is not a complete tarball: "
    )
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "audioset" / "features.tar.gz").exists()
    assert not leftovers(tmp_path / "data")


def test_a_downloaded_tarball_is_read_once_by_the_build(
    tmp_path: Path, server: FileServer, files: SetupFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: a fresh set-up read the downloaded 2.4 GB tarball three times (sha512, a check read to its end, the
    build). Without a published checksum it is now read once, by the build, which verifies it to the end of its gzip
    stream; the model files, whose sha512 is published, are still hashed."""
    import musrec.setup.download
    from musrec.setup import features

    hashed: list[str] = []
    real_hash = musrec.setup.download._hash_part

    def hash_part(part: Path, *, progress: bool) -> str:
        hashed.append(part.name)
        return real_hash(part, progress=progress)

    monkeypatch.setattr(musrec.setup.download, "_hash_part", hash_part)
    monkeypatch.setattr(features, "_read_tarball", lambda *a, **k: pytest.fail("a separate check read the tarball"))
    serve_all(server, files)
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--no-progress"])
    assert r.code == 0, r.err
    assert sorted(hashed) == ["vggish_model.ckpt.part", "vggish_pca_params.npz.part"]
    assert re.search(r"^features: verified \(.*tarball reads to the end \(as the index built\)", r.out, re.M)


def test_not_enough_disk_space_is_a_clear_error(
    tmp_path: Path, server: FileServer, files: SetupFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    import musrec.setup.download

    serve_all(server, files)
    full = shutil._ntuple_diskusage(total=10**9, used=10**9 - 1000, free=1000)  # type: ignore[attr-defined]
    monkeypatch.setattr(musrec.setup.download.shutil, "disk_usage", lambda path: full)
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--no-progress"])
    assert r.code == 1
    assert "not enough disk space for vggish_model.ckpt" in r.err
    assert len(server.hits()) == 1  # neither the bundle nor other files were tried


# ---- files the user has -------------------------------------------------------------------------------------


def test_setup_from_a_directory_downloads_nothing(
    tmp_path: Path, server: FileServer, files: SetupFiles, tmp_path_factory: pytest.TempPathFactory
) -> None:
    vggish = shared_vggish_files(tmp_path_factory)
    mine = tmp_path / "mine"
    (mine / "vggish").mkdir(parents=True)
    os.link(vggish.checkpoint, mine / "vggish" / "vggish_model.ckpt")
    shutil.copy(vggish.pca_column, mine / "vggish_pca_params.npz")
    shutil.copy(files.features, mine / "features.tar.gz")
    config = write_config(
        tmp_path / "musrec.toml",
        server,
        data_dir=tmp_path / "data",
        checkpoint_sha512=sha512(vggish.checkpoint),
        pca_sha512=sha512(vggish.pca_column),
    )
    r = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 0, r.err
    assert server.hits() == []
    assert re.search(r"^checkpoint: linked \(from .*/mine/vggish/vggish_model.ckpt; sha512 verified\)", r.out, re.M), (
        r.out
    )
    # issue 22: a tarball on this machine is read once, by the build, which verifies it to the end of its gzip stream
    assert re.search(
        r"^features: linked \(from .*features.tar.gz; to be read to the end as the index builds\)", r.out, re.M
    )
    verified = r"^features: verified \(.*features.tar.gz, tarball reads to the end \(as the index built\): 100 "
    assert re.search(verified, r.out, re.M), r.out
    assert re.search(r"^index: built \(100 segments", r.out, re.M), r.out
    data = tmp_path / "data"
    assert (data / "models" / "vggish_model.ckpt").stat().st_ino == vggish.checkpoint.stat().st_ino
    # Other [build] settings rebuild the index from the features already in place, still without a download.
    r = run(["--config", str(config), "setup", "--splits", "eval", "--music-only", "--no-progress"])
    assert r.code == 0, r.err
    assert "index: rebuilding ([build] settings changed: music_only false -> true; splits bal_train, eval, " in r.out
    assert "features: present" in r.out and re.search(r"^index: built \(30 segments .*eval 30, music only", r.out, re.M)
    assert server.hits() == []
    # Issue 26: a plain rerun keeps that choice, and says what the [build] settings would change.
    manifest = data / "index" / "manifest.json"
    built = manifest.stat().st_mtime_ns
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert r.code == 0, r.err
    assert re.search(
        r"^index: kept \(30 segments at .* \(eval 30, music only\); .*, as `musrec setup --music-only --splits eval` "
        r"chose; the \[build\] settings would change music_only true -> false; splits eval -> bal_train, eval, "
        r"unbal_train: `musrec setup --rebuild` builds that\)$",
        r.out,
        re.M,
    ), r.out
    assert manifest.stat().st_mtime_ns == built
    r = run(["--config", str(config), "setup", "--rebuild", "--no-progress"])
    assert r.code == 0, r.err
    assert re.search(r"^index: built \(100 segments .*\(eval 60, bal_train 40\)", r.out, re.M), r.out
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert re.search(r"^index: up to date \(100 segments", r.out, re.M), r.out
    assert server.hits() == []


def test_the_start_keeps_an_index_built_with_other_settings_and_says_what_applies_them(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    """Issue 26: the bot's start (refresh_index=False) never rebuilds; it says what differs and what rebuilds."""
    from musrec.setup.provision import SetupOptions, setup

    serve_all(server, files)
    path = small_config(tmp_path, server, files)
    assert run(["--config", str(path), "setup", "--splits", "eval", "--no-progress"]).code == 0
    steps = setup(load_config(path, environ={}), SetupOptions(refresh_index=False))
    kept = [str(step) for step in steps if step.name == "index"]
    assert kept == [
        f"index: kept ({tmp_path / 'data' / 'index'}, built with other [build] settings (splits eval -> bal_train, "
        "eval, unbal_train): `musrec setup --rebuild` applies them)"
    ]


def test_setup_from_an_unpacked_features_directory(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    mine = tmp_path / "mine"
    shutil.copytree(files.embeddings_dir, mine / "audioset_v1_embeddings")
    shutil.copy(files.checkpoint, mine / "vggish_model.ckpt")
    shutil.copy(files.pca, mine / "vggish_pca_params.npz")
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 0, r.err
    assert server.hits() == []
    assert "TFRecord headers check: 100 TFRecord files (bal_train 40, eval 60)" in r.out
    tree = tmp_path / "data" / "audioset" / "audioset_v1_embeddings"
    assert len(list(tree.rglob("*.tfrecord"))) == 100
    manifest = json.loads((tmp_path / "data" / "index" / "manifest.json").read_text())
    assert manifest["count"] == 100 and manifest["sources"] == [str(tree)]


def test_from_a_directory_with_a_wrong_file_is_an_error(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "vggish_model.ckpt").write_bytes(b"not the model")
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 1
    assert "vggish_model.ckpt does not match the published sha512 of vggish_model.ckpt" in r.err
    assert not (tmp_path / "data" / "models" / "vggish_model.ckpt").exists()


# ---- scope options, foreign indexes -------------------------------------------------------------------------


def test_models_only_and_skip_features(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files)
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    assert "index" not in r.out and not server.hits(FEATURES_PATH)
    r = run(["--config", str(config), "setup", "--skip-features", "--no-progress"])
    assert r.code == 0, r.err
    assert "index: skipped (no AudioSet features here" in r.out and not server.hits(FEATURES_PATH)
    problems = check_ready(load_config(config, environ={}))
    assert len(problems) == 1 and problems[0].startswith("no index at ")


@pytest.mark.parametrize("structure", STRUCTURES)
def test_an_index_built_elsewhere_is_kept_unless_rebuild(
    tmp_path: Path, server: FileServer, files: SetupFiles, structure: str
) -> None:
    serve_all(server, files)
    config = small_config(tmp_path, server, files)
    index = tmp_path / "data" / "index"
    build = ["index", "build", str(files.embeddings_dir / "eval"), "--out", str(index), "--backend", structure]
    assert main([*build, "--no-progress"]) == 0
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert r.code == 0, r.err
    assert "was not built by musrec setup; --rebuild replaces it" in r.out and not server.hits(FEATURES_PATH)
    assert check_ready(load_config(config, environ={})) == []  # issue 12: an IVF index is ready too
    r = run(["--config", str(config), "setup", "--rebuild", "--no-progress"])
    assert r.code == 0, r.err
    assert re.search(r"^index: built \(100 segments", r.out, re.M) and len(server.hits(FEATURES_PATH)) == 1


# ---- ensure_ready / check_ready -----------------------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_ensure_ready_sets_up_what_is_missing_then_returns_at_once(
    tmp_path: Path, server: FileServer, files: SetupFiles, structure: str
) -> None:
    serve_all(server, files)
    path = small_config(tmp_path, server, files, backend=structure)
    config = load_config(path, environ={})
    problems = check_ready(config)
    assert len(problems) == 3
    assert problems[0].startswith("VGGish checkpoint not found") and problems[1].startswith("VGGish pca params")
    assert problems[2].startswith(f"no index at {tmp_path / 'data' / 'index'}: run `musrec setup`")
    ensure_ready(config, progress=False)
    assert check_ready(config) == []
    manifest = config.index_path / MANIFEST
    assert json.loads(manifest.read_text())["ann"] == structure
    built = manifest.stat().st_mtime_ns
    count = len(server.hits())
    assert count == 3  # checkpoint, PCA, features
    ensure_ready(config, progress=True)
    assert len(server.hits()) == count
    # Issue 12: the bot's start-up and a rerun of setup accept an IVF index as they do an Annoy one.
    r = run(["--config", str(path), "setup", "--no-progress"])
    assert r.code == 0, r.err
    assert re.search(r"^index: up to date \(100 segments", r.out, re.M), r.out
    assert manifest.stat().st_mtime_ns == built and len(server.hits()) == count
    index = Index(config.index_path)
    seg = index.store.get(7)
    index.close()
    r = run(["--config", str(path), "recommend", f"audioset:{seg.video_id}@{seg.start_s:g}", "--json"])
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["matches"]) == 10


def test_ensure_ready_with_max_servers_fetches_no_model(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files)
    config = load_config(small_config(tmp_path, server, files, extra='\n[embedder]\nkind = "max"\n'), environ={})
    ensure_ready(config, progress=False)
    assert check_ready(config) == [] and not server.hits(CHECKPOINT_PATH) and not server.hits(PCA_PATH)


def test_ensure_ready_raises_a_musrec_error(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    config = load_config(small_config(tmp_path, server, files, bundle=False), environ={})
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_ready(config, progress=False)


# ---- deployment files ---------------------------------------------------------------------------------------


def test_dockerfile_copies_files_that_exist_and_sets_what_the_image_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in _logical_lines(text)]
    copies = [args.split() for op, args in instructions if op == "COPY" and "--from" not in args]
    assert copies
    for args in copies:
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert instructions[0][0] in ("FROM", "ARG") and "python:3.11-slim" in text
    for needed in ("ANNOY_COMPILER_ARGS", "OPENBLAS_NUM_THREADS=1", "VOLUME", "HEALTHCHECK", "USER", "ffmpeg"):
        assert needed in text, needed
    annoy_args = re.search(r'ANNOY_COMPILER_ARGS="([^"]+)"', text)
    assert annoy_args and "native" not in annoy_args.group(1)
    assert re.search(r'^ENTRYPOINT \["musrec-bot"\]', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for secret_or_bulk in (".env", ".venv", ".git", "config.toml"):
        assert secret_or_bulk in ignored


def test_compose_file_runs_the_bot_with_exact_embeddings_and_max_as_an_option() -> None:
    """Issue 12: the default deployment embeds in the bot's own process (exactly the index's space); IBM's MAX
    image, whose ReLU output is not, is an opt-in profile."""
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    bot, max_ = compose["services"]["bot"], compose["services"]["max"]
    # pot-provider: tests/test_links_ytdlp_settings; milvus: a Milvus standalone for libraries (issue 25)
    assert set(compose["services"]) == {"bot", "max", "pot-provider", "milvus"}
    assert max_["profiles"] == ["max"] and "profiles" not in bot
    milvus = compose["services"]["milvus"]
    assert milvus["profiles"] == ["milvus"]  # opt-in, as MAX is
    # Milvus standalone in one container as Milvus's standalone_embed.sh runs it: its own etcd (configured to compact)
    # and local storage, its data in a volume, healthy once its /healthz answers.
    assert milvus["command"] == ["milvus", "run", "standalone"] and milvus["image"].startswith("milvusdb/milvus:v2.")
    assert milvus["environment"]["ETCD_USE_EMBED"] == "true" and milvus["environment"]["COMMON_STORAGETYPE"] == "local"
    etcd = yaml.safe_load(compose["configs"][milvus["configs"][0]["source"]]["content"])
    assert milvus["configs"][0]["target"] == milvus["environment"]["ETCD_CONFIG_PATH"]
    assert etcd["auto-compaction-mode"] == "revision" and etcd["quota-backend-bytes"] > 0
    assert milvus["volumes"] == ["milvus-data:/var/lib/milvus"] and "milvus-data" in compose["volumes"]
    assert "/healthz" in " ".join(milvus["healthcheck"]["test"])
    assert bot["environment"]["MUSREC_EMBEDDER_KIND"] == "${MUSREC_EMBEDDER_KIND:-local}"
    assert bot["environment"]["MUSREC_MAX_URLS"] == "${MUSREC_MAX_URLS:-http://max:5000}"
    assert "depends_on" not in bot  # it would fail whenever the max profile is off
    assert max_["image"].startswith("quay.io/codait/max-audio-embedding-generator")
    assert "/model/metadata" in " ".join(max_["healthcheck"]["test"])
    assert any(str(v).endswith(":/data") for v in bot["volumes"]) and bot["env_file"] == ".env"
    assert "MUSREC_DISCORD_TOKEN" not in json.dumps(bot.get("environment", {}))  # the token comes from the env file
    assert "docker compose run --rm bot sync" in text


def test_the_token_file_stays_out_of_git_and_the_image() -> None:
    """Issue 12: the README tells Docker users to put the token in .env; git must not offer it for a commit."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    for name in (".env", "prod.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, timeout=60)
        assert ignored.returncode == 0, f"git does not ignore {name}"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    readme = (ROOT / "README.md").read_text()
    assert "docker compose run --rm bot sync" in readme


def _logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_a_complete_part_left_by_a_crash_is_verified_and_kept(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    serve_all(server, files)
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    shutil.copy(files.checkpoint, models / "vggish_model.ckpt.part")  # complete, but never renamed into place
    (models / "vggish_pca_params.npz.part").write_bytes(b"x" * (files.pca.stat().st_size + 10))  # longer than the file
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    assert [(h.range, h.status) for h in server.hits(CHECKPOINT_PATH)] == [
        (f"bytes={files.checkpoint.stat().st_size}-", 416)
    ]
    assert [h.status for h in server.hits(PCA_PATH)] == [416, 200]  # a part that cannot be resumed starts again
    assert sha512(models / "vggish_model.ckpt") == files.checkpoint_sha512
    assert sha512(models / "vggish_pca_params.npz") == files.pca_sha512
    assert not leftovers(tmp_path / "data")


def test_concurrent_setups_take_turns(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    serve_all(server, files)
    config = load_config(small_config(tmp_path, server, files), environ={})
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(ensure_ready, config, progress=False) for _ in range(2)]:
            future.result(timeout=120)
    assert len(server.hits()) == 3  # each file fetched once: the second waited, then found everything in place
    assert check_ready(config) == []
