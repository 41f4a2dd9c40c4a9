"""A download server on 127.0.0.1 and files in the official formats, for the setup and doctor tests.

:class:`FileServer` serves registered files over HTTP/1.1 semantics that matter to a resumable client: ``Range``
(``bytes=N-``, answered 206 with ``Content-Range``), ``If-Range`` against its ``ETag``, 416 past the end, and 404
for anything unregistered. Each file can be told to cut responses short (a dropped connection), to ignore
``Range``, to serve wrong bytes of the right length, or to answer with an error status. Every request is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import socket
import tarfile
import threading
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audioset_fixtures import make_segments, make_tarball, write_layout

from musrec.vggish.checkpoint import write_checkpoint, write_random_pca_params

LOOPBACK = "127.0.0.1"
SOCKET_TIMEOUT_S = 10.0  # a stuck client or server gives up after this
SEND_CHUNK = 1 << 20
LAST_MODIFIED = "Mon, 02 Jan 2017 00:00:00 GMT"

CHECKPOINT_PATH = "/audioset/vggish_model.ckpt"
PCA_PATH = "/audioset/vggish_pca_params.npz"
BUNDLE_PATH = "/max/assets.tar.gz"
FEATURES_PATH = "/us_audioset/youtube_corpus/v1/features/features.tar.gz"

EVAL_SEGMENTS = 60
BAL_SEGMENTS = 40


@dataclass(frozen=True)
class Run:
    """What a ``musrec`` command did, run in this process: its exit code and output."""

    code: int
    out: str
    err: str


def run(argv: Sequence[str]) -> Run:
    from musrec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Run(code, out.getvalue(), err.getvalue())


@dataclass
class Served:
    """A file and how to misbehave when serving it."""

    body: bytes | Path
    status: int = 200
    cut_after: int | None = None  # send this many body bytes, then drop the connection ...
    cuts: int = 0  # ... for this many responses
    ignore_range: bool = False
    wrong_bytes: bool = False  # same length, different content
    no_length: bool = False  # no Content-Length: the body ends when the connection closes

    @property
    def size(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.stat().st_size

    def etag(self) -> str:
        return f'"{self.size:x}-{id(self.body):x}"'


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    if_range: str | None
    status: int


@dataclass
class FileServer:
    """A threaded HTTP server on an ephemeral loopback port. Use as a context manager or call ``close``."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = SOCKET_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="file-server", daemon=True)
        self.thread.start()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(SOCKET_TIMEOUT_S)

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, body: bytes | Path, **behaviour: Any) -> str:
        self.files[path] = Served(body, **behaviour)
        return self.url(path)

    def hits(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.requests.append(
                Request(handler.path, handler.headers.get("Range"), handler.headers.get("If-Range"), status)
            )

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        served = self.files.get(h.path)
        if served is None or served.status != 200:
            status = 404 if served is None else served.status
            self._record(h, status)
            h.send_response(status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        size, start = served.size, 0
        wanted = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if_range = h.headers.get("If-Range")
        if wanted and not served.ignore_range and (if_range is None or if_range == served.etag()):
            start = int(wanted.group(1))
            if start >= size:
                self._record(h, 416)
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        status = 206 if start else 200
        self._record(h, status)
        h.send_response(status)
        if served.no_length:
            h.close_connection = True
        else:
            h.send_header("Content-Length", str(size - start))
        h.send_header("ETag", served.etag())
        h.send_header("Last-Modified", LAST_MODIFIED)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        limit = size - start
        with self._lock:
            if served.cut_after is not None and served.cuts > 0:
                served.cuts -= 1
                limit = min(limit, served.cut_after)
        with contextlib.suppress(OSError):
            for chunk in _chunks(served, start, limit):
                h.wfile.write(chunk)
            h.wfile.flush()
        if limit < size - start:
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)


def _chunks(served: Served, start: int, limit: int) -> Iterator[bytes]:
    with _open(served.body) as f:
        f.seek(start)
        left = limit
        while left > 0:
            chunk = f.read(min(SEND_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield bytes(255 - b for b in chunk[:64]) + chunk[64:] if served.wrong_bytes else chunk


def _open(body: bytes | Path) -> Any:
    return io.BytesIO(body) if isinstance(body, bytes) else body.open("rb")


# ---- files in the official formats --------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupFiles:
    """Small stand-ins in the official formats (a real TF1 V1 checkpoint, the PCA npz, the MAX bundle layout,
    the features tarball layout), and their sha512."""

    checkpoint: Path
    pca: Path
    bundle: Path
    features: Path
    embeddings_dir: Path  # the same features, unpacked: audioset_v1_embeddings/{eval,bal_train}/
    checkpoint_sha512: str
    pca_sha512: str


_cache: dict[str, Any] = {}


def sha512(path: Path) -> str:
    key = f"sha512:{path}"
    if key not in _cache:
        digest = hashlib.sha512()
        with path.open("rb") as f:
            while chunk := f.read(SEND_CHUNK):
                digest.update(chunk)
        _cache[key] = digest.hexdigest()
    value: str = _cache[key]
    return value


def setup_files(tmp_path_factory: pytest.TempPathFactory) -> SetupFiles:
    """Written once per test session."""
    if "files" not in _cache:
        root = tmp_path_factory.mktemp("setup_files")
        # A checkpoint in Google's format (TF1 V1, one file) holding a single small variable: the download path
        # treats it as bytes; the full-size random checkpoint is used where the model must load.
        checkpoint = write_checkpoint(
            root / "models" / "vggish_model.ckpt", {"vggish/fc2/biases": np.linspace(0, 1, 128, dtype=np.float32)}
        )
        pca = write_random_pca_params(root / "models" / "vggish_pca_params.npz", seed=3)
        bundle = root / "assets.tar.gz"
        with tarfile.open(bundle, "w:gz") as tar:  # the MAX layout: both files at the top level
            tar.add(checkpoint, arcname="vggish_model.ckpt")
            tar.add(pca, arcname="vggish_pca_params.npz")
        features_root = root / "features"
        embeddings_dir = write_layout(
            features_root,
            {
                "eval": make_segments(EVAL_SEGMENTS, split="eval", seed=1),
                "bal_train": make_segments(BAL_SEGMENTS, split="bal_train", seed=2, start=1000),
            },
        )
        features = make_tarball(features_root, root / "features.tar.gz")
        _cache["files"] = SetupFiles(
            checkpoint=checkpoint,
            pca=pca,
            bundle=bundle,
            features=features,
            embeddings_dir=embeddings_dir,
            checkpoint_sha512=sha512(checkpoint),
            pca_sha512=sha512(pca),
        )
    files: SetupFiles = _cache["files"]
    return files


def serve_all(server: FileServer, files: SetupFiles, **checkpoint_behaviour: Any) -> None:
    """Register the official paths (checkpoint, PCA, features; the bundle is not registered: 404)."""
    server.add(CHECKPOINT_PATH, files.checkpoint, **checkpoint_behaviour)
    server.add(PCA_PATH, files.pca)
    server.add(FEATURES_PATH, files.features)


def write_config(
    path: Path,
    server: FileServer,
    *,
    data_dir: Path,
    checkpoint_sha512: str,
    pca_sha512: str,
    features_urls: Sequence[str] | None = None,
    bundle: bool = True,
    retries: int = 0,
    backend: str = "auto",
    extra: str = "",
) -> Path:
    """A config whose URLs all point at ``server`` and whose data directory is ``data_dir``; small, fast builds."""
    features = list(features_urls) if features_urls is not None else [server.url(FEATURES_PATH)]
    text = f"""
[data]
dir = {str(data_dir)!r}

[setup]
checkpoint_urls = [{server.url(CHECKPOINT_PATH)!r}]
pca_urls = [{server.url(PCA_PATH)!r}]
bundle_urls = [{server.url(BUNDLE_PATH)!r}]
features_urls = {features!r}
checkpoint_sha512 = {checkpoint_sha512!r}
pca_sha512 = {pca_sha512!r}
timeout_s = {SOCKET_TIMEOUT_S}
retries = {retries}
retry_wait_s = 0.0

[build]
trees = 5
recall_queries = 40
target_recall = 0.9
backend = {backend!r}
"""
    if not bundle:
        text = text.replace(f"bundle_urls = [{server.url(BUNDLE_PATH)!r}]", "bundle_urls = []")
    path.write_text(text + extra, encoding="utf-8")
    tomllib.loads(path.read_text())  # fail here, not in the code under test, on a malformed fixture
    return path


def small_config(tmp_path: Path, server: FileServer, files: SetupFiles, **kwargs: Any) -> Path:
    """:func:`write_config` at ``tmp_path/musrec.toml``, data in ``tmp_path/data``, naming ``files``' sha512."""
    return write_config(
        tmp_path / "musrec.toml",
        server,
        data_dir=tmp_path / "data",
        checkpoint_sha512=files.checkpoint_sha512,
        pca_sha512=files.pca_sha512,
        **kwargs,
    )


def leftovers(directory: Path) -> list[Path]:
    """Partial downloads and temporary files left anywhere under ``directory``."""
    patterns = ("*.part", "*.part.json", "*.tmp", ".*.building-*")
    return sorted(p for pattern in patterns for p in directory.rglob(pattern))
