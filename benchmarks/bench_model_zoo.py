r"""Model zoo: parameters, SavedModel latency and MNV2 int8 TFLite latency of every recipe of the
FCOS authors' checkpoints (``fcos-import``).

    python benchmarks/bench_model_zoo.py                  # every recipe, 3 timed runs each
    python benchmarks/bench_model_zoo.py --recipes=fcos_tianzhi_mnv2_c128 --runs=5

Each model is built from its recipe with random weights (the cost does not depend on their
values, only on the candidates' count, which stays low at the default init), exported as the
serving SavedModel (``fcos-export``'s graph: resize, normalisation, network, NMS) and timed
on one 640x480 uint8 image through ``serving_default``, batch 1, after one warm-up call: the
image is resized to the recipe's test size (800x1067; 512x683 for FCOS_RT). For the MNV2
recipes, the int8 ``.tflite`` of ``fcos-export-edge`` (calibrated on 8 synthetic images) is
timed in the LiteRT interpreter (2 threads) at 800x1344 and at 320x320. The runs of the
models alternate, so that a load change on a shared machine hits all of them alike.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks import common
from fcos_tf.core import builders
from fcos_tf.core import config as config_lib
from fcos_tf.data.label_map import LabelMap
from fcos_tf.serving import tflite_client, tflite_metadata
from fcos_tf.serving.detector import Detector
from fcos_tf.serving.saved_model import export_saved_model

RECIPES = (
    "fcos_adelaidet_r50",
    "fcos_adelaidet_r101",
    "fcos_adelaidet_rt_r50",
    "fcos_adelaidet_rt_r50_bn",
    "fcos_tianzhi_mnv2",
    "fcos_tianzhi_mnv2_c128",
    "fcos_tianzhi_imprv_r101",
)


def _synthetic_images(count, size):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (1, size[0], size[1], 3), np.uint8) for _ in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip_tflite", action="store_true")
    args = parser.parse_args()
    common.print_header("Model zoo: SavedModel latency (batch 1, 480x640 uint8 in) and int8 TFLite")
    label_map = LabelMap.coco_2017()
    image = np.random.default_rng(1).integers(0, 256, (1, 480, 640, 3), np.uint8)
    detectors, rows = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes.split(","):
            config = config_lib.load_recipe(recipe)
            model = builders.build_model(config, 80, load_backbone_weights=False)
            export_dir = export_saved_model(
                model, label_map, os.path.join(scratch, recipe),
                builders.build_serving_config(config), warmup=False,
            )  # fmt: skip
            detectors[recipe] = Detector.load(export_dir)
            detectors[recipe](image)  # warm-up
            rows[recipe] = {"params": model.count_params(), "times": []}
            if recipe.startswith("fcos_tianzhi_mnv2") and not args.skip_tflite:
                for size in ((800, 1344), (320, 320)):
                    flatbuffer = tflite_metadata.convert_tflite_for_mediapipe(
                        model, label_map, input_size=size, pixel_norm="maskrcnn_benchmark",
                        variant="int8", representative_images=_synthetic_images(8, size),
                    )  # fmt: skip
                    interpreter = tflite_client.tflite_interpreter(flatbuffer, num_threads=2)
                    inputs = _synthetic_images(1, size)[0]
                    detail = interpreter.get_input_details()[0]["index"]
                    interpreter.set_tensor(detail, inputs)
                    interpreter.invoke()
                    times = []
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        interpreter.set_tensor(detail, inputs)
                        interpreter.invoke()
                        times.append(time.perf_counter() - start)
                    rows[recipe][f"int8_{size[0]}x{size[1]}"] = float(np.median(times))
                    print(f"{recipe} int8 {size}: {np.median(times) * 1e3:.0f} ms", flush=True)
        for _ in range(args.runs):  # alternating
            for recipe, detector in detectors.items():
                start = time.perf_counter()
                detector(image)
                rows[recipe]["times"].append(time.perf_counter() - start)
    print("| recipe | parameters | SavedModel ms (median) | int8 TFLite 800x1344 / 320x320 ms |")
    for recipe, row in rows.items():
        int8 = " / ".join(
            f"{row[key] * 1e3:.0f}" for key in ("int8_800x1344", "int8_320x320") if key in row
        )
        print(
            f"| {recipe} | {row['params'] / 1e6:.1f} M | {np.median(row['times']) * 1e3:.0f} "
            f"| {int8 or '-'} |"
        )


if __name__ == "__main__":
    main()
