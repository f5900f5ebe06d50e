"""Inference latency, batch 1, post-processing included: FCOS vs keras-cv RetinaNet.

Rows, all in one process on the same images, one after the other:
- FCOS exported SavedModel, ``serving_default`` on a uint8 image (resize, normalisation,
  padding, network, decode, NMS and rescaling to the original image all inside the graph):
  what a client of the export pays. The model is exported with random weights into a
  temporary folder (or ``--savedmodel`` loads an existing export).
- FCOS in process: the model's compiled predict step on the already normalised, padded float
  image (network + decode + top-k + NMS).
- keras-cv RetinaNet R-50-FPN: its compiled predict step (network + anchor decoding + NMS) on
  the same padded float image, the peer. Its default decoder keeps 100 detections after a
  class-aware NMS, as FCOS does.

The ratio is FCOS / RetinaNet for the exported model and for the in-process step.
800x1333 images are padded to 800x1344 for the in-process models (both need sides divisible by
32); the SavedModel receives the 800x1333 image itself and pads inside its graph.

Usage (from the repository root; ``pip install -e .[bench]``):

    python -m benchmarks.bench_inference_vs_retinanet                  # 800x1333, batch 1
    python -m benchmarks.bench_inference_vs_retinanet --savedmodel=/tmp/fcos_export/1
    python -m benchmarks.bench_inference_vs_retinanet --smoke
"""

import argparse
import gc
import os
import tempfile

import numpy as np
import tensorflow as tf

from benchmarks import common
from benchmarks.common import NUM_CLASSES, build_fcos, parse_size


def padded(size, multiple=32):
    return tuple(-(-s // multiple) * multiple for s in size)


def export_fcos(model, directory, size):
    """Exports ``model`` with the project's exporter; returns the SavedModel path or None.

    The serving preprocessing resizes to ``eval_short_side = min(size)``, ``max_size = max(size)``
    (800 / 1333 for the default size, the paper's): an image of ``size`` keeps its size.
    """
    try:
        from fcos_tf.data.label_map import LabelMap
        from fcos_tf.serving.graph import ServingConfig
        from fcos_tf.serving.saved_model import export_saved_model
    except ImportError:
        return None
    label_map = LabelMap.from_names([f"class{i}" for i in range(NUM_CLASSES)], first_id=1)
    serving = ServingConfig(eval_short_side=min(size), max_size=max(size))
    return export_saved_model(model, label_map, directory, serving, warmup=False)


def serving_fn(path):
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    return loaded, fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(800, 1333),
        help="image HxW (the SavedModel resizes/pads; in-process rows pad to 32)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--savedmodel", default=None, help="existing FCOS export to time instead of exporting one"
    )
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel row")
    parser.add_argument("--no-peer", action="store_true", help="skip keras-cv RetinaNet")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run to check the script: small backbone, 128x160"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.warmup, args.repeats, args.backbone = (128, 160), 1, 1, "small"
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")

    h, w = args.size
    ph, pw = padded(args.size)
    rng = np.random.default_rng(0)
    image_uint8 = tf.constant(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8))
    image_float = tf.constant(common.random_images(1, ph, pw, seed=0))

    common.print_header("Inference, batch 1, post-processing included: FCOS vs keras-cv RetinaNet")
    rows, times = [], {}
    label = "FCOS R50-FPN" if args.backbone == "resnet50" else f"FCOS {args.backbone}"
    model = build_fcos(args.backbone, jit_compile=False)

    if not args.no_export:
        with tempfile.TemporaryDirectory() as tmp:
            path = args.savedmodel or export_fcos(model, os.path.join(tmp, "export"), (h, w))
            if path is None:
                print("# FCOS SavedModel row skipped: fcos_tf.serving.saved_model not available")
            else:
                loaded, fn = serving_fn(path)
                t = common.time_call(
                    lambda: fn(images=image_uint8), warmup=args.warmup, repeats=args.repeats
                )
                times["saved"] = t
                rows.append(
                    [
                        f"{label} SavedModel serving_default (uint8 in, final boxes out)",
                        f"{h}x{w}",
                        t["first"],
                        t["median"],
                        t["min"],
                        t["max"],
                        t["load"],
                    ]
                )
                del loaded, fn

    predict = common.predict_function(model)
    t = common.time_call(lambda: predict(image_float), warmup=args.warmup, repeats=args.repeats)
    times["fcos"] = t
    rows.append(
        [
            f"{label} predict step (in process)",
            f"{ph}x{pw}",
            t["first"],
            t["median"],
            t["min"],
            t["max"],
            t["load"],
        ]
    )
    del model, predict
    gc.collect()

    if not args.no_peer:
        peer = common.keras_cv_retinanet(NUM_CLASSES)
        predict = common.predict_function(peer)
        t = common.time_call(lambda: predict(image_float), warmup=args.warmup, repeats=args.repeats)
        times["retinanet"] = t
        rows.append(
            [
                "keras-cv RetinaNet R50-FPN predict step",
                f"{ph}x{pw}",
                t["first"],
                t["median"],
                t["min"],
                t["max"],
                t["load"],
            ]
        )
        for key, name in (("saved", "SavedModel"), ("fcos", "predict step")):
            if key in times:
                rows.append(
                    [
                        f"**ratio FCOS {name} / RetinaNet**",
                        "",
                        "",
                        times[key]["median"] / t["median"],
                        "",
                        "",
                        "",
                    ]
                )
    common.print_table(
        ["model", "input HxW", "first call s", "median s/image", "min s", "max s", "load (1 min)"],
        rows,
    )


if __name__ == "__main__":
    main()
