from __future__ import annotations

import pytest

from musrec.audioset.labels import default_labels
from musrec.errors import DataError


def test_all_527_classes_in_csv_order() -> None:
    labels = default_labels()
    assert len(labels.names) == 527
    assert labels.names[0] == "Speech"
    assert labels.ids[137] == "/m/04rlf" and labels.names[137] == "Music"


def test_music_is_the_ontology_subtree_not_a_substring_match() -> None:
    labels = default_labels()
    assert labels.music == frozenset({28, 30, 31, 92, *range(137, 283)})
    assert len(labels.music) == 150
    for name in ("Guitar", "Jazz", "Opera", "Choir", "Music"):
        assert labels.index_of(name) in labels.music
    substring = {i for i, n in enumerate(labels.names) if "music" in n.lower()}
    assert len(substring) == 44 and substring < labels.music
    assert labels.index_of("Speech") not in labels.music
    assert labels.is_music([0, 140]) and not labels.is_music([0, 74])


def test_label_lookup_by_name_or_id() -> None:
    labels = default_labels()
    assert labels.index_of("jazz") == labels.index_of("Jazz") == labels.index_of("/m/03_d0")
    # Names with commas survive CSV parsing.
    assert labels.names[1] == "Male speech, man speaking"
    with pytest.raises(DataError, match="unknown AudioSet label 'Nope'"):
        labels.index_of("Nope")
