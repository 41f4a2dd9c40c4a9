"""The suite itself: no test reads or writes the real home, data or cache directories (issue 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REAL_PLACES

from musrec.config import default_data_dir, load_config

HERE = Path(__file__).resolve().parent


def test_home_and_xdg_directories_are_temporary(isolated_home: Path) -> None:
    assert Path.home() == isolated_home
    for variable in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        assert Path(os.environ[variable]).is_relative_to(isolated_home)
    assert default_data_dir().is_relative_to(isolated_home)
    assert load_config(None, environ={}).cache_path.is_relative_to(isolated_home)
    assert not any(Path(os.environ["XDG_DATA_HOME"]).is_relative_to(real.parent) for real in REAL_PLACES)


def test_a_test_that_writes_to_the_real_data_directory_fails(tmp_path: Path) -> None:
    """Run the suite's own conftest in a child pytest whose "real" home is a temporary directory."""
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(HERE / "conftest.py", suite / "conftest.py")
    (suite / "test_escape.py").write_text(
        "from conftest import REAL_PLACES\n"
        "def test_escapes():\n"
        "    REAL_PLACES[0].mkdir(parents=True)\n"
        "    (REAL_PLACES[0] / 'embeddings.sqlite3').write_bytes(b'x')\n"
        "def test_stays():\n"
        "    pass\n"
    )
    real_home = tmp_path / "real-home"
    real_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["HOME"] = str(real_home)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(suite)],
        capture_output=True,
        text=True,
        env=env,
        cwd=suite,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_escapes" in run.stdout and "this test wrote outside its temporary directories: created " in run.stdout
    assert str(real_home / ".local" / "share" / "musrec") in run.stdout
