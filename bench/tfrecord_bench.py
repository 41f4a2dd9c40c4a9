"""Reading TFRecord files: musrec's reader (no TensorFlow, both checksums verified with google-crc32c) against
TensorFlow's ``tf_record_iterator`` (deprecated), which it replaced, in the same run on the same files.

The files hold AudioSet-shaped records (10 one-second frames, labels, a video id), as ``musrec setup`` reads them:
``--files`` shards of ``--records`` records each, written once by TensorFlow's writer. Printed: the median time to
read every record of every shard, per record, for each reader, and their ratio (above 1: musrec's reader is slower);
then the same ratio with the parse of each record (protobuf, which follows either reader in ``musrec setup``) added.

    python bench/tfrecord_bench.py
    python bench/tfrecord_bench.py --files 40 --records 2000 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import median_s

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--records", type=int, default=2000, help="records per file (AudioSet's shards hold ~160)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.audioset.tfrecord import encode, frame_rows, read_tfrecord, write_tfrecord
    from musrec.vggish.tfutil import import_tensorflow

    tf = import_tensorflow()
    reader = tf.compat.v1.io.tf_record_iterator
    tf_reader = getattr(reader, "__wrapped__", reader)  # without its deprecation notice, as musrec called it
    with tempfile.TemporaryDirectory(prefix="musrec-tfrecord-bench-") as tmp:
        paths = [Path(tmp) / f"shard{i:03d}.tfrecord" for i in range(args.files)]
        audioset = SyntheticAudioSet()
        for i, path in enumerate(paths):
            segments = audioset.segments(args.records, start=i * args.records)
            write_tfrecord(
                path, (encode(s.video_id, s.start_s, s.end_s, s.labels, frame_rows(s.rows)) for s in segments)
            )
        total = args.files * args.records
        size = sum(p.stat().st_size for p in paths)

        def read_tf() -> int:
            return sum(sum(1 for _ in tf_reader(str(p))) for p in paths)

        def read_musrec() -> int:
            return sum(sum(1 for _ in read_tfrecord(p)) for p in paths)

        assert read_tf() == read_musrec() == total
        tf_s = median_s(read_tf, args.repeats)
        own_s = median_s(read_musrec, args.repeats)
        records = [r for p in paths for r in read_tfrecord(p)]
        parse = tf.train.SequenceExample.FromString
        parse_s = median_s(lambda: [parse(r) for r in records], args.repeats)
    print(f"{args.files} files, {total:,} records, {size / 1e6:.1f} MB (page cache warm); median of {args.repeats}")
    print(f"tf_record_iterator : {tf_s:.3f} s  ({tf_s / total * 1e6:.2f} us/record)")
    print(f"read_tfrecord      : {own_s:.3f} s  ({own_s / total * 1e6:.2f} us/record)")
    print(f"ratio musrec / TensorFlow: {own_s / tf_s:.2f}")
    print(f"parsing the records (SequenceExample, as musrec setup does after either reader): {parse_s:.3f} s")
    print(f"ratio of read + parse, musrec / TensorFlow: {(own_s + parse_s) / (tf_s + parse_s):.2f}")


if __name__ == "__main__":
    main()
