r"""The serving graph: in-graph preprocessing, the model and the mapping to the outputs.

What the exported SavedModel computes (docs/design.md §4), in the TF Model Garden's split the
counterpart of ``official/vision/serving/detection.py``; writing it to disk is
:mod:`fcos_tf.serving.saved_model`, the edge graph :mod:`fcos_tf.serving.tflite`. Two
signatures share the weights:

- ``serving_default``: ``images`` uint8 ``[B, H0, W0, 3]`` RGB pixels 0..255, every image of
  a request of the same size. A float array is not refused by the signature: TF Serving and
  a loaded signature function called with numpy convert it to uint8, so pixels in 0..1
  become 0 and 1 (an almost black image). Send ``np.round(x * 255).astype(np.uint8)``;
  :class:`fcos_tf.serving.detector.Detector` refuses anything but uint8;
- ``serving_image_bytes``: ``image_bytes`` string ``[B]``, JPEG/PNG/GIF/BMP files of any
  sizes. TF Serving's REST API decodes ``{"b64": "..."}`` for inputs whose name ends in
  ``_bytes``.

Both run the evaluation preprocessing in the graph (short-side resize under a long-side cap,
pixel normalisation, zero padding to a multiple of 32; exactly the validation pipeline's
:func:`fcos_tf.data.pipeline.preprocess_example`), the model, the post-processing of
:func:`fcos_tf.ops.postprocess.postprocess` (combined NMS) and the mapping back to each original
image, and return the TF Object Detection API's outputs::

    detection_boxes    float32 [B, D, 4]  [ymin, xmin, ymax, xmax] normalised to the original image
    detection_scores   float32 [B, D]     descending; 0 on padding rows
    detection_classes  float32 [B, D]     dataset category ids (label map); -1 on padding rows
    num_detections     int32   [B]        valid rows per image

``detection_classes`` is float32 like the TF OD API's, so existing clients work unchanged;
category ids are small integers, exact in float32. Images of different sizes in one
``image_bytes`` request are each resized with their own scale and padded to the largest.
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from fcos_tf.data import transforms
from fcos_tf.data.label_map import LabelMap
from fcos_tf.ops import boxes as box_ops

IMAGES_SIGNATURE = "serving_default"
IMAGE_BYTES_SIGNATURE = "serving_image_bytes"
IMAGES_INPUT = "images"
IMAGE_BYTES_INPUT = "image_bytes"
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# File magic numbers of the formats tf.io.decode_image reads.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Preprocessing inside the exported graphs (the validation pipeline's).

    The field names are those of ``config.pipeline`` (and of
    :class:`fcos_tf.data.pipeline.PipelineConfig`) that they mirror.

    Attributes:
        eval_short_side: target short side of the resize.
        max_size: cap on the long side after resizing (None: no cap).
        size_divisibility: padded sides are multiples of it (32: the largest backbone stride).
        pixel_norm: one of :data:`fcos_tf.data.transforms.PIXEL_NORMS` (must match the
            training pipeline).
        resize_rounding: ``"round"`` or ``"floor"`` (torchvision), see
            :func:`fcos_tf.data.transforms.resize_size`.
    """

    eval_short_side: int = 800
    max_size: int | None = 1333
    size_divisibility: int = 32
    pixel_norm: str = "caffe"
    resize_rounding: str = "round"

    def __post_init__(self):
        transforms.check_preprocessing(
            eval_short_side=self.eval_short_side,
            max_size=self.max_size,
            size_divisibility=self.size_divisibility,
            pixel_norm=self.pixel_norm,
            resize_rounding=self.resize_rounding,
        )


# --------------------------------------------------------------------------------------------
# In-graph preprocessing and output mapping
# --------------------------------------------------------------------------------------------


def _check_batch(batch_size, name):
    return tf.debugging.assert_positive(
        batch_size, message=f"`{name}`: empty batch; send at least one image"
    )


def preprocess_images(
    images: tf.Tensor, serving: ServingConfig
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Resize, normalise and pad a batch of same-size images, as the validation pipeline does.

    Args:
        images: uint8 ``[B, H0, W0, 3]`` RGB.
        serving: :class:`ServingConfig`.

    Returns:
        ``(inputs, meta)``: float32 ``[B, Hp, Wp, 3]`` network inputs and a dict of
        ``"valid_size"`` int32 ``[B, 2]`` (resized size before padding) and
        ``"original_size"`` int32 ``[B, 2]``.
    """
    # Runtime shape check: TF Serving feeds tensors without checking them against the
    # signature; a wrong rank or channel count fails here, naming the input.
    images = tf.ensure_shape(images, [None, None, None, 3], name=IMAGES_INPUT)
    shape = tf.shape(images)
    checks = [
        _check_batch(shape[0], IMAGES_INPUT),
        tf.debugging.assert_positive(
            shape[1:3], message=f"`{IMAGES_INPUT}`: height and width must be positive"
        ),
    ]
    with tf.control_dependencies(checks):
        original_size = tf.identity(shape[1:3])
    _, new_size = transforms.resize_size(
        original_size, serving.eval_short_side, serving.max_size, rounding=serving.resize_rounding
    )
    same = tf.reduce_all(tf.equal(original_size, new_size))
    resized = tf.cond(
        same,
        lambda: tf.cast(images, tf.float32),
        lambda: tf.image.resize(images, new_size, method="bilinear"),
    )
    inputs = transforms.normalize_image(resized, serving.pixel_norm)
    pad = transforms.padded_size(new_size, serving.size_divisibility) - new_size
    inputs = tf.pad(inputs, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])
    batch = shape[0]
    meta = {
        "valid_size": tf.tile(new_size[None], [batch, 1]),
        "original_size": tf.tile(original_size[None], [batch, 1]),
    }
    return inputs, meta


def _check_image_bytes(image_bytes):
    known = tf.zeros_like(image_bytes, dtype=tf.bool)
    for magic in _IMAGE_MAGIC:
        prefix = tf.strings.substr(image_bytes, 0, len(magic))
        known = tf.logical_or(known, tf.equal(prefix, magic))
    return tf.debugging.Assert(
        tf.reduce_all(known),
        [
            f"`{IMAGE_BYTES_INPUT}`: these elements are not JPEG, PNG, GIF or BMP files:",
            tf.where(tf.logical_not(known))[:, 0],
        ],
        summarize=16,
    )


def preprocess_image_bytes(
    image_bytes: tf.Tensor, serving: ServingConfig
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Decode, resize (each with its own scale), normalise and pad encoded images.

    Args:
        image_bytes: string ``[B]``, JPEG/PNG/GIF/BMP files (any sizes).
        serving: :class:`ServingConfig`.

    Returns:
        ``(inputs, meta)`` as :func:`preprocess_images`; the images are padded at the bottom
        and right to the largest resized size of the batch, rounded up to ``size_divisibility``.
    """
    image_bytes = tf.ensure_shape(image_bytes, [None], name=IMAGE_BYTES_INPUT)
    checks = [
        _check_batch(tf.size(image_bytes), IMAGE_BYTES_INPUT),
        _check_image_bytes(image_bytes),
    ]
    with tf.control_dependencies(checks):
        image_bytes = tf.identity(image_bytes)

    def one(encoded):
        image = transforms.decode_image(encoded)
        original_size = tf.shape(image)[:2]
        _, new_size = transforms.resize_size(
            original_size,
            serving.eval_short_side,
            serving.max_size,
            rounding=serving.resize_rounding,
        )
        image = transforms.normalize_image(
            transforms.resize_image(image, new_size), serving.pixel_norm
        )
        return tf.RaggedTensor.from_tensor(image, ragged_rank=1), new_size, original_size

    images, valid_size, original_size = tf.map_fn(
        tf.autograph.experimental.do_not_convert(one),
        image_bytes,
        fn_output_signature=(
            tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    inputs = images.to_tensor()  # [B, max h, max w, 3], zero (= mean colour) padding
    size = tf.shape(inputs)[1:3]
    pad = transforms.padded_size(size, serving.size_divisibility) - size
    inputs = tf.ensure_shape(
        tf.pad(inputs, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]]), [None, None, None, 3]
    )
    return inputs, {"valid_size": valid_size, "original_size": original_size}


def detections_to_outputs(
    detections: dict[str, tf.Tensor],
    label_map: LabelMap,
    *,
    valid_size: tf.Tensor,
    frame_size: tf.Tensor,
) -> dict[str, tf.Tensor]:
    """Network-pixel detections -> the exported outputs (TF OD API names and formats).

    Args:
        detections: dict of :func:`fcos_tf.ops.postprocess.postprocess` (``boxes`` xyxy network
            pixels, ``scores``, ``classes`` with -1 padding, ``num_detections``).
        label_map: ``LabelMap`` giving the category ids.
        valid_size: int ``[B, 2]`` ``(H, W)`` of the resized image inside the network input
            (before padding): the frame as the network saw it.
        frame_size: int ``[B, 2]`` ``(H, W)`` of the frame the boxes are normalised to (the
            original image; for TFLite the model input itself). Boxes are mapped from
            ``valid_size`` to it with one ratio per axis (exact for any resize rounding).

    Returns:
        dict of ``OUTPUT_KEYS``; boxes clipped to the frame, zero on padding rows.
    """
    frame = tf.cast(frame_size, tf.float32)
    height, width = frame[:, 0:1], frame[:, 1:2]  # [B, 1]
    boxes = transforms.rescale_boxes(detections["boxes"], valid_size, frame_size)
    # xyxy frame pixels -> normalised [ymin, xmin, ymax, xmax] inside the frame.
    boxes = box_ops.xyxy_to_yxyx(box_ops.scale_xyxy(boxes, 1.0 / width, 1.0 / height))
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)  # [B, D, 4]
    classes = detections["classes"]
    valid = classes >= 0
    category = tf.cast(label_map.classes_to_category_ids(classes), tf.float32)
    return {
        "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
        "detection_scores": tf.where(valid, detections["scores"], 0.0),
        "detection_classes": category,
        "num_detections": tf.cast(detections["num_detections"], tf.int32),
    }


def serving_functions(
    model: keras.Model, label_map: LabelMap, serving: ServingConfig
) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
    """The two signature functions (not yet traced) of the SavedModel.

    Returns:
        dict ``{signature name: (python function, input signature)}``.
    """
    if label_map.num_classes != model.num_classes:
        raise ValueError(
            f"`label_map` has {label_map.num_classes} classes but the model "
            f"predicts {model.num_classes}."
        )

    def detect(inputs, meta):
        detections = model.predict_step((inputs, {"image_size": meta["valid_size"]}))
        return detections_to_outputs(
            detections, label_map, valid_size=meta["valid_size"], frame_size=meta["original_size"]
        )

    def serve_images(images):
        # uint8 [B, H0, W0, 3] 0..255; callers' floats in 0..1 are cast to 0/1 before this
        # runs (see the module docstring): fcos_tf.serving.detector.Detector refuses them.
        return detect(*preprocess_images(images, serving))

    def serve_image_bytes(image_bytes):
        return detect(*preprocess_image_bytes(image_bytes, serving))

    return {
        IMAGES_SIGNATURE: (
            serve_images,
            [tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)],
        ),
        IMAGE_BYTES_SIGNATURE: (
            serve_image_bytes,
            [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)],
        ),
    }
