"""Train-step time: FCOS R-50-FPN against keras-cv's RetinaNet R-50-FPN, same input and batch.

Both models are built with random weights (no downloads) in one process and timed one after
the other on the same machine state: for each input size, the median time of the model's own
compiled train function (what ``model.fit`` runs per step) after warm-up, and the ratio
FCOS / RetinaNet. Both use SGD with momentum and the same batch of random images
with a few random boxes, under the same dtype policy (``--precision``, several for a same-run
before/after).

What each step contains: FCOS's targets are computed in the input pipeline (docs/design.md §3), so
its step is backbone + FPN + head, forward and backward, and the losses. keras-cv's RetinaNet
encodes its anchor targets inside ``compute_loss`` (IoU of every anchor with every box), so
its step contains that too; with a few boxes per image it is small next to the convolutions.
The FCOS targets are computed once outside the timed step, exactly as the pipeline feeds them.

Usage (from the repository root; needs the ``bench`` extra, ``pip install -e .[bench]``):

    python -m benchmarks.bench_train_vs_retinanet                       # 512x512 and 800x1344
    python -m benchmarks.bench_train_vs_retinanet --sizes=512x512 --batch=2 --repeats=5
    python -m benchmarks.bench_train_vs_retinanet --xla=both            # graph vs XLA
    python -m benchmarks.bench_train_vs_retinanet --precision float32 mixed_bfloat16
    python -m benchmarks.bench_train_vs_retinanet --smoke               # tiny, seconds
    python -m benchmarks.bench_train_vs_retinanet --shapes --xla=both --backbone=small \
        --sizes 256x352 352x256 256x320 320x384                           # retracing cost

``--xla=both`` times every model twice, without and with ``jit_compile=True``, in the same run:
that is the before/after of the XLA train step. 800x1333 is padded to 800x1344 (a multiple of
32, as the FCOS pipeline pads; RetinaNet's FPN also needs sides divisible by 32).
"""

import argparse
import gc
import itertools

import tensorflow as tf

from benchmarks import common
from benchmarks.common import NUM_CLASSES, build_fcos, fcos_batch, parse_size, retinanet_dataset


def run(args):
    jit_options = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    rows = []
    # One block per (size, precision, XLA): the models one after the other.
    for (height, width), precision, jit in itertools.product(
        args.sizes, args.precision, jit_options
    ):
        times = {}
        for name in args.models:
            with common.dtype_policy(precision):
                if name == "retinanet":
                    model = common.keras_cv_retinanet(NUM_CLASSES, jit_compile=jit)
                    dataset = retinanet_dataset(args.batch, height, width)
                else:
                    model = build_fcos(args.backbone, jit)
                    dataset = common.repeat_dataset(*fcos_batch(args.batch, height, width))
            try:
                t = common.time_train_steps(
                    model, dataset, warmup=args.warmup, repeats=args.repeats
                )
            except Exception as e:  # a peer failing (e.g. under XLA) is a result too
                print(
                    f"# {name} {height}x{width} xla={jit}: failed: "
                    f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                )
                t = None
            times[name] = t
            if t is not None:
                label = "FCOS R50-FPN" if name == "fcos" else "keras-cv RetinaNet R50-FPN"
                if name == "fcos" and args.backbone != "resnet50":
                    label = f"FCOS {args.backbone}"
                rows.append(
                    [
                        label,
                        f"{height}x{width}",
                        args.batch,
                        precision,
                        "on" if jit else "off",
                        t["first"],
                        t["median"],
                        t["min"],
                        t["max"],
                        args.batch / t["median"],
                        t["load"],
                    ]
                )
            del model, dataset
            gc.collect()
        if times.get("fcos") and times.get("retinanet"):
            rows.append(
                [
                    "**ratio FCOS / RetinaNet**",
                    f"{height}x{width}",
                    args.batch,
                    precision,
                    "on" if jit else "off",
                    "",
                    times["fcos"]["median"] / times["retinanet"]["median"],
                    "",
                    "",
                    "",
                    "",
                ]
            )
    return rows


def run_shapes(args):
    """Train steps over varying padded sizes: what retracing / recompilation costs.

    One dataset yields ``args.sizes`` in turn (its element spec has unknown H, W, as a real
    pipeline padding each batch to a multiple of 32 has), three passes over the sizes. Then the
    same images padded to one fixed size (the pipeline's ``pad_to``), the cure for XLA, which
    compiles once per distinct input shape. Rows: the first ``fit`` step (trace, and with XLA
    the compilation for the first size), the first pass over all sizes (XLA compiles the other
    sizes here) and the median step time of the two later passes.
    """
    big = (max(h for h, _ in args.sizes), max(w for _, w in args.sizes))
    rows = []
    jit_options = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    for precision, jit in itertools.product(args.precision, jit_options):
        for mode, sizes in (("varying", args.sizes), ("fixed", [big] * len(args.sizes))):
            with common.dtype_policy(precision):
                model = build_fcos(args.backbone, jit)
            dataset = None
            for h, w in sizes:
                one = tf.data.Dataset.from_tensors(fcos_batch(args.batch, h, w))
                dataset = one if dataset is None else dataset.concatenate(one)
            iterator = iter(dataset.repeat())
            # Builds the optimizer and traces (and with XLA compiles for the first size).
            first = common.time_call(
                lambda model=model, dataset=dataset: model.fit(
                    dataset.take(1), epochs=1, verbose=0
                ),
                warmup=0,
                repeats=1,
            )["median"]
            passes = []
            for _ in range(3):
                times = [
                    common.time_call(
                        lambda model=model, iterator=iterator: model.train_function(iterator),
                        warmup=0,
                        repeats=1,
                    )["median"]
                    for _ in sizes
                ]
                passes.append(times)
            later = sorted(t for p in passes[1:] for t in p)
            label = (
                "varying: " + ", ".join(f"{h}x{w}" for h, w in args.sizes)
                if mode == "varying"
                else f"fixed pad_to {big[0]}x{big[1]}"
            )
            rows.append(
                [
                    f"FCOS {args.backbone}",
                    label,
                    precision,
                    "on" if jit else "off",
                    first,
                    sum(passes[0]),
                    later[len(later) // 2],
                    common.load_average(),
                ]
            )
            del model, dataset, iterator
            gc.collect()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(512, 512), (800, 1344)])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (>= 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
    parser.add_argument(
        "--xla",
        choices=("off", "on", "both"),
        default="off",
        help="jit_compile for the train step of both models",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32"],
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        help="Keras dtype policies, each for both models (bfloat16 runs on "
        "AVX512_BF16 / AMX CPUs through oneDNN); several give a "
        "same-run before/after",
    )
    parser.add_argument(
        "--models", nargs="+", choices=("fcos", "retinanet"), default=["fcos", "retinanet"]
    )
    parser.add_argument(
        "--backbone",
        default="resnet50",
        help="FCOS backbone (resnet50 for the comparison; small for smoke)",
    )
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="FCOS only: steps over the --sizes in turn vs all padded to one "
        "size (retracing and XLA recompilation cost)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run to check the script: 128x128, 1 repeat, FCOS small",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.warmup, args.repeats, args.backbone = [(128, 128)], 1, 1, "small"
        if args.shapes:
            args.sizes = [(128, 160), (160, 128)]
    if args.shapes:
        common.print_header("Train step over varying input sizes: FCOS")
        common.print_table(
            [
                "model",
                "sizes",
                "precision",
                "XLA",
                "first fit step s",
                "first pass over the sizes s",
                "median s/step later",
                "load (1 min)",
            ],
            run_shapes(args),
        )
        return
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")

    common.print_header("Train step: FCOS vs keras-cv RetinaNet (SGD momentum)")
    rows = run(args)
    common.print_table(
        [
            "model",
            "input HxW",
            "batch",
            "precision",
            "XLA",
            "first step s (trace+compile)",
            "median s/step",
            "min s",
            "max s",
            "images/s",
            "load (1 min)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
