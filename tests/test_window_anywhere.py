"""Every ordinary file answers, wherever its loudest part lies (issue 26, point 1).

A recording whose loudest 10 s were its last 10 s got "the audio is shorter than its first decode said" in most
formats: the exact decode of the last span came back a few samples short of a window (a WAV a few samples short of a
whole second, M4A and video, whose last AAC frame is padded), or the envelope ran past the end of the file (Ogg Vorbis
and Opus: asked to seek past the end, the demuxer decodes the last page again). Here a clip that is indexed as an
AudioSet segment is placed at the start, in the middle and at the end of longer recordings, in every format the
README lists, and sent through the library, the command line and the bot, on both index structures, and to a
library of one's own tracks (``recommend --library``), which resolves a file as ``recommend`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from audio_fixtures import FORMATS, ffmpeg
from audioset_fixtures import make_segments
from bot_fixtures import WAIT_S, World, ephemeral_text, make_world, scenario
from discord_standin import StandIn
from library_fixtures import write_config
from vggish_fixtures import music_like, shared_embedder, shared_vggish_files

from bot.client import MusrecBot
from musrec.audio.decode import decode
from musrec.audio.scan import decode_loudest, mpg123_executable
from musrec.audio.wav import to_wav_bytes
from musrec.audio.window import choose_window
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.cli import main
from musrec.config import load_config
from musrec.embedding.local import LocalEmbedder
from musrec.index.build import BuildOptions, build_index
from musrec.index.search import Index
from musrec.pipeline import Musrec

RATE = 16000
CLIP_S = 10.0
QUIET = 0.003  # the rest of each recording: low noise, far below the clip
# Where the clip lies: seconds of quiet before and after it. The lengths are not whole seconds: a WAV a few samples
# short of one was a failing case (its last span decoded to 159,998 samples).
PLACES: dict[str, tuple[float, float]] = {"start": (0.0, 2.3), "middle": (4.0, 5.0), "end": (1.9991, 0.0)}
# The formats of the README's list, each as a user's file would be (the rate ffmpeg's encoder takes), and a video.
KINDS = [*FORMATS, "mp4"]
# A seek lands on a codec frame and a padded last frame ends a little early: the window may move earlier by up to
# about one AAC frame (1024 samples at 44.1 kHz, 23 ms) plus the resampler's rounding.
SEEK_S = 0.03


def recording(directory: Path, kind: str, clip: npt.NDArray[np.float64], place: str) -> Path:
    """``clip`` with quiet before and after it as ``PLACES[place]`` says, encoded as ``kind``."""
    before, after = PLACES[place]
    noise = np.random.default_rng(len(kind)).standard_normal(round((before + after) * RATE) + 2) * QUIET
    split = round(before * RATE)
    wav = directory / f"{place}-{kind}.src.wav"
    wav.write_bytes(to_wav_bytes(np.concatenate([noise[:split], clip, noise[split : split + round(after * RATE)]])))
    if kind == "mp4":
        out = directory / f"{place}.mp4"
        video = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-i", str(wav), "-map", "0:v", "-map", "1:a"]
        ffmpeg(*video, "-shortest", "-c:v", "mpeg4", "-c:a", "aac", "-ar", "44100", str(out))
        return out
    suffix, rate, codec = FORMATS[kind]
    out = directory / f"{place}.{suffix}"
    ffmpeg("-i", str(wav), "-ar", str(rate), *codec, str(out))
    return out


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> LocalEmbedder:
    return shared_embedder(tmp_path_factory)


@pytest.fixture(scope="module")
def clip() -> npt.NDArray[np.float64]:
    return music_like(CLIP_S, seed=26)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, clip: npt.NDArray[np.float64]) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("recordings")
    made = {}
    for kind in KINDS:
        (root / kind).mkdir()
        for place in PLACES:
            made[kind, place] = recording(root / kind, kind, clip, place)
    return made


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def config_file(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: LocalEmbedder,
    clip: npt.NDArray[np.float64],
) -> Path:
    """An index of either structure holding the clip's embedding as the segment ``loudclip26``."""
    root = tmp_path_factory.mktemp(f"window-{request.param}")
    segments = [*make_segments(250, split="eval"), Segment("loudclip26", 0.0, 10.0, (140,), "eval", fit_rows(
        embedder.embed(clip.astype(np.float32))))]  # fmt: skip
    build_index(segments, root / "index", labels=default_labels(), options=BuildOptions(trees=8, backend=request.param))
    assert Index(root / "index").manifest.ann == request.param
    vggish = shared_vggish_files(tmp_path_factory)
    config = root / "config.toml"
    config.write_text(
        f'[index]\npath = "{root / "index"}"\n'
        f'[embedder]\ncheckpoint = "{vggish.checkpoint}"\npca_params = "{vggish.pca_column}"\n'
    )
    return config


@pytest.fixture
def envelope_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which decoder scans an MP3: mpg123 (where installed) or ffmpeg. Other formats are always ffmpeg's."""
    if request.param == "mpg123" and mpg123_executable() is None:
        pytest.skip("mpg123 is not installed (scripts/test installs it)")
    if request.param == "ffmpeg":
        monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    mpg123_executable.cache_clear()
    request.addfinalizer(mpg123_executable.cache_clear)
    return str(request.param)


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(
    ("kind", "envelope_decoder"),
    [*((kind, "ffmpeg") for kind in KINDS), ("mp3", "mpg123")],  # mpg123 scans MP3 only
    indirect=["envelope_decoder"],
)
def test_the_loudest_window_is_found_anywhere_in_every_format(
    files: dict[tuple[str, str], Path], kind: str, place: str, envelope_decoder: str
) -> None:
    path = files[kind, place]
    full = decode(path)
    expected = choose_window(full.samples)
    assert expected.start_s == pytest.approx(PLACES[place][0], abs=0.1)  # the recording is as meant
    audio = decode_loudest(path)
    assert len(audio.samples) == round(CLIP_S * RATE)
    assert expected.start_s - SEEK_S <= audio.offset_s <= expected.start_s + 1e-9
    if place == "end":  # the window ends where the audio does
        assert audio.offset_s + CLIP_S == pytest.approx(full.duration_s, abs=SEEK_S)


@pytest.mark.parametrize("place", PLACES)
def test_the_library_answers_every_format(
    config_file: Path, embedder: LocalEmbedder, files: dict[tuple[str, str], Path], place: str
) -> None:
    config = load_config(config_file, environ={})
    musrec = Musrec(config=config, index=Index(config.index.path), embedder=embedder)
    try:
        for kind in KINDS:
            result = musrec.recommend(files[kind, place], k=3)
            assert result.query.start_s == pytest.approx(PLACES[place][0], abs=0.1), kind
            assert result.matches[0].video_id == "loudclip26", kind
    finally:
        musrec.close()


@pytest.mark.parametrize("kind", ["wav", "ogg", "opus", "m4a", "mp4"])
def test_the_command_line_answers_a_file_loudest_at_its_end(
    config_file: Path, files: dict[tuple[str, str], Path], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = files[kind, "end"]
    assert main(["--config", str(config_file), "recommend", str(path), "--top-k", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"]["start_s"] == pytest.approx(PLACES["end"][0], abs=SEEK_S)
    assert data["matches"][0]["video_id"] == "loudclip26"


def test_a_library_answers_a_file_loudest_anywhere(
    files: dict[tuple[str, str], Path],
    clip: npt.NDArray[np.float64],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The clip as a track of a library (among two other tracks), then every format's recording with the clip at its
    end, and one with it at the start and in the middle, sent to ``recommend --library``: the window is the clip's,
    and the clip's track answers first, at its segment."""
    vggish = shared_vggish_files(tmp_path_factory)
    config = write_config(tmp_path / "config.toml", data_dir=tmp_path / "data", checkpoint=vggish.checkpoint,
                          pca_params=vggish.pca_column)  # fmt: skip
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    (tracks / "clip.wav").write_bytes(to_wav_bytes(clip))
    for seed in (1, 2):
        (tracks / f"other{seed}.wav").write_bytes(to_wav_bytes(music_like(CLIP_S, seed=seed)[::-1].copy()))
    assert main(["--config", str(config), "library", "add", str(tracks), "--library", "mine", "--no-progress"]) == 0
    assert "added 3 tracks" in capsys.readouterr().out
    queries = [*((kind, "end") for kind in KINDS), ("ogg", "start"), ("m4a", "middle")]
    for kind, place in queries:
        path = files[kind, place]
        assert main(["--config", str(config), "recommend", str(path), "--library", "mine", "--json"]) == 0, kind
        data = json.loads(capsys.readouterr().out)
        assert data["query"]["start_s"] == pytest.approx(PLACES[place][0], abs=SEEK_S), (kind, place)
        first = data["matches"][0]
        assert (Path(first["file"]).name, first["start_s"], first["end_s"]) == ("clip.wav", 0.0, 10.0), (kind, place)
        assert len(data["matches"]) == 3  # one match per track


def test_a_blend_names_the_input_that_failed(
    config_file: Path, files: dict[tuple[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "b.ogg"
    empty.write_bytes(b"")
    good = files["ogg", "end"]
    assert main(["--config", str(config_file), "recommend", str(good), str(empty), "--blend"]) == 1
    err = capsys.readouterr().err
    assert "the second sound (b.ogg): the file is empty" in err
    assert main(["--config", str(config_file), "recommend", str(good), str(good), "--blend", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matches"]


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return make_world(tmp_path_factory, request.param)


def test_the_bot_answers_clips_loudest_at_their_end(world: World, tmp_path: Path) -> None:
    """The bot's own clip ``botclip0001`` at the end of a longer recording, in the formats that failed, posted to
    /recommend without a start; and a blend whose second sound cannot be read says which one it was."""
    clip = decode(world.clips[1]).samples[: round(CLIP_S * RATE)].astype(np.float64)
    posted = {kind: recording(tmp_path, kind, clip, "end") for kind in ("wav", "ogg", "opus", "m4a", "mp4")}

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        for kind, path in posted.items():
            attachment = standin.add_attachment(path.name, path.read_bytes(), "application/octet-stream")
            handle = await standin.dispatch_interaction("recommend", {"clip": attachment, "top_k": 3})
            await handle.wait_for_original(lambda m: bool(m.embeds) or bool(m.content), timeout=WAIT_S)
            embed = handle.original.embeds[0]
            assert embed["description"].startswith(f"{path.name} (0:01–0:11)"), (kind, embed["description"])
            assert "watch?v=botclip0001&t=0s" in embed["fields"][0]["value"], kind
        good = standin.add_attachment("a.ogg", posted["ogg"].read_bytes(), "audio/ogg")
        broken = standin.add_attachment("b.m4a", b"\0" * 4096, "audio/mp4")
        handle = await standin.dispatch_interaction("blend", {"first_clip": good, "second_clip": broken})
        await handle.wait_for_followups(timeout=WAIT_S)
        assert ephemeral_text(handle).lower().startswith("the second sound (b.m4a): could not read this as audio")

    scenario(world, body)
