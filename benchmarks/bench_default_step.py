"""Where the default run's train step spends its time: a TensorFlow profile by op category.

The default recipe (``configs/synthetic_small.py``: small backbone, 64-channel FPN, 2-conv head,
128x128 images, batch 16) is built as ``train.py`` builds it; its compiled train function runs
on one fixed batch of the real pipeline (so the input pipeline is not in the step), first
timed, then traced with ``tf.profiler``. The trace's op events on TensorFlow's compute threads
are summed per category (forward / backward convolutions, GroupNorm, losses, optimizer, other)
and per part of the model (backbone stages, FPN, head calls per pyramid level), and the number
of positive locations per level of the batch says which levels the recipe's data use.

Usage (from the repository root):

    python benchmarks/bench_default_step.py            # about a minute on 2 cores
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_default_step.py   # oneDNN limited to AVX2

Op times are summed over threads (on 2 cores they add up to about twice the wall time).
"""

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (sets up sys.path and TF logging)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from fcos_tf import builders  # noqa: E402
from fcos_tf import config as config_lib  # noqa: E402
from fcos_tf.locations import split_per_level  # noqa: E402


def categorise(name):
    """Category of one op event of the trace (its name is ``scope/.../op:Type``)."""
    kind = name.rsplit(":", 1)[-1]
    side = "backward" if "gradient_tape" in name else "forward"
    if "detection_sgd" in name:
        return "optimizer update"
    if "Conv2D" in kind:
        return f"{side} convolutions"
    if "_norm" in name or "tower_norm" in name:
        return f"{side} GroupNorm"
    if "loss" in name.lower() or "focal" in name.lower():
        return f"{side} losses"
    return f"{side} other ops"


def part(name):
    """Part of the model an op event belongs to (head calls numbered per pyramid level)."""
    head = re.search(r"head_\d+/[a-z_]+?\d?_(\d+)/", name)
    if head:
        return f"head, call {head.group(1)}"
    backbone = re.search(r"small_backbone_\d+/([a-z0-9]+)_", name)
    if backbone:
        return f"backbone {backbone.group(1)}"
    if "fpn_" in name:
        return "FPN"
    if "detection_sgd" in name:
        return "optimizer"
    return "losses, targets, other"


def op_events(logdir):
    """``{op name: total picoseconds}`` over TensorFlow's compute threads of a trace."""
    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "ExecutorState" in name or "Threadpool" in name:
                    continue
                totals[name] += event.duration_ps
    return totals


def table(totals, key, steps):
    grouped = collections.Counter()
    for name, duration in totals.items():
        grouped[key(name)] += duration
    total = sum(grouped.values())
    rows = [
        [name, duration / 1e9 / steps, 100.0 * duration / total]
        for name, duration in grouped.most_common()
    ]
    return rows, total / 1e9 / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed and traced steps")
    args = parser.parse_args()
    common.print_header("Train step of the default recipe, by op category")

    config = config_lib.load_recipe("synthetic_small")
    examples = builders.read_split(config, "train")
    batch = next(iter(builders.build_train_dataset(config, examples.dataset)(0)))
    keras.utils.set_random_seed(0)
    model = builders.build_model(config, examples.label_map.num_classes)
    model.compile(optimizer=builders.build_optimizer(config))
    model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    for _ in range(5):
        float(model.train_function(iterator)["loss"])
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        float(model.train_function(iterator)["loss"])
        times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            float(model.train_function(iterator)["loss"])
        tf.profiler.experimental.stop()
        totals = op_events(logdir)

    step_ms = 1e3 * statistics.median(times)
    print(
        f"Train step (compiled train function, fixed batch): {step_ms:.1f} ms median of "
        f"{args.steps}.\n"
    )
    rows, total = table(totals, categorise, args.steps)
    print(f"By op category (op time summed over threads: {total:.1f} ms per step):\n")
    common.print_table(["category", "ms / step", "%"], rows)
    # Keras numbers the head's calls (one per level, P3 first) in steps it chooses: rank them.
    calls = sorted(
        {
            int(m.group(1))
            for m in map(re.compile(r"head, call (\d+)").match, map(part, totals))
            if m
        }
    )
    levels = {f"head, call {c}": f"head on P{3 + i}" for i, c in enumerate(calls)}
    rows, _ = table(totals, lambda name: levels.get(part(name), part(name)), args.steps)
    print("\nBy part of the model:\n")
    common.print_table(["part", "ms / step", "%"], rows)

    classes = batch[1]["class_targets"]
    height, width = (int(v) for v in batch[0].shape[1:3])
    per_level = split_per_level(classes, (height, width), tuple(config.locations.strides), axis=1)
    counts = [float(np.sum(level.numpy() >= 0)) / classes.shape[0] for level in per_level]
    print(
        "\nPositive locations per image and level of the batch: "
        + ", ".join(f"P{3 + i} {c:.1f}" for i, c in enumerate(counts))
    )


if __name__ == "__main__":
    main()
