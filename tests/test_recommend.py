from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from audioset_fixtures import make_segments

from musrec.audioset.labels import default_labels
from musrec.errors import QueryError, UnknownSegmentError
from musrec.index.build import BuildOptions, build_index
from musrec.index.search import Index
from musrec.links.parse import youtube_url
from musrec.recommend.nearest import nearest
from musrec.recommend.results import Filters
from musrec.recommend.segments import parse_audioset_ref, recommend_segment
from musrec.timecode import format_timecode

LABELS = default_labels()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    segments = make_segments(400, split="eval")
    # Three segments of one video, so one_per_video has something to do.
    segments[1] = replace(segments[0], start_s=segments[0].start_s + 10, end_s=segments[0].end_s + 10)
    segments[2] = replace(segments[0], start_s=segments[0].start_s + 20, end_s=segments[0].end_s + 20)
    out = tmp_path_factory.mktemp("rec") / "idx"
    build_index(segments, out, labels=LABELS, options=BuildOptions(trees=10))
    return Index(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audioset:--PJHxphWEs", ("--PJHxphWEs", None)),
        ("audioset:--PJHxphWEs@30", ("--PJHxphWEs", 30.0)),
        ("audioset:--PJHxphWEs@30.5s", ("--PJHxphWEs", 30.5)),
        ("audioset:--PJHxphWEs@9:50", ("--PJHxphWEs", 590.0)),  # the forms --start takes (issue 26)
        ("audioset:--PJHxphWEs@9m50s", ("--PJHxphWEs", 590.0)),
        ("audioset:--PJHxphWEs@1:00:00", ("--PJHxphWEs", 3600.0)),
    ],
)
def test_parse_audioset_ref(text: str, expected: tuple[str, float | None]) -> None:
    assert parse_audioset_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    ["audioset:", "--PJHxphWEs", "audioset:abc@", "audioset:a b", "audioset:x@-3", "audioset:x@9:75", "audioset:x@1@2"],
)
def test_bad_refs(text: str) -> None:
    with pytest.raises(QueryError, match="not an AudioSet segment reference"):
        parse_audioset_ref(text)


def test_youtube_url() -> None:
    assert youtube_url("abc", 30.0) == "https://www.youtube.com/watch?v=abc&t=30s"


def test_the_query_segment_is_excluded_and_scores_are_cosines(index: Index) -> None:
    seg = index.store.get(10)
    result = recommend_segment(f"audioset:{seg.video_id}@{seg.start_s:g}", index=index, k=5)
    assert result.query.video_id == seg.video_id and result.query.start_s == seg.start_s
    assert len(result.matches) == 5
    assert all(m.item != 10 for m in result.matches)
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    # The same neighbours as a direct exact search without the query item.
    exact = Index(index.directory, backend="exact")
    ids, _ = exact.search(exact.item_vector(10), 6)
    assert [m.item for m in result.matches] == [int(i) for i in ids if i != 10][:5]
    payload = result.to_json()
    assert set(payload["matches"][0]) == {"video_id", "start_s", "end_s", "labels", "score", "url"}


def test_one_per_video(index: Index) -> None:
    first = index.store.get(0)
    vector = index.item_vector(0)
    many = nearest(vector, index=index, k=10, filters=Filters(one_per_video=False))
    assert sum(m.video_id == first.video_id for m in many) == 3
    one = nearest(vector, index=index, k=10, filters=Filters(one_per_video=True))
    assert sum(m.video_id == first.video_id for m in one) == 1 and len(one) == 10
    assert len({m.video_id for m in one}) == 10


def test_music_only(index: Index) -> None:
    seg = index.store.get(7)  # a non-music segment (Dog)
    assert not seg.music
    result = recommend_segment(f"audioset:{seg.video_id}", index=index, k=10, filters=Filters(music_only=True))
    assert len(result.matches) == 10
    assert all(LABELS.is_music(LABELS.index_of(name) for name in m.labels) for m in result.matches)


def test_unknown_segment(index: Index) -> None:
    with pytest.raises(UnknownSegmentError, match="no indexed segment of video nosuchvideo"):
        recommend_segment("audioset:nosuchvideo", index=index)
    seg = index.store.get(5)
    with pytest.raises(UnknownSegmentError, match="at 9999 s") as err:
        recommend_segment(f"audioset:{seg.video_id}@9999", index=index)
    assert f"its indexed starts: {seg.start_s:g} (" in str(err.value)  # issue 26: which starts there are
    first = index.store.get(0)  # a video with three segments, 10 s apart
    with pytest.raises(UnknownSegmentError) as err:
        recommend_segment(f"audioset:{first.video_id}@9999", index=index)
    starts = ", ".join(f"{first.start_s + d:g} ({format_timecode(first.start_s + d)})" for d in (0, 10, 20))
    assert f"its indexed starts: {starts} (try audioset:{first.video_id}@{first.start_s:g})" in str(err.value)


def test_k_larger_than_the_index(tmp_path: Path) -> None:
    out = tmp_path / "small"
    build_index(make_segments(12, split="eval"), out, labels=LABELS, options=BuildOptions(trees=2))
    small = Index(out)
    seg = small.store.get(0)
    result = recommend_segment(f"audioset:{seg.video_id}", index=small, k=50)
    assert len(result.matches) == 11
