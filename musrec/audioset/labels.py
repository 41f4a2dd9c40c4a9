"""AudioSet's class labels and ontology, shipped as package data (CC BY 4.0 / CC BY-SA 4.0, Google).

``class_labels_indices.csv`` maps the ``labels`` indices of AudioSet records to class ids and names;
``ontology.json`` gives the hierarchy. "Music" means the Music subtree of the ontology (150 of the 527 classes),
not names that contain the word "music" (that finds 44 and misses Guitar, Jazz, Opera ...).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from importlib import resources
from pathlib import Path

from musrec.errors import DataError

log = logging.getLogger(__name__)

MUSIC_ID = "/m/04rlf"
LABELS_FILE = "class_labels_indices.csv"
ONTOLOGY_FILE = "ontology.json"


@dataclass(frozen=True)
class Labels:
    """The 527 AudioSet classes: ``names[i]`` and ``ids[i]`` for label index ``i``, and the music subset."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    music: frozenset[int]
    # kinds[i]: label i and every label below it in the ontology ("Rock music" holds "Heavy metal", "Punk rock" ...)
    kinds: tuple[frozenset[int], ...] = ()

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"label {index}"

    def index_of(self, name: str) -> int:
        """The index of a class by display name (case-insensitive) or ontology id; DataError if unknown."""
        wanted = name.strip().casefold()
        for i, (mid, display) in enumerate(zip(self.ids, self.names, strict=True)):
            if display.casefold() == wanted or mid == name.strip():
                return i
        close = [repr(n) for n in self.suggest(name, limit=3)]  # quoted: some names hold commas
        either = f"{', '.join(close[:-1])} or {close[-1]}" if len(close) > 1 else "".join(close)
        hint = f": did you mean {either}?" if close else " (see class_labels_indices.csv)"
        raise DataError(f"unknown AudioSet label {name!r}{hint}")

    def indices_of(self, names: Iterable[str]) -> frozenset[int]:
        return frozenset(self.index_of(n) for n in names)

    def is_music(self, indices: Iterable[int]) -> bool:
        return any(i in self.music for i in indices)

    def expand(self, names: Iterable[str]) -> frozenset[int]:
        """The labels named (display names or ontology ids) and all their kinds below them; DataError if unknown."""
        out: set[int] = set()
        for name in names:
            index = self.index_of(name)
            out |= self.kinds[index] if self.kinds else {index}
        return frozenset(out)

    def suggest(self, text: str, *, limit: int = 25) -> list[str]:
        """Names for a user typing ``text``: names that start with it, then names with a word that does, then names
        that contain it; the Music subtree first within each group, then alphabetical. All names for empty text.
        When none of these match (a misspelling: "Speach", "rock musik"), the names closest to it
        (:func:`close_names`)."""
        wanted = text.strip().casefold()

        def rank(i: int) -> tuple[int, int, str] | None:
            name = self.names[i].casefold()
            if not wanted or name.startswith(wanted):
                group = 0
            elif any(word.startswith(wanted) for word in name.replace(",", " ").split()):
                group = 1
            elif wanted in name:
                group = 2
            else:
                return None
            return group, 0 if i in self.music else 1, name

        ranked = sorted((key, i) for i in range(len(self.names)) if (key := rank(i)) is not None)
        return [self.names[i] for _, i in ranked[:limit]] or close_names(text, self.names, limit=limit)


# How alike a misspelling and a name must be (difflib's ratio, 0..1) to be suggested: "Speach" and "Speech" are
# 0.83, "rock musik" and "Rock music" 0.9; "Jaz" and "Buzz" 0.29.
CLOSE_ENOUGH = 0.75
_NEAR_THE_BEST = 0.1  # names much less alike than the best one are not worth showing beside it
_WORD = re.compile(r"[^\W_]+")


def close_names(text: str, names: Sequence[str], *, limit: int) -> list[str]:
    """The names most like ``text`` despite misspellings, best first: compared case-insensitively as wholes and word
    by word (each word of the text with the name's most alike word, and, weighing less, each word of the name with
    the text's, so a name with words the text lacks ranks lower); only those at least :data:`CLOSE_ENOUGH` alike,
    and not much less alike than the best."""
    wanted = text.strip().casefold()
    words = _WORD.findall(wanted)
    if not words:
        return []
    scored = []
    for name in names:
        folded = name.casefold()
        whole = SequenceMatcher(None, wanted, folded).ratio()
        name_words = _WORD.findall(folded) or [folded]
        ours = sum(max(_ratio(w, n) for n in name_words) for w in words) / len(words)
        theirs = sum(max(_ratio(n, w) for w in words) for n in name_words) / len(name_words)
        score = max(whole, (3 * ours + theirs) / 4)
        if score >= CLOSE_ENOUGH:
            scored.append((-score, -whole, name))
    scored.sort()
    return [name for score, _, name in scored[:limit] if score <= scored[0][0] + _NEAR_THE_BEST]


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b).ratio()


def subtree(ontology: list[dict[str, object]], root_id: str) -> set[str]:
    """All ontology ids reachable from ``root_id`` through ``child_ids`` (the ontology is a DAG: use a seen-set)."""
    children = {str(node["id"]): list(node.get("child_ids", []) or []) for node in ontology}  # type: ignore[call-overload]
    if root_id not in children:
        raise DataError(f"ontology has no node {root_id}")
    seen: set[str] = set()
    stack = [root_id]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(children.get(node, []))
    return seen


def read_labels(csv_path: Path | None = None, ontology_path: Path | None = None) -> Labels:
    """Read the label CSV and ontology (the shipped copies by default)."""
    csv_text = _read_text(csv_path, LABELS_FILE)
    ontology_text = _read_text(ontology_path, ONTOLOGY_FILE)
    ids: list[str] = []
    names: list[str] = []
    try:
        for expected, row in enumerate(csv.DictReader(csv_text.splitlines())):
            if int(row["index"]) != expected:
                raise DataError(f"{LABELS_FILE}: row {expected} has index {row['index']}")
            ids.append(row["mid"])
            names.append(row["display_name"])
        ontology = json.loads(ontology_text)
    except (KeyError, ValueError) as err:
        raise DataError(f"AudioSet label files are malformed: {err}") from None
    music_ids = subtree(ontology, MUSIC_ID)
    music = frozenset(i for i, mid in enumerate(ids) if mid in music_ids)
    index_of = {mid: i for i, mid in enumerate(ids)}
    known = {str(node["id"]) for node in ontology}
    kinds = tuple(
        frozenset(index_of[m] for m in subtree(ontology, mid) if m in index_of) if mid in known else frozenset({i})
        for i, mid in enumerate(ids)
    )
    return Labels(ids=tuple(ids), names=tuple(names), music=music, kinds=kinds)


@cache
def default_labels() -> Labels:
    """The shipped label set, read once per process."""
    return read_labels()


def _read_text(path: Path | None, packaged: str) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"cannot read {path.name}: {err.strerror}") from None
    return resources.files("musrec.data").joinpath(packaged).read_text(encoding="utf-8")
