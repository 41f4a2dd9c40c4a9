"""Milvus servers the library tests start on loopback ports, each in a directory of the test's own, stopped at the
end of the ``with``:

- ``milvus-lite server`` (the milvus-lite package): Milvus's gRPC protocol, without authentication;
- Milvus standalone itself (the ``milvus`` package, Linux x86-64: the Milvus 2.3 binary, run as
  ``milvus run standalone`` with its own etcd and local storage, as Milvus's standalone_embed.sh and compose.yaml's
  ``milvus`` service run it), with authentication on: its user ``root``, password ``Milvus``.

A test module that needs one the interpreter does not have is skipped, and says why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_WAIT_S = 120.0  # bound on a server's start (milvus-lite listens within seconds, standalone within ~10 s)
STOP_WAIT_S = 15.0  # bound on its exit after SIGTERM, then SIGKILL
GRACE_S = 3  # the standalone's own bound on its graceful stop (common.gracefulStopTimeout; 1,800 s by default)
STANDALONE_TOKEN = "root:Milvus"  # the user a new Milvus server with authentication has, and its password
STARTED = b"Ctrl+C to exit"  # what the standalone's launcher prints once the server answers its health check


@dataclass(frozen=True)
class Server:
    uri: str
    process: subprocess.Popen[bytes]
    log: Path
    start: tuple[tuple[str, ...], dict[str, str], int] | None = None  # a standalone's command, environment and port


def executable(name: str, package: str) -> str:
    """The console script ``name`` next to this interpreter, or on PATH; the test is skipped without it."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"the {name} executable is not installed (pip install {package}): no server to test against")
    return found


def free_port(*taken: int) -> int:
    """A loopback port nothing listens on now (the kernel's choice), other than ``taken``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            return port


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def lite_server(root: Path, environment: dict[str, str]) -> Iterator[Server]:
    """``milvus-lite server`` on 127.0.0.1 at a free port, its data under ``root``."""
    port = free_port()
    argv = [executable("milvus-lite", "milvus-lite"), "server", "--data-dir", str(root / "data"),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with _running(argv, root / "server.log", environment, port, started=None) as process:
        yield Server(f"http://127.0.0.1:{port}", process, root / "server.log")


@contextlib.contextmanager
def standalone_server(root: Path, environment: dict[str, str], *, session_ttl_s: int = 30) -> Iterator[Server]:
    """Milvus standalone with authentication, its proxy (the port clients use) and its etcd on free loopback ports
    (etcd's through ETCD_CONFIG_PATH, as compose.yaml sets them); the launcher finds free ports for the others.
    ``session_ttl_s``: how long the sessions of a killed server hold back the next start (Milvus's default, 30 s)."""
    launcher = executable("milvus-server", "milvus")
    proxy = free_port()
    client = free_port(proxy)
    peer = free_port(proxy, client)
    etcd = root / "etcd.yaml"
    etcd.write_text(
        f"listen-client-urls: http://127.0.0.1:{client}\nadvertise-client-urls: http://127.0.0.1:{client}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer}\n"
    )
    argv = [launcher, "--data", str(root / "milvus"), "--proxy-port", str(proxy), "--etcd-port", str(client),
            "--authorization-enabled", "true", "--extra-config", f"common.gracefulStopTimeout={GRACE_S}",
            "--extra-config", f"common.session.ttl={session_ttl_s}"]  # fmt: skip
    env = {**environment, "ETCD_CONFIG_PATH": str(etcd)}
    with _running(argv, root / "server.log", env, proxy, started=STARTED) as process:
        yield Server(f"http://127.0.0.1:{proxy}", process, root / "server.log", (tuple(argv), env, proxy))


@contextlib.contextmanager
def killed_and_restarted(server: Server) -> Iterator[Server]:
    """The standalone ``server`` killed with SIGKILL (as a crash or the out-of-memory killer ends it: nothing saved
    on the way out), then started again on the same data directory and ports."""
    assert server.start is not None, "only a standalone server is restarted"
    argv, env, port = server.start
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_WAIT_S
    while _group_alive(server.process) or listening(port):
        if time.monotonic() > deadline:
            pytest.fail("the killed standalone server still holds its port")
        time.sleep(0.1)
    log = server.log.with_name("restarted.log")
    with _running(list(argv), log, env, port, started=STARTED) as process:
        yield Server(server.uri, process, log, server.start)


@contextlib.contextmanager
def _running(argv: list[str], log: Path, env: dict[str, str], port: int,
             started: bytes | None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``argv`` in a process group of its own (the standalone's launcher starts the server as its child), until it
    listens on ``port`` and, if given, has printed ``started``; the whole group stopped at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_WAIT_S
        while not (listening(port) and (started is None or started in log.read_bytes())):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{Path(argv[0]).name} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group, then SIGKILL to what is left of it after :data:`STOP_WAIT_S`."""
    for sig in (signal.SIGCONT, signal.SIGTERM):  # SIGCONT: a test may have stopped it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + STOP_WAIT_S
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_WAIT_S)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # reaps the group's leader once it has exited: the group lives while any other member does
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
