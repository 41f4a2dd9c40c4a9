"""Hostile and odd uploads for the server tests (issue 14), made deterministically from a few building blocks.

Each :class:`Upload` carries the statuses a correct server may answer it with: one status where the answer is
certain (a 1-Hz header is 400, a clip at the duration limit is 200), any of the four input answers where a flipped
bit can land anywhere. WAVs are assembled by hand here, independently of musrec.audio.wav, so their headers can lie.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from audio_fixtures import encoded, ffmpeg, tone

from musrec.audio.limits import AudioLimits

RATE = 16000
OK, UNREADABLE, TOO_LARGE, TOO_SHORT = 200, 400, 413, 422
ANY = frozenset({OK, UNREADABLE, TOO_LARGE, TOO_SHORT})
GOOD, BAD, BIG, SHORT = (frozenset({status}) for status in (OK, UNREADABLE, TOO_LARGE, TOO_SHORT))
HEADER_BYTES = 44  # RIFF header, a 16-byte format chunk and the data chunk's header
WAVE_FORMAT_PCM, WAVE_FORMAT_FLOAT, WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
# The sub-format GUID of WAVE_FORMAT_EXTENSIBLE after its leading format tag: KSDATAFORMAT_SUBTYPE_*.
GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    expect: frozenset[int]


def pcm(seconds: float, *, rate: int = RATE, channels: int = 1, seed: int = 0) -> bytes:
    """``round(seconds * rate)`` frames of a tone plus noise as 16-bit little-endian PCM."""
    frames = round(seconds * rate)
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t)[:, None] + 0.05 * rng.standard_normal((frames, channels))
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def chunk(chunk_id: bytes, body: bytes, *, size: int | None = None, pad: bool = True) -> bytes:
    """A RIFF chunk; ``size`` lies about the body's length; ``pad=False`` leaves out the pad byte of an odd body."""
    declared = len(body) if size is None else size
    return chunk_id + struct.pack("<I", declared & 0xFFFFFFFF) + body + (b"\0" if pad and len(body) % 2 else b"")


def fmt(
    *,
    tag: int = WAVE_FORMAT_PCM,
    channels: int = 1,
    rate: int = RATE,
    bits: int = 16,
    block_align: int | None = None,
    byte_rate: int | None = None,
    extra: bytes = b"",
    size: int | None = None,
) -> bytes:
    align = channels * bits // 8 if block_align is None else block_align
    per_second = rate * align if byte_rate is None else byte_rate
    fields = (tag, channels & 0xFFFF, rate & 0xFFFFFFFF, per_second & 0xFFFFFFFF, align & 0xFFFF, bits)
    return chunk(b"fmt ", struct.pack("<HHIIHH", *fields) + extra, size=size)


def extensible(
    *, sub_tag: int = WAVE_FORMAT_PCM, channels: int = 2, bits: int = 16, valid_bits: int = 16, size: int = 40
) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE format chunk, cut to ``size`` bytes (40 is the whole)."""
    extra = struct.pack("<HHI", 22, valid_bits, 3) + struct.pack("<H", sub_tag) + GUID_TAIL
    whole = fmt(tag=WAVE_FORMAT_EXTENSIBLE, channels=channels, bits=bits, extra=extra)
    return chunk(b"fmt ", whole[8 : 8 + size])


def riff(*chunks: bytes, size: int | None = None, magic: bytes = b"RIFF", form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    return magic + struct.pack("<I", (len(body) if size is None else size) & 0xFFFFFFFF) + body


def wav(seconds: float, *, rate: int = RATE, channels: int = 1, seed: int = 0) -> bytes:
    return riff(
        fmt(rate=rate, channels=channels), chunk(b"data", pcm(seconds, rate=rate, channels=channels, seed=seed))
    )


def by_length(frames: int, rate: int, limits: AudioLimits) -> frozenset[int]:
    """The answer for a readable 16-bit WAV holding ``frames`` frames at ``rate``."""
    seconds = frames / rate
    if seconds > limits.max_duration_s:
        return BIG
    return SHORT if seconds < limits.min_duration_s else GOOD


def uploads(limits: AudioLimits, media: Path, *, total: int) -> list[Upload]:
    """``total`` uploads: the structured groups below, then random bytes to make up the number."""
    cases = [
        *truncated(limits),
        *bit_flipped(),
        *lying(limits),
        *malformed(),
        *at_the_limits(limits),
        *other_formats(media),
        *valid(limits),
    ]
    cases += random_bytes(limits, count=total - len(cases))
    assert len({c.name for c in cases}) == len(cases) == total
    return cases


def truncated(limits: AudioLimits) -> list[Upload]:
    """A 2-second WAV cut after every byte of its header and the first samples, then at 40 points of its body."""
    whole = wav(2.0)
    offsets = sorted({*range(100), *np.linspace(100, len(whole) - 1, 40).astype(int).tolist()})
    cases = []
    for n in offsets:
        expect = BAD if n < HEADER_BYTES else by_length((n - HEADER_BYTES) // 2, RATE, limits)
        cases.append(Upload(f"truncated at {n}", whole[:n], expect))
    return cases


def bit_flipped() -> list[Upload]:
    """Every byte of a 1.2-second WAV's header, with one of three bits flipped in turn."""
    whole = bytearray(wav(1.2))
    cases = []
    for position in range(HEADER_BYTES):
        for bit in {position % 8, (position + 3) % 8, (position + 6) % 8}:
            flipped = bytearray(whole)
            flipped[position] ^= 1 << bit
            cases.append(Upload(f"bit {bit} of byte {position} flipped", bytes(flipped), ANY))
    return cases


def lying(limits: AudioLimits) -> list[Upload]:
    """Headers that claim what the bytes are not: rates, channels, sizes, alignment, sample formats."""
    one_and_a_half = pcm(1.5)  # 24,000 frames when read as 16 kHz mono
    three = pcm(3.0)  # 96,000 bytes
    data = chunk(b"data", one_and_a_half)
    cases = [
        # Issue 14's upload: 3 s of 16 kHz samples under a 1-Hz header, 48,000 "seconds".
        Upload("issue 14: 96 KB at 1 Hz", riff(fmt(rate=1), chunk(b"data", three)), BAD),
    ]
    for rate in (0, 1, 2, 8, 100, 1000, 2000, 3999, 192_001, 384_000, 1 << 31, 0xFFFFFFFF):
        cases.append(Upload(f"rate {rate} Hz", riff(fmt(rate=rate), data), BAD))
    for rate in (4000, 8000, 11025, 22050, 44100, 96000, 192_000, 16001, 47993):
        cases.append(
            Upload(f"rate {rate} Hz over 24000 frames", riff(fmt(rate=rate), data), by_length(24000, rate, limits))
        )
    for byte_rate in (0, 1, 0xFFFFFFFF):
        cases.append(Upload(f"byte rate {byte_rate}", riff(fmt(byte_rate=byte_rate), data), GOOD))
    three_data = chunk(b"data", three)
    for channels in (2, 3, 6, 255, 256):
        frames = len(three) // (2 * channels)
        cases.append(
            Upload(f"{channels} channels", riff(fmt(channels=channels), three_data), by_length(frames, RATE, limits))
        )
    for channels in (0, 257, 1024, 65535):
        cases.append(Upload(f"{channels} channels", riff(fmt(channels=channels), three_data), BAD))
    for align in (0, 1, 3, 4, 65535):
        cases.append(Upload(f"mono with block align {align}", riff(fmt(block_align=align), data), BAD))
    cases.append(Upload("stereo with block align 2", riff(fmt(channels=2, block_align=2), data), BAD))
    for bits in (0, 1, 8, 12, 15, 17, 24, 32, 64, 65535):
        cases.append(Upload(f"PCM with {bits} bits", riff(fmt(bits=bits), data), BAD))
    for tag, bits in (
        (WAVE_FORMAT_FLOAT, 32),
        (WAVE_FORMAT_FLOAT, 64),
        (WAVE_FORMAT_FLOAT, 16),
        (0, 16),
        (2, 16),
        (6, 8),
        (7, 8),
        (6, 16),
        (0x55, 16),
        (0xFFFF, 16),
    ):
        cases.append(Upload(f"format tag {tag:#x}, {bits} bits", riff(fmt(tag=tag, bits=bits), data), BAD))
    stereo = chunk(b"data", three)  # 1.5 s as stereo
    cases += [
        Upload("extensible PCM", riff(extensible(), stereo), GOOD),
        Upload("extensible PCM, 12 valid bits", riff(extensible(valid_bits=12), stereo), GOOD),
        Upload("extensible PCM, 26 bytes", riff(extensible(size=26), stereo), GOOD),
        Upload("extensible float", riff(extensible(sub_tag=WAVE_FORMAT_FLOAT), stereo), BAD),
        Upload("extensible 24-bit PCM", riff(extensible(bits=24), stereo), BAD),
        Upload("extensible, no extension", riff(extensible(size=16), stereo), BAD),
        Upload("extensible, cbSize only", riff(extensible(size=18), stereo), BAD),
        Upload("extensible, cut in the GUID's tag", riff(extensible(size=25), stereo), BAD),
        Upload("extensible, 1 channel", riff(extensible(channels=1), data), GOOD),
        Upload("extensible, 0 channels", riff(extensible(channels=0), data), BAD),
        Upload("extensible, 300 channels", riff(extensible(channels=300), stereo), BAD),
        Upload("extensible, unknown sub-format", riff(extensible(sub_tag=0x1234), stereo), BAD),
    ]
    frames = len(one_and_a_half) // 2
    for name, size, expect in (
        ("0 (a pipe's placeholder: to the end)", 0, frames),
        ("0xFFFFFFFF (placeholder)", 0xFFFFFFFF, frames),
        ("one byte more than sent", len(one_and_a_half) + 1, frames),
        ("twice what was sent", 2 * len(one_and_a_half), frames),
        ("0xFFFFFFFE", 0xFFFFFFFE, frames),
        ("1 byte", 1, 0),
        ("3 bytes", 3, 1),
        ("one second", 2 * RATE, RATE),
        ("one frame under a second", 2 * RATE - 2, RATE - 1),
        ("an odd size", 2 * RATE + 1, RATE),
    ):
        body = riff(fmt(), chunk(b"data", one_and_a_half, size=size))
        cases.append(Upload(f"data size {name}", body, by_length(expect, RATE, limits)))
    for name, size in (
        ("0", 0),
        ("4", 4),
        ("0xFFFFFFFF", 0xFFFFFFFF),
        ("1000 too many", 24_036 + 1000),
        ("1000 too few", 24_036 - 1000),
    ):
        cases.append(Upload(f"RIFF size {name}", riff(fmt(), data, size=size), GOOD))
    return cases


def malformed() -> list[Upload]:
    """Broken structure: magic, missing or misplaced chunks, chunk sizes past the end, tiny bodies."""
    data = chunk(b"data", pcm(1.5))
    junk = [chunk(b"JUNK", b"")] * 5000
    return [
        Upload("empty", b"", BAD),
        Upload("one byte", b"R", BAD),
        Upload("one zero byte", b"\0", BAD),
        Upload("RIFF only", b"RIFF", BAD),
        Upload("RIFF header only", riff(), BAD),
        Upload("format chunk id only", riff() + b"fmt ", BAD),
        Upload("big-endian RIFX", riff(fmt(), data, magic=b"RIFX"), BAD),
        Upload("RF64", riff(fmt(), data, magic=b"RF64"), BAD),
        Upload("AVI form", riff(fmt(), data, form=b"AVI "), BAD),
        Upload("lower-case wave", riff(fmt(), data, form=b"wave"), BAD),
        Upload("no format chunk", riff(data), BAD),
        Upload("no data chunk", riff(fmt()), BAD),
        Upload("data before format", riff(data, fmt()), BAD),
        Upload("a second format chunk, 8-bit", riff(fmt(), fmt(bits=8), data), BAD),
        Upload("a second format chunk, 8 kHz", riff(fmt(), fmt(rate=8000), data), GOOD),
        Upload("two data chunks", riff(fmt(), data, data), GOOD),
        Upload("LIST chunk past the end", riff(chunk(b"LIST", b"INFO", size=0xFFFFFFF0), fmt(), data), BAD),
        Upload("LIST chunk past the end, after fmt", riff(fmt(), chunk(b"LIST", b"INFO", size=1 << 30)), BAD),
        Upload("format chunk of 4 GiB", riff(fmt(size=0xFFFFFFFF), data), BAD),
        Upload("format chunk of 2000 bytes", riff(fmt(extra=bytes(1984)), data), BAD),
        Upload("format chunk of 15 bytes", riff(chunk(b"fmt ", fmt()[8:23]), data), BAD),
        Upload("format chunk of 17 bytes, padded", riff(fmt(extra=b"\0"), data), GOOD),
        Upload(
            "format chunk of 17 bytes, unpadded", riff(chunk(b"fmt ", fmt(extra=b"\0")[8:25], pad=False), data), ANY
        ),
        Upload("odd JUNK chunk, padded", riff(chunk(b"JUNK", b"abc"), fmt(), data), GOOD),
        Upload("odd JUNK chunk, unpadded", riff(chunk(b"JUNK", b"abc", pad=False), fmt(), data), ANY),
        Upload("5000 empty chunks first", riff(*junk, fmt(), data), GOOD),
        Upload("metadata before the data", riff(fmt(), chunk(b"LIST", b"INFOISFT\x05\0\0\0test\0\0"), data), GOOD),
    ]


def at_the_limits(limits: AudioLimits) -> list[Upload]:
    """Exactly at each limit and one step past it."""
    at_size = riff(fmt(channels=2), chunk(b"data", bytes(limits.max_bytes - HEADER_BYTES)))  # silence is fine here
    longest = round(limits.max_duration_s * RATE)
    shortest = round(limits.min_duration_s * RATE)
    stereo_frames = (limits.max_bytes - HEADER_BYTES) // 4
    cases = [
        Upload("exactly max_bytes", at_size, by_length(stereo_frames, RATE, limits)),
        Upload("max_bytes plus one", at_size + b"\0", BIG),
        Upload("exactly max_duration_s", wav(longest / RATE), GOOD),
        Upload("max_duration_s plus one frame", wav((longest + 1) / RATE), BIG),
        Upload("exactly min_duration_s", wav(shortest / RATE), GOOD),
        Upload("min_duration_s minus one frame", wav((shortest - 1) / RATE), SHORT),
        Upload("no frames at all", riff(fmt(), chunk(b"data", b"")), SHORT),
        Upload("four times max_bytes", bytes(4 * limits.max_bytes), BIG),
        Upload("a header claiming an hour", riff(fmt(), chunk(b"data", pcm(2.0), size=3600 * 2 * RATE)), GOOD),
    ]
    assert len(at_size) == limits.max_bytes
    return cases


def other_formats(media: Path) -> list[Upload]:
    """Real files ffmpeg wrote: other containers, and WAVs in sample formats other than 16-bit PCM."""
    cases = []
    for name in ("mp3", "ogg", "opus", "m4a", "flac", "webm"):
        (media / name).mkdir(exist_ok=True)
        cases.append(Upload(f"{name} file", encoded(media / name, name).read_bytes(), BAD))
    for codec in (
        "pcm_u8",
        "pcm_s24le",
        "pcm_s32le",
        "pcm_f32le",
        "pcm_f64le",
        "pcm_alaw",
        "pcm_mulaw",
        "adpcm_ima_wav",
        "adpcm_ms",
    ):
        path = tone(media / f"{codec}.wav", seconds=0.5, codec=("-c:a", codec))
        cases.append(Upload(f"WAV of {codec}", path.read_bytes(), BAD))
    rf64 = media / "rf64.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1.5", "-rf64", "always", str(rf64))
    w64 = media / "tone.w64"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1.5", "-c:a", "pcm_s16le", str(w64))
    aiff = tone(media / "tone.aiff", seconds=1.5, codec=("-c:a", "pcm_s16be"))
    six = tone(
        media / "six.wav", seconds=1.2, rate=RATE, channels=6
    )  # ffmpeg writes WAVE_FORMAT_EXTENSIBLE beyond stereo
    tagged = media / "tagged.wav"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5", "-metadata", "title=x", str(tagged)
    )
    cases += [
        Upload("RF64 from ffmpeg", rf64.read_bytes(), BAD),
        Upload("Wave64 from ffmpeg", w64.read_bytes(), BAD),
        Upload("AIFF from ffmpeg", aiff.read_bytes(), BAD),
        Upload("6-channel WAV from ffmpeg", six.read_bytes(), GOOD),
        Upload("WAV with metadata from ffmpeg", tagged.read_bytes(), GOOD),
    ]
    return cases


def valid(limits: AudioLimits) -> list[Upload]:
    """A few uploads any server must embed, among them the costliest these limits allow."""
    # A rate with no factor in common with 16 kHz makes SciPy design a filter of ~20 taps per Hz: the largest
    # such rate whose one second still fits in max_bytes is the most memory one upload can cost.
    costly_rate = (limits.max_bytes - HEADER_BYTES) // 2 - 1
    while costly_rate % 2 == 0 or costly_rate % 5 == 0:
        costly_rate -= 1
    return [
        Upload("16 kHz mono, 2 s", wav(2.0, seed=1), GOOD),
        Upload("44.1 kHz stereo, 1.2 s", wav(1.2, rate=44100, channels=2, seed=2), GOOD),
        Upload("8 kHz mono, 1.2 s", wav(1.2, rate=8000, seed=3), GOOD),
        Upload("48 kHz mono, 1 s", wav(1.0, rate=48000, seed=4), GOOD),
        Upload(f"{costly_rate} Hz mono, 1 s", wav(1.0, rate=costly_rate, seed=5), GOOD),
    ]


def random_bytes(limits: AudioLimits, *, count: int) -> list[Upload]:
    """Random bodies of random sizes up to twice max_bytes; every third one behind a RIFF/WAVE header."""
    rng = np.random.default_rng(14)
    cases = []
    for i in range(count):
        size = int(np.exp(rng.uniform(0, np.log(2 * limits.max_bytes))))
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if i % 3 == 2:
            body = riff() + body
            expect = ANY
        else:
            assert not body.startswith(b"RIFF")
            expect = frozenset({TOO_LARGE if len(body) > limits.max_bytes else UNREADABLE})
        cases.append(Upload(f"random {i}: {len(body)} bytes", body, expect))
    return cases
