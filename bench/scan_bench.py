"""The loudest window on real music without a full decode (issue 16): the same choice, and how much faster.

For every recording, :func:`musrec.audio.scan.decode_loudest` (envelope, candidates, exact spans) is compared with
:func:`~musrec.audio.window.choose_window` on the full decode of the first 3 minutes, with each envelope decoder
(ffmpeg at 8 kHz; mpg123 at a quarter rate, where installed), and with the envelope's own first choice (no exact
spans) for contrast. Printed: choices within 1 s of the full decode's, the worst chosen window's energy as a
fraction of the loudest, and time as a multiple of a 10-s clip's (decode + the VGGish forward pass, the forward pass
measured in the same run).

The recordings: audio files in ``--music DIR``; by default the soundtrack of Debian's ``drascula-music`` package
(31 recorded tracks, Ogg Vorbis, 1-3 minutes; fetched once with ``apt-get download`` into the work directory), each
encoded to MP3 three ways (192 kbit/s CBR, VBR quality 4, and 22.05-kHz mono at 64 kbit/s: MPEG-2).

    python bench/scan_bench.py
    python bench/scan_bench.py --music ~/Music --limit 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import median_s, random_embedder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PACKAGE = "drascula-music"
ENCODINGS = {
    "cbr": ("-c:a", "libmp3lame", "-b:a", "192k"),
    "vbr": ("-c:a", "libmp3lame", "-q:a", "4"),
    "lsf": ("-ac", "1", "-ar", "22050", "-c:a", "libmp3lame", "-b:a", "64k"),
}
AUDIO_SUFFIXES = {".mp3", ".ogg", ".flac", ".wav", ".m4a", ".opus"}


def recordings(workdir: Path) -> list[Path]:
    """MP3s made from the package's tracks, fetched and encoded once into ``workdir``."""
    from musrec.audio.decode import ffmpeg_executable

    out = workdir / "mp3"
    if out.is_dir() and any(out.iterdir()):
        return sorted(out.iterdir())
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True, capture_output=True, timeout=600)
    deb = next(workdir.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "extracted")], check=True, timeout=300)
    out.mkdir()
    for track in sorted((workdir / "extracted").rglob("*.ogg")):
        for name, args in ENCODINGS.items():
            target = out / f"{track.stem}.{name}.mp3"
            cmd = [ffmpeg_executable(), "-nostdin", "-v", "error", "-y", "-i", str(track), *args, str(target)]
            subprocess.run(cmd, check=True, timeout=300)
    return sorted(out.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music", type=Path, help="a directory of audio files (default: Debian's drascula-music)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "musrec-scan-bench")
    parser.add_argument("--limit", type=int, default=0, help="at most this many files (0: all)")
    parser.add_argument("--repeats", type=int, default=9, help="runs of the clip's baseline")
    args = parser.parse_args()

    from musrec.audio import scan
    from musrec.audio.decode import decode
    from musrec.audio.window import SEARCH_S, WINDOW_S, choose_window, window_energies
    from musrec.vggish.tfutil import import_tensorflow

    if args.music:
        files = sorted(p for p in args.music.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    else:
        files = recordings(args.workdir)
    files = files[: args.limit or None]
    decoders = ["ffmpeg"] + (["mpg123"] if scan.mpg123_executable() else [])

    def use(decoder: str) -> None:
        os.environ.pop("MUSREC_NO_MPG123", None)
        if decoder == "ffmpeg":
            os.environ["MUSREC_NO_MPG123"] = "1"
        scan.mpg123_executable.cache_clear()

    import_tensorflow()
    with tempfile.TemporaryDirectory(prefix="musrec-scan-") as tmp_name:
        tmp = Path(tmp_name)
        embedder = random_embedder(tmp)
        clip_path = tmp / "clip.mp3"
        from musrec.audio.decode import ffmpeg_executable

        subprocess.run(
            [ffmpeg_executable(), "-nostdin", "-v", "error", "-ss", "30", "-t", "10", "-i", str(files[0])]
            + ["-c:a", "libmp3lame", "-b:a", "192k", str(clip_path)],
            check=True,
        )
        clip = decode(clip_path).samples
        embed_s = median_s(lambda: embedder.embed(clip), args.repeats)
        clip_s = median_s(lambda: decode(clip_path), args.repeats)

    rows: dict[str, list[tuple[float, float, float]]] = {}  # way -> (error s, energy fraction, seconds)
    is_long: list[bool] = []  # per recording: 2 minutes or more
    long_files = 0
    for path in files:
        full = decode(path, duration_s=SEARCH_S)
        if full.duration_s < WINDOW_S + 1:
            continue
        long_files += full.duration_s >= 120
        is_long.append(full.duration_s >= 120)
        truth = choose_window(full.samples, search_s=SEARCH_S)
        starts, energies = window_energies(full.samples, sample_rate=16000, width=160000, search_s=SEARCH_S)

        def fraction(start_s: float, starts: np.ndarray = starts, energies: np.ndarray = energies) -> float:
            return float(energies[int(np.argmin(np.abs(starts / 16000 - start_s)))] / energies.max())

        one_pass_s = _time(lambda path=path: choose_window(decode(path, duration_s=SEARCH_S).samples))
        rows.setdefault("one pass (full decode)", []).append((0.0, 1.0, one_pass_s))
        for decoder in decoders:
            use(decoder)
            envelope = scan.scan_envelope(path)
            first = choose_window(envelope.samples, sample_rate=envelope.rate, search_s=SEARCH_S).start_s
            rows.setdefault(f"{decoder} envelope alone", []).append((abs(first - truth.start_s), fraction(first), 0))
            seconds = _time(lambda path=path: scan.decode_loudest(path))
            chosen = scan.decode_loudest(path).offset_s
            rows.setdefault(f"{decoder} envelope + exact spans", []).append(
                (abs(chosen - truth.start_s), fraction(chosen), seconds)
            )
    use("mpg123")

    skipped = len(files) - len(is_long)
    print(
        f"{len(is_long)} recordings ({long_files} of 2 minutes or more; {skipped} under 11 s skipped); "
        f"the first {SEARCH_S:.0f} s searched"
    )
    print(f"baseline, a 10-s MP3 clip: decode {clip_s * 1000:.1f} ms + forward pass {embed_s * 1000:.1f} ms")
    print(f"{'way':<34}{'within 1 s':>12}{'worst energy':>14}{'x clip p50':>12}{'x clip p90':>12}{'p50 >= 2 min':>14}")
    for way, values in rows.items():
        within = sum(e <= 1.0 for e, _, _ in values)
        worst = min(f for _, f, _ in values)
        ratios = [(s + embed_s) / (clip_s + embed_s) for _, _, s in values]
        timed = "alone" not in way
        p50 = f"{statistics.median(ratios):.2f}" if timed else "-"
        p90 = f"{np.quantile(ratios, 0.9):.2f}" if timed else "-"
        longer = [r for r, long in zip(ratios, is_long, strict=True) if long]
        p50_long = f"{statistics.median(longer):.2f}" if timed and longer else "-"
        print(f"{way:<34}{f'{within}/{len(values)}':>12}{worst:>14.4f}{p50:>12}{p90:>12}{p50_long:>14}")
    print("worst energy: the chosen window's energy over the loudest window's, on the full decode")
    return 0


def _time(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
