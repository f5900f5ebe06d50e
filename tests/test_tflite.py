"""TFLite export: builtin operators only, LiteRT runs it, fp32 matches the SavedModel."""

import export_helpers as helpers
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.core import builders
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import tflite as export_tflite
from fcos_tf.serving import tflite_client

pytestmark = [pytest.mark.slow, helpers.SAME_WORKER]


@pytest.fixture(scope="module")
def setup():
    model, config, label_map = helpers.loaded_model()
    serving = builders.build_serving_config(config)
    input_size = tuple(config.export.input_size)
    return model, label_map, serving, input_size


@pytest.fixture(scope="module")
def flatbuffers(setup):
    model, label_map, serving, input_size = setup
    rng = np.random.RandomState(1)
    representative = [
        tflite_client.tflite_input(rng.randint(0, 256, (64, 64, 3), np.uint8), input_size, serving)[
            0
        ]
        for _ in range(4)
    ]
    return {
        variant: export_tflite.convert_tflite(
            model,
            label_map,
            input_size=input_size,
            pixel_norm=serving.pixel_norm,
            variant=variant,
            representative_images=representative,
        )
        for variant in export_tflite.TFLITE_VARIANTS
    }


def _square_image():
    # 64x64: already the TFLite input size and the SavedModel's resized size (no resize, no
    # padding), so both runtimes see exactly the same network input.
    return helpers.test_images()[2][:64, :64]


def _iou(a, b):
    """IoU of yxyx boxes a [N, 4] and b [M, 4] -> [N, M]."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


@pytest.mark.parametrize("variant", export_tflite.TFLITE_VARIANTS)
def test_only_builtin_operators(flatbuffers, variant):
    operators = export_tflite.tflite_operators(flatbuffers[variant])
    assert "NON_MAX_SUPPRESSION_V5" in operators  # NMS inside the model
    assert "CONV_2D" in operators
    assert not [op for op in operators if op.startswith("Flex") or op != op.upper()]
    assert "WHILE" not in operators


def test_int8_variant_runs_convolutions_in_int8(flatbuffers):
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffers["int8"], 0))
    graph = model.subgraphs[0]
    operators = export_tflite.tflite_operators(flatbuffers["int8"])
    conv_inputs = [
        graph.tensors[op.inputs[0]].type
        for op in graph.operators
        if operators[op.opcodeIndex] == "CONV_2D"
    ]
    assert conv_inputs and all(t == schema.TensorType.INT8 for t in conv_inputs)
    # The post-processing after the head stays float (one int8 scale for the box distances
    # of all levels would round P3 boxes to several pixels).
    for name in ("LOGISTIC", "TOPK_V2", "NON_MAX_SUPPRESSION_V5"):
        inputs = [
            graph.tensors[op.inputs[0]].type
            for op in graph.operators
            if operators[op.opcodeIndex] == name
        ]
        assert inputs and all(t == schema.TensorType.FLOAT32 for t in inputs), name
    assert len(flatbuffers["int8"]) < 0.5 * len(flatbuffers["fp32"])
    assert len(flatbuffers["fp16"]) < 0.6 * len(flatbuffers["fp32"])


def test_check_builtin_only_rejects_flex_ops():
    # combined_non_max_suppression has no TFLite kernel: with SELECT_TF_OPS it becomes Flex.
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 1, 4]), tf.TensorSpec([1, 8, 2])])
    def combined(boxes, scores):
        return tf.image.combined_non_max_suppression(boxes, scores, 4, 4).nmsed_boxes

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [combined.get_concrete_function()], combined
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    flatbuffer = converter.convert()
    assert any(op.startswith("Flex") for op in export_tflite.tflite_operators(flatbuffer))
    with pytest.raises(ValueError, match="Flex"):
        export_tflite.check_builtin_only(flatbuffer)


@pytest.mark.parametrize("variant", export_tflite.TFLITE_VARIANTS)
def test_litert_runs_every_variant(flatbuffers, setup, variant):
    _, label_map, serving, input_size = setup
    interpreter = tflite_client.tflite_interpreter(flatbuffers[variant])
    inputs = interpreter.get_signature_runner().get_input_details()
    assert inputs["images"]["dtype"] == np.uint8
    assert list(inputs["images"]["shape"]) == [1, input_size[0], input_size[1], 3]
    outputs = tflite_client.run_tflite(interpreter, helpers.test_images()[0], input_size, serving)
    assert set(outputs) == set(serving_lib.OUTPUT_KEYS)
    n = int(outputs["num_detections"][0])
    assert outputs["num_detections"].dtype == np.int32 and 0 < n <= 100
    assert outputs["detection_boxes"].shape == (1, 100, 4)
    assert set(outputs["detection_classes"][0, :n]) <= set(map(float, label_map.category_ids))
    assert np.all(outputs["detection_classes"][0, n:] == -1)
    scores = outputs["detection_scores"][0, :n]
    assert np.all(np.diff(scores) <= 1e-6) and scores.min() > 0
    boxes = outputs["detection_boxes"][0, :n]
    assert boxes.min() >= 0 and boxes.max() <= 1
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])


def test_fp32_matches_saved_model(flatbuffers, setup):
    _, _, serving, input_size = setup
    image = _square_image()
    loaded = tf.saved_model.load(helpers.saved_model_dir())
    reference = {
        k: v.numpy()
        for k, v in loaded.signatures["serving_default"](images=tf.constant(image[None])).items()
    }
    interpreter = tflite_client.tflite_interpreter(flatbuffers["fp32"])
    outputs = tflite_client.run_tflite(interpreter, image, input_size, serving)
    n_ref = int(reference["num_detections"][0])
    n = int(outputs["num_detections"][0])
    assert n_ref > 10 and abs(n - n_ref) <= 2
    # The top detections (the order can flip among near-equal scores at the end of the list).
    top = min(n_ref, 50)
    ref_boxes = reference["detection_boxes"][0, :top]
    ref_classes = reference["detection_classes"][0, :top]
    iou = _iou(ref_boxes, outputs["detection_boxes"][0, :n])
    same_class = ref_classes[:, None] == outputs["detection_classes"][0, :n][None, :]
    best = np.where(same_class, iou, 0.0).max(axis=1)
    assert best.min() >= 0.99, best
    np.testing.assert_allclose(
        outputs["detection_scores"][0, :top], reference["detection_scores"][0, :top], atol=1e-3
    )


def test_tflite_input_letterboxes_with_mean_colour(setup):
    _, _, serving, input_size = setup
    image = helpers.test_images()[2]  # 120x70 -> short side 64 would give 110 > 64: shrink
    inputs, valid_size = tflite_client.tflite_input(image, input_size, serving)
    assert inputs.shape == (1, 64, 64, 3) and inputs.dtype == np.uint8
    assert valid_size == (64, 37)  # 70 * 64 / 120 = 37.3
    # Resized to 64x37, then padded on the right with the mean colour.
    expected = np.round(255 * np.array([0.485, 0.456, 0.406])).astype(np.uint8)
    np.testing.assert_array_equal(inputs[0, :, 40:], np.broadcast_to(expected, (64, 24, 3)))


def test_convert_tflite_validates_arguments(setup):
    model, label_map, serving, input_size = setup
    with pytest.raises(ValueError, match="variant"):
        export_tflite.convert_tflite(
            model, label_map, input_size=input_size, pixel_norm=serving.pixel_norm, variant="int4"
        )
    with pytest.raises(ValueError, match="representative_images"):
        export_tflite.convert_tflite(
            model, label_map, input_size=input_size, pixel_norm=serving.pixel_norm, variant="int8"
        )


def test_p2_fp32_matches_keras():
    """A model with a P2 level: the fp32 TFLite detections are the Keras model's."""
    model, config, label_map = helpers.loaded_p2_model()
    serving = builders.build_serving_config(config)
    input_size = tuple(config.export.input_size)
    flatbuffer = export_tflite.convert_tflite(
        model, label_map, input_size=input_size, pixel_norm=serving.pixel_norm, variant="fp32"
    )
    image = _square_image()
    loaded = tf.saved_model.load(helpers.p2_saved_model_dir())  # checked against Keras
    reference = {
        k: v.numpy()
        for k, v in loaded.signatures["serving_default"](images=tf.constant(image[None])).items()
    }
    outputs = tflite_client.run_tflite(
        tflite_client.tflite_interpreter(flatbuffer), image, input_size, serving
    )
    n_ref = int(reference["num_detections"][0])
    n = int(outputs["num_detections"][0])
    assert n_ref > 10 and abs(n - n_ref) <= 2
    top = min(n_ref, 50)
    iou = _iou(reference["detection_boxes"][0, :top], outputs["detection_boxes"][0, :n])
    same_class = (
        reference["detection_classes"][0, :top, None] == outputs["detection_classes"][0, None, :n]
    )
    assert np.where(same_class, iou, 0.0).max(axis=1).min() >= 0.99
    np.testing.assert_allclose(
        outputs["detection_scores"][0, :top], reference["detection_scores"][0, :top], atol=1e-3
    )
