r"""Edge profile benchmark: mobile FCOS in LiteRT (fp32/fp16/int8), AP per variant, a peer.

    python -m benchmarks.bench_edge --workdir=/tmp/fcos_edge
    python -m benchmarks.bench_edge --workdir=/tmp/fcos_edge --sizes=320 --skip_peer
    python -m benchmarks.bench_edge --sizes=320 --heads=c128,c96x2 --skip_peer  # lighter heads
    python -m benchmarks.bench_edge --sizes=320 --backbones=mobilenet_v2 --network_only

Prints Markdown tables (with the command, the machine and the load average):

1. Latency, end to end in the LiteRT interpreter (XNNPACK, ``--threads`` threads, batch 1,
   uint8 input -> pixel normalisation -> network -> decoding -> builtin NMS): FCOS with
   MobileNetV2 and MobileNetV3-Large backbones (``keras.applications``, alpha 1, random
   weights: no download) and the authors' ``c128`` head (128-channel FPN and towers, 4 convs,
   SyncBN folded at export), at 320x320 and 512x512, fp32/fp16/int8; size on disk. The class
   bias is set to 0 so that every location passes the 0.05 candidate threshold: the top-k
   and NMS run on full candidate sets (the worst case, as a trained model on a busy image).
   int8 is calibrated on 8 random pictures. ``--heads`` adds lighter heads than the
   authors' (``c96x2``: 96-channel FPN and towers of 2 convs; ``c64x2``: 64 channels).
   ``--network_only`` adds the same FCOS networks timed as the peer is: float input, pixel
   normalisation, backbone, FPN and head, no decoding, top-k or NMS.
2. The peer: keras-cv ``YOLOV8Detector`` with the ``xs`` backbone arguments, random weights,
   converted with builtin operators only (fp32, and int8 weights and activations with float
   input): the network alone (raw box and class outputs, no decoding, no NMS), and whether
   its full predict path (decoding + NMS) converts without Flex operators.
3. COCO AP on the synthetic validation split of the trained ``--workdir`` (a ``train.py``
   run of fcos_tf/configs/synthetic_edge.py): the Keras model, and its folded fp32/fp16/int8 TFLite
   exports through :func:`fcos_tf.serving.tflite_client.run_tflite`.
"""

import argparse
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf.core import builders, rundir
from fcos_tf.data import transforms
from fcos_tf.data.label_map import LabelMap
from fcos_tf.modeling.backbone import build_backbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.serving import (
    bn_folding,
    tflite_client,
)
from fcos_tf.serving import tflite as export_tflite
from fcos_tf.training import evaluation

_BACKBONES = (("MobileNetV2", "mobilenet_v2"), ("MobileNetV3-Large", "mobilenet_v3_large"))
# Head names of --heads: (FPN and tower channels, convs per tower); c128 is the authors'.
_HEADS = {"c128": (128, 4), "c96x2": (96, 2), "c64x2": (64, 2)}


def _photo(height, width, seed=0):
    """A smooth random picture (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [128 + 90 * np.sin(x / (40 + 9 * c) + y / (55 - 7 * c) + seed) for c in range(3)], -1
    )
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def _fcos_models(args):
    """``(title, backbone name, head)`` of each FCOS model that ``--backbones`` and ``--heads``
    select."""
    return [
        (title, name, head)
        for title, name in _BACKBONES
        if args.backbones is None or name in args.backbones
        for head in args.heads
    ]


def tflite_latency_ms(flatbuffer, size, *, repeats, threads):
    interpreter = tflite_client.tflite_interpreter(flatbuffer, num_threads=threads)
    runner = interpreter.get_signature_runner()
    name = list(interpreter.get_signature_list().values())[0]["inputs"][0]
    inputs = _photo(size, size)[None]
    dtype = runner.get_input_details()[name]["dtype"]
    inputs = inputs.astype(dtype)
    timing = common.time_call(lambda: runner(**{name: inputs}), warmup=2, repeats=repeats)
    return 1000.0 * timing["median"]


def edge_model(backbone_name, num_classes=80, head="c128"):
    """FCOS with a mobile backbone and a ``_HEADS`` head, random weights, BN folded, all
    locations candidates."""
    channels, num_convs = _HEADS[head]
    model = FCOS(
        build_backbone(backbone_name, norm="sync_bn"),
        num_classes,
        fpn_channels=channels,
        head_num_convs=num_convs,
        head_norm="sync_bn",
    )
    model.build((None, None, None, 3))
    model.head.cls_logits.bias.assign(np.zeros(num_classes, np.float32))
    return bn_folding.fold_batch_norms(model)


def latency_table(args):
    label_map = LabelMap.coco_2017()
    rows = []
    for title, name, head in _fcos_models(args):
        model = edge_model(name, head=head)
        for size in args.sizes:
            representative = [_photo(size, size, seed)[None] for seed in range(8)]
            fp32_ms = None
            for variant in export_tflite.TFLITE_VARIANTS:
                flatbuffer = export_tflite.convert_tflite(
                    model,
                    label_map,
                    input_size=(size, size),
                    pixel_norm="inception",
                    variant=variant,
                    representative_images=representative,
                )
                ms = tflite_latency_ms(flatbuffer, size, repeats=args.repeats, threads=args.threads)
                fp32_ms = ms if variant == "fp32" else fp32_ms
                operators = export_tflite.tflite_operators(flatbuffer)
                rows.append(
                    [
                        f"FCOS {title} {head}",
                        f"{size}x{size}",
                        variant,
                        ms,
                        ms / fp32_ms,
                        len(flatbuffer) / 2**20,
                        "yes" if "NON_MAX_SUPPRESSION_V5" in operators else "no",
                        operators.count("MUL"),
                    ]
                )
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def convert_network(model, fn, size, *, int8=False):
    """``fn`` (float32 ``[1, size, size, 3]`` pixels 0..255 -> network outputs) to a TFLite
    flatbuffer with builtin operators only; ``int8``: int8 weights and activations, float
    input and output, calibrated on 8 pictures.

    The converter of :func:`fcos_tf.serving.tflite.convert_tflite`
    (:func:`fcos_tf.serving.tflite.builtin_converter`).
    """
    spec = [tf.TensorSpec([1, size, size, 3], tf.float32, name="images")]
    with tempfile.TemporaryDirectory() as scratch:
        converter = export_tflite.builtin_converter(model, fn, spec, scratch)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [_photo(size, size, seed)[None].astype(np.float32)] for seed in range(8)
            )
        return converter.convert()


def network_only_rows(args):
    """FCOS as the peer is measured: the network alone (pixel normalisation, backbone, FPN,
    head; raw per-location outputs, no decoding, no top-k, no NMS), fp32 and int8."""
    rows = []
    for title, name, head in _fcos_models(args):
        model = edge_model(name, head=head)
        for size in args.sizes:

            def network(images):
                return model(transforms.normalize_image(images, "inception"), training=False)

            fp32_ms = None
            for variant in ("fp32", "int8"):
                flatbuffer = convert_network(model, network, size, int8=variant == "int8")
                ms = tflite_latency_ms(flatbuffer, size, repeats=args.repeats, threads=args.threads)
                fp32_ms = ms if variant == "fp32" else fp32_ms
                rows.append(
                    [
                        f"FCOS {title} {head} (network only)",
                        f"{size}x{size}",
                        variant,
                        ms,
                        ms / fp32_ms,
                        len(flatbuffer) / 2**20,
                        "no (not included)",
                        "-",
                    ]
                )
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def peer_rows(args):
    """keras-cv YOLOv8 (xs backbone arguments), random weights, through LiteRT."""
    try:
        import keras_cv
    except ImportError:
        return [
            [
                "keras-cv YOLOv8 xs",
                "-",
                "not installed (pip install 'fcos_tf[bench]')",
                float("nan"),
                float("nan"),
                float("nan"),
                "-",
                "-",
            ]
        ]
    rows = []
    for size in args.sizes:
        backbone = keras_cv.models.YOLOV8Backbone(
            stackwise_channels=[32, 64, 128, 256],
            stackwise_depth=[1, 2, 2, 1],
            include_rescaling=True,
            activation="swish",
        )
        detector = keras_cv.models.YOLOV8Detector(
            num_classes=80, bounding_box_format="xyxy", backbone=backbone, fpn_depth=1
        )
        detector(np.zeros((1, size, size, 3), np.float32))

        def network_fn(images):
            return detector(images, training=False)

        network = convert_network(detector, network_fn, size)
        ms = tflite_latency_ms(network, size, repeats=args.repeats, threads=args.threads)
        network_int8 = convert_network(detector, network_fn, size, int8=True)
        ms_int8 = tflite_latency_ms(network_int8, size, repeats=args.repeats, threads=args.threads)
        try:
            full = convert_network(
                detector,
                lambda images: detector.decode_predictions(network_fn(images), images),
                size,
            )
            export_tflite.check_builtin_only(full)
            nms = "converts with builtins"
        except Exception as error:
            message = str(error).replace("\n", " ")
            flex = [
                op for op in ("BitwiseAnd", "FlexBitwiseAnd", "NonMaxSuppression") if op in message
            ]
            nms = f"no: needs Flex/unsupported ops ({', '.join(flex) or message[:80]})"
        rows.append(
            [
                "keras-cv YOLOv8 xs (network only)",
                f"{size}x{size}",
                "fp32",
                ms,
                1.0,
                len(network) / 2**20,
                nms,
                "-",
            ]
        )
        rows.append(
            [
                "keras-cv YOLOv8 xs (network only)",
                f"{size}x{size}",
                "int8",
                ms_int8,
                ms_int8 / ms,
                len(network_int8) / 2**20,
                nms,
                "-",
            ]
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def synthetic_ap(workdir, threads):
    model, config, label_map = rundir.load_trained_model(workdir)
    serving = builders.build_serving_config(config)
    input_size = tuple(config.export.input_size)
    val = builders.read_split(config, "val")
    keras_metrics, _ = evaluation.evaluate(
        model, builders.build_eval_dataset(config, val.dataset), label_map, verbose=False
    )
    folded = bn_folding.fold_batch_norms(model)
    representative = [
        tflite_client.tflite_input(e["image"].numpy(), input_size, serving)[0]
        for e in builders.read_split(config, "train").dataset.take(
            int(config.export.representative_images)
        )
    ]
    interpreters = {}
    for variant in export_tflite.TFLITE_VARIANTS:
        flatbuffer = export_tflite.convert_tflite(
            folded,
            label_map,
            input_size=input_size,
            pixel_norm=serving.pixel_norm,
            variant=variant,
            representative_images=representative,
        )
        interpreters[variant] = tflite_client.tflite_interpreter(flatbuffer, num_threads=threads)
    images, annotations = [], []
    detections = {variant: [] for variant in interpreters}
    from fcos_tf.training.evaluation import outputs_to_coco

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
        for variant, interpreter in interpreters.items():
            outputs = tflite_client.run_tflite(interpreter, image, input_size, serving)
            detections[variant] += outputs_to_coco(outputs, [image_id], [(height, width)])
    ground_truth = evaluation.coco_from_dicts(images, annotations, label_map)
    rows = [["Keras (BatchNorm, not folded)", keras_metrics["AP"], keras_metrics["AP50"]]]
    for variant, found in detections.items():
        metrics = evaluation.coco_evaluate(ground_truth, found, label_map, verbose=False)
        rows.append([f"TFLite {variant} (folded)", metrics["AP"], metrics["AP50"]])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir",
        default=None,
        help="train.py workdir of fcos_tf/configs/synthetic_edge.py (AP table).",
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[320, 512]
    )
    parser.add_argument("--heads", type=lambda s: s.split(","), default=["c128"])
    parser.add_argument("--backbones", type=lambda s: s.split(","), default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip_peer", action="store_true")
    parser.add_argument(
        "--network_only",
        action="store_true",
        help="Also time the FCOS networks alone (no decoding, top-k or NMS), as the peer is.",
    )
    args = parser.parse_args()
    tempfile.tempdir = tempfile.mkdtemp(prefix="bench_edge_")
    keras.utils.set_random_seed(0)

    columns = [
        "model",
        "input",
        "variant",
        "ms / image",
        "x fp32",
        "MiB",
        "NMS in model",
        "MUL ops",
    ]
    rows = latency_table(args)
    if args.network_only:
        rows += network_only_rows(args)
    if not args.skip_peer:
        rows += peer_rows(args)
    common.print_header(f"Edge latency, LiteRT {args.threads} threads, end to end")
    common.print_table(columns, rows)
    if args.workdir:
        common.print_header("COCO AP on the synthetic validation split per variant")
        common.print_table(["runtime", "AP", "AP50"], synthetic_ap(args.workdir, args.threads))


if __name__ == "__main__":
    main()
