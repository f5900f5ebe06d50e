"""Where the default run's train step spends its time: a TensorFlow profile by op category.

The default recipe (``synthetic_small``: small backbone, 64-channel FPN, 2-conv head,
128x128 images, batch 16) is built as ``train.py`` builds it; its compiled train function runs
on one fixed batch of the real pipeline (so the input pipeline is not in the step), first
timed, then traced with ``tf.profiler``. The trace's op events on TensorFlow's compute threads
are summed per category (forward / backward convolutions, GroupNorm, losses, optimizer, other)
and per part of the model (backbone stages, FPN, head calls per pyramid level), and the number
of positive locations per level of the batch says which levels the recipe's data use.

``--compare`` times the recipe against variants of it (the recipe before the default run was
made faster, and each of its speed-ups alone), each variant in a process of its own because
TensorFlow's thread pools are fixed per process: the compiled step on the fixed batch and the
step of ``model.fit`` on the real input pipeline, side by side in one table.

Usage (from the repository root):

    python -m benchmarks.bench_default_step            # profile, about a minute on 2 cores
    python -m benchmarks.bench_default_step --compare  # before/after table, about 4 minutes
    ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.bench_default_step   # oneDNN limited to AVX2

Op times are summed over threads (with several threads they add up to more than the wall
time).
"""

import argparse
import ast
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf.core import builders
from fcos_tf.core import config as config_lib
from fcos_tf.ops.locations import split_per_level


def categorise(name):
    """Category of one op event of the trace (its name is ``scope/.../op:Type``)."""
    kind = name.rsplit(":", 1)[-1]
    side = "backward" if common.is_backward_op(name) else "forward"
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
    """Part of the model an op event belongs to.

    The head's towers and predictors run as one function called on each pyramid level
    (``FCOSHead``): its forward calls are numbered in level order (``head, call N``); its
    backward calls are not, so their ops add up to one row; so do the backbone GroupNorms'
    written-out backward passes (``group_norm_gradient_N``, numbered in creation order).
    """
    head = re.search(r"head_\d+/StatefulPartitionedCall(?:_(\d+))?/", name)
    if head:
        return f"head, call {int(head.group(1) or 0)}"
    if re.search(r"PartitionedCall(?:_\d+)?/gradients/", name):
        return "head towers, backward (all levels)"
    if "group_norm_gradient" in name:
        return "backbone GroupNorms, backward (all stages)"
    if re.search(r"head_\d+/", name):
        return "head, per-level scales"
    backbone = re.search(r"small_backbone_\d+/([a-z0-9]+)_", name)
    if backbone:
        return f"backbone {backbone.group(1)}"
    if "fpn_" in name:
        return "FPN"
    if "detection_sgd" in name:
        return "optimizer"
    return "losses, targets, other"


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


# Variants of --compare: (name, config overrides). "before" is the recipe as it was before
# the default run was made faster: five levels P3-P7, TensorFlow's own thread pools and a
# 16-channel stem (the per-step part of that change; the recipe also went from 2000 to 1600
# steps).
_FIVE_LEVELS = ("locations.strides=base", "locations.size_ranges=base")  # P3-P7, the paper's
_TF_THREADS = ("train.intra_op_threads=0", "train.inter_op_threads=0")
_STEM_16 = ("backbone.stem_channels=16",)
VARIANTS = (
    (
        "before: P3-P7, TensorFlow's thread pools, 16-channel stem",
        _FIVE_LEVELS + _TF_THREADS + _STEM_16,
    ),
    ("thread pools 1 x 2 only", _FIVE_LEVELS + _STEM_16),
    ("P3-P4 only", _TF_THREADS + _STEM_16),
    ("8-channel stem only", _FIVE_LEVELS + _TF_THREADS),
    ("recipe: all three", ()),
)


_RESULT = "variant result: "


def recipe(overrides=()):
    """The default recipe with ``section.key=value`` overrides applied.

    ``value`` is a Python literal, or ``base`` for the value of ``config.base_config()`` (the
    paper's profile), e.g. ``locations.strides=base`` for the five levels P3-P7.
    """
    config = config_lib.load_recipe("synthetic_small")
    base = config_lib.base_config()
    for override in overrides:
        key, value = override.split("=", 1)
        *path, name = key.split(".")
        node, base_node = config, base
        for part_name in path:
            node, base_node = node[part_name], base_node[part_name]
        node[name] = base_node[name] if value == "base" else ast.literal_eval(value)
    return config


def built(config):
    """(model compiled as train.py compiles it, one batch of the real pipeline, dataset fn)."""
    examples = builders.read_split(config, "train")
    dataset_fn = builders.build_train_dataset(config, examples.dataset)
    batch = next(iter(dataset_fn(0)))
    keras.utils.set_random_seed(0)
    model = builders.build_model(config, examples.label_map.num_classes)
    model.compile(optimizer=builders.build_optimizer(config))
    model.make_train_function()
    return model, batch, dataset_fn


def fixed_batch_step_ms(model, batch, steps):
    """Median ms of the compiled train function on one fixed batch (input pipeline excluded)."""
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    for _ in range(5):
        float(model.train_function(iterator)["loss"])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(model.train_function(iterator)["loss"])
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), iterator


def fit_step_ms(model, dataset_fn, steps):
    """ms per step of ``model.fit`` on the real pipeline (second of two epochs of ``steps``)."""
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(dataset_fn(0), epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    return 1e3 * seconds[-1] / steps


def measure_variant(overrides, steps):
    """Runs in a fresh process: step times of the recipe with ``overrides``, as a JSON line."""
    config = recipe(overrides)
    builders.apply_thread_pools(config)
    model, batch, dataset_fn = built(config)
    fixed, _ = fixed_batch_step_ms(model, batch, steps)
    fit = fit_step_ms(model, dataset_fn, 4 * steps)
    result = {"fixed_ms": fixed, "fit_ms": fit, "params": model.count_params()}
    print(_RESULT + json.dumps(result), flush=True)


def compare(steps):
    common.print_header("Train step of the default recipe, before and after, same run")
    rows = []
    for name, overrides in VARIANTS:
        command = [sys.executable, os.path.abspath(__file__), "--measure", "--steps", str(steps)]
        for override in overrides:
            command += ["--override", override]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
        if done.returncode or not lines:
            sys.exit(f"variant {name!r} failed (status {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(lines[-1][len(_RESULT) :])
        rows.append([name, result["fixed_ms"], result["fit_ms"], result["params"]])
    base = rows[0]
    for row in rows:
        row.append(base[2] / row[2])
    common.print_table(
        [
            "variant",
            "step, fixed batch (ms)",
            "step in fit, real pipeline (ms)",
            "params",
            "fit speed-up",
        ],
        rows,
    )


def profile(steps):
    config = recipe()
    builders.apply_thread_pools(config)  # before any TF call, the header's included
    common.print_header("Train step of the default recipe, by op category")
    model, batch, _ = built(config)
    step_ms, iterator = fixed_batch_step_ms(model, batch, steps)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            float(model.train_function(iterator)["loss"])
        tf.profiler.experimental.stop()
        totals = common.trace_op_times(logdir)

    print(
        f"Thread pools: intra_op {config.train.intra_op_threads}, inter_op "
        f"{config.train.inter_op_threads} (0 = TensorFlow's choice).\n"
        f"Train step (compiled train function, fixed batch): {step_ms:.1f} ms median of "
        f"{steps}.\n"
    )
    rows, total = table(totals, categorise, steps)
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
    rows, _ = table(totals, lambda name: levels.get(part(name), part(name)), steps)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed and traced steps")
    parser.add_argument("--compare", action="store_true", help="before/after table")
    parser.add_argument("--measure", action="store_true", help="one variant (for --compare)")
    parser.add_argument(
        "--override", action="append", default=[], help="section.key=value of --measure"
    )
    args = parser.parse_args()
    if args.measure:
        measure_variant(args.override, args.steps)
    elif args.compare:
        compare(args.steps)
    else:
        profile(args.steps)


if __name__ == "__main__":
    main()
