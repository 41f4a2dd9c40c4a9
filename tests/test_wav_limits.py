"""Issue 14: what a WAV header claims is checked before anything scales with it, on every path that reads audio."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_wavs import chunk, fmt, pcm, riff, wav

from musrec.audio.decode import decode, read_wav
from musrec.audio.limits import AudioLimits
from musrec.audio.wav import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SKIP_PIECE_BYTES,
    WavFormat,
    read_wav_bytes,
    read_wav_header,
    wav_format,
)
from musrec.errors import DecodeError, TooLongError, TooShortError

RATE = 16000
# Issue 14's upload: 3 s of 16 kHz samples (96,000 bytes) under a header that says 1 Hz.
ONE_HZ = riff(fmt(rate=1), chunk(b"data", pcm(3.0)))


def test_the_format_counts_the_frames_sent_not_the_frames_claimed() -> None:
    claims_an_hour = riff(fmt(channels=2), chunk(b"data", pcm(1.5), size=3600 * 4 * RATE))
    assert wav_format(claims_an_hour) == WavFormat(channels=2, rate=RATE, frames=12_000)
    assert wav_format(claims_an_hour).duration_s == 0.75
    claims_less = riff(fmt(), chunk(b"data", pcm(1.5), size=2 * RATE + 1))  # an odd size: the half frame is dropped
    assert wav_format(claims_less) == WavFormat(channels=1, rate=RATE, frames=RATE)
    samples, rate = read_wav_bytes(claims_less)
    assert (len(samples), rate) == (RATE, RATE)


@pytest.mark.parametrize("rate", [1, 100, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 0xFFFFFFFF])
def test_rates_no_recording_has_are_refused(rate: int) -> None:
    with pytest.raises(DecodeError, match="sample rate"):
        wav_format(riff(fmt(rate=rate), chunk(b"data", pcm(1.0))))


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, 8000, 44100, 47993, MAX_SAMPLE_RATE])
def test_rates_of_recordings_are_read(rate: int) -> None:
    assert wav_format(wav(0.5, rate=rate)).rate == rate


def test_channel_counts_past_any_format_are_refused() -> None:
    data = chunk(b"data", pcm(1.0))
    assert wav_format(riff(fmt(channels=MAX_CHANNELS), data)).channels == MAX_CHANNELS
    with pytest.raises(DecodeError, match="channels"):
        wav_format(riff(fmt(channels=MAX_CHANNELS + 1), data))


def test_chunks_before_the_data_are_skipped_in_bounded_pieces() -> None:
    """A chunk claiming gigabytes is skipped by reads of at most 64 KiB (a pipe's read(n) reserves n bytes)."""
    body = riff(chunk(b"LIST", bytes(300_000)), fmt(), chunk(b"data", pcm(1.0)))
    asked: list[int] = []
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        asked.append(size)
        piece = body[position : position + size]
        position += len(piece)
        return piece

    assert read_wav_header(read) == (1, RATE, 2 * RATE)
    assert max(asked) == SKIP_PIECE_BYTES
    with pytest.raises(DecodeError, match="ends early"):
        wav_format(riff(chunk(b"LIST", b"INFO", size=0xFFFFFFF0), fmt(), chunk(b"data", pcm(1.0))))
    with pytest.raises(DecodeError, match="format chunk"):
        wav_format(riff(fmt(size=0xFFFFFFFF), chunk(b"data", pcm(1.0))))


LIMITS = AudioLimits(max_bytes=100_000, max_duration_s=2.0, min_duration_s=1.0)


def test_read_wav_applies_the_limits_with_decodes_messages() -> None:
    samples, rate = read_wav(wav(2.0), limits=LIMITS)
    assert (len(samples), rate) == (2 * RATE, RATE)
    np.testing.assert_array_equal(samples, read_wav_bytes(wav(2.0))[0])
    assert len(read_wav(wav(1.0), limits=LIMITS)[0]) == RATE
    with pytest.raises(TooLongError, match="longer than 2 seconds"):
        read_wav(wav(2.0 + 1 / RATE), limits=LIMITS)
    with pytest.raises(TooShortError, match="at least 1 s is needed"):
        read_wav(wav(1.0 - 1 / RATE), limits=LIMITS)
    with pytest.raises(TooLongError, match="larger than"):
        read_wav(bytes(LIMITS.max_bytes + 1), limits=LIMITS)
    with pytest.raises(DecodeError, match="empty"):
        read_wav(b"", limits=LIMITS)
    with pytest.raises(DecodeError, match="1 Hz"):
        read_wav(ONE_HZ)  # the default limits: musrec serve's without a configuration
    # At 4 kHz, the same bytes are 12 s: too long, refused before a sample is read.
    with pytest.raises(TooLongError):
        read_wav(riff(fmt(rate=4000), chunk(b"data", pcm(3.0))), limits=AudioLimits(max_duration_s=10.0))


def test_decoding_through_ffmpeg_refuses_a_lying_rate_too() -> None:
    """ffmpeg passes on what the header claims; the decode path checks it as the WAV path does."""
    with pytest.raises(DecodeError, match="1 Hz"):
        decode(ONE_HZ)
    with pytest.raises(DecodeError, match="100 Hz"):
        decode(riff(fmt(rate=100), chunk(b"data", pcm(3.0))))
    audio = decode(riff(fmt(channels=6), chunk(b"data", pcm(3.0, channels=6))))
    assert audio.duration_s == 3.0
