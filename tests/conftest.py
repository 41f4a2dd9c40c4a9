"""Shared fixtures. Feature-specific fixtures live in tests/*_fixtures.py modules next to their tests.

The suite never reads or writes the real home, data or cache directories: before any test module is imported,
HOME and the XDG base directories point into a temporary directory (child processes inherit them), and each test
gets a home of its own. After each test the real musrec directories are compared with how they were at the start:
a test that wrote there fails, naming what changed.

The suite never reaches the network either: every socket of this process may connect only to 127.0.0.0/8 and ::1
(and Unix sockets). Any other connection is refused where it is made, and the test that made it fails, naming the
address: the real endpoints in musrec's defaults (YouTube, Google's downloads) cannot be reached by accident. The
video check's YouTube endpoints default to a closed loopback port here (every video unknown, shown as before);
tests of the check point ``[videos]`` at a stand-in. Child processes are not guarded; they get the same endpoints.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
import threading
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

# ---- the network guard -------------------------------------------------------------------------------------------

# A loopback port nothing listens on (tcpmux): the video check's YouTube, answering nothing (every video unknown).
CLOSED_PORT = 1
UNREACHABLE_YOUTUBE = {
    "YOUTUBE_OEMBED_URL": f"http://127.0.0.1:{CLOSED_PORT}/oembed",
    "YOUTUBE_DATA_API_URL": f"http://127.0.0.1:{CLOSED_PORT}/youtube/v3/videos",
}
GUARD_MESSAGE = "the test network guard refused a connection to"
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_refused: list[str] = []  # connections refused since the last test ended, in any thread
_refused_lock = threading.Lock()


def outside_loopback(sock: socket.socket, address: Any) -> str | None:
    """The address ``sock`` would reach outside 127.0.0.0/8 and ::1 (a host name resolved as connect would), or
    None when every address it names is on loopback or it is not an internet socket."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return None
    host, port = address[0], address[1]
    try:
        addresses = [ipaddress.ip_address(host.split("%")[0])]
    except ValueError:  # a name: what it resolves to
        try:
            found = socket.getaddrinfo(host, port, sock.family, socket.SOCK_STREAM)
        except OSError:
            return None  # a name that does not resolve connects nowhere
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    for ip in addresses:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            return f"{host} port {port}" + (f" ({ip})" if str(ip) != host else "")
    return None


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        where = outside_loopback(self, address)
        if where is not None:
            with _refused_lock:
                _refused.append(where)
            raise ConnectionRefusedError(f"{GUARD_MESSAGE} {where}")
        return real(self, address)

    return connect


# The socket class of the socket module (asyncio's sock_connect, create_connection, urllib, aiohttp all use it).
socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]


def take_refused() -> list[str]:
    """The connections refused since the last call (the guard's own test takes what it provoked)."""
    with _refused_lock:
        taken = list(_refused)
        _refused.clear()
    return taken


def _fail_if_refused() -> None:
    refused = take_refused()
    if refused:
        pytest.fail(f"this test tried to reach the network: {', '.join(sorted(set(refused))[:5])}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """The test fails if its body tried to connect outside loopback, even if it swallowed the refusal."""
    result = yield
    _fail_if_refused()
    return result


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """YouTube's endpoints in musrec's defaults point at a closed loopback port, and no Data API key comes from
    outside; a connection tried outside loopback by a fixture (or a thread) of the test fails it too."""
    import musrec.videos.status as status

    _fail_if_refused()  # a fixture's setup
    for name, url in UNREACHABLE_YOUTUBE.items():
        monkeypatch.setattr(status, name, url)
    monkeypatch.delenv(status.API_KEY_ENV, raising=False)
    yield
    _fail_if_refused()


def child_environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a musrec process a test starts: its own home and XDG directories under ``home``, no
    MUSREC_* settings or proxies from outside, this checkout importable, and ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSREC_") and not k.lower().endswith("_proxy")}
    env.update(MUSREC_VIDEOS_OEMBED_URL=UNREACHABLE_YOUTUBE["YOUTUBE_OEMBED_URL"],
               MUSREC_VIDEOS_API_URL=UNREACHABLE_YOUTUBE["YOUTUBE_DATA_API_URL"])  # fmt: skip
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


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
