"""MediaPipe round trip: the exported .tflite runs in MediaPipe's ObjectDetector and agrees
with the project's own LiteRT runner; metadata, output order, builtin operators."""

import json

import keras
import numpy as np
import pytest
from mediapipe_helpers import detection_rows

from fcos_tf.data.label_map import LabelMap
from fcos_tf.modeling.backbone import build_backbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.serving import bn_folding, tflite_client, tflite_metadata
from fcos_tf.serving import tflite as export_tflite
from fcos_tf.serving.graph import ServingConfig

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mediapipe")]

INPUT_SIZE = (128, 128)
SERVING = ServingConfig(eval_short_side=128, max_size=128, pixel_norm="inception")
LABELS = LabelMap.from_names(["circle", "square", "triangle"], first_id=1)


def _images(count, seed):
    """Smooth coloured blobs over noise, uint8 [128, 128, 3] (the model's input size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128]
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 6, 3)
        base = np.stack(
            [128 + 100 * np.sin(x / (5 + c) + y / (9 - c) + phase[c]) for c in range(3)], -1
        )
        images.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def model():
    """An edge FCOS (MobileNetV2 0.35, BN head) with spread-out outputs, BN folded."""
    keras.utils.set_random_seed(0)
    fcos = FCOS(
        build_backbone("mobilenet_v2", alpha=0.35),
        LABELS.num_classes,
        fpn_channels=32,
        head_num_convs=2,
        head_norm="sync_bn",
        score_threshold=0.05,
        max_detections=20,
    )
    fcos.build((None, None, None, 3))
    rng = np.random.default_rng(0)
    # Predictors with a wider init than the std 0.01 of training (class bias -2, box bias 1):
    # boxes, classes and scores that differ from one location to the next, so that the
    # comparison below means something.
    for layer, bias in (
        (fcos.head.cls_logits, -2.0),
        (fcos.head.box_pred, 1.0),
        (fcos.head.centerness_pred, 0.0),
    ):
        kernel = layer.kernel
        std = 0.5 / np.sqrt(np.prod(kernel.shape[:3]))
        layer.set_weights(
            [
                rng.normal(0, std, kernel.shape).astype(np.float32),
                np.full(layer.bias.shape, bias, np.float32),
            ]
        )
    # BatchNorm statistics of real inputs (momentum 0: one training-mode pass sets them), so
    # that activations have the scale of a trained network, as int8 calibration expects.
    norms = [
        layer
        for layer in fcos._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.momentum = 0.0
    fcos(np.stack(_images(8, seed=2)).astype(np.float32) / 127.5 - 1.0, training=True)
    return bn_folding.fold_batch_norms(fcos)


@pytest.fixture(scope="module")
def flatbuffers(model):
    pytest.importorskip("mediapipe")
    representative = [image[None] for image in _images(8, seed=1)]
    return {
        variant: tflite_metadata.convert_tflite_for_mediapipe(
            model,
            LABELS,
            input_size=INPUT_SIZE,
            pixel_norm=SERVING.pixel_norm,
            variant=variant,
            representative_images=representative,
        )
        for variant in ("fp32", "int8")
    }


def test_metadata_labels_and_output_order(flatbuffers):
    for flatbuffer in flatbuffers.values():
        export_tflite.check_builtin_only(flatbuffer)
        assert "NON_MAX_SUPPRESSION_V5" in export_tflite.tflite_operators(flatbuffer)
        assert tflite_metadata.check_detection_outputs(flatbuffer) == 20
        metadata = json.loads(tflite_metadata.metadata_json(flatbuffer))
        subgraph = metadata["subgraph_metadata"][0]
        names = [tensor["name"] for tensor in subgraph["output_tensor_metadata"]]
        assert tuple(names) == tflite_metadata.MEDIAPIPE_OUTPUT_NAMES
        category = subgraph["output_tensor_metadata"][1]
        assert category["associated_files"][0]["type"] == "TENSOR_VALUE_LABELS"
        assert subgraph["input_tensor_metadata"][0]["name"] == "image"


def test_int8_has_no_normalisation_op(flatbuffers):
    """Folded BN: inside the quantized network no MUL is left (a BN would be a MUL per
    layer); the MULs that remain are the float post-processing's, after DEQUANTIZE."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffers["int8"])
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    muls = [op for op in interpreter._get_ops_details() if op["op_name"] == "MUL"]
    assert muls  # decoding and scoring multiply in float32
    quantized = [op for op in muls if any(dtypes[i] != np.float32 for i in op["inputs"] if i >= 0)]
    assert not quantized, quantized
    convs = sum(
        op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") for op in interpreter._get_ops_details()
    )
    assert convs >= 20  # the network itself is in the graph, quantized


def test_outputs_out_of_order_are_refused(model):
    flatbuffer = export_tflite.convert_tflite(
        model, LABELS, input_size=INPUT_SIZE, pixel_norm="inception", variant="fp32"
    )
    with pytest.raises(ValueError, match="in this order|float32"):
        tflite_metadata.check_detection_outputs(flatbuffer)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_mediapipe_object_detector_matches_the_litert_runner(flatbuffers, variant):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    flatbuffer = flatbuffers[variant]
    options = vision.ObjectDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=flatbuffer), max_results=-1, score_threshold=0.0
    )
    interpreter = tflite_client.tflite_interpreter(flatbuffer, num_threads=2)
    # int8: MediaPipe's kernels may round an int8 box distance one step apart from LiteRT's
    # (a step is a pixel or two on the coarse levels).
    tolerance, box_tolerance = {"fp32": (1e-5, 1.01), "int8": (2e-2, 3.01)}[variant]
    compared = 0
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image in _images(3, seed=7):
            ours = tflite_client.run_tflite(interpreter, image, INPUT_SIZE, SERVING)
            count = int(ours["num_detections"][0])
            assert count > 5
            expected = [
                (
                    LABELS.name(int(ours["detection_classes"][0, row])),
                    float(ours["detection_scores"][0, row]),
                    ours["detection_boxes"][0, row] * 128,
                )
                for row in range(count)
            ]
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            # Boxes as [y, x, height, width], whole pixels (origin and size truncated).
            actual = [
                (name, score, np.array([y, x, height, width], np.float32))
                for name, score, (x, y, width, height) in detection_rows(result)
            ]
            assert len(actual) == count
            unmatched = []
            for row, (name, score, (ymin, xmin, ymax, xmax)) in enumerate(expected):
                want = np.array([ymin, xmin, ymax - ymin, xmax - xmin])
                matches = [
                    i
                    for i, (n, s, b) in enumerate(actual)
                    if n == name
                    and abs(s - score) <= tolerance
                    and np.all(np.abs(b - want) <= box_tolerance)
                ]
                if matches:
                    actual.pop(matches[0])
                    compared += 1
                else:
                    unmatched.append((row, name, score, want))
            if variant == "fp32":
                assert not unmatched, (unmatched, actual)
            else:
                # Rounding may reorder near-equal scores and change which of them make the last
                # places of the top D: the best rows agree, and nearly all others.
                assert all(row >= 5 for row, *_ in unmatched), (unmatched, actual)
                assert len(unmatched) <= 0.15 * count, (unmatched, actual)
    assert compared >= 20
