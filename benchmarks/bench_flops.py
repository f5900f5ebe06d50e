"""Achieved GFLOP/s of FCOS inference and training against a large tf.matmul in the same run.

The distance to the machine's limit: a large square ``tf.matmul`` (float32, 4096) is about the
best sustained rate TensorFlow reaches on this machine; a detector whose convolutions run at
half that rate leaves little on the table, one at 10% leaves a lot.

FLOPs are counted from the graph (``common.graph_flops``): every ``Conv2D``,
``Conv2DBackpropInput``, ``Conv2DBackpropFilter`` and ``MatMul`` op of the traced function,
2 FLOPs per multiply-add, from static shapes. For inference the traced function is the model's
forward pass (post-processing adds no convolution); for training it is the model's
``train_step`` (forward, the input- and weight-gradient convolutions of every trainable layer,
none for the frozen stem and stage 1). Element-wise work (GroupNorm, activations, losses, NMS)
is not counted but is in the measured time, so the fractions are conservative.

On a shared machine the load drifts over minutes, so every workload is also bracketed by two
short matmul measurements (right before and right after it): "fraction of adjacent matmul"
divides by their mean. That is the figure to quote; the first-row fraction is kept for
reference.

Rows:
- ``tf.matmul`` 4096^3, float32 (and bfloat16 with ``--bf16``): the peak.
- FCOS inference: the compiled predict step (forward + decode + top-k + NMS), batch 1, 800x1216.
- FCOS train step: ``model.fit``'s compiled step, batch 1 (``--train-size``).
- the same two for keras-cv RetinaNet with ``--peers``.

Usage (from the repository root):

    python -m benchmarks.bench_flops                  # FCOS R-50, 800x1216 inference and train
    python -m benchmarks.bench_flops --peers --xla=both
    python -m benchmarks.bench_flops --precision=mixed_bfloat16 --bf16
    python -m benchmarks.bench_flops --smoke          # seconds: small backbone, 128x128
"""

import argparse
import gc

import numpy as np
import tensorflow as tf

from benchmarks import common
from benchmarks.common import (
    NUM_CLASSES,
    build_fcos,
    fcos_batch,
    parse_size,
    retinanet_dataset,
)


def check_flop_counter():
    """The graph counter agrees with the hand formula and with tf.compat.v1.profiler."""
    x_spec = tf.TensorSpec([2, 20, 24, 8], tf.float32)
    kernel = tf.ones([3, 3, 8, 16])
    fn = tf.function(lambda x: tf.nn.conv2d(x, kernel, 2, "VALID"))
    graph = fn.get_concrete_function(x_spec).graph
    expected = 2 * 2 * 9 * 11 * 16 * 3 * 3 * 8  # 2 * B * Ho * Wo * Cout * kh * kw * Cin
    counted = common.graph_flops(graph)["total"]
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops
    if not counted == profiled == expected:
        raise AssertionError(f"FLOP counter {counted}, profiler {profiled}, hand {expected}")


def inference_flops(model, height, width):
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([1, height, width, 3], tf.float32)).graph
    return common.graph_flops(graph)["total"]


def train_flops(model, batch):
    """FLOPs of one train step, traced from ``model.train_step`` on the batch's shapes."""
    specs = tf.nest.map_structure(lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(a.dtype)), batch)
    fn = tf.function(lambda data: model.train_step(data))
    return common.graph_flops(fn.get_concrete_function(specs).graph)["total"]


def with_adjacent_peak(measure, n):
    """Runs ``measure()`` between two matmul peak measurements.

    On a shared machine the load changes over minutes; the peak measured right before and
    right after a workload (mean of the two) is the fair reference for that workload.

    Returns:
        (result of ``measure()``, adjacent peak GFLOP/s).
    """
    before, _ = common.matmul_gflops(n, repeats=3)
    result = measure()
    after, _ = common.matmul_gflops(n, repeats=3)
    return result, (before + after) / 2


def measure_model(name, args, jit, peak, rows):
    h, w = args.size
    th, tw = args.train_size
    xla = "on" if jit else "off"
    with common.dtype_policy(args.precision):
        if name == "fcos":
            model = build_fcos(args.backbone, jit)
            train_batch = fcos_batch(1, th, tw)
            label = "FCOS R50-FPN" if args.backbone == "resnet50" else f"FCOS {args.backbone}"
        else:
            model = common.keras_cv_retinanet(NUM_CLASSES, jit_compile=jit)
            train_batch = next(iter(retinanet_dataset(1, th, tw)))
            label = "keras-cv RetinaNet R50-FPN"
    if args.precision != "float32":
        label += f" {args.precision}"

    if not common.conv_layers_channels_last(model):
        print(f"# {label}: some Conv2D layers are channels_first (slow path on CPU)")
    images = tf.constant(common.random_images(1, h, w, seed=1))
    flops = inference_flops(model, h, w)
    predict = common.predict_function(model)
    predict(images)  # trace outside the bracketed measurement
    t, near = with_adjacent_peak(
        lambda: common.time_call(lambda: predict(images), warmup=args.warmup, repeats=args.repeats),
        args.matmul_n,
    )
    gflops = flops / t["median"] / 1e9
    rows.append(
        [
            f"{label} inference (predict step, post-processing incl.)",
            f"{h}x{w}",
            1,
            xla,
            flops / 1e9,
            t["median"],
            gflops,
            gflops / peak,
            near,
            gflops / near,
            t["load"],
        ]
    )

    if not args.no_train:
        try:
            dataset = (
                common.repeat_dataset(*train_batch)
                if name == "fcos"
                else retinanet_dataset(1, th, tw)
            )
            model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)  # trace, build
            t, near = with_adjacent_peak(
                lambda model=model, dataset=dataset: common.time_train_steps(
                    model, dataset, warmup=args.warmup, repeats=args.repeats
                ),
                args.matmul_n,
            )
            flops = train_flops(model, train_batch)
            gflops = flops / t["median"] / 1e9
            rows.append(
                [
                    f"{label} train step",
                    f"{th}x{tw}",
                    1,
                    xla,
                    flops / 1e9,
                    t["median"],
                    gflops,
                    gflops / peak,
                    near,
                    gflops / near,
                    t["load"],
                ]
            )
        except Exception as e:  # noqa: BLE001  (a failing variant is reported, not fatal)
            print(
                f"# {label} train xla={jit} failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}"
            )
    del model
    gc.collect()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=parse_size, default=(800, 1216), help="inference input HxW (batch 1)"
    )
    parser.add_argument("--train-size", type=parse_size, default=(800, 1216))
    parser.add_argument("--matmul-n", type=int, default=4096)
    parser.add_argument("--bf16", action="store_true", help="also a bfloat16 matmul row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xla", choices=("off", "on", "both"), default="off")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        help="Keras dtype policy of the models (the peak row stays float32)",
    )
    parser.add_argument("--peers", action="store_true", help="also keras-cv RetinaNet")
    parser.add_argument("--no-train", action="store_true", help="inference rows only")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run to check the script: small backbone, 128x128, n=512",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = args.train_size = (128, 128)
        args.matmul_n, args.warmup, args.repeats, args.backbone = 512, 1, 1, "small"
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")

    check_flop_counter()
    common.print_header("Achieved GFLOP/s vs same-run tf.matmul (FLOPs counted from the graph)")
    rows = []
    peak, t = common.matmul_gflops(args.matmul_n, repeats=args.repeats)
    n = args.matmul_n
    rows.append(
        [
            f"tf.matmul {n}x{n}x{n} float32",
            "",
            "",
            "",
            2 * n**3 / 1e9,
            t["median"],
            peak,
            1.0,
            "",
            "",
            t["load"],
        ]
    )
    if args.bf16:
        bf, t = common.matmul_gflops(n, dtype=tf.bfloat16, repeats=args.repeats)
        rows.append(
            [
                f"tf.matmul {n}x{n}x{n} bfloat16",
                "",
                "",
                "",
                2 * n**3 / 1e9,
                t["median"],
                bf,
                bf / peak,
                "",
                "",
                t["load"],
            ]
        )
    jit_options = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    for name in ["fcos"] + (["retinanet"] if args.peers else []):
        for jit in jit_options:
            measure_model(name, args, jit, peak, rows)
    # The peak again at the end: the load of the shared machine may have changed meanwhile.
    peak_end, t = common.matmul_gflops(args.matmul_n, repeats=args.repeats)
    rows.append(
        [
            f"tf.matmul {n}x{n}x{n} float32 (again, end of run)",
            "",
            "",
            "",
            2 * n**3 / 1e9,
            t["median"],
            peak_end,
            peak_end / peak,
            "",
            "",
            t["load"],
        ]
    )
    common.print_table(
        [
            "workload",
            "input HxW",
            "batch",
            "XLA",
            "GFLOP",
            "median s",
            "GFLOP/s",
            "fraction of first matmul",
            "adjacent matmul GFLOP/s",
            "fraction of adjacent matmul",
            "load (1 min)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
