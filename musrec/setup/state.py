"""What a ``musrec setup`` run remembers for the next one.

``setup-state.json`` in the data directory records size, modification time and sha512 of every verified file, so
a rerun re-hashes nothing that is unchanged; it also records the index setup built and the ``[build]`` settings it
used, so an unchanged index is not rebuilt, and an index built elsewhere is left alone.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_FILE = "setup-state.json"
STATE_VERSION = 1
TFRECORD = ".tfrecord"


class SetupState:
    """``setup-state.json``: verified files by path (with the size and mtime they had), and the index setup built."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STATE_FILE
        self.files: dict[str, dict[str, Any]] = {}
        self.index: dict[str, Any] = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(raw, dict) and raw.get("version") == STATE_VERSION:
            self.files = dict(raw.get("files") or {})
            self.index = dict(raw.get("index") or {})

    def key(self, path: Path) -> str:
        path = path.absolute()
        try:
            return path.relative_to(self.data_dir.absolute()).as_posix()
        except ValueError:
            return str(path)

    def lookup(self, path: Path) -> dict[str, Any] | None:
        """The record of ``path`` if it is unchanged since it was verified."""
        record = self.files.get(self.key(path))
        if record is None or not path.exists():
            return None
        return record if all(record.get(k) == v for k, v in signature(path).items()) else None

    def record(self, path: Path, **facts: Any) -> dict[str, Any]:
        entry = {**signature(path), **facts, "at": now()}
        self.files[self.key(path)] = entry
        self.save()
        return entry

    def save(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        data = {"version": STATE_VERSION, "files": self.files, "index": self.index}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def signature(path: Path) -> dict[str, int]:
    """Size and modification time of a file; for a directory, of all its TFRecord files together."""
    if path.is_dir():
        files = [p.stat() for p in path.rglob(f"*{TFRECORD}") if p.is_file()]
        return {
            "size": sum(s.st_size for s in files),
            "mtime_ns": max((s.st_mtime_ns for s in files), default=0),
            "files": len(files),
        }
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def now() -> str:
    """The time for a state record: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- what changed between two [build] fingerprints ----------------------------------------------------------


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The [build] keys whose values differ between two fingerprints (as JSON gives them back)."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``music_only true -> false; splits eval -> bal_train, eval, unbal_train``."""
    keys = changed_keys(before, after)
    return "; ".join(f"{k} {_shown(before.get(k))} -> {_shown(after.get(k))}" for k in keys) or "none"


def setup_flags(values: dict[str, Any]) -> str:
    """The `musrec setup` options that choose these [build] values: ``--music-only --splits eval``."""
    flags = []
    for key, value in sorted(values.items()):
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags.append(f"{flag} {' '.join(str(v) for v in value) if isinstance(value, list) else value}")
    return " ".join(flags)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "unset" if value is None else str(value)
