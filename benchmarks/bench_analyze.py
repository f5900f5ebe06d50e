"""Images/s of ``fcos-analyze`` on COCO-like annotations (no pixels), at 800x1333.

Builds annotation-only examples that look like COCO train2017 (480x640 or 640x480 images,
7.3 boxes per image on average, box areas log-normal around COCO's median, 3% crowd) and
runs :func:`fcos_tf.analyze.analyze_dataset` on them with the default recipe's resize and
locations (short side 800, long side <= 1333, P3-P7), with and without RetinaNet's anchor
assignment, in alternating runs so that the ratio holds under load.

Usage (from the repository root):

    python -m benchmarks.bench_analyze              # 2000 images per run
    python -m benchmarks.bench_analyze --smoke      # seconds
"""

import argparse
import sys
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf import analyze
from fcos_tf.core import config as config_lib
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap

COCO_TRAIN_BOXES = 860_001
COCO_TRAIN_IMAGES = 118_287


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.repeats = 50, 1
    return args


def coco_like_examples(num_images, seed=0):
    """Annotation-only examples with COCO-like image sizes, box counts and box sizes."""
    rng = np.random.default_rng(seed)
    examples = []
    for image_id in range(num_images):
        height, width = (480, 640) if rng.random() < 0.7 else (640, 480)
        count = min(int(rng.geometric(1 / 7.3)), 100)
        area = np.exp(rng.normal(np.log(3000.0), 1.8, count)).clip(4, height * width * 0.9)
        aspect = np.exp(rng.normal(0.0, 0.6, count))
        w = np.sqrt(area * aspect).clip(1, width)
        h = np.sqrt(area / aspect).clip(1, height)
        x0 = rng.uniform(0, width - w)
        y0 = rng.uniform(0, height - h)
        boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)
        examples.append(
            {
                "boxes": boxes,
                "classes": rng.integers(0, 80, count).astype(np.int32),
                "is_crowd": rng.random(count) < 0.03,
                "image_id": np.int64(image_id),
                "original_size": np.array([height, width], np.int32),
            }
        )
    signature = {
        "boxes": tf.TensorSpec([None, 4], tf.float32),
        "classes": tf.TensorSpec([None], tf.int32),
        "is_crowd": tf.TensorSpec([None], tf.bool),
        "image_id": tf.TensorSpec([], tf.int64),
        "original_size": tf.TensorSpec([2], tf.int32),
    }
    dataset = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
    boxes = sum(len(e["boxes"]) for e in examples)
    return ReadResult(dataset.cache(), LabelMap.coco_2017(), num_images), boxes


def main(argv=None):
    args = _args(argv)
    config = config_lib.load_recipe("fcos_r50_1x_improved")
    read, num_boxes = coco_like_examples(args.images)
    list(read.dataset.as_numpy_iterator())  # fill the cache: the generator is not timed
    timings = {True: [], False: []}
    for _ in range(args.repeats):
        for anchors in (True, False):
            start = time.perf_counter()
            summary, _ = analyze.analyze_dataset(config, "train", anchors=anchors, read=read)
            timings[anchors].append(time.perf_counter() - start)
            assert summary["num_images"] == args.images
    common.print_header(
        f"fcos-analyze throughput, {args.images} COCO-like images ({num_boxes} boxes), "
        f"800x1333, P3-P7; CPU flags: {common.cpu_flags()}",
        argv,
    )
    rows = []
    for anchors in (False, True):
        seconds = min(timings[anchors])
        rate = args.images / seconds
        rows.append(
            (
                "FCOS assignment + reasons + ambiguity"
                + (" + RetinaNet anchors" if anchors else ""),
                f"{rate:.1f}",
                f"{num_boxes / seconds:.0f}",
                f"{COCO_TRAIN_IMAGES / rate / 60:.1f}",
            )
        )
    common.print_table(
        ("analysis", "images/s", "boxes/s", "minutes for COCO train2017 (118k images)"), rows
    )
    print(
        f"Summary of the last run: BPR {summary['bpr']['bpr']:.4f}, anchors "
        f"{summary.get('anchor_bpr')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
