"""Images/s of the input pipeline alone at 800x1333, with real JPEG decoding and targets.

Writes synthetic images with about 20 objects each as JPEG files plus a COCO JSON (once, in
``--workdir``), reads them with the COCO reader (encoded bytes, decoded in the pipeline's
parallel map) and times the training pipeline: decode + flip + resize (short side 800, long
side <= 1333) + normalise + pad + targets + batching. The reader's examples are cached in
memory as encoded bytes (as a training run with ``cache=True`` would), so the disk is not
measured; decoding is.

Usage (from the repository root):

    python -m benchmarks.bench_pipeline                        # 1333x800 JPEGs (~1 Mpixel)
    python -m benchmarks.bench_pipeline --source-size 480,640  # COCO-like sources, upscaled
    python -m benchmarks.bench_pipeline --smoke                # seconds
"""

import argparse
import os
import resource
import sys
import time

import tensorflow as tf

from benchmarks import common
from fcos_tf.data import coco, pipeline, synthetic


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/fcos_bench_pipeline")
    parser.add_argument("--num-files", type=int, default=48)
    parser.add_argument("--source-size", default="800,1333", help="H,W of the JPEG files")
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--short-side", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--batches", type=int, default=40, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_files, args.batches, args.warmup, args.repeats = 8, 3, 1, 1
    return args


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _write_files(args, size):
    folder = os.path.join(args.workdir, f"{size[0]}x{size[1]}_{args.objects}_{args.num_files}")
    annotation_file = os.path.join(folder, "annotations.json")
    if not os.path.exists(annotation_file):
        t0 = time.perf_counter()
        synthetic.write_coco(
            folder,
            args.num_files,
            image_size=size,
            seed=0,
            num_objects=(args.objects, args.objects),
            min_object_size=8,
        )
        print(f"wrote {args.num_files} JPEGs in {time.perf_counter() - t0:.1f} s to {folder}")
    return annotation_file, os.path.join(folder, "images")


def main(argv=None):
    args = _args(argv)
    size = tuple(int(v) for v in args.source_size.split(","))
    annotation_file, image_dir = _write_files(args, size)
    read = coco.read_coco(annotation_file, image_dir, decode=False)
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=True,
        batch_size=args.batch_size,
        cache=True,
        train_short_side=(args.short_side, args.short_side),
        max_size=args.max_size,
        shuffle_buffer=args.num_files,
        seed=0,
    )
    iterator = iter(dataset)

    def run(n):
        for _ in range(n):
            images, labels = next(iterator)
        return images, labels

    images, labels = run(args.warmup)
    seconds, cpu_seconds = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        run(args.batches)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(_cpu_seconds() - c0)
    best = min(seconds)
    median = sorted(seconds)[len(seconds) // 2]
    num_images = args.batches * args.batch_size
    # CPU time per image (all threads of this process): the figure that other processes on a
    # shared machine disturb least. cores / cpu-time is the rate on idle cores.
    cpu_ms = 1000 * sorted(cpu_seconds)[len(cpu_seconds) // 2] / num_images
    cores = os.cpu_count()
    num_boxes = float(
        tf.reduce_mean(tf.reduce_sum(tf.cast(labels["classes"] >= 0, tf.float32), axis=1))
    )
    command = ["benchmarks/bench_pipeline.py"] + (argv or sys.argv[1:])
    common.print_header(
        "Input pipeline throughput (decode + flip + resize + normalise + pad + targets + batch)",
        command,
    )
    common.print_table(
        [
            "source JPEG",
            "output batch",
            "boxes/image",
            "images/s (median)",
            "images/s (best)",
            "CPU ms/image",
            f"images/s on {cores} idle cores (from CPU time)",
        ],
        [
            [
                f"{size[0]}x{size[1]}",
                "x".join(str(d) for d in images.shape),
                f"{num_boxes:.1f}",
                f"{num_images / median:.1f}",
                f"{num_images / best:.1f}",
                f"{cpu_ms:.1f}",
                f"{cores * 1000 / cpu_ms:.0f}",
            ]
        ],
    )


if __name__ == "__main__":
    main()
