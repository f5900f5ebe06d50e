"""Serving and edge exports: a SavedModel for TensorFlow Serving and TFLite with builtin NMS.

SavedModel (DESIGN.md §4). Written through ``keras.export.ExportArchive`` into TF Serving's
layout ``<export_dir>/<version>/`` with two signatures that share the weights:

- ``serving_default``: ``images`` uint8 ``[B, H0, W0, 3]`` RGB, every image of a request of
  the same size;
- ``serving_image_bytes``: ``image_bytes`` string ``[B]``, JPEG/PNG/GIF/BMP files of any
  sizes. TF Serving's REST API decodes ``{"b64": "..."}`` for inputs whose name ends in
  ``_bytes``.

Both run the evaluation preprocessing in the graph (short-side resize under a long-side cap,
pixel normalisation, zero padding to a multiple of 32; exactly the validation pipeline's
:func:`fcos_tf.data.pipeline.preprocess_example`), the model, the post-processing of
:func:`fcos_tf.postprocess.postprocess` (combined NMS) and the mapping back to each original
image, and return the TF Object Detection API's outputs::

    detection_boxes    float32 [B, D, 4]  [ymin, xmin, ymax, xmax] normalised to the original image
    detection_scores   float32 [B, D]     descending; 0 on padding rows
    detection_classes  float32 [B, D]     dataset category ids (label map); -1 on padding rows
    num_detections     int32   [B]        valid rows per image

``detection_classes`` is float32 like the TF OD API's, so existing clients work unchanged;
category ids are small integers, exact in float32. Images of different sizes in one
``image_bytes`` request are each resized with their own scale and padded to the largest.

The label map is stored as the asset ``assets/label_map.json`` and TF Serving warm-up
requests (one per signature) as ``assets.extra/tf_serving_warmup_requests``.

TFLite. A fixed input ``images`` uint8 ``[1, H, W, 3]`` (``config.export.input_size``): the
client resizes (short side, long-side cap, and at most ``(H, W)``) and pads bottom/right
with the mean colour, see :func:`tflite_input`. Normalisation, the network, decoding and
class-aware NMS run inside the model with builtin ops only; NMS is NON_MAX_SUPPRESSION_V5 on
boxes shifted by ``class * (max coordinate + 1)`` (classes never overlap). Outputs have the
names and dtypes above with ``detection_boxes`` normalised to the ``(H, W)`` input frame.
Variants: ``fp32``; ``fp16`` (float16 weights); ``int8`` (int8 weights and activations of
the whole network, backbone, FPN and head, calibrated on a representative dataset; the
post-processing after the head stays float32 behind a dequantize, see
:func:`_quantize_int8`).
"""

import dataclasses
import json
import os
import tempfile
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from fcos_tf import postprocess as postprocess_lib
from fcos_tf.data import transforms
from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap

IMAGES_SIGNATURE = "serving_default"
IMAGE_BYTES_SIGNATURE = "serving_image_bytes"
IMAGES_INPUT = "images"
IMAGE_BYTES_INPUT = "image_bytes"
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
TFLITE_VARIANTS = ("fp32", "fp16", "int8")
# "tf_od_api": the outputs above; "mediapipe": contiguous class indices and a float32 count,
# the layout of TFLite_Detection_PostProcess that MediaPipe's ObjectDetector reads
# (fcos_tf.tflite_metadata).
TFLITE_OUTPUT_LAYOUTS = ("tf_od_api", "mediapipe")
# File magic numbers of the formats tf.io.decode_image reads.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Preprocessing inside the exported graphs (the validation pipeline's).

    Attributes:
        short_side: target short side of the resize.
        max_size: cap on the long side after resizing (None: no cap).
        size_divisor: padded sides are multiples of it (32: the largest backbone stride).
        pixel_norm: ``"caffe"`` or ``"torchvision"`` (must match the training pipeline).
    """

    short_side: int = 800
    max_size: Optional[int] = 1333
    size_divisor: int = 32
    pixel_norm: str = "caffe"

    def __post_init__(self):
        if self.short_side < 1 or self.size_divisor < 1:
            raise ValueError(f"`short_side` and `size_divisor` must be >= 1, got "
                             f"{self.short_side} and {self.size_divisor}.")
        if self.pixel_norm not in transforms.PIXEL_NORMS:
            raise ValueError(f"`pixel_norm` must be one of {transforms.PIXEL_NORMS}, got "
                             f"{self.pixel_norm!r}.")

    @classmethod
    def from_config(cls, config):
        """The evaluation preprocessing of a recipe's ``ConfigDict``."""
        data = config.data
        return cls(short_side=int(data.eval_short_side),
                   max_size=int(data.max_size) if data.max_size else None,
                   size_divisor=int(data.size_divisibility), pixel_norm=data.pixel_norm)


# --------------------------------------------------------------------------------------------
# Loading a trained model
# --------------------------------------------------------------------------------------------

def latest_checkpoint(path):
    """The checkpoint prefix of ``path``: a prefix itself, a folder of checkpoints or a workdir.

    Raises:
        FileNotFoundError: naming ``path`` when it holds no checkpoint.
    """
    if tf.io.gfile.exists(path + ".index"):
        return path
    for folder in (os.path.join(path, "checkpoints"), path):
        if tf.io.gfile.isdir(folder):
            latest = tf.train.latest_checkpoint(folder)
            if latest:
                return latest
    raise FileNotFoundError(f"No checkpoint at `path`={path!r} (expected a checkpoint prefix, "
                            f"a folder of checkpoints or a train.py workdir).")


def _merge(base, values):
    for key, value in values.items():
        current = base.get(key)
        if hasattr(current, "keys") and isinstance(value, dict):
            _merge(current, value)
            continue
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples
        if key in base and current is not None and value is not None and (
                type(current) is not type(value)) and not (
                    isinstance(current, float) and isinstance(value, int)):
            base[key] = None  # e.g. a field whose type changed: take the saved value as is
        base[key] = value


def read_workdir_config(workdir):
    """The ``ConfigDict`` a ``train.py`` run wrote to ``<workdir>/config.json``.

    The saved values are laid over the current defaults (:func:`fcos_tf.config.base_config`),
    so a workdir written before a config key was added still loads.
    """
    from fcos_tf import config as config_lib  # pylint: disable=import-outside-toplevel

    path = os.path.join(workdir, "config.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"No config.json in `workdir`={workdir!r}; pass the recipe "
                                f"with --config.")
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    config = config_lib.base_config()
    _merge(config, saved)
    return config


def load_trained_model(workdir=None, *, checkpoint=None, config=None, label_map=None):
    """Rebuilds a trained FCOS from a ``train.py`` workdir and/or a checkpoint.

    Args:
        workdir: run directory (``config.json``, ``label_map.json``, ``checkpoints/``).
        checkpoint: a checkpoint prefix or folder; default: the newest one of ``workdir``.
        config: the recipe ``ConfigDict``; default: ``<workdir>/config.json``.
        label_map: a ``LabelMap``; default: ``<workdir>/label_map.json``, else the label map
            of the config's dataset.

    Returns:
        ``(model, config, label_map)``: a float32 ``FCOS`` with the checkpoint's weights.
    """
    from fcos_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    from fcos_tf import training  # pylint: disable=import-outside-toplevel

    if workdir is None and (checkpoint is None or config is None):
        raise ValueError("Pass `workdir`, or both `checkpoint` and `config`.")
    if config is None:
        config = read_workdir_config(workdir)
    if label_map is None:
        if workdir is not None and tf.io.gfile.exists(os.path.join(workdir, LABEL_MAP_FILENAME)):
            label_map = LabelMap.load(workdir)
        elif config.data.dataset == "synthetic":
            from fcos_tf.data import synthetic  # pylint: disable=import-outside-toplevel

            label_map = synthetic.label_map()
        elif config_lib.num_classes(config) == 80:
            label_map = LabelMap.coco_2017()
        else:
            raise ValueError("No label map: pass `label_map` or a workdir holding one.")
    checkpoint = latest_checkpoint(checkpoint or workdir)
    model_config = config.model.to_dict() if hasattr(config.model, "to_dict") else config.model
    import ml_collections  # pylint: disable=import-outside-toplevel

    model_config = ml_collections.ConfigDict(model_config)
    model_config.backbone_weights = ""  # the checkpoint holds every weight
    # Serving runs in float32 whatever precision the model was trained with.
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = training.build_model(model_config, label_map.num_classes)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    status = tf.train.Checkpoint(model=model).restore(checkpoint)
    status.expect_partial()  # the optimizer slots are not needed
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(f"`checkpoint` {checkpoint} does not hold every weight of the model "
                         f"built from the config (another recipe or code version?): "
                         f"{str(error)[:400]}...") from None
    return model, config, label_map


# --------------------------------------------------------------------------------------------
# In-graph preprocessing and output mapping
# --------------------------------------------------------------------------------------------

def _check_batch(batch_size, name):
    return tf.debugging.assert_positive(
        batch_size, message=f"`{name}`: empty batch; send at least one image")


def preprocess_images(images, serving):
    """Resize, normalise and pad a batch of same-size images, as the validation pipeline does.

    Args:
        images: uint8 ``[B, H0, W0, 3]`` RGB.
        serving: :class:`ServingConfig`.

    Returns:
        ``(inputs, meta)``: float32 ``[B, Hp, Wp, 3]`` network inputs and a dict of
        ``"valid_size"`` int32 ``[B, 2]`` (resized size before padding), ``"scale"`` float32
        ``[B]`` (resized / original) and ``"original_size"`` int32 ``[B, 2]``.
    """
    # Runtime shape check: TF Serving feeds tensors without checking them against the
    # signature; a wrong rank or channel count fails here, naming the input.
    images = tf.ensure_shape(images, [None, None, None, 3], name=IMAGES_INPUT)
    shape = tf.shape(images)
    checks = [_check_batch(shape[0], IMAGES_INPUT),
              tf.debugging.assert_positive(
                  shape[1:3], message=f"`{IMAGES_INPUT}`: height and width must be positive")]
    with tf.control_dependencies(checks):
        original_size = tf.identity(shape[1:3])
    scale, new_size = transforms.resize_size(original_size, serving.short_side,
                                             serving.max_size)
    same = tf.reduce_all(tf.equal(original_size, new_size))
    resized = tf.cond(same, lambda: tf.cast(images, tf.float32),
                      lambda: tf.image.resize(images, new_size, method="bilinear"))
    inputs = transforms.normalize_image(resized, serving.pixel_norm)
    pad = transforms.padded_size(new_size, serving.size_divisor) - new_size
    inputs = tf.pad(inputs, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])
    batch = shape[0]
    meta = {"valid_size": tf.tile(new_size[None], [batch, 1]),
            "scale": tf.fill([batch], scale),
            "original_size": tf.tile(original_size[None], [batch, 1])}
    return inputs, meta


def _check_image_bytes(image_bytes):
    known = tf.zeros_like(image_bytes, dtype=tf.bool)
    for magic in _IMAGE_MAGIC:
        prefix = tf.strings.substr(image_bytes, 0, len(magic))
        known = tf.logical_or(known, tf.equal(prefix, magic))
    return tf.debugging.Assert(
        tf.reduce_all(known),
        [f"`{IMAGE_BYTES_INPUT}`: these elements are not JPEG, PNG, GIF or BMP files:",
         tf.where(tf.logical_not(known))[:, 0]], summarize=16)


def preprocess_image_bytes(image_bytes, serving):
    """Decode, resize (each with its own scale), normalise and pad encoded images.

    Args:
        image_bytes: string ``[B]``, JPEG/PNG/GIF/BMP files (any sizes).
        serving: :class:`ServingConfig`.

    Returns:
        ``(inputs, meta)`` as :func:`preprocess_images`; the images are padded at the bottom
        and right to the largest resized size of the batch, rounded up to ``size_divisor``.
    """
    image_bytes = tf.ensure_shape(image_bytes, [None], name=IMAGE_BYTES_INPUT)
    checks = [_check_batch(tf.size(image_bytes), IMAGE_BYTES_INPUT),
              _check_image_bytes(image_bytes)]
    with tf.control_dependencies(checks):
        image_bytes = tf.identity(image_bytes)

    def one(encoded):
        image = transforms.decode_image(encoded)
        original_size = tf.shape(image)[:2]
        scale, new_size = transforms.resize_size(original_size, serving.short_side,
                                                 serving.max_size)
        image = transforms.normalize_image(transforms.resize_image(image, new_size),
                                           serving.pixel_norm)
        return (tf.RaggedTensor.from_tensor(image, ragged_rank=1), new_size, scale,
                original_size)

    images, valid_size, scale, original_size = tf.map_fn(
        one, image_bytes,
        fn_output_signature=(tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1),
                             tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32),
                             tf.TensorSpec([2], tf.int32)))
    inputs = images.to_tensor()  # [B, max h, max w, 3], zero (= mean colour) padding
    size = tf.shape(inputs)[1:3]
    pad = transforms.padded_size(size, serving.size_divisor) - size
    inputs = tf.ensure_shape(tf.pad(inputs, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]]),
                             [None, None, None, 3])
    return inputs, {"valid_size": valid_size, "scale": scale, "original_size": original_size}


def category_id_table(label_map):
    """float32 ``[K]`` dataset category id of each contiguous class."""
    return tf.constant(label_map.category_ids, tf.float32)


def detections_to_outputs(detections, label_map, *, scale, frame_size):
    """Network-pixel detections -> the exported outputs (TF OD API names and formats).

    Args:
        detections: dict of :func:`fcos_tf.postprocess.postprocess` (``boxes`` xyxy network
            pixels, ``scores``, ``classes`` with -1 padding, ``num_detections``).
        label_map: ``LabelMap`` giving the category ids.
        scale: float32 ``[B]``: network pixels = frame pixels * scale.
        frame_size: ``[B, 2]`` ``(H, W)`` of the frame the boxes are normalised to (the
            original image; for TFLite the model input, with ``scale`` 1).

    Returns:
        dict of ``OUTPUT_KEYS``; boxes clipped to the frame, zero on padding rows.
    """
    frame = tf.cast(frame_size, tf.float32)
    height, width = frame[:, 0:1], frame[:, 1:2]  # [B, 1]
    x1, y1, x2, y2 = tf.unstack(detections["boxes"] / scale[:, None, None], num=4, axis=-1)
    boxes = tf.stack([tf.clip_by_value(y1 / height, 0.0, 1.0),
                      tf.clip_by_value(x1 / width, 0.0, 1.0),
                      tf.clip_by_value(y2 / height, 0.0, 1.0),
                      tf.clip_by_value(x2 / width, 0.0, 1.0)], axis=-1)  # [B, D, 4]
    classes = detections["classes"]
    valid = classes >= 0
    table = category_id_table(label_map)
    category = tf.gather(table, tf.clip_by_value(classes, 0, label_map.num_classes - 1))
    return {
        "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
        "detection_scores": tf.where(valid, detections["scores"], 0.0),
        "detection_classes": tf.where(valid, category, -1.0),
        "num_detections": tf.cast(detections["num_detections"], tf.int32),
    }


# --------------------------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------------------------

def serving_functions(model, label_map, serving):
    """The two signature functions (not yet traced) of the SavedModel.

    Returns:
        dict ``{signature name: (python function, input signature)}``.
    """
    if label_map.num_classes != model.num_classes:
        raise ValueError(f"`label_map` has {label_map.num_classes} classes but the model "
                         f"predicts {model.num_classes}.")

    def detect(inputs, meta):
        outputs = model(inputs, training=False)
        detections = model.postprocess(outputs, tf.shape(inputs)[1:3],
                                       valid_size=meta["valid_size"])
        return detections_to_outputs(detections, label_map, scale=meta["scale"],
                                     frame_size=meta["original_size"])

    def serve_images(images):
        return detect(*preprocess_images(images, serving))

    def serve_image_bytes(image_bytes):
        return detect(*preprocess_image_bytes(image_bytes, serving))

    return {
        IMAGES_SIGNATURE: (serve_images, [tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                        name=IMAGES_INPUT)]),
        IMAGE_BYTES_SIGNATURE: (serve_image_bytes, [tf.TensorSpec([None], tf.string,
                                                                  name=IMAGE_BYTES_INPUT)]),
    }


def next_version(export_dir):
    """1 + the largest numeric version folder of ``export_dir`` (1 when there is none)."""
    versions = [int(name) for name in (tf.io.gfile.listdir(export_dir)
                                       if tf.io.gfile.isdir(export_dir) else [])
                if name.strip("/").isdigit()]
    return max(versions, default=0) + 1


def warmup_image(serving):
    """A deterministic uint8 ``[H, W, 3]`` picture of a typical request size (4:3)."""
    height = serving.short_side
    width = height * 4 // 3
    if serving.max_size:
        width = min(width, serving.max_size)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                      (x + y) % 256], axis=-1)
    return image.astype(np.uint8)


def write_warmup_requests(saved_model_dir, image, model_name="fcos"):
    """Writes ``assets.extra/tf_serving_warmup_requests``: one request per signature.

    Args:
        saved_model_dir: the version folder of the export.
        image: uint8 ``[H, W, 3]`` sent as ``images`` and, JPEG-encoded, as ``image_bytes``.
        model_name: the name TF Serving serves the model under (``--model_name``).

    Returns:
        The path of the records file.
    """
    try:
        from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
            predict_pb2, prediction_log_pb2)
    except ImportError as error:
        raise ImportError("Warm-up records need tensorflow-serving-api: "
                          "pip install --no-deps 'tensorflow-serving-api==2.21.*'") from error
    image = np.asarray(image, np.uint8)
    encoded = tf.io.encode_jpeg(image, quality=95).numpy()
    inputs = {IMAGES_SIGNATURE: (IMAGES_INPUT, tf.make_tensor_proto(image[None])),
              IMAGE_BYTES_SIGNATURE: (IMAGE_BYTES_INPUT,
                                      tf.make_tensor_proto([encoded], dtype=tf.string))}
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (input_name, tensor) in inputs.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs[input_name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def export_saved_model(model, label_map, export_dir, serving=None, *, version=None,
                       model_name="fcos", warmup=True):
    """Writes the serving SavedModel into ``<export_dir>/<version>/``.

    The version folder is written under a temporary name and renamed at the end, so a TF
    Serving instance watching ``export_dir`` never loads a half-written version.

    Args:
        model: a built ``FCOS``.
        label_map: its ``LabelMap``.
        export_dir: the model's base folder (TF Serving's ``--model_base_path``).
        serving: :class:`ServingConfig` (default: the paper's 800 / 1333, caffe).
        version: integer version; default the next free one.
        model_name: model name in the warm-up requests.
        warmup: write the warm-up requests (needs tensorflow-serving-api).

    Returns:
        The path of the version folder.
    """
    serving = serving or ServingConfig()
    version = next_version(export_dir) if version is None else int(version)
    final_dir = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final_dir):
        raise FileExistsError(f"`version` {version} already exists in {export_dir}.")
    tf.io.gfile.makedirs(export_dir)
    temp_dir = os.path.join(export_dir, f".tmp-{version}")
    if tf.io.gfile.exists(temp_dir):
        tf.io.gfile.rmtree(temp_dir)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in serving_functions(model, label_map, serving).items():
        archive.add_endpoint(name, fn, input_signature=signature)
    with tempfile.TemporaryDirectory() as scratch:
        label_map_path = label_map.save(os.path.join(scratch, LABEL_MAP_FILENAME))
        # ExportArchive has no public hook for assets: an Asset reachable from the saved root
        # object is copied to assets/ and recorded in the SavedModel.
        archive._tf_trackable.label_map = tf.saved_model.Asset(  # pylint: disable=protected-access
            label_map_path)
        archive.write_out(temp_dir, verbose=False)
    if warmup:
        write_warmup_requests(temp_dir, warmup_image(serving), model_name)
    tf.io.gfile.rename(temp_dir, final_dir)
    return final_dir


# --------------------------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------------------------

def _padding_colour(pixel_norm):
    """uint8 RGB colour that normalises to (about) zero: the pipeline's padding value."""
    if pixel_norm == "caffe":
        mean = transforms.CAFFE_BGR_MEAN[::-1]
    elif pixel_norm == "inception":
        mean = (127.5,) * 3
    else:
        mean = tuple(255.0 * m for m in transforms.TORCHVISION_RGB_MEAN)
    return np.round(np.asarray(mean)).astype(np.uint8)


def tflite_input(image, input_size, serving):
    """Client-side preprocessing of the TFLite model: resize and pad to the fixed input.

    The image is resized as in the SavedModel (short side, long-side cap) and further
    shrunk if needed to fit ``input_size``, then padded bottom/right with the mean colour.

    Args:
        image: uint8 ``[H0, W0, 3]`` RGB.
        input_size: ``(H, W)`` of the TFLite model.
        serving: :class:`ServingConfig` (resize sizes and pixel normalisation).

    Returns:
        ``(inputs, scale)``: uint8 numpy ``[1, H, W, 3]`` and the float resize factor
        (input pixels / original pixels).
    """
    image = tf.convert_to_tensor(image, tf.uint8)
    original = tf.shape(image)[:2]
    scale, new_size = transforms.resize_size(original, serving.short_side, serving.max_size)
    fit = tf.reduce_min(tf.constant(input_size, tf.float32) / tf.cast(original, tf.float32))
    if float(scale) > float(fit):
        scale = fit
        new_size = tf.maximum(tf.cast(tf.floor(tf.cast(original, tf.float32) * scale + 0.5),
                                      tf.int32), 1)
        new_size = tf.minimum(new_size, tf.constant(input_size, tf.int32))
    resized = transforms.resize_image(image, new_size)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()
    canvas = np.empty((input_size[0], input_size[1], 3), np.uint8)
    canvas[:] = _padding_colour(serving.pixel_norm)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    return canvas[None], float(scale)


def tflite_detection_function(model, label_map, input_size, pixel_norm, max_detections=None,
                              output_layout="tf_od_api"):
    """The ``tf.function`` converted to TFLite: uint8 ``[1, H, W, 3]`` -> detections.

    Args:
        model: a built ``FCOS``.
        label_map: its ``LabelMap``.
        input_size: fixed ``(H, W)``, multiples of 32 recommended (128 keeps every level
            aligned).
        pixel_norm: the pipeline's normalisation.
        max_detections: D (default the model's).
        output_layout: ``"tf_od_api"`` or ``"mediapipe"``: ``detection_classes`` holds the
            contiguous class (0..K-1, -1 on padding rows) instead of the category id and
            ``num_detections`` is float32 (TFLite_Detection_PostProcess's outputs, in the
            same order: boxes, classes, scores, count).

    Returns:
        A ``tf.function`` with input signature ``images`` uint8 ``[1, H, W, 3]`` returning
        the ``OUTPUT_KEYS`` dict with boxes normalised to the input frame.
    """
    if output_layout not in TFLITE_OUTPUT_LAYOUTS:
        raise ValueError(f"`output_layout` must be one of {TFLITE_OUTPUT_LAYOUTS}, got "
                         f"{output_layout!r}.")
    height, width = (int(v) for v in input_size)
    max_detections = int(max_detections or model.max_detections)

    def detect(images):
        inputs = transforms.normalize_image(images, pixel_norm)
        outputs = model(inputs, training=False)
        # Class-offset NMS: NON_MAX_SUPPRESSION_V5, a TFLite builtin (combined NMS is not).
        detections = postprocess_lib.postprocess(
            outputs, (height, width), strides=model.strides,
            location_offset=model.location_offset, score_threshold=model.score_threshold,
            score_threshold_on=model.score_threshold_on, pre_nms_top_k=model.pre_nms_top_k,
            nms_iou_threshold=model.nms_iou_threshold, max_detections=max_detections,
            nms="class_offset")
        outputs = detections_to_outputs(detections, label_map, scale=tf.ones([1]),
                                        frame_size=tf.constant([[height, width]], tf.int32))
        if output_layout == "mediapipe":
            outputs["detection_classes"] = tf.cast(detections["classes"], tf.float32)
            outputs["num_detections"] = tf.cast(outputs["num_detections"], tf.float32)
        return outputs

    return detect, [tf.TensorSpec([1, height, width, 3], tf.uint8, name=IMAGES_INPUT)]


def convert_tflite(model, label_map, *, input_size, pixel_norm, variant="fp32",
                   representative_images=None, max_detections=None, output_layout="tf_od_api"):
    """Converts the detector (with its pre- and post-processing) to a TFLite flatbuffer.

    Args:
        model: a built ``FCOS``.
        label_map: its ``LabelMap``.
        input_size: fixed ``(H, W)`` of the TFLite input.
        pixel_norm: the pipeline's normalisation.
        variant: ``"fp32"``, ``"fp16"`` (float16 weights) or ``"int8"`` (full-integer
            network, float32 post-processing).
        representative_images: for ``"int8"``: iterable of uint8 ``[1, H, W, 3]`` arrays
            (e.g. from :func:`tflite_input`), a few dozen typical images.
        max_detections: D (default the model's).
        output_layout: see :func:`tflite_detection_function`.

    Returns:
        The flatbuffer as ``bytes``; checked to hold builtin operators only.
    """
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"`variant` must be one of {TFLITE_VARIANTS}, got {variant!r}.")
    if variant == "int8" and representative_images is None:
        raise ValueError("`representative_images` is required for the int8 variant.")
    fn, signature = tflite_detection_function(model, label_map, input_size, pixel_norm,
                                              max_detections, output_layout)
    with tempfile.TemporaryDirectory() as scratch:
        # ExportArchive -> SavedModel -> converter: the path that freezes Keras 3 variables.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", fn, input_signature=signature)
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
        if variant == "int8":
            flatbuffer = _quantize_int8(scratch, flatbuffer, representative_images,
                                        network_scopes=(model.backbone.name, model.fpn.name,
                                                        model.head.name))
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
    from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=import-outside-toplevel

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
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    # The debugger is TFLite's public entry point for selective quantization. TOPK_V2 has an
    # int8 kernel that would requantize its (denylisted) input: excluded by type too.
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([x] for x in images[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=float_nodes, denylisted_ops=["TOPK_V2"]))
    return debugger.get_nondebug_quantized_model()


def tflite_operators(flatbuffer):
    """Names of the operator codes of a TFLite model (builtin names, or custom codes).

    Args:
        flatbuffer: the model's ``bytes``.

    Returns:
        list of str, e.g. ``["CONV_2D", ..., "NON_MAX_SUPPRESSION_V5"]``; a custom operator
        appears under its custom code (``"FlexTopKV2"``, ``"TFLite_Detection_PostProcess"``).
    """
    from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=import-outside-toplevel

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin_names = {value: name for name, value in vars(schema.BuiltinOperator).items()
                     if not name.startswith("_")}
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


def check_builtin_only(flatbuffer):
    """Raises ``ValueError`` naming any Flex (SELECT_TF_OPS) or other custom operator."""
    custom = [name for name in tflite_operators(flatbuffer)
              if name.startswith("Flex") or name != name.upper()]
    if custom:
        raise ValueError(f"The TFLite model needs non-builtin operators {custom}; edge "
                         f"runtimes without the Flex delegate cannot run it.")


def tflite_interpreter(model_path_or_bytes, num_threads=None):
    """A LiteRT interpreter (``ai_edge_litert``) with its tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    if isinstance(model_path_or_bytes, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model_path_or_bytes),
                                  num_threads=num_threads)
    else:
        interpreter = Interpreter(model_path=str(model_path_or_bytes), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(interpreter, image, input_size, serving):
    """Detections of one image through a TFLite model, mapped to the original image.

    Args:
        interpreter: from :func:`tflite_interpreter`.
        image: uint8 ``[H0, W0, 3]`` RGB.
        input_size: ``(H, W)`` of the model.
        serving: :class:`ServingConfig` of the model's preprocessing.

    Returns:
        numpy dict of ``OUTPUT_KEYS`` for a batch of one, with ``detection_boxes``
        normalised to the original image (as the SavedModel's).
    """
    inputs, scale = tflite_input(image, input_size, serving)
    runner = interpreter.get_signature_runner()
    outputs = runner(**{IMAGES_INPUT: inputs})
    height, width = np.asarray(image).shape[:2]
    # Input-frame normalised -> input pixels -> original pixels -> original normalised.
    factor = np.array([input_size[0] / height, input_size[1] / width] * 2,
                      np.float32) / np.float32(scale)
    boxes = np.clip(outputs["detection_boxes"] * factor, 0.0, 1.0)
    valid = outputs["detection_classes"] >= 0
    outputs["detection_boxes"] = np.where(valid[..., None], boxes, 0.0).astype(np.float32)
    return outputs
