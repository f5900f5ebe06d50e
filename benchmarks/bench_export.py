r"""Serving and edge benchmarks: SavedModel and TFLite latency, fp32/fp16/int8 AP.

    python -m benchmarks.bench_export --workdir=/tmp/fcos_synthetic
    python -m benchmarks.bench_export --workdir=/tmp/fcos_synthetic --skip_r50
    python -m benchmarks.bench_export --workdir=/tmp/fcos_synthetic --r50_tflite

Three tables:

1. SavedModel latency, batch 1, through both signatures (``serving_default`` with uint8
   pixels, ``serving_image_bytes`` with a JPEG), pre- and post-processing included:
   FCOS R-50 (the default recipe, random weights: the cost does not depend on them) on an
   800x1333 image, and the synthetic recipe's model at its default size.
2. TFLite latency per variant (fp32, fp16, int8) in the LiteRT interpreter, batch 1, the
   synthetic model at ``config.export.input_size`` (and R-50 at 800x1344 with
   ``--r50_tflite``; its int8 calibration alone takes minutes on 2 cores).
3. COCO AP on the synthetic validation split: the Keras model (``predict_step`` through the
   evaluation pipeline), the SavedModel and the three TFLite variants of the trained
   ``--workdir`` (a ``train.py`` run of fcos_tf/configs/synthetic_small.py).
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf.core import builders, rundir
from fcos_tf.core import config as config_lib
from fcos_tf.data.label_map import LabelMap
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import saved_model as export_saved_model
from fcos_tf.serving import tflite as export_tflite
from fcos_tf.serving import tflite_client
from fcos_tf.training import evaluation


def _ms(seconds):
    return 1000.0 * seconds


def _photo(height, width, seed=0):
    """A smooth random picture (uint8 RGB), JPEG-compressible like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([128 + 90 * np.sin(x / (40 + 9 * c) + y / (55 - 7 * c)) for c in range(3)], -1)
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def saved_model_latency(model, label_map, serving, image, export_root, *, repeats):
    """Median batch-1 latency of both signatures of a fresh export (ms)."""
    path = export_saved_model.export_saved_model(
        model, label_map, export_root, serving, warmup=False
    )
    loaded = tf.saved_model.load(path)
    images = tf.constant(image[None])
    encoded = tf.constant([tf.io.encode_jpeg(image, quality=90).numpy()])
    rows = []
    for signature, kwargs in (
        (serving_lib.IMAGES_SIGNATURE, {"images": images}),
        (serving_lib.IMAGE_BYTES_SIGNATURE, {"image_bytes": encoded}),
    ):
        fn = loaded.signatures[signature]
        timing = common.time_call(lambda: fn(**kwargs), warmup=1, repeats=repeats)
        rows.append((signature, timing))
    return rows


def tflite_latency(flatbuffer, input_size, *, repeats, threads):
    interpreter = tflite_client.tflite_interpreter(flatbuffer, num_threads=threads)
    runner = interpreter.get_signature_runner()
    inputs = _photo(*input_size)[None]

    def call():
        return runner(images=inputs)

    return common.time_call(call, warmup=1, repeats=repeats)


def representative(config, serving, count):
    examples = builders.read_split(config, "train").dataset.take(count)
    return [
        tflite_client.tflite_input(e["image"].numpy(), tuple(config.export.input_size), serving)[0]
        for e in examples
    ]


def synthetic_ap(config, model, label_map, serving, saved_model_path, flatbuffers):
    """AP of each runtime on the synthetic validation split; dict name -> metrics."""
    val = builders.read_split(config, "val")
    # Keras model through the evaluation pipeline (what train.py reports).
    keras_metrics, _ = evaluation.evaluate(
        model, builders.build_eval_dataset(config, val.dataset), label_map, verbose=False
    )
    images, annotations, per_runtime = [], [], {"SavedModel (fp32)": []}
    interpreters = {
        f"TFLite {v}": tflite_client.tflite_interpreter(b) for v, b in flatbuffers.items()
    }
    per_runtime.update({name: [] for name in interpreters})
    loaded = tf.saved_model.load(saved_model_path).signatures[serving_lib.IMAGES_SIGNATURE]
    input_size = tuple(config.export.input_size)
    for example in val.dataset:
        image = example["image"].numpy()
        image_id = int(example["image_id"])
        height, width = image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for box, cls in zip(example["boxes"].numpy(), example["classes"].numpy()):
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": label_map.category_id(cls),
                    "bbox": [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                }
            )
        outputs = {k: v.numpy() for k, v in loaded(images=tf.constant(image[None])).items()}
        per_runtime["SavedModel (fp32)"] += _coco(outputs, image_id, height, width)
        for name, interpreter in interpreters.items():
            outputs = tflite_client.run_tflite(interpreter, image, input_size, serving)
            per_runtime[name] += _coco(outputs, image_id, height, width)
    ground_truth = evaluation.coco_from_dicts(images, annotations, label_map)
    results = {"Keras predict_step": keras_metrics}
    for name, detections in per_runtime.items():
        results[name] = evaluation.coco_evaluate(ground_truth, detections, label_map, verbose=False)
    return results


def _coco(outputs, image_id, height, width):
    from fcos_tf.training.evaluation import outputs_to_coco

    return outputs_to_coco(outputs, [image_id], [(height, width)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir",
        required=True,
        help="train.py workdir of the synthetic recipe (AP and small model).",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--r50_repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip_r50", action="store_true", help="No R-50 SavedModel timing.")
    parser.add_argument("--r50_tflite", action="store_true", help="Also R-50 TFLite timings.")
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="bench_export_")
    model, config, label_map = rundir.load_trained_model(args.workdir)
    serving = builders.build_serving_config(config)
    input_size = tuple(config.export.input_size)

    # 1. SavedModel latency.
    common.print_header("SavedModel latency, batch 1 (pre- and post-processing included)")
    rows = []
    cases = [
        (
            "synthetic small (trained)",
            model,
            label_map,
            serving,
            _photo(serving.eval_short_side, serving.eval_short_side),
        )
    ]
    if not args.skip_r50:
        r50_config = config_lib.base_config()
        r50 = builders.build_model(r50_config, 80)
        cases.insert(
            0,
            (
                "FCOS R-50 (default recipe)",
                r50,
                LabelMap.coco_2017(),
                builders.build_serving_config(r50_config),
                _photo(800, 1333),
            ),
        )
    for name, detector, lmap, serv, image in cases:
        repeats = args.r50_repeats if "R-50" in name else args.repeats
        started = time.perf_counter()
        timings = saved_model_latency(
            detector, lmap, serv, image, os.path.join(scratch, name.split()[0]), repeats=repeats
        )
        export_s = time.perf_counter() - started
        for signature, timing in timings:
            rows.append(
                [
                    name,
                    f"{image.shape[0]}x{image.shape[1]}",
                    signature,
                    _ms(timing["median"]),
                    _ms(timing["min"]),
                    _ms(timing["first"]),
                    f"{export_s:.0f}",
                ]
            )
    common.print_table(
        [
            "model",
            "original image",
            "signature",
            "median ms",
            "min ms",
            "first call ms",
            "export+timing s",
        ],
        rows,
    )

    # 2. TFLite latency per variant.
    common.print_header(f"TFLite latency, batch 1, LiteRT interpreter, {args.threads} threads")
    flatbuffers, rows = {}, []
    tflite_cases = [
        (
            "synthetic small (trained)",
            model,
            label_map,
            serving,
            input_size,
            lambda: representative(config, serving, int(config.export.representative_images)),
        )
    ]
    if args.r50_tflite:
        r50_serving = builders.build_serving_config(config_lib.base_config())
        r50_size = tuple(config_lib.base_config().export.input_size)
        tflite_cases.append(
            (
                "FCOS R-50 (random weights)",
                cases[0][1],
                cases[0][2],
                r50_serving,
                r50_size,
                lambda: [
                    tflite_client.tflite_input(_photo(800, 1333, seed=s), r50_size, r50_serving)[0]
                    for s in range(4)
                ],
            )
        )
    for name, detector, lmap, serv, size, rep in tflite_cases:
        for variant in export_tflite.TFLITE_VARIANTS:
            started = time.perf_counter()
            buffer = export_tflite.convert_tflite(
                detector,
                lmap,
                input_size=size,
                pixel_norm=serv.pixel_norm,
                variant=variant,
                representative_images=rep() if variant == "int8" else None,
            )
            convert_s = time.perf_counter() - started
            if "synthetic" in name:
                flatbuffers[variant] = buffer
            timing = tflite_latency(buffer, size, repeats=args.repeats, threads=args.threads)
            rows.append(
                [
                    name,
                    f"{size[0]}x{size[1]}",
                    variant,
                    f"{len(buffer) / 2**20:.2f}",
                    _ms(timing["median"]),
                    _ms(timing["min"]),
                    f"{convert_s:.0f}",
                ]
            )
    common.print_table(
        ["model", "input", "variant", "size MiB", "median ms", "min ms", "convert s"], rows
    )

    # 3. AP on the synthetic validation split.
    common.print_header("COCO AP on the synthetic validation split, per runtime")
    saved_model_path = export_saved_model.export_saved_model(
        model, label_map, os.path.join(scratch, "ap"), serving, warmup=False
    )
    results = synthetic_ap(config, model, label_map, serving, saved_model_path, flatbuffers)
    rows = [[name, m["AP"], m["AP50"], m["AP75"]] for name, m in results.items()]
    common.print_table(["runtime", "AP", "AP50", "AP75"], rows)


if __name__ == "__main__":
    main()
