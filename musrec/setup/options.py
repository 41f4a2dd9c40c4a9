"""What a ``musrec setup`` run is asked to do (:class:`SetupOptions`) and what it reports (:class:`Step`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    """One thing setup did or found: ``checkpoint: downloaded (289.0 MB from ...; sha512 verified)``."""

    name: str
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, kw_only=True)
class SetupOptions:
    models: bool = True  # the VGGish files
    features: bool = True  # may download the features (only ever when an index must be built)
    index: bool = True  # build the default index when it is missing or out of date
    source: Path | None = None  # a directory of files the user already has (--from)
    rebuild: bool = False  # build the index even if it is up to date (or was built elsewhere)
    refresh_index: bool = True  # rebuild an index setup built when the [build] settings changed
    recheck: bool = False  # re-hash files even if the state file says they are verified
    progress: bool = False
    chosen: frozenset[str] = frozenset()  # [build] keys given for this run (--splits, --music-only): remembered
