"""musrec.audio.decode against real ffmpeg decoding real encoded files."""

from __future__ import annotations

import http.server
import io
import logging
import os
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import FORMATS, TONE_HZ, TONE_S, encoded, ffmpeg, long_mp3, long_mp3_hz, tone, video

from musrec.audio.decode import Audio, decode, ffmpeg_executable
from musrec.audio.head import mp3_frame_samples, read_head
from musrec.audio.limits import AudioLimits
from musrec.audio.runner import DECODER_MEMORY_BYTES, run_decoder
from musrec.audio.wav import read_wav_bytes, to_wav_bytes
from musrec.audio.window import Window, choose_window, cut
from musrec.errors import DecodeError, TooLongError, TooShortError

RATE = 16000


def peak_hz(samples: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def write_wav(path: Path, frames: np.ndarray, rate: int, *, sampwidth: int = 2) -> Path:
    """Interleaved integer frames [n, channels] as a PCM WAV, with the standard library."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(frames.astype(f"<i{sampwidth}").tobytes())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 3-second 440 Hz file per container, plus videos with and without an audio track."""
    root = tmp_path_factory.mktemp("media")
    files = {}
    for name in FORMATS:
        (root / name).mkdir()
        files[name] = encoded(root / name, name)
    files["mp4"] = video(root / "video.mp4")
    files["mp4-no-audio"] = video(root / "noaudio.mp4", with_audio=False)
    return files


@pytest.fixture(scope="module")
def three_hours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return long_mp3(tmp_path_factory.mktemp("long") / "three_hours.mp3", hours=3)


def test_ffmpeg_executable_exists() -> None:
    assert os.access(ffmpeg_executable(), os.X_OK)


def test_the_shipped_ffmpeg_comes_first_unless_one_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The statically linked binary starts in milliseconds, a distribution's in tens: it wins over PATH's."""
    import imageio_ffmpeg

    shipped = imageio_ffmpeg.get_ffmpeg_exe()
    on_path = tmp_path / "ffmpeg"
    on_path.write_text("#!/bin/sh\nexit 1\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("MUSREC_FFMPEG", raising=False)
    ffmpeg_executable.cache_clear()
    try:
        assert ffmpeg_executable() == shipped
        ffmpeg_executable.cache_clear()
        monkeypatch.setenv("MUSREC_FFMPEG", str(on_path))
        assert ffmpeg_executable() == str(on_path)
    finally:
        monkeypatch.undo()
        ffmpeg_executable.cache_clear()


def test_missing_ffmpeg_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without ffmpeg cannot be arranged here, so both places it comes from are hidden."""
    import imageio_ffmpeg

    def no_binary() -> str:
        raise RuntimeError("no ffmpeg exe could be found")

    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    ffmpeg_executable.cache_clear()
    try:
        with pytest.raises(DecodeError, match="ffmpeg is missing"):
            ffmpeg_executable()
    finally:
        monkeypatch.undo()
        ffmpeg_executable.cache_clear()
    assert os.access(ffmpeg_executable(), os.X_OK)


@pytest.mark.parametrize("name", [*FORMATS, "mp4"])
def test_decodes_each_format_to_16k_mono(media: dict[str, Path], name: str) -> None:
    audio = decode(media[name])
    assert isinstance(audio, Audio)
    assert audio.sample_rate == RATE and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # Containers trim encoder delay and padding; allow a frame or two of slack.
    assert audio.duration_s == pytest.approx(TONE_S, abs=0.05)
    assert audio.source_duration_s == pytest.approx(audio.duration_s)
    assert audio.offset_s == 0.0
    assert np.abs(audio.samples).max() <= 1.0
    assert peak_hz(audio.samples) == pytest.approx(TONE_HZ, abs=1.0)
    assert not audio.samples.flags.writeable


def test_stereo_is_averaged_like_the_reference(tmp_path: Path) -> None:
    """44.1 kHz stereo: 440 Hz left (0.5) and 660 Hz right (0.25) both survive, at half amplitude."""
    audio = decode(encoded(tmp_path, "wav"))
    spectrum = np.abs(np.fft.rfft(audio.samples)) * 2 / len(audio.samples)
    hz = np.fft.rfftfreq(len(audio.samples), 1 / RATE)
    for f, amplitude in ((440.0, 0.25), (660.0, 0.125)):
        assert spectrum[np.argmin(np.abs(hz - f))] == pytest.approx(amplitude, abs=0.01)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])  # one division by a power of two, or two divisions
def test_16k_input_is_exact_int16_mean(tmp_path: Path, channels: int) -> None:
    """At 16 kHz nothing is resampled: samples equal mean(int16 / 32768.0) bit for bit."""
    frames = np.random.default_rng(channels).integers(-32768, 32768, size=(RATE * 2, channels))
    audio = decode(write_wav(tmp_path / "x.wav", frames, RATE))
    reference = (frames / 32768.0).mean(axis=1).astype(np.float32)
    np.testing.assert_array_equal(audio.samples, reference)


def test_high_native_rate_is_capped(tmp_path: Path) -> None:
    path = tone(tmp_path / "hires.flac", rate=96000, codec=("-c:a", "flac"))
    audio = decode(path)
    assert audio.duration_s == pytest.approx(TONE_S, abs=0.01)
    assert peak_hz(audio.samples) == pytest.approx(TONE_HZ, abs=1.0)


@pytest.mark.parametrize("name", ["mp3", "m4a", "webm"])
def test_bytes_equal_path(media: dict[str, Path], name: str) -> None:
    from_path = decode(media[name])
    from_bytes = decode(media[name].read_bytes())
    np.testing.assert_array_equal(from_bytes.samples, from_path.samples)


def test_bytes_go_through_a_temporary_directory_that_is_removed(
    tmp_path: Path, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    decode(media["m4a"].read_bytes())
    with pytest.raises(DecodeError):
        decode(b"garbage" * 100)
    assert list(scratch.iterdir()) == []


def test_decode_timeout(three_hours: Path) -> None:
    with pytest.raises(DecodeError, match="took too long"):
        decode(three_hours, limits=AudioLimits(decode_timeout_s=0.001))


def test_odd_file_names(tmp_path: Path, media: dict[str, Path]) -> None:
    odd = tmp_path / "a b:c?%20#.mp3"
    odd.write_bytes(media["mp3"].read_bytes())
    assert decode(odd).duration_s == pytest.approx(TONE_S, abs=0.05)


def make_bad_inputs(tmp_path: Path, media: dict[str, Path]) -> dict[str, Path]:
    m4a = media["m4a"].read_bytes()
    png = tmp_path / "image.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=16x16", "-frames:v", "1", str(png))
    bad = {
        "empty": b"",
        "random": np.random.default_rng(0).bytes(20000),
        "truncated-m4a": m4a[: len(m4a) // 2],  # the index (moov) is written last
        "truncated-wav-header": media["wav"].read_bytes()[:30],
        "text": b"this is a shopping list, not a song\n" * 50,
        "png": png.read_bytes(),
        "hls-playlist": b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/a.mp3\n#EXT-X-ENDLIST\n",
        "sdp": b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 9 RTP/AVP 0\n",
    }
    paths = {}
    for name, data in bad.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    paths["no-audio-track"] = media["mp4-no-audio"]
    return paths


def test_bad_inputs_are_decode_errors_with_short_messages(tmp_path: Path, media: dict[str, Path]) -> None:
    for name, path in make_bad_inputs(tmp_path, media).items():
        for source in (path, path.read_bytes()):
            with pytest.raises(DecodeError) as info:
                decode(source)
            message = str(info.value)
            assert len(message) < 80, name
            assert str(tmp_path) not in message and "ffmpeg" not in message and "\n" not in message, name
    with pytest.raises(DecodeError, match="no audio track"):
        decode(media["mp4-no-audio"])
    with pytest.raises(DecodeError, match="does not exist"):
        decode(tmp_path / "missing.mp3")
    with pytest.raises(DecodeError, match="empty"):
        decode(b"")
    with pytest.raises(DecodeError, match="not a file"):
        decode(tmp_path)


def test_playlists_cannot_reach_the_network(tmp_path: Path, media: dict[str, Path]) -> None:
    """HLS, concat and SDP files naming a loopback server are refused and the server never hears from ffmpeg.

    ffmpeg already confines playlists opened from a file; the protocol whitelist and the playlist refusal
    keep it that way whatever the build or version.
    """
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(media["mp3"].read_bytes())

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/a.mp3"
        port = server.server_address[1]
        playlists = [
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n",
            f"ffconcat version 1.0\nfile {url}\n",
            f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n",
        ]
        try:
            for text in playlists:
                with pytest.raises(DecodeError):
                    decode(text.encode())
        finally:
            server.shutdown()
    assert requests == []


def test_ffmpeg_stderr_goes_to_the_debug_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="musrec.audio.runner")
    with pytest.raises(DecodeError) as info:
        decode(b"not audio at all" * 100)
    assert "Invalid data" in caplog.text
    assert "Invalid data" not in str(info.value)


def test_size_limit_is_checked_before_decoding(tmp_path: Path, media: dict[str, Path]) -> None:
    limits = AudioLimits(max_bytes=1000)
    with pytest.raises(TooLongError, match="larger than"):
        decode(media["wav"], limits=limits)
    with pytest.raises(TooLongError, match="larger than"):
        decode(b"\0" * 1001, limits=limits)  # not audio, but refused for size first


def test_duration_limit(media: dict[str, Path]) -> None:
    with pytest.raises(TooLongError, match="longer than 2 seconds"):
        decode(media["flac"], limits=AudioLimits(max_duration_s=2.0))
    with pytest.raises(TooLongError, match="longer than 10 minutes"):
        decode(media["flac"], duration_s=601.0)
    audio = decode(media["flac"], start_s=1.5, limits=AudioLimits(max_duration_s=2.0))
    assert audio.duration_s == pytest.approx(1.5, abs=0.01)
    assert audio.source_duration_s == pytest.approx(TONE_S, abs=0.01)


def test_three_hour_file_is_refused_quickly_and_sections_decode(
    three_hours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused after about ten minutes of audio, not three hours; a section is sought, then only it is decoded.

    What the decoder is asked to do is the measure (how long it takes is the machine's business): ffmpeg's ``-t``
    or mpg123's ``--frames`` (a decode from the start, where mpg123 is installed) bounds the decoded span, and
    ``-ss`` before ``-i`` seeks in the input instead of decoding up to the start.
    """
    import subprocess as real_subprocess

    from musrec.audio import runner as runner_module

    calls: list[list[str]] = []
    popen = real_subprocess.Popen

    def recording_popen(cmd: list[str], *args: object, **kwargs: object) -> real_subprocess.Popen[bytes]:
        calls.append(list(cmd))
        return popen(cmd, *args, **kwargs)  # type: ignore[call-overload,no-any-return]

    rate = read_head(three_hours).mp3_rate
    assert rate is not None

    def decoded_span(cmd: list[str]) -> float:
        if "--frames" in cmd:  # mpg123
            return int(cmd[cmd.index("--frames") + 1]) * mp3_frame_samples(rate) / rate
        return float(cmd[cmd.index("-t") + 1])

    def sought(cmd: list[str]) -> float | None:
        return float(cmd[cmd.index("-ss") + 1]) if "-ss" in cmd and cmd.index("-ss") < cmd.index("-i") else None

    monkeypatch.setattr(runner_module.subprocess, "Popen", recording_popen)
    assert three_hours.stat().st_size < 12 * 2**20
    with pytest.raises(TooLongError, match="longer than 10 minutes"):
        decode(three_hours)
    assert calls and all(decoded_span(c) <= 600.0 + 2.0 for c in calls)  # the limit plus a second or two of slack
    with pytest.raises(TooLongError, match="after the start time"):
        decode(three_hours, start_s=3600.0)
    for start in (3630.0, 3690.0, 9000.0 + 150.0):
        calls.clear()
        audio = decode(three_hours, start_s=start, duration_s=10.0)
        assert [sought(c) for c in calls] == [start] and all(decoded_span(c) <= 10.0 + 1.0 for c in calls)
        assert audio.duration_s == pytest.approx(10.0, abs=1e-3)
        assert audio.offset_s == start and audio.source_duration_s is None
        assert peak_hz(audio.samples) == pytest.approx(long_mp3_hz(int(start // 60)), abs=2.0)


@pytest.mark.parametrize(("name", "tolerance_s"), [("flac", 0.001), ("mp3", 0.001), ("opus", 0.005), ("m4a", 0.025)])
def test_start_and_duration_seek_accurately(tmp_path: Path, name: str, tolerance_s: float) -> None:
    """Silence, then a tone from 4.0 s: decoding from 3.0 s shows the onset at 1.0 s.

    Seeking an MP4/AAC file lands about 18 ms early (ffmpeg's handling of the AAC priming after a seek);
    decoding the same file from the start puts the onset within a millisecond.
    """
    suffix, rate, codec = FORMATS[name]
    path = tmp_path / f"onset.{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc='gte(t,4)*0.5*sin(2*PI*440*t)':s={rate}:d=8", *codec, str(path))
    audio = decode(path, start_s=3.0, duration_s=2.5)
    assert audio.duration_s == pytest.approx(2.5, abs=1e-3)
    onset = np.argmax(np.abs(audio.samples) > 0.25) / RATE
    assert onset == pytest.approx(1.0, abs=tolerance_s)


def test_start_past_the_end(media: dict[str, Path]) -> None:
    with pytest.raises(TooShortError, match="past the end"):
        decode(media["flac"], start_s=100.0)


def test_too_short_and_silent(tmp_path: Path) -> None:
    with pytest.raises(TooShortError, match="0.5 s"):
        decode(tone(tmp_path / "short.wav", seconds=0.5))
    with pytest.raises(TooShortError):
        decode(tone(tmp_path / "tone.wav"), start_s=2.5)  # 0.5 s left after the start
    silent = tmp_path / "silent.ogg"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "3", "-c:a", "libvorbis", str(silent))
    with pytest.raises(DecodeError, match="silent"):
        decode(silent)
    quiet = np.full((RATE * 2, 1), 20)  # -64 dBFS
    with pytest.raises(DecodeError, match="silent"):
        decode(write_wav(tmp_path / "quiet.wav", quiet, RATE))


def test_invalid_arguments(media: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        decode(media["flac"], start_s=-1.0)
    with pytest.raises(ValueError):
        decode(media["flac"], duration_s=0.0)
    with pytest.raises(ValueError):
        AudioLimits(min_duration_s=5.0, max_duration_s=2.0)


# choose_window and cut: pure numpy; a low sample rate keeps arrays small.
SR = 100


def clip(seconds: float, loud: tuple[float, float] | None = None) -> np.ndarray:
    """Quiet noise with an optional loud stretch [start, end) in seconds."""
    x = np.random.default_rng(1).standard_normal(round(seconds * SR)) * 0.01
    if loud:
        x[round(loud[0] * SR) : round(loud[1] * SR)] *= 50
    return x


def test_window_skips_a_quiet_intro() -> None:
    assert choose_window(clip(60, loud=(23, 33)), sample_rate=SR) == Window(23.0, 33.0)
    window = choose_window(clip(60, loud=(23, 45)), sample_rate=SR)
    assert window.start_s >= 23 and window.end_s <= 45


def test_window_search_is_limited() -> None:
    x = clip(300, loud=(200, 210))
    assert choose_window(x, sample_rate=SR).end_s <= 180
    assert choose_window(x, sample_rate=SR, search_s=300) == Window(200.0, 210.0)


def test_window_can_end_at_the_clip_end() -> None:
    """Loud only in the last 10 s of a 25.5-s clip: the end-aligned start beats the 1-s grid."""
    assert choose_window(clip(25.5, loud=(15.5, 25.5)), sample_rate=SR) == Window(15.5, 25.5)


def test_window_honours_and_clamps_start() -> None:
    x = clip(30, loud=(0, 5))
    assert choose_window(x, sample_rate=SR, start_s=5.0) == Window(5.0, 15.0)
    assert choose_window(x, sample_rate=SR, start_s=25.0) == Window(20.0, 30.0)
    with pytest.raises(TooShortError, match=r"0:31 is past the end of the audio \(0:30\)"):
        choose_window(x, sample_rate=SR, start_s=31.0)


def test_short_clips_are_used_whole() -> None:
    x = clip(6.5)
    assert choose_window(x, sample_rate=SR) == Window(0.0, 6.5)
    assert choose_window(x, sample_rate=SR, start_s=3.0) == Window(0.0, 6.5)
    assert len(cut(x, Window(0.0, 6.5), SR)) == len(x)


def test_cut_is_exact() -> None:
    x = clip(60, loud=(23, 33))
    window = choose_window(x, sample_rate=SR)
    part = cut(x, window, SR)
    assert len(part) == 10 * SR
    np.testing.assert_array_equal(part, x[23 * SR : 33 * SR])
    with pytest.raises(ValueError):
        cut(x, Window(55.0, 65.0), SR)


def test_window_on_real_16k_audio(tmp_path: Path) -> None:
    path = tmp_path / "intro.flac"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "aevalsrc='0.002*sin(2*PI*300*t)+between(t,12,22)*0.5*sin(2*PI*440*t)':s=44100:d=30",
        str(path),
    )
    audio = decode(path)
    window = choose_window(audio.samples)
    assert window == Window(12.0, 22.0)
    assert len(cut(audio.samples, window)) == 10 * RATE


# WAV bytes


def test_wav_round_trip() -> None:
    x = np.random.default_rng(2).uniform(-1.2, 1.2, RATE).astype(np.float32)
    data = to_wav_bytes(x)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, RATE, RATE)
    back, rate = read_wav_bytes(data)
    assert rate == RATE and back.dtype == np.float64
    np.testing.assert_allclose(back, np.clip(x, -1, 1), atol=1.5 / 32768)
    assert back.max() == 32767 / 32768 and back.min() == -1.0
    np.testing.assert_array_equal(decode(data).samples, back.astype(np.float32))
    # Decoded audio (multiples of 1/32768) goes to a MAX server and back exactly.
    again, _ = read_wav_bytes(to_wav_bytes(back))
    np.testing.assert_array_equal(again, back)


def test_read_wav_bytes_matches_the_reference_and_streams(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).integers(-32768, 32768, size=(4410, 2))
    data = write_wav(tmp_path / "s.wav", frames, 44100).read_bytes()
    samples, rate = read_wav_bytes(data)
    assert rate == 44100
    np.testing.assert_array_equal(samples, (frames / 32768.0).mean(axis=1))
    # A WAV written to a pipe: placeholder sizes and a LIST chunk before the data.
    piped = data[:4] + b"\xff\xff\xff\xff" + data[8:36] + b"LIST\x05\x00\x00\x00INFOx\x00"
    piped += b"data\xff\xff\xff\xff" + data[44:] + b"\x01"  # plus a stray odd byte
    np.testing.assert_array_equal(read_wav_bytes(piped)[0], samples)


def test_read_wav_bytes_rejects_other_formats(tmp_path: Path, media: dict[str, Path]) -> None:
    with pytest.raises(DecodeError, match="not a WAV"):
        read_wav_bytes(media["mp3"].read_bytes())
    with pytest.raises(DecodeError):
        read_wav_bytes(b"RIFF")
    eight_bit = write_wav(tmp_path / "u8.wav", np.full((100, 1), 100), 8000, sampwidth=1).read_bytes()
    with pytest.raises(DecodeError, match="16-bit PCM"):
        read_wav_bytes(eight_bit)
    float_wav = tmp_path / "f32.wav"
    tone(float_wav, seconds=0.2, codec=("-c:a", "pcm_f32le"))
    with pytest.raises(DecodeError, match="16-bit PCM"):
        read_wav_bytes(float_wav.read_bytes())


# A stand-in decoder that waits (bounded) until its address-space cap is in place, then asks for more memory than
# the cap: a crafted file making ffmpeg allocate without bound. It prints the cap it saw and writes no WAV.
GREEDY_DECODER = """
import resource, sys, time
for _ in range(1000):
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        break
    time.sleep(0.01)
print("cap", soft, file=sys.stderr, flush=True)
block = bytearray(int(sys.argv[1]))
sys.stdout.buffer.write(b"never")
"""


def test_a_decoder_that_wants_too_much_memory_fails_instead() -> None:
    """Every decoder (ffmpeg, mpg123) runs under an address-space cap: asking for more ends it, not the machine."""
    cmd = [sys.executable, "-c", GREEDY_DECODER, str(2 * DECODER_MEMORY_BYTES)]
    pcm, rc, stderr = run_decoder(cmd, name="greedy", span_s=10.0, deadline=time.monotonic() + 60)
    assert pcm is None and rc not in (0, None)
    assert f"cap {DECODER_MEMORY_BYTES}" in stderr and "MemoryError" in stderr
    # Under the cap, the same request succeeds: the cap, not the machine, refused it.
    cmd = [sys.executable, "-c", GREEDY_DECODER, str(DECODER_MEMORY_BYTES // 8)]
    pcm, rc, stderr = run_decoder(cmd, name="modest", span_s=10.0, deadline=time.monotonic() + 60)
    assert rc == 0 and f"cap {DECODER_MEMORY_BYTES}" in stderr
