"""Train-step cost of the head's GroupNorm (fcos_tf.modeling.head.GroupNorm) against Keras' layer.

The same FCOS is built twice, once with ``keras.layers.GroupNormalization`` in the head towers
(the layer it replaced) and once with :class:`fcos_tf.modeling.head.GroupNorm` (shifted two-pass
statistics, staged reductions), and their train steps are timed alternately in one run, so
that the ratio holds under the machine's load. Two settings: the synthetic recipe's small
model (64-channel head, 2 convs per tower) at 128x128, batch 16, and a 256-channel,
4-conv head (the paper's) on the small backbone at 256x256, batch 2. Random weights and
targets (no downloads).

Usage (from the repository root):

    python -m benchmarks.bench_group_norm
    python -m benchmarks.bench_group_norm --rounds=3 --repeats=3
"""

import argparse
import statistics

import keras
import tensorflow as tf

from benchmarks import common
from fcos_tf.modeling import head as head_lib
from fcos_tf.modeling.backbone import SmallBackbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.ops.targets import compute_targets

SETTINGS = {
    "small head 64ch x2, 128x128, batch 16": dict(
        size=128, batch=16, fpn_channels=64, head_num_convs=2, head_num_groups=16
    ),
    "paper head 256ch x4, 256x256, batch 2": dict(
        size=256, batch=2, fpn_channels=256, head_num_convs=4, head_num_groups=32
    ),
}
NUM_CLASSES = 80


def build(norm_class, size, batch, **model_kwargs):
    """A compiled FCOS whose head towers use ``norm_class``, and a dataset of one batch."""
    original = head_lib.GroupNorm
    head_lib.GroupNorm = norm_class
    try:
        keras.utils.set_random_seed(0)
        model = FCOS(SmallBackbone(), NUM_CLASSES, **model_kwargs)
        model.build((None, None, None, 3))
    finally:
        head_lib.GroupNorm = original
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    boxes, classes = common.random_boxes(batch, 8, size, size, NUM_CLASSES)
    targets = [compute_targets(b, c, (size, size)) for b, c in zip(boxes, classes)]
    labels = {key: tf.stack([t[key] for t in targets]) for key in targets[0]}
    images = common.random_images(batch, size, size)
    return model, common.repeat_dataset(images, labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two models")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per round")
    args = parser.parse_args()
    common.print_header(
        "Head GroupNorm: train step, Keras' layer vs fcos_tf.modeling.head.GroupNorm"
    )
    rows = []
    for name, setting in SETTINGS.items():
        runs = {
            "keras.layers.GroupNormalization": build(keras.layers.GroupNormalization, **setting),
            "fcos_tf.modeling.head.GroupNorm": build(head_lib.GroupNorm, **setting),
        }
        medians = {label: [] for label in runs}
        for _ in range(args.rounds):
            for label, (model, dataset) in runs.items():
                timing = common.time_train_steps(model, dataset, warmup=1, repeats=args.repeats)
                medians[label].append(timing["median"])
        before, after = (statistics.median(medians[label]) for label in runs)
        rows.append([name, before * 1e3, after * 1e3, after / before, common.load_average()])
    common.print_table(
        ["setting", "Keras GN step (ms)", "GroupNorm step (ms)", "ratio", "load after"], rows
    )


if __name__ == "__main__":
    main()
