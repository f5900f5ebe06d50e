"""Cost of the COCO reader's image checks per file: the cheap header check vs full decoding.

Writes COCO-like 480x640 JPEG files (once, in ``--workdir``) and times, over all of them:
``coco.check_image_file`` (the reader's default: header segments and end marker, no
decoding), TensorFlow's decoder on one file at a time (what the reader does up to the first
decodable file) and ``check_images="decode"``'s parallel decoding pass over every file. The
files were just written, so they come from the page cache: the disk is not measured.

Usage (from the repository root):

    python -m benchmarks.bench_image_check
    python -m benchmarks.bench_image_check --smoke   # seconds
"""

import argparse
import os
import resource
import sys
import time

from benchmarks import common
from fcos_tf.data import coco, synthetic

COCO_TRAIN_IMAGES = 118_287


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(fn, count):
    """(wall ms per file, CPU ms per file) of ``fn()`` over ``count`` files."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return ((time.perf_counter() - wall) * 1e3 / count, (_cpu_seconds() - cpu) * 1e3 / count)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/fcos_bench_image_check")
    parser.add_argument("--num-files", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="20 files")
    args = parser.parse_args(argv)
    count = 20 if args.smoke else args.num_files
    workdir = os.path.join(args.workdir, str(count))
    if not os.path.exists(os.path.join(workdir, "annotations.json")):
        synthetic.write_coco(workdir, count, image_size=(480, 640), num_objects=(5, 20))
    image_dir = os.path.join(workdir, "images")
    paths = sorted(os.path.join(image_dir, name) for name in os.listdir(image_dir))
    size_kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024

    coco._undecodable(paths[:2])  # builds the TF graph
    rows = []
    for name, fn in (
        (
            "header and end-marker check (default, every file)",
            lambda: [coco.check_image_file(p) for p in paths],
        ),
        (
            "TensorFlow decode, one file at a time (default, up to the first decodable)",
            lambda: [coco._tf_decodes(p) for p in paths],
        ),
        ('check_images="decode": parallel decode of every file', lambda: coco._undecodable(paths)),
    ):
        wall_ms, cpu_ms = _measure(fn, len(paths))
        rows.append([name, wall_ms, cpu_ms, wall_ms * COCO_TRAIN_IMAGES / 1e3])
    common.print_header(
        f"COCO reader image checks, {len(paths)} JPEG files of 480x640 "
        f"({size_kb:.0f} KB on average), page cache",
        argv=sys.argv,
    )
    common.print_table(
        [
            "check",
            "wall ms/file",
            "CPU ms/file",
            f"wall s for COCO train ({COCO_TRAIN_IMAGES} files)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
