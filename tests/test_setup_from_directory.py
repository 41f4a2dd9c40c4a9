"""Issue 26: `musrec setup --from DIR` fetches nothing. What DIR lacks is named, each with where to get it, in one
run, and the message never suggests the command that was just run.

Every URL of the configuration points at a download server on 127.0.0.1 that serves every file: a set-up that
went to the network would be seen in its requests.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from audioset_fixtures import make_segments
from setup_fixtures import (
    BUNDLE_PATH,
    CHECKPOINT_PATH,
    FEATURES_PATH,
    PCA_PATH,
    FileServer,
    SetupFiles,
    run,
    setup_files,
    small_config,
)

from musrec.audioset.labels import default_labels
from musrec.config import load_config
from musrec.index.build import BuildOptions, build_index
from musrec.setup.provision import check_ready


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SetupFiles:
    return setup_files(tmp_path_factory)


@pytest.fixture
def server(files: SetupFiles) -> Iterator[FileServer]:
    with FileServer() as srv:
        srv.add(CHECKPOINT_PATH, files.checkpoint)
        srv.add(PCA_PATH, files.pca)
        srv.add(BUNDLE_PATH, files.bundle)
        srv.add(FEATURES_PATH, files.features)
        yield srv


def directory(tmp_path: Path, *paths: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    for path in paths:
        shutil.copyfile(path, mine / path.name)
    return mine


def test_only_the_model_files_fetches_no_features(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    """Issue 26: it went to the features mirrors for 2.4 GB."""
    mine = directory(tmp_path, files.checkpoint, files.pca)
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 1
    assert server.hits() == []
    assert "checkpoint: linked (from " in r.out and "pca params: linked (from " in r.out  # what DIR had was used
    assert r.err == (
        f"musrec: error: --from {mine} does not hold what set-up still needs, and nothing was downloaded: "
        f"features.tar.gz (2.4 GB) or its unpacked audioset_v1_embeddings/ from {server.url(FEATURES_PATH)}. "
        f"Copy them into {mine} (any folder below it will do) from a machine with network; or let `musrec setup` "
        "without --from download them\n"
    )
    assert not (tmp_path / "data" / "audioset").exists()


def test_an_empty_directory_fetches_nothing_and_names_everything(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    """Issue 26: it went to Google for the model, and offline suggested `--from DIR --models-only`."""
    mine = directory(tmp_path)
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 1 and server.hits() == []
    assert r.err == (
        f"musrec: error: --from {mine} does not hold what set-up still needs, and nothing was downloaded: "
        f"vggish_model.ckpt from {server.url(CHECKPOINT_PATH)}; vggish_pca_params.npz from {server.url(PCA_PATH)}; "
        f"or MAX's assets.tar.gz (instead of both files) from {server.url(BUNDLE_PATH)}; "
        f"features.tar.gz (2.4 GB) or its unpacked audioset_v1_embeddings/ from {server.url(FEATURES_PATH)}. "
        f"Copy them into {mine} (any folder below it will do) from a machine with network; or let `musrec setup` "
        "without --from download them\n"
    )
    assert not (tmp_path / "data" / "models").exists() or not any((tmp_path / "data" / "models").iterdir())


def test_models_only_from_an_empty_directory_names_the_models(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    mine = directory(tmp_path, files.pca)
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--from", str(mine), "--models-only", "--no-progress"])
    assert r.code == 1 and server.hits() == []
    assert "pca params: linked" in r.out
    wanted = f"nothing was downloaded: vggish_model.ckpt from {server.url(CHECKPOINT_PATH)}; or MAX's assets.tar.gz "
    assert wanted in r.err
    assert "(instead of vggish_model.ckpt)" in r.err
    assert "features" not in r.err and "--models-only" not in r.err  # never the command just run
    assert len(r.err.splitlines()) == 1


def test_the_max_bundle_in_the_directory_stands_for_both_files(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    mine = directory(tmp_path, files.bundle, files.features)
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 0, r.err
    assert server.hits() == []
    assert "checkpoint: extracted (vggish_model.ckpt from the MAX bundle " in r.out
    assert re.search(r"^index: built \(100 segments", r.out, re.M), r.out
    assert check_ready(load_config(config, environ={})) == []
    assert (mine / "assets.tar.gz").is_file()  # the user's bundle is kept


def test_with_an_index_built_elsewhere_the_model_files_are_enough(
    tmp_path: Path, server: FileServer, files: SetupFiles
) -> None:
    config = small_config(tmp_path, server, files)
    build_index(
        make_segments(30, split="eval"),
        load_config(config, environ={}).index_path,
        labels=default_labels(),
        options=BuildOptions(trees=2),
    )
    mine = directory(tmp_path, files.checkpoint, files.pca)
    r = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 0, r.err
    assert server.hits() == []
    assert "was not built by musrec setup; --rebuild replaces it" in r.out


def test_a_wrong_file_and_a_missing_one_are_both_named(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    """Issue 26: every file that does not match is named in the same run, with the variable that accepts it."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "vggish_model.ckpt").write_bytes(b"not the model")
    (mine / "vggish_pca_params.npz").write_bytes(b"not the parameters")
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 1 and server.hits() == []
    assert r.err == (
        f"musrec: error: {mine / 'vggish_model.ckpt'} does not match the published sha512 of vggish_model.ckpt: for a "
        'model of your own, set [setup] checkpoint_sha512 = "" (or MUSREC_SETUP_CHECKPOINT_SHA512= in the '
        f"environment); {mine / 'vggish_pca_params.npz'} does not match the published sha512 of "
        'vggish_pca_params.npz: for a model of your own, set [setup] pca_sha512 = "" (or MUSREC_SETUP_PCA_SHA512= in '
        "the environment) (nothing was copied)\n"
    )


def test_a_tarball_from_the_directory_is_read_once_by_the_build(
    tmp_path: Path, server: FileServer, files: SetupFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: set-up read the 2.4 GB tarball once to check it and again to build. The build's read now verifies it
    (to the end of its gzip stream), and a second set-up trusts the record that read left."""
    from musrec.setup import features

    monkeypatch.setattr(features, "_read_tarball", lambda *a, **k: pytest.fail("a separate check read the tarball"))
    mine = directory(tmp_path, files.checkpoint, files.pca, files.features)
    config = small_config(tmp_path, server, files)
    r = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 0, r.err
    assert server.hits() == []
    assert re.search(r"^features: verified \(.*, tarball reads to the end \(as the index built\): \d+ ", r.out, re.M)
    again = run(["--config", str(config), "setup", "--from", str(mine), "--no-progress", "--rebuild"])
    assert again.code == 0, again.err
    assert re.search(r"^features: present \(.*tarball reads to the end \(as the index built\)", again.out, re.M)


@pytest.mark.parametrize("damage", ["truncated", "gzip checksum"])
def test_a_damaged_tarball_from_the_directory_is_refused_and_not_kept(
    tmp_path: Path, server: FileServer, files: SetupFiles, damage: str
) -> None:
    """Issue 22: checked by the build instead of before it, a tarball cut short or whose gzip CRC fails (the tar
    inside intact: only the checksum read to the end tells) is still refused, nothing is built, and its copy in the
    data directory is removed; the user's own file is left as it is."""
    mine = directory(tmp_path, files.checkpoint, files.pca, files.features)
    tarball = mine / files.features.name
    data = bytearray(tarball.read_bytes())
    if damage == "truncated":
        del data[len(data) * 2 // 3 :]
    else:
        data[-8] ^= 0xFF  # the trailer's CRC32 of the uncompressed bytes
    tarball.write_bytes(bytes(data))
    r = run(["--config", str(small_config(tmp_path, server, files)), "setup", "--from", str(mine), "--no-progress"])
    assert r.code == 1
    assert r.err.startswith(f"musrec: error: {tarball.name} is not a complete tarball: "), r.err
    assert len(r.err.strip().splitlines()) == 1
    assert server.hits() == []
    assert tarball.read_bytes() == bytes(data)
    assert not (tmp_path / "data" / "audioset" / "features.tar.gz").exists()
    assert not (tmp_path / "data" / "index").exists()
