"""``musrec setup --from DIR`` with a features tarball: one read of it (the build's, which verifies it to the end of
its gzip stream) instead of a check that read it through first (issue 22). In the same run, on the same tarball:

- ``check``: the separate read setup no longer makes before building (``_check_features``: gunzip with its CRC,
  the tar structure, every member skipped through);
- ``setup``: ``musrec setup --from DIR`` as it is now, in a subprocess, from an empty data directory.

Printed: both times, the setup that read the tarball twice (setup + check) and the share saved. The tarball is the
full-size benchmark's (bench/fullsize_data.py: AudioSet's layout and schema, synthetic rows), at ``--count``
segments; 2,000,000 is AudioSet's size (a 2.4 GB tarball; minutes).

    python bench/setup_pass_bench.py
    python bench/setup_pass_bench.py --count 500000 --workdir /var/tmp/musrec-setup-bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fullsize_data import generate, write_config, write_models

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200_000, help="segments in the tarball")
    parser.add_argument("--workdir", type=Path, help="kept, with the tarball (default: a temporary directory)")
    args = parser.parse_args()

    from musrec.setup.features import _check_features

    with tempfile.TemporaryDirectory(prefix="musrec-setup-bench-") as tmp:
        work = args.workdir or Path(tmp)
        source = work / "from"
        source.mkdir(parents=True, exist_ok=True)
        tarball = source / "features.tar.gz"
        if not tarball.is_file():
            print(f"generating {args.count:,} segments ...", flush=True)
            generate(tarball, args.count, 0)
        write_models(source)
        size_mb = tarball.stat().st_size / 1e6

        started = time.perf_counter()
        facts = _check_features(tarball, progress=False)
        check_s = time.perf_counter() - started

        data = work / "data"
        shutil.rmtree(data, ignore_errors=True)
        config = work / "config.toml"
        write_config(config, data)
        cmd = [sys.executable, "-m", "musrec.cli", "--config", str(config), "setup", "--from", str(source)]
        started = time.perf_counter()
        done = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, check=False)
        setup_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"setup failed: {done.stderr}")
        verified = next(line for line in done.stdout.splitlines() if line.startswith("features: verified"))

    print(f"{args.count:,} segments, {size_mb:,.0f} MB tarball ({facts['verified']})")
    print(f"check (the read setup no longer makes): {check_s:6.1f} s")
    print(f"musrec setup --from, one read          : {setup_s:6.1f} s  ({verified.split(',', 1)[1].strip()})")
    print(f"setup as it was (check, then the same) : {setup_s + check_s:6.1f} s")
    before_s = setup_s + check_s
    print(f"saved: {check_s / before_s:.0%} of setup's time (ratio now / before {setup_s / before_s:.2f})")


if __name__ == "__main__":
    main()
