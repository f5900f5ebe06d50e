"""Writing the serving SavedModel: TF Serving's version layout, label map asset, warm-up records.

The graph itself (signatures, preprocessing, outputs) is :mod:`fcos_tf.serving.graph`. The
SavedModel goes through ``keras.export.ExportArchive`` into ``<export_dir>/<version>/``; the label
map is stored as the asset ``assets/label_map.json`` and TF Serving warm-up requests (one per
signature) as ``assets.extra/tf_serving_warmup_requests``.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap
from fcos_tf.serving import precision as precision_lib
from fcos_tf.serving.graph import (
    IMAGE_BYTES_INPUT,
    IMAGE_BYTES_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    ServingConfig,
    serving_functions,
)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_image(serving: ServingConfig) -> np.ndarray:
    """A deterministic uint8 ``[H, W, 3]`` picture of a typical request size (4:3)."""
    height = serving.eval_short_side
    width = height * 4 // 3
    if serving.max_size:
        width = min(width, serving.max_size)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1
    )
    return image.astype(np.uint8)


WARMUP_INSTALL = "pip install --no-deps 'tensorflow-serving-api==2.21.*'"


def warmup_available() -> bool:
    """Whether ``tensorflow-serving-api`` (the warm-up records' protos) can be imported."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def write_warmup_requests(saved_model_dir: str, image: np.ndarray, model_name: str = "fcos") -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests``: one request per signature.

    Args:
        saved_model_dir: the version folder of the export.
        image: uint8 ``[H, W, 3]`` sent as ``images`` and, JPEG-encoded, as ``image_bytes``.
        model_name: the name TF Serving serves the model under (``--model_name``).

    Returns:
        The path of the records file.
    """
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            f"Warm-up records need tensorflow-serving-api: {WARMUP_INSTALL}"
        ) from error
    image = np.asarray(image, np.uint8)
    encoded = tf.io.encode_jpeg(image, quality=95).numpy()
    inputs = {
        IMAGES_SIGNATURE: (IMAGES_INPUT, tf.make_tensor_proto(image[None])),
        IMAGE_BYTES_SIGNATURE: (
            IMAGE_BYTES_INPUT,
            tf.make_tensor_proto([encoded], dtype=tf.string),
        ),
    }
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (input_name, tensor) in inputs.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs[input_name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def export_saved_model(
    model: keras.Model,
    label_map: LabelMap,
    export_dir: str,
    serving: ServingConfig | None = None,
    *,
    version: int | None = None,
    model_name: str = "fcos",
    warmup: bool = True,
    precision: str = "float32",
) -> str:
    """Writes the serving SavedModel into ``<export_dir>/<version>/``.

    The graph runs :func:`fcos_tf.serving.precision.inference_model` of ``model``: BatchNorms
    folded into the convolutions, the network in ``precision``, one image at a time, with
    its weights frozen into ``saved_model.pb`` as constants (``variables/`` stays empty);
    pre-processing, decoding, NMS and the outputs are float32 and the signatures the same
    for both precisions.

    The version folder is written under a temporary name and renamed at the end, so a TF
    Serving instance watching ``export_dir`` never loads a half-written version; on any
    failure the temporary folder is removed before the error propagates.

    Args:
        model: a built ``FCOS``.
        label_map: its ``LabelMap``.
        export_dir: the model's base folder (TF Serving's ``--model_base_path``).
        serving: :class:`ServingConfig` (default: the paper's 800 / 1333, caffe).
        version: integer version; default the next free one.
        model_name: model name in the warm-up requests.
        warmup: write the warm-up requests (needs tensorflow-serving-api; see
            :func:`warmup_available`).
        precision: ``"float32"`` or ``"bfloat16"`` (for CPUs with AVX-512 BF16 or AMX).

    Returns:
        The path of the version folder.

    Raises:
        ImportError: ``warmup`` without tensorflow-serving-api, before anything is written.
        FileExistsError: when ``version`` exists already.
    """
    if warmup and not warmup_available():
        raise ImportError(
            f"Warm-up records need tensorflow-serving-api ({WARMUP_INSTALL}); "
            f"or export with `warmup=False`."
        )
    precision_lib.check_precision(precision)
    serving = serving or ServingConfig()
    version = next_version(export_dir) if version is None else int(version)
    final_dir = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final_dir):
        raise FileExistsError(f"`version` {version} already exists in {export_dir}.")
    tf.io.gfile.makedirs(export_dir)
    temp_dir = os.path.join(export_dir, f".tmp-{version}")
    if tf.io.gfile.exists(temp_dir):
        tf.io.gfile.rmtree(temp_dir)

    try:
        model = precision_lib.inference_model(model, precision)
        # The network's weights are constants of its frozen graph: nothing reads the model's
        # variables, so they are not tracked (and not written a second time).
        archive = keras.export.ExportArchive()
        for name, (fn, signature) in serving_functions(model, label_map, serving).items():
            archive.add_endpoint(name, fn, input_signature=signature)
        with tempfile.TemporaryDirectory() as scratch:
            label_map_path = label_map.save(os.path.join(scratch, LABEL_MAP_FILENAME))
            # ExportArchive has no public hook for assets: an Asset reachable from the saved
            # root object is copied to assets/ and recorded in the SavedModel.
            trackable = archive._tf_trackable
            trackable.label_map = tf.saved_model.Asset(label_map_path)
            archive.write_out(temp_dir, verbose=False)
        if warmup:
            write_warmup_requests(temp_dir, warmup_image(serving), model_name)
        tf.io.gfile.rename(temp_dir, final_dir)
    except BaseException:  # any failure, Ctrl-C included: no half-written folder stays
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)
        raise
    return final_dir


def next_version(export_dir: str) -> int:
    """1 + the largest numeric version folder of ``export_dir`` (1 when there is none)."""
    versions = [
        int(name)
        for name in (tf.io.gfile.listdir(export_dir) if tf.io.gfile.isdir(export_dir) else [])
        if name.strip("/").isdigit()
    ]
    return max(versions, default=0) + 1
