"""Issue 26: the MUSREC_* variables read outside the configuration, and the user's configuration file.

``MUSREC_FFMPEG`` (the README's way to choose another ffmpeg) and the other variables that modules read themselves
must pass through the configuration loader, in the CLI, the bot and the doctor. A configuration file in
``$XDG_CONFIG_HOME/musrec/`` is read when the working directory has none, by all three alike. Every test here runs
with its own home and XDG directories (tests/conftest.py), never the real ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from audio_fixtures import encoded
from conftest import child_environment
from vggish_fixtures import shared_vggish_files

from bot.__main__ import main as bot_main
from musrec.cli import main
from musrec.config import find_config, load_config, user_config_file
from musrec.config.values import ENV_RESERVED
from musrec.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def run(argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_musrec_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from outside, and a working directory without a config.toml."""
    for name in [k for k in os.environ if k.startswith("MUSREC_")]:
        monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def real_ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


# ---- variables read outside the configuration --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(ENV_RESERVED) - {"MUSREC_CONFIG"}))
def test_variables_other_modules_read_pass_the_loader(name: str) -> None:
    """Issue 26: MUSREC_FFMPEG made every command fail with `unknown environment variable`."""
    config = load_config(None, environ={name: "/opt/ffmpeg/bin/ffmpeg", "MUSREC_RECOMMEND_TOP_K": "4"})
    assert config.recommend.top_k == 4


def test_every_musrec_variable_the_code_reads_is_known_to_the_loader() -> None:
    """A variable read with os.environ anywhere in musrec/ or bot/ is either a config key or let through."""
    import re

    read = set()
    for path in [*ROOT.joinpath("musrec").rglob("*.py"), *ROOT.joinpath("bot").rglob("*.py")]:
        read.update(re.findall(r"\"(MUSREC_[A-Z0-9_]+)\"", path.read_text(encoding="utf-8")))
    for name in read:
        try:
            load_config(None, environ={name: "1"})
        except ConfigError as err:
            if "unknown" in str(err):  # an unknown variable, or a [section]'s unknown key
                pytest.fail(f"{name} is read by the code but refused by the configuration: {err}")


def test_an_unknown_variable_names_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, environ={"MUSREC_FFMEPG": "/usr/bin/ffmpeg"})
    message = str(raised.value)
    assert message.startswith("unknown environment variable MUSREC_FFMEPG: expected MUSREC_<SECTION>_<KEY>")
    assert "MUSREC_FFMPEG" in message and "MUSREC_NO_MPG123" in message and "recommend" in message


def test_musrec_ffmpeg_chooses_the_ffmpeg_the_cli_decodes_with(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 26: `MUSREC_FFMPEG=... musrec embed clip.ogg` runs, and decodes with the ffmpeg it names."""
    vggish = shared_vggish_files(tmp_path_factory)
    log = tmp_path / "ffmpeg-calls.log"
    wrapper = tmp_path / "my-ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real_ffmpeg()} "$@"\n', encoding="utf-8")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    clip = encoded(tmp_path, "ogg", seconds=3.0)
    config = tmp_path / "c.toml"
    config.write_text(
        f"[embedder]\ncheckpoint = {str(vggish.checkpoint)!r}\npca_params = {str(vggish.pca_column)!r}\n",
        encoding="utf-8",
    )
    env = child_environment(tmp_path / "home", MUSREC_FFMPEG=str(wrapper), MUSREC_NO_MPG123="1")
    done = subprocess.run(
        [sys.executable, "-c", "from musrec.cli import main; raise SystemExit(main())", "--config", str(config)]
        + ["embed", str(clip), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path / "work",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["embedding"]) == 3  # 3 s: three rows of 0.96 s
    assert str(clip) in log.read_text(encoding="utf-8")  # the chosen ffmpeg decoded it


def test_the_bot_and_the_doctor_start_with_them_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: the bot included (its configuration is loaded before anything else)."""
    for name, value in (("MUSREC_FFMPEG", real_ffmpeg()), ("MUSREC_NO_MPG123", "1"), ("MUSREC_TF_VERBOSE", "")):
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert bot_main(["print-commands"]) == 0, err.getvalue()
    assert {c["name"] for c in json.loads(out.getvalue())} >= {"recommend", "blend", "about"}
    code, text, _ = run(["doctor", "--quick"])
    checks = {line.split()[1]: line for line in text.splitlines()}
    assert checks["config"].startswith("ok ") and "MUSREC_FFMPEG" not in checks["config"]  # not a config key
    assert checks["ffmpeg"].startswith("ok ") and f"{real_ffmpeg()} (MUSREC_FFMPEG)" in checks["ffmpeg"]


# ---- the user's configuration file ---------------------------------------------------------------------------


def write_user_config(text: str) -> Path:
    path = user_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_user_file_is_found_after_the_working_directory(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26: ./config.toml, then $XDG_CONFIG_HOME/musrec/config.toml; $MUSREC_CONFIG and --config first."""
    assert user_config_file() == Path(os.environ["XDG_CONFIG_HOME"]) / "musrec" / "config.toml"
    assert user_config_file().is_relative_to(isolated_home)  # the test's own home, never the real one
    assert find_config() is None
    user = write_user_config("[recommend]\ntop_k = 3\n")
    assert find_config() == user and load_config(find_config()).recommend.top_k == 3
    here = Path("config.toml")
    here.write_text("[recommend]\ntop_k = 5\n", encoding="utf-8")
    assert find_config() == here.absolute() and load_config(find_config()).recommend.top_k == 5
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text("[recommend]\ntop_k = 7\n", encoding="utf-8")
    monkeypatch.setenv("MUSREC_CONFIG", str(elsewhere))
    assert find_config() == elsewhere
    assert find_config(tmp_path / "flag.toml") == tmp_path / "flag.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("MUSREC_CONFIG")
    assert user_config_file() == Path.home() / ".config" / "musrec" / "config.toml"


def test_cli_bot_and_doctor_agree_on_the_user_file(tmp_path: Path) -> None:
    """Issue 26: started where there is no config.toml, all three read the user's, and say so when it is wrong."""
    user = write_user_config("[bot]\nworkers = 0\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert bot_main(["print-commands"]) == 1
    assert err.getvalue() == f"musrec-bot: {user}: bot.workers must be at least 1, got 0\n"
    code, _, text = run(["index", "info"])
    assert code == 1 and text == f"musrec: error: {user}: bot.workers must be at least 1, got 0\n"
    code, text, _ = run(["doctor", "--quick"])
    assert code == 1
    assert f"problem  config      {user}: bot.workers must be at least 1, got 0" in text
    user.write_text(f"[data]\ndir = {str(tmp_path / 'mine')!r}\n", encoding="utf-8")
    code, text, _ = run(["doctor", "--quick"])
    checks = {line[9:20].strip(): line[21:] for line in text.splitlines()}
    assert checks["config"] == f"{user} (no ./config.toml here)"
    assert checks["data"].startswith(f"{tmp_path / 'mine'} does not exist yet")
    code, _, text = run(["index", "info"])
    assert text.startswith(f"musrec: error: no index at {tmp_path / 'mine' / 'index'}")


def test_doctor_says_where_it_looked_when_there_is_no_file() -> None:
    code, text, _ = run(["doctor", "--quick"])
    line = next(line for line in text.splitlines() if line[9:20].strip() == "config")
    assert line[21:] == (f"no config file (no ./config.toml, no {user_config_file()}): defaults and MUSREC_* variables")
