"""Issue 21: the suite cannot reach the network by accident (the video check's defaults are YouTube's real
endpoints). tests/conftest.py refuses every connection outside 127.0.0.0/8 and ::1 and fails the test that tried;
here the guard itself is tried: in this process, and in a pytest run of its own whose tests must fail."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import GUARD_MESSAGE, outside_loopback, take_refused

# Documentation addresses (RFC 5737, RFC 3849): never routed, so even a broken guard would connect nowhere.
OUTSIDE_V4 = "192.0.2.1"
OUTSIDE_V6 = "2001:db8::1"


def test_connections_outside_loopback_are_refused_where_they_are_made() -> None:
    with pytest.raises(ConnectionRefusedError, match=GUARD_MESSAGE):
        socket.create_connection((OUTSIDE_V4, 80), timeout=5)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match=GUARD_MESSAGE):
        sock.connect_ex((OUTSIDE_V4, 443))
    with pytest.raises(OSError, match=GUARD_MESSAGE):  # urllib wraps it in URLError, an OSError
        urllib.request.urlopen(f"http://{OUTSIDE_V4}/oembed", timeout=5)

    async def through_asyncio() -> None:
        await asyncio.open_connection(OUTSIDE_V4, 443)  # loop.sock_connect -> socket.connect

    with pytest.raises(OSError, match=GUARD_MESSAGE):
        asyncio.run(through_asyncio())
    refused = take_refused()  # what this test provoked on purpose: it must not fail it
    assert len(refused) == 4 and all(OUTSIDE_V4 in r for r in refused)


def test_which_addresses_count_as_loopback() -> None:
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        assert outside_loopback(v4, ("127.0.0.1", 1)) is None and outside_loopback(v4, ("127.8.9.10", 1)) is None
        assert outside_loopback(v4, ("localhost", 1)) is None
        assert outside_loopback(v6, ("::1", 1, 0, 0)) is None and outside_loopback(v6, ("::ffff:127.0.0.1", 1)) is None
        assert outside_loopback(v4, (OUTSIDE_V4, 1)) == f"{OUTSIDE_V4} port 1"
        assert outside_loopback(v4, ("0.0.0.0", 1)) is not None and outside_loopback(v4, ("10.0.0.1", 1)) is not None
        assert outside_loopback(v6, (OUTSIDE_V6, 1, 0, 0)) is not None
    with socket.socket(socket.AF_UNIX) as unix:
        assert outside_loopback(unix, "/tmp/socket") is None


def test_loopback_connections_pass() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname(), timeout=5):
        pass
    assert take_refused() == []


INNER = """
import socket
import threading
import urllib.request


def test_reaches_out():
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=5)
    except OSError:
        pass  # swallowed, as a library would: the guard fails the test all the same


def test_reaches_out_from_a_thread():
    def fetch():
        try:
            urllib.request.urlopen("http://192.0.2.1/", timeout=5)
        except OSError:
            pass

    thread = threading.Thread(target=fetch)
    thread.start()
    thread.join()


def test_stays_on_loopback():
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname(), timeout=5).close()
"""


def test_a_test_that_reaches_out_fails_even_when_it_swallows_the_error(tmp_path: Path) -> None:
    here = Path(__file__).parent
    shutil.copy(here / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    # -rN: no short summary, which under CI=true repeats each failure's message in full.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rN", "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**_env(), "PYTHONPATH": f"{here.parent}:{here}"},
    )
    assert done.returncode == 1 and "2 failed, 1 passed" in done.stdout, done.stdout
    assert done.stdout.count("this test tried to reach the network: 192.0.2.1 port 80") == 2, done.stdout


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
