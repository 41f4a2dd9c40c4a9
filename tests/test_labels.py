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


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("Rok music", ["Rock music"]),
        ("rock musik", ["Rock music"]),
        ("Speach", ["Speech", "Speech synthesizer"]),
        ("SPEACH", ["Speech", "Speech synthesizer"]),  # case does not count
        ("heavy metl", ["Heavy metal"]),
        ("gutiar", ["Guitar", "Acoustic guitar", "Electric guitar"]),
        ("drum n bass", ["Drum and bass"]),  # word by word
        ("Vilin", ["Violin, fiddle"]),
        ("xyzzy", []),
    ],
)
def test_misspelt_names_get_the_names_close_to_them(typed: str, suggested: list[str]) -> None:
    """Issue 26: suggestions went by prefix only, so "Rok music" and "Speach" got none."""
    labels = default_labels()
    assert labels.suggest(typed, limit=3) == suggested
    with pytest.raises(DataError) as err:
        labels.index_of(typed)
    if suggested:
        assert f"did you mean {suggested[0]!r}" in str(err.value)
    else:
        assert str(err.value) == f"unknown AudioSet label {typed!r} (see class_labels_indices.csv)"


def test_names_that_match_as_typed_come_before_close_ones() -> None:
    labels = default_labels()
    assert labels.suggest("Jaz", limit=3) == ["Jazz"]  # a prefix: no guessing beside it
    assert all("roc" in n.casefold() for n in labels.suggest("roc"))  # the autocomplete's matches stay exact
    with pytest.raises(DataError, match=r"did you mean 'Bird vocalization, bird call, bird song'\?"):
        labels.index_of("bird song")  # quoted: a name may hold commas
    with pytest.raises(DataError, match=r"did you mean 'Rock and roll', 'Rock music' or 'Progressive rock'\?"):
        labels.index_of("Rock")
