"""TFLite export: the detector with builtin-operator NMS as a flatbuffer, fp32, fp16 or int8.

A fixed input ``images`` uint8 ``[1, H, W, 3]`` (``config.export.input_size``): the client
resizes (short side, long-side cap, and at most ``(H, W)``) and pads bottom/right with the
mean colour, see :func:`fcos_tf.serving.tflite_client.tflite_input`. Normalisation, the network,
decoding and class-aware NMS run inside the model with builtin ops only; NMS is
NON_MAX_SUPPRESSION_V5 on boxes shifted by ``class * (max coordinate + 1)`` (classes never
overlap). Outputs have the names and dtypes of :data:`fcos_tf.serving.graph.OUTPUT_KEYS` with
``detection_boxes`` normalised to the ``(H, W)`` input frame. Variants: ``fp32``; ``fp16``
(float16 weights); ``int8`` (int8 weights and activations of the whole network, backbone,
FPN and head, calibrated on a representative dataset; the post-processing after the head
stays float32 behind a dequantize, see :func:`_quantize_int8`).
"""

import tempfile
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from fcos_tf.data import transforms
from fcos_tf.data.label_map import LabelMap
from fcos_tf.serving.bn_folding import count_batch_norms, fold_batch_norms
from fcos_tf.serving.graph import IMAGES_INPUT, detections_to_outputs

TFLITE_VARIANTS = ("fp32", "fp16", "int8")
# "tf_od_api": the outputs of OUTPUT_KEYS; "mediapipe": contiguous class indices and a float32
# count, the layout of TFLite_Detection_PostProcess that MediaPipe's ObjectDetector reads
# (fcos_tf.serving.tflite_metadata).
TFLITE_OUTPUT_LAYOUTS = ("tf_od_api", "mediapipe")


def tflite_detection_function(
    model: keras.Model,
    label_map: LabelMap,
    input_size: Sequence[int],
    pixel_norm: str,
    max_detections: int | None = None,
    output_layout: str = "tf_od_api",
):
    """The ``tf.function`` converted to TFLite: uint8 ``[1, H, W, 3]`` -> detections.

    Args:
        model: a built ``FCOS``.
        label_map: its ``LabelMap``.
        input_size: fixed ``(H, W)``, multiples of 32 recommended (128 keeps every level
            aligned).
        pixel_norm: the pipeline's normalisation.
        max_detections: D (default the model's).
        output_layout: ``"tf_od_api"`` or ``"mediapipe"``: ``detection_classes`` holds the
            contiguous class (0..K-1, -1 on padding rows) as float32 instead of the category
            id and ``num_detections`` is float32 (TFLite_Detection_PostProcess's outputs, in
            the same order: boxes, classes, scores, count).

    Returns:
        A ``tf.function`` with input signature ``images`` uint8 ``[1, H, W, 3]`` returning
        the ``OUTPUT_KEYS`` dict with boxes normalised to the input frame.
    """
    if output_layout not in TFLITE_OUTPUT_LAYOUTS:
        raise ValueError(
            f"`output_layout` must be one of {TFLITE_OUTPUT_LAYOUTS}, got {output_layout!r}."
        )
    height, width = (int(v) for v in input_size)
    max_detections = int(max_detections or model.max_detections)

    def detect(images):
        inputs = transforms.normalize_image(images, pixel_norm)
        outputs = model(inputs, training=False)
        # Class-offset NMS: NON_MAX_SUPPRESSION_V5, a TFLite builtin (combined NMS is not).
        detections = model.postprocess(
            outputs, (height, width), nms="class_offset", max_detections=max_detections
        )
        frame = tf.constant([[height, width]], tf.int32)
        outputs = detections_to_outputs(detections, label_map, valid_size=frame, frame_size=frame)
        if output_layout == "mediapipe":
            outputs["detection_classes"] = tf.cast(detections["classes"], tf.float32)
            outputs["num_detections"] = tf.cast(outputs["num_detections"], tf.float32)
        return outputs

    return detect, [tf.TensorSpec([1, height, width, 3], tf.uint8, name=IMAGES_INPUT)]


def builtin_converter(
    model: keras.Model, fn, input_signature, scratch: str
) -> tf.lite.TFLiteConverter:
    """A LiteRT converter of ``fn`` restricted to builtin operators.

    ``fn`` is written with ``model``'s variables as a SavedModel to the folder ``scratch``
    (``keras.export.ExportArchive``: the path that freezes Keras 3 variables into the
    flatbuffer), which must outlive the conversion.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", fn, input_signature=input_signature)
    archive.write_out(scratch, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert_tflite(
    model: keras.Model,
    label_map: LabelMap,
    *,
    input_size: Sequence[int],
    pixel_norm: str,
    variant: str = "fp32",
    representative_images: Iterable[np.ndarray] | None = None,
    max_detections: int | None = None,
    output_layout: str = "tf_od_api",
) -> bytes:
    """Converts the detector (with its pre- and post-processing) to a TFLite flatbuffer.

    Args:
        model: a built ``FCOS``; its BatchNorms are folded into their convolutions
            first (:func:`fcos_tf.serving.bn_folding.fold_batch_norms`).
        label_map: its ``LabelMap``.
        input_size: fixed ``(H, W)`` of the TFLite input.
        pixel_norm: the pipeline's normalisation.
        variant: ``"fp32"``, ``"fp16"`` (float16 weights) or ``"int8"`` (full-integer
            network, float32 post-processing).
        representative_images: for ``"int8"``: iterable of uint8 ``[1, H, W, 3]`` arrays
            (e.g. from :func:`fcos_tf.serving.tflite_client.tflite_input`), a few dozen
            typical images.
        max_detections: D (default the model's).
        output_layout: see :func:`tflite_detection_function`.

    Returns:
        The flatbuffer as ``bytes``; checked to hold builtin operators only.
    """
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"`variant` must be one of {TFLITE_VARIANTS}, got {variant!r}.")
    if variant == "int8" and representative_images is None:
        raise ValueError("`representative_images` is required for the int8 variant.")
    if count_batch_norms(model):
        # Convolutions only in the flatbuffer: every int8 weight is quantized with the
        # statistics already applied, and no normalisation op is left between convolutions.
        model = fold_batch_norms(model)
    fn, signature = tflite_detection_function(
        model, label_map, input_size, pixel_norm, max_detections, output_layout
    )
    with tempfile.TemporaryDirectory() as scratch:
        converter = builtin_converter(model, fn, signature, scratch)
        if variant == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
        if variant == "int8":
            flatbuffer = _quantize_int8(
                scratch,
                flatbuffer,
                representative_images,
                network_scopes=(model.backbone.name, model.fpn.name, model.head.name),
            )
    check_builtin_only(flatbuffer)
    return flatbuffer


def _quantize_int8(saved_model_dir, float_flatbuffer, representative_images, network_scopes):
    """Full-integer network, float post-processing.

    Every operator of the backbone, FPN and head (and every convolution) gets int8 weights
    and activations. The operators after them (level concatenation, sigmoid, box decoding,
    top-k, NMS) stay float32: int8 has one scale per tensor, and the box distances of all
    levels in one tensor (up to ~1000 px on P7) would be rounded to several pixels on P3
    (COCO AP on the synthetic split fell from 0.087 to 0.029 with them quantized).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    images = [np.asarray(x, np.uint8) for x in representative_images]
    if not images:
        raise ValueError("`representative_images` is empty.")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(float_flatbuffer, 0))
    operators = tflite_operators(float_flatbuffer)
    graph = model.subgraphs[0]
    float_nodes = []
    for op in graph.operators:
        if operators[op.opcodeIndex] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        for index in op.outputs:
            name = graph.tensors[index].name.decode()
            if not any(f"/{scope}" in name for scope in network_scopes):
                float_nodes.append(name)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in images)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    # The debugger is TFLite's public entry point for selective quantization. TOPK_V2 has an
    # int8 kernel that would requantize its (denylisted) input: excluded by type too.
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=lambda: ([x] for x in images[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=float_nodes, denylisted_ops=["TOPK_V2"]
        ),
    )
    return debugger.get_nondebug_quantized_model()


def tflite_operators(flatbuffer: bytes) -> list[str]:
    """Names of the operator codes of a TFLite model (builtin names, or custom codes).

    Args:
        flatbuffer: the model's ``bytes``.

    Returns:
        list of str, e.g. ``["CONV_2D", ..., "NON_MAX_SUPPRESSION_V5"]``; a custom operator
        appears under its custom code (``"FlexTopKV2"``, ``"TFLite_Detection_PostProcess"``).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin_names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        if custom:
            names.append(custom.decode())
        else:
            # Codes above 127 live in BuiltinCode(); the deprecated int8 field saturates.
            names.append(builtin_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return names


def check_builtin_only(flatbuffer: bytes) -> None:
    """Raises ``ValueError`` naming any Flex (SELECT_TF_OPS) or other custom operator."""
    custom = [
        name
        for name in tflite_operators(flatbuffer)
        if name.startswith("Flex") or name != name.upper()
    ]
    if custom:
        raise ValueError(
            f"The TFLite model needs non-builtin operators {custom}; edge "
            f"runtimes without the Flex delegate cannot run it."
        )
