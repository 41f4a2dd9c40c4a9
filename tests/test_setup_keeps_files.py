"""Issue 12: start-up never deletes the user's model files (nor any other file in place).

The user points ``embedder.checkpoint`` / ``embedder.pca_params`` at files of their own: a random-weight checkpoint
in the official layout and a PCA file, neither of which is the file whose sha512 the configuration names. Every
start-up path (``musrec setup`` with its options, ``ensure_ready`` as the bot calls it, the bot's own entry point,
``musrec doctor``) leaves them byte for byte as they were and ends in one line saying what to do, or succeeds when
the configuration says ``sha512 = ""``. Downloads come from a server on 127.0.0.1 that serves the files the
configuration names, so a start-up that replaced the user's files would be seen fetching them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import discord.http
import pytest
from audioset_fixtures import make_segments
from conftest import closed_port
from setup_fixtures import (
    BUNDLE_PATH,
    CHECKPOINT_PATH,
    FEATURES_PATH,
    PCA_PATH,
    FileServer,
    SetupFiles,
    run,
    serve_all,
    setup_files,
    write_config,
)
from vggish_fixtures import shared_vggish_files

from bot.__main__ import main as bot_main
from musrec.audioset.labels import default_labels
from musrec.config import Config, load_config
from musrec.index.build import BuildOptions, build_index
from musrec.setup.download import ChecksumMismatchError
from musrec.setup.provision import check_ready, ensure_ready

CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    sha512: str
    inode: int
    size: int
    mtime_ns: int


def fingerprint(path: Path) -> Fingerprint:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    info = path.stat()
    return Fingerprint(digest.hexdigest(), info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class Mine:
    """The user's own model files and what they were before the start-up under test."""

    checkpoint: Path
    pca: Path
    before: tuple[Fingerprint, Fingerprint]

    def unchanged(self) -> bool:
        return (fingerprint(self.checkpoint), fingerprint(self.pca)) == self.before


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SetupFiles:
    return setup_files(tmp_path_factory)


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own_models") / "index"
    build_index(make_segments(40, split="eval"), path, labels=default_labels(), options=BuildOptions(trees=2))
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real home, data or cache directory; no Discord beyond a closed loopback port."""
    for name in ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    for name in [k for k in os.environ if k.startswith("MUSREC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        yield srv


@pytest.fixture
def mine(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Mine:
    """The random-weight checkpoint (official layout) and a PCA file, in a directory of the user's."""
    vggish = shared_vggish_files(tmp_path_factory)
    home = tmp_path / "my-model"
    home.mkdir()
    checkpoint, pca = home / "vggish_model.ckpt", home / "vggish_pca_params.npz"
    for src, dest in ((vggish.checkpoint, checkpoint), (vggish.pca_column, pca)):
        try:
            os.link(src, dest)  # 289 MB: a link, not a copy; musrec never writes into a file, so the original is safe
        except OSError:
            shutil.copyfile(src, dest)
    return Mine(checkpoint, pca, (fingerprint(checkpoint), fingerprint(pca)))


def config_file(tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine, *, own: bool) -> Path:
    """``own``: the configuration says the model is the user's (sha512 = ""); else it names the published files."""
    return write_config(
        tmp_path / "musrec.toml",
        server,
        data_dir=tmp_path / "data",
        checkpoint_sha512="" if own else files.checkpoint_sha512,
        pca_sha512="" if own else files.pca_sha512,
        extra=f"\n[embedder]\ncheckpoint = {str(mine.checkpoint)!r}\npca_params = {str(mine.pca)!r}\n",
    )


def with_index(config: Path, shared_index: Path) -> None:
    """Put a small index where the configuration expects it (built elsewhere, as `musrec index build` would)."""
    shutil.copytree(shared_index, load_config(config, environ={}).index_path)


def mismatch_line(mine: Mine, config: Path) -> str:
    """Issue 26: both files in one run, the configuration file to edit and the variables that do the same."""
    return (
        f"{mine.checkpoint} is not the file [setup] checkpoint_sha512 names, and {mine.pca} is not the file [setup] "
        'pca_sha512 names; left as they are. For a model of your own, set checkpoint_sha512 = "" and pca_sha512 = "" '
        f"under [setup] in {config} (or MUSREC_SETUP_CHECKPOINT_SHA512= MUSREC_SETUP_PCA_SHA512= in the "
        "environment); to fetch the published files instead, move them away and run `musrec setup --models-only` "
        "(without network: `musrec setup --from DIR`)"
    )


def no_model_fetched(server: FileServer) -> bool:
    return not (server.hits(CHECKPOINT_PATH) or server.hits(PCA_PATH) or server.hits(BUNDLE_PATH))


def loaded(config: Path) -> Config:
    return load_config(config, environ={})


# ---- the configuration names the published files: one line, nothing touched ------------------------------------


@pytest.mark.parametrize(
    "options",
    [[], ["--models-only"], ["--skip-features"], ["--recheck"]],
    ids=["setup", "models-only", "skip-features", "recheck"],
)
def test_setup_stops_in_one_line_and_keeps_the_files(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine, options: list[str]
) -> None:
    """Issue 12: `musrec setup` used to delete both files and fetch Google's."""
    serve_all(server, files)
    config = config_file(tmp_path, server, files, mine, own=False)
    r = run(["--config", str(config), "setup", "--no-progress", *options])
    assert r.code == 1
    assert r.err == f"musrec: error: {mismatch_line(mine, config)}\n"
    assert mine.unchanged()
    assert no_model_fetched(server) and not server.hits(FEATURES_PATH)


def test_setup_from_a_directory_copies_nothing_over_them(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine
) -> None:
    """Issue 12: `musrec setup --from DIR` with the published files in DIR does not replace the user's either."""
    published = tmp_path / "published"
    published.mkdir()
    for path in (files.checkpoint, files.pca, files.features):
        shutil.copyfile(path, published / path.name)
    config = config_file(tmp_path, server, files, mine, own=False)
    r = run(["--config", str(config), "setup", "--from", str(published), "--no-progress"])
    assert r.code == 1
    assert r.err == f"musrec: error: {mismatch_line(mine, config)}\n"
    assert mine.unchanged()
    assert server.hits() == []


@pytest.mark.parametrize("index", [True, False], ids=["index present", "index missing"])
def test_ensure_ready_as_the_bot_calls_it_raises_one_line(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine, shared_index: Path, index: bool
) -> None:
    """Issue 12: the bot's start-up (ensure_ready) deleted the files when the index was missing; with the index in
    place it used them unverified. Now both stop, and say what to do."""
    serve_all(server, files)
    config = config_file(tmp_path, server, files, mine, own=False)
    if index:
        with_index(config, shared_index)
    with pytest.raises(ChecksumMismatchError) as raised:
        ensure_ready(loaded(config), progress=True)
    assert str(raised.value) == mismatch_line(mine, config)
    assert mine.unchanged()
    assert server.hits() == []


@pytest.mark.parametrize("index", [True, False], ids=["index present", "index missing"])
def test_the_bot_entry_point_prints_one_line_and_exits_1(
    tmp_path: Path,
    server: FileServer,
    files: SetupFiles,
    mine: Mine,
    shared_index: Path,
    index: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12: `python -m bot` stops before talking to Discord (which is a closed loopback port here)."""
    serve_all(server, files)
    config = config_file(tmp_path, server, files, mine, own=False)
    if index:
        with_index(config, shared_index)
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "a.token.never.sent")
    code = bot_main(["--config", str(config), "run"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"musrec-bot: {mismatch_line(mine, config)}\n"
    assert mine.unchanged()
    assert server.hits() == []


def test_a_second_start_does_not_hash_the_file_again(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mismatch is remembered (setup-state.json), so a bot restarted by its process manager stays quick."""
    import musrec.setup.models

    config = config_file(tmp_path, server, files, mine, own=False)
    assert run(["--config", str(config), "setup", "--models-only", "--no-progress"]).code == 1
    hashed: list[Path] = []
    real = musrec.setup.models.sha512_file
    monkeypatch.setattr(musrec.setup.models, "sha512_file", lambda path, **kw: hashed.append(path) or real(path, **kw))
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 1 and r.err == f"musrec: error: {mismatch_line(mine, config)}\n"
    assert hashed == []
    assert mine.unchanged()


def test_doctor_reports_and_keeps_them(tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine) -> None:
    """Issue 12: `musrec doctor` only looks; once setup has seen the mismatch, the doctor names it too."""
    config = config_file(tmp_path, server, files, mine, own=False)

    def checkpoint_line() -> str:
        r = run(["--config", str(config), "doctor", "--quick"])
        lines = [line for line in r.out.splitlines() if line.split()[1:2] == ["checkpoint"]]
        assert len(lines) == 1, r.out
        return lines[0]

    assert checkpoint_line().startswith("warn") and "not verified: run `musrec setup`" in checkpoint_line()
    assert run(["--config", str(config), "setup", "--models-only", "--no-progress"]).code == 1
    line = checkpoint_line()
    named = (
        f"{mine.checkpoint} is not the file [setup] checkpoint_sha512 names; left as it is. For a model of your own, "
        f'set checkpoint_sha512 = "" under [setup] in {config} (or MUSREC_SETUP_CHECKPOINT_SHA512= in the '
        "environment); "
    )
    assert line.startswith("problem") and named in line and re.search(r"\(\d+\.\d MB\)$", line), line
    assert mine.unchanged()
    assert server.hits() == []


def test_the_health_check_fails_where_the_bot_refuses(
    tmp_path: Path,
    server: FileServer,
    files: SetupFiles,
    mine: Mine,
    shared_index: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 26: a model of one's own, set up with `sha512 = ""` in a config file, then started where no config.toml
    is (the settings from the environment only). `scripts/bot` refuses; so must Docker's health check, with the
    same finding, and both pass once the environment says the model is one's own."""
    config = config_file(tmp_path, server, files, mine, own=True)
    with_index(config, shared_index)
    assert run(["--config", str(config), "setup", "--models-only", "--no-progress"]).code == 0
    assert not Path("config.toml").exists()
    for name, value in {
        "MUSREC_DATA_DIR": str(tmp_path / "data"),
        "MUSREC_EMBEDDER_CHECKPOINT": str(mine.checkpoint),
        "MUSREC_EMBEDDER_PCA_PARAMS": str(mine.pca),
        "MUSREC_SETUP_CHECKPOINT_URLS": server.url(CHECKPOINT_PATH),
        "MUSREC_SETUP_PCA_URLS": server.url(PCA_PATH),
        "MUSREC_SETUP_BUNDLE_URLS": server.url(BUNDLE_PATH),
        "MUSREC_DISCORD_TOKEN": "a.token.never.sent",
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert bot_main(["run"]) == 1
    refused = capsys.readouterr().err
    health = run(["doctor", "--quick", "--bot", "--quiet"])
    assert health.code == 1
    problems = {line.split()[1]: line for line in health.out.splitlines() if line.startswith("problem")}
    assert set(problems) == {"checkpoint", "pca"}, health.out  # "pca params": split on spaces
    for path, key in ((mine.checkpoint, "checkpoint_sha512"), (mine.pca, "pca_sha512")):
        finding = f"{path} is not the file [setup] {key} names"
        assert finding in refused and any(finding in line for line in problems.values())
        assert f"MUSREC_SETUP_{key.upper()}=" in refused
    assert "MUSREC_SETUP_CHECKPOINT_SHA512= in the environment" in problems["checkpoint"]
    assert mine.unchanged() and no_model_fetched(server)
    # Said in the environment, the model is one's own: the health check passes, and the bot's start finds it ready.
    monkeypatch.setenv("MUSREC_SETUP_CHECKPOINT_SHA512", "")
    monkeypatch.setenv("MUSREC_SETUP_PCA_SHA512", "")
    health = run(["doctor", "--quick", "--bot", "--quiet"])
    assert health.code == 0 and health.out == "", health.out
    assert check_ready(load_config(None)) == []


# ---- the configuration says the model is the user's (sha512 = ""): success, nothing touched --------------------


def test_setup_with_a_model_of_ones_own_succeeds(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine
) -> None:
    serve_all(server, files)
    config = config_file(tmp_path, server, files, mine, own=True)
    r = run(["--config", str(config), "setup", "--models-only", "--no-progress"])
    assert r.code == 0, r.err
    assert f"checkpoint: present ({mine.checkpoint}, no checksum configured)" in r.out
    assert f"pca params: present ({mine.pca}, no checksum configured)" in r.out
    published = tmp_path / "published"
    published.mkdir()
    for path in (files.checkpoint, files.pca):
        shutil.copyfile(path, published / path.name)
    r = run(["--config", str(config), "setup", "--models-only", "--from", str(published), "--no-progress"])
    assert r.code == 0, r.err
    assert "checkpoint: present" in r.out
    assert mine.unchanged()
    assert server.hits() == []


@pytest.mark.parametrize("index", [True, False], ids=["index present", "index missing"])
def test_ensure_ready_with_a_model_of_ones_own_succeeds(
    tmp_path: Path, server: FileServer, files: SetupFiles, mine: Mine, shared_index: Path, index: bool
) -> None:
    serve_all(server, files)
    config = config_file(tmp_path, server, files, mine, own=True)
    if index:
        with_index(config, shared_index)
    ensure_ready(loaded(config), progress=False)
    assert check_ready(loaded(config)) == []
    assert mine.unchanged()
    assert no_model_fetched(server)
    assert bool(server.hits(FEATURES_PATH)) is not index  # a missing index is built, from downloaded features


# ---- features in place -------------------------------------------------------------------------------------------


def test_a_broken_features_tarball_in_place_is_kept(tmp_path: Path, server: FileServer, files: SetupFiles) -> None:
    """Issue 12: set-up used to delete a features tarball in the data directory that failed its check."""
    serve_all(server, files)
    config = write_config(
        tmp_path / "musrec.toml",
        server,
        data_dir=tmp_path / "data",
        checkpoint_sha512=files.checkpoint_sha512,
        pca_sha512=files.pca_sha512,
    )
    audioset = tmp_path / "data" / "audioset"
    audioset.mkdir(parents=True)
    tarball = audioset / "features.tar.gz"
    data = files.features.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    before = fingerprint(tarball)
    r = run(["--config", str(config), "setup", "--no-progress"])
    assert r.code == 1
    assert r.err.startswith("musrec: error: features.tar.gz is not a complete tarball: ")
    assert r.err.endswith(f" (in {audioset}, left as it is): move it away and run `musrec setup` again\n")
    assert len(r.err.splitlines()) == 1
    assert fingerprint(tarball) == before
    assert not server.hits(FEATURES_PATH)
