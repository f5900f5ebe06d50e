"""Running an exported TFLite detector: client-side preprocessing and the LiteRT interpreter.

The TFLite graph (:mod:`fcos_tf.serving.tflite`) takes a fixed-size uint8 image; this client
resizes and pads a picture to it (:func:`tflite_input`), runs the interpreter and maps the
boxes back to the original image (:func:`run_tflite`), so that its outputs compare with the
SavedModel's.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from fcos_tf.data import transforms
from fcos_tf.serving.graph import IMAGES_INPUT, ServingConfig


def _padding_colour(pixel_norm):
    """uint8 RGB colour that normalises to (about) zero: the pipeline's padding value."""
    if pixel_norm in transforms.BGR_MEANS:
        mean = transforms.BGR_MEANS[pixel_norm][::-1]
    elif pixel_norm == "inception":
        mean = (127.5,) * 3
    else:
        mean = tuple(255.0 * m for m in transforms.TORCHVISION_RGB_MEAN)
    return np.round(np.asarray(mean)).astype(np.uint8)


def tflite_input(
    image: np.ndarray, input_size: Sequence[int], serving: ServingConfig
) -> tuple[np.ndarray, float]:
    """Client-side preprocessing of the TFLite model: resize and pad to the fixed input.

    The image is resized as in the SavedModel (short side, long-side cap) and further
    shrunk if needed to fit ``input_size``, then padded bottom/right with the mean colour.

    Args:
        image: uint8 ``[H0, W0, 3]`` RGB.
        input_size: ``(H, W)`` of the TFLite model.
        serving: :class:`ServingConfig` (resize sizes and pixel normalisation).

    Returns:
        ``(inputs, valid_size)``: uint8 numpy ``[1, H, W, 3]`` and the ``(h, w)`` of the
        resized image inside it (before padding).
    """
    image = tf.convert_to_tensor(image, tf.uint8)
    original = tf.shape(image)[:2]
    scale, new_size = transforms.resize_size(
        original, serving.eval_short_side, serving.max_size, rounding=serving.resize_rounding
    )
    fit = tf.reduce_min(tf.constant(input_size, tf.float32) / tf.cast(original, tf.float32))
    if float(scale) > float(fit):
        scale = fit
        new_size = tf.maximum(
            tf.cast(tf.floor(tf.cast(original, tf.float32) * scale + 0.5), tf.int32), 1
        )
        new_size = tf.minimum(new_size, tf.constant(input_size, tf.int32))
    resized = transforms.resize_image(image, new_size)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()
    canvas = np.empty((input_size[0], input_size[1], 3), np.uint8)
    canvas[:] = _padding_colour(serving.pixel_norm)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas[None], tuple(int(v) for v in new_size.numpy())


def tflite_interpreter(model_path_or_bytes: str | bytes, num_threads: int | None = None):
    """A LiteRT interpreter (``ai_edge_litert``) with its tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_path_or_bytes, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model_path_or_bytes), num_threads=num_threads)
    else:
        interpreter = Interpreter(model_path=str(model_path_or_bytes), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(
    interpreter, image: np.ndarray, input_size: Sequence[int], serving: ServingConfig
) -> dict[str, np.ndarray]:
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
    inputs, valid_size = tflite_input(image, input_size, serving)
    runner = interpreter.get_signature_runner()
    outputs = runner(**{IMAGES_INPUT: inputs})
    height, width = np.asarray(image).shape[:2]
    # Input-frame normalised -> input pixels -> original pixels (one ratio per axis, as the
    # SavedModel maps them) -> original normalised.
    factor = np.array(
        [input_size[0] / valid_size[0], input_size[1] / valid_size[1]] * 2, np.float32
    )
    boxes = np.clip(outputs["detection_boxes"] * factor, 0.0, 1.0)
    valid = outputs["detection_classes"] >= 0
    outputs["detection_boxes"] = np.where(valid[..., None], boxes, 0.0).astype(np.float32)
    return outputs
