"""TFLite models for MediaPipe Tasks' ``ObjectDetector``: output layout and metadata.

MediaPipe's ``ObjectDetector`` runs a detection model "with NMS inside" when the model has
the four outputs of TFLite's ``TFLite_Detection_PostProcess``, in this order, and TFLite
metadata describing them:

==================== ================ ===================================================
output (metadata)    dtype, shape     content
==================== ================ ===================================================
location             float32 [1,D,4]  ``[ymin, xmin, ymax, xmax]`` normalised to the input
category             float32 [1,D]    contiguous class 0..K-1 (index into the label file)
score                float32 [1,D]    descending
number of detections float32 [1]      valid rows
==================== ================ ===================================================

:func:`convert_tflite_for_mediapipe` converts a detector with
:func:`fcos_tf.serving.tflite.convert_tflite` (``output_layout="mediapipe"``: the same network,
pre-processing and builtin-op NMS as every other TFLite export) and
:func:`add_mediapipe_metadata` writes the metadata with MediaPipe's own writer
(``mediapipe.tasks.python.metadata.metadata_writers.object_detector``): model name, the
image input, the label file (class names in contiguous-class order, packed into the
``.tflite``) and the four output tensors.

Input: uint8 ``[1, H, W, 3]`` RGB, the raw pixels; the pixel normalisation of the backbone
runs inside the model, so the metadata's normalisation is the identity (mean 0, std 1).
MediaPipe stretches each image to ``H x W`` before the model and maps the normalised boxes
back to the image; :func:`fcos_tf.serving.tflite_client.run_tflite` keeps the aspect ratio and pads
instead, so the two agree exactly on images of the model's input size.
"""

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import types

import numpy as np

from fcos_tf.serving import tflite as export_tflite
from fcos_tf.serving import tflite_client

MEDIAPIPE_OUTPUT_NAMES = ("location", "category", "score", "number of detections")
# Signature output keys of the "mediapipe" layout, in the order of the model's outputs.
_OUTPUT_KEYS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# The input tensor holds raw 0..255 pixels: identity normalisation.
_INPUT_MEAN = (0.0,)
_INPUT_STD = (1.0,)


def _schema_version():
    """The metadata schema version of the installed mediapipe (``Schema Semantic version``)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mediapipe is not installed.")
    path = os.path.join(
        list(spec.submodule_search_locations)[0], "tasks", "metadata", "metadata_schema.fbs"
    )
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "Schema Semantic version:" in line:
                return line.split(":", 1)[1].strip()
    raise ImportError(f"No 'Schema Semantic version' line in {path}.")


@contextlib.contextmanager
def _metadata_version_module():
    """Stands in for ``_pywrap_metadata_version`` while mediapipe's metadata code is imported.

    mediapipe 1.2's ``metadata.py`` imports the compiled module
    ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`` for one function,
    ``GetMinimumMetadataParserVersion``, which its wheels no longer ship. The stand-in
    returns the installed schema version: an upper bound of the version the written fields
    need, so a parser that accepts the model understands every field of it. It is in
    ``sys.modules`` only during the import (``metadata.py`` keeps its own reference), so no
    other code of the process sees it.
    """
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:  # a wheel that has it
        yield
        return
    version = _schema_version()
    parts = name.split(".")
    added = []
    for depth in range(3, len(parts) + 1):  # mediapipe.tasks.cc ... _pywrap_metadata_version
        module_name = ".".join(parts[:depth])
        if module_name not in sys.modules:
            module = types.ModuleType(module_name)
            module.__path__ = []
            sys.modules[module_name] = module
            added.append(module_name)
    sys.modules[name].GetMinimumMetadataParserVersion = lambda metadata_buffer: version
    try:
        yield
    finally:
        for module_name in added:
            sys.modules.pop(module_name, None)


def import_writer():
    """MediaPipe's metadata writer modules ``(metadata_writer, object_detector)``.

    Raises:
        ImportError: saying how to install MediaPipe, when it is not installed.
    """
    try:
        with _metadata_version_module():
            from mediapipe.tasks.python.metadata.metadata_writers import (
                metadata_writer,
                object_detector,
            )
    except ImportError as error:
        raise ImportError(
            "Writing MediaPipe metadata needs mediapipe: pip install "
            "'fcos_tf[edge]' (or `pip install mediapipe`)."
        ) from error
    return metadata_writer, object_detector


def order_detection_outputs(flatbuffer):
    """Puts the model outputs in MediaPipe's order: boxes, classes, scores, count.

    The converter orders a signature's outputs as it likes; the signature maps names to
    tensors, so reordering the subgraph's output list changes nothing else.

    Args:
        flatbuffer: ``bytes`` of a model converted with ``output_layout="mediapipe"``.

    Returns:
        The model, ``bytes``, with its outputs in the order of ``MEDIAPIPE_OUTPUT_NAMES``.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    if len(model.subgraphs) != 1 or len(model.signatureDefs or []) != 1:
        raise ValueError("Expected a model with one subgraph and one signature.")
    signature = model.signatureDefs[0]
    index_of = {
        tensor_map.name.decode(): tensor_map.tensorIndex for tensor_map in signature.outputs
    }
    missing = [key for key in _OUTPUT_KEYS if key not in index_of]
    if missing or len(index_of) != len(_OUTPUT_KEYS):
        raise ValueError(
            f"The model's outputs are {sorted(index_of)}, MediaPipe needs {_OUTPUT_KEYS}."
        )
    # MediaPipe's writer also pairs the four outputs with their metadata by ascending tensor
    # index (TFLite_Detection_PostProcess writes them in this order): renumber the four
    # tensors so that their indices ascend in MediaPipe's order too.
    current = [index_of[key] for key in _OUTPUT_KEYS]
    renumber = dict(zip(current, sorted(current)))
    graph = model.subgraphs[0]
    tensors = list(graph.tensors)
    for old, new in renumber.items():
        tensors[new] = graph.tensors[old]
    graph.tensors = tensors

    def remap(indices):
        return None if indices is None else [renumber.get(int(i), int(i)) for i in indices]

    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = remap(op.intermediates)
    graph.inputs = remap(graph.inputs)
    graph.outputs = sorted(current)
    for tensor_map in list(signature.inputs) + list(signature.outputs):
        tensor_map.tensorIndex = renumber.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    signature.outputs.sort(key=lambda tensor_map: _OUTPUT_KEYS.index(tensor_map.name.decode()))
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def check_detection_outputs(flatbuffer):
    """Checks that a model's outputs are the four of the "mediapipe" layout, in order.

    Args:
        flatbuffer: ``bytes`` of a TFLite model.

    Returns:
        ``D``, the number of detection rows.

    Raises:
        ValueError: naming the output that is missing, misplaced or mis-shaped.
    """
    interpreter = tflite_client.tflite_interpreter(flatbuffer)
    outputs = interpreter.get_output_details()
    runner = interpreter.get_signature_runner()
    # Signature output name of each output tensor.
    by_index = {detail["index"]: name for name, detail in runner.get_output_details().items()}
    names = [by_index.get(detail["index"], detail["name"]) for detail in outputs]
    if tuple(names) != _OUTPUT_KEYS:
        raise ValueError(
            f"MediaPipe needs the outputs {_OUTPUT_KEYS} in this order; the model "
            f"has {names} (see order_detection_outputs)."
        )
    shapes = [tuple(int(v) for v in detail["shape"]) for detail in outputs]
    num = shapes[0][1] if len(shapes[0]) == 3 else -1
    expected = [(1, num, 4), (1, num), (1, num), (1,)]
    dtypes = [np.dtype(detail["dtype"]) for detail in outputs]
    if shapes != expected or any(dtype != np.float32 for dtype in dtypes):
        raise ValueError(
            f"MediaPipe needs float32 outputs of shapes {expected}; the model has "
            f"{list(zip(names, shapes, dtypes))}."
        )
    return num


def add_mediapipe_metadata(flatbuffer, label_map):
    """Writes MediaPipe ``ObjectDetector`` metadata (labels, input, outputs) into a model.

    Args:
        flatbuffer: ``bytes`` of a TFLite model in the "mediapipe" output layout
            (:func:`check_detection_outputs`).
        label_map: the model's ``LabelMap``; its names, in contiguous-class order, become the
            label file of the ``category`` output.

    Returns:
        The model with metadata, ``bytes``; it runs unchanged in LiteRT as well.
    """
    metadata_writer, object_detector = import_writer()
    check_detection_outputs(flatbuffer)
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, "labels.txt")
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("\n".join(label_map.names) + "\n")
        labels = metadata_writer.Labels().add_from_file(labels_path)
        writer = object_detector.MetadataWriter.create_for_models_with_nms(
            bytearray(flatbuffer), list(_INPUT_MEAN), list(_INPUT_STD), labels
        )
        model_with_metadata, _ = writer.populate()
        # Release it now: its __del__ removes a scratch folder and fails at interpreter exit.
        del writer
    return bytes(model_with_metadata)


def metadata_json(flatbuffer):
    """The metadata of a model as MediaPipe's writer prints it (JSON text)."""
    import_writer()
    from mediapipe.tasks.python.metadata import metadata

    return metadata.MetadataDisplayer.with_model_buffer(bytearray(flatbuffer)).get_metadata_json()


def convert_tflite_for_mediapipe(
    model,
    label_map,
    *,
    input_size,
    pixel_norm,
    variant="int8",
    representative_images=None,
    max_detections=None,
):
    """A ``.tflite`` that MediaPipe's ``ObjectDetector`` loads: the detector, NMS and metadata.

    Args:
        model: a built ``FCOS`` (its BatchNorms are folded by ``convert_tflite``).
        label_map: its ``LabelMap``.
        input_size: fixed ``(H, W)``.
        pixel_norm: the pipeline's normalisation (runs inside the model).
        variant: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        representative_images: for int8, uint8 ``[1, H, W, 3]`` arrays.
        max_detections: D (default the model's).

    Returns:
        The flatbuffer with metadata, ``bytes``, builtin operators only.
    """
    flatbuffer = export_tflite.convert_tflite(
        model,
        label_map,
        input_size=input_size,
        pixel_norm=pixel_norm,
        variant=variant,
        representative_images=representative_images,
        max_detections=max_detections,
        output_layout="mediapipe",
    )
    return add_mediapipe_metadata(order_detection_outputs(flatbuffer), label_map)
