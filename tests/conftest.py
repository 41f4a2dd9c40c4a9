"""Shared fixtures. Feature-specific fixtures live in tests/*_fixtures.py modules next to their tests.

The suite never reads or writes the real home, data or cache directories: before any test module is imported,
HOME and the XDG base directories point into a temporary directory (child processes inherit them), and each test
gets a home of its own. After each test the real musrec directories are compared with how they were at the start:
a test that wrote there fails, naming what changed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# TensorFlow is chatty on import; tests assert on our output, not its banner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

XDG_VARIABLES = {
    "XDG_DATA_HOME": ".local/share",
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "XDG_STATE_HOME": ".local/state",
}


def _real_places() -> list[Path]:
    """musrec's real per-user directories on this machine: data, cache, config and state."""
    home = Path(os.path.expanduser("~"))
    return [Path(os.environ.get(variable) or home / default) / "musrec" for variable, default in XDG_VARIABLES.items()]


def _snapshot(places: list[Path]) -> dict[str, tuple[int, int]]:
    """Every entry below the places (and the places themselves) by path, with size and modification time."""
    seen: dict[str, tuple[int, int]] = {}
    for place in places:
        if not place.exists():
            continue
        for entry in [place, *place.rglob("*")]:
            try:
                info = entry.lstat()
            except OSError:
                continue
            seen[str(entry)] = (info.st_size if not entry.is_dir() else 0, info.st_mtime_ns)
    return seen


REAL_PLACES = _real_places()
REAL_BEFORE = _snapshot(REAL_PLACES)
SESSION_HOME = Path(tempfile.mkdtemp(prefix="musrec-tests-home-"))


def _point_home_at(home: Path, setenv: object = os.environ.__setitem__) -> None:
    set_variable = setenv  # os.environ's setter, or a MonkeyPatch's, which undoes it after the test
    set_variable("HOME", str(home))  # type: ignore[operator]
    for variable, relative in XDG_VARIABLES.items():
        (home / relative).mkdir(parents=True, exist_ok=True)
        set_variable(variable, str(home / relative))  # type: ignore[operator]


_point_home_at(SESSION_HOME)


def child_environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a musrec process a test starts: its own home and XDG directories under ``home``, no
    MUSREC_* settings or proxies from outside, this checkout importable, and ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSREC_") and not k.lower().endswith("_proxy")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    env.update(extra)
    return env


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh home (with XDG directories) for each test; fails the test if the real ones changed meanwhile."""
    home = tmp_path_factory.mktemp("home")
    _point_home_at(home, monkeypatch.setenv)
    yield home
    changed = _changes(REAL_BEFORE, _snapshot(REAL_PLACES))
    if changed:
        pytest.fail(f"this test wrote outside its temporary directories: {', '.join(changed[:5])}", pytrace=False)


@pytest.fixture(scope="session")
def local_embedder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """VGGish in this process, on a random-weight checkpoint in the official layout (one per test session)."""
    from vggish_fixtures import shared_embedder

    return shared_embedder(tmp_path_factory)


@pytest.fixture(scope="module")
def server_loop() -> Iterator[Any]:
    """An event loop in a thread of its own, for the servers a module's tests run."""
    from max_fixtures import loop_thread

    with loop_thread() as loop:
        yield loop


def _changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(
        [f"created {p}" for p in after.keys() - before.keys()]
        + [f"removed {p}" for p in before.keys() - after.keys()]
        + [f"modified {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )
