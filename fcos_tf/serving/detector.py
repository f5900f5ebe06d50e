"""The exported detector as a Python callable: :class:`Detector`.

``Detector.load`` runs an export of ``fcos-export`` (its ``serving_default`` and
``serving_image_bytes`` signatures), ``Detector.from_model`` the same graph traced from a
Keras ``FCOS`` in process; :func:`fcos_tf.core.rundir.load_detector` takes either an export
or a ``fcos-train`` workdir. Inputs the graph would misread (float pixels, wrong shapes) are
refused before they reach it.
"""

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap
from fcos_tf.serving import graph

__all__ = ["Detector", "saved_model_version"]


def saved_model_version(path: str) -> str | None:
    """The SavedModel folder of ``path`` (a version folder, or the newest version of a base
    folder), or None when ``path`` holds no SavedModel."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        name
        for name in (tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else [])
        if name.strip("/").isdigit()
        and tf.io.gfile.exists(os.path.join(path, name.strip("/"), "saved_model.pb"))
    ]
    if versions:
        return os.path.join(path, str(max(int(v.strip("/")) for v in versions)))
    return None


def _check_images(images):
    """Refuses what ``serving_default`` would silently cast to uint8 (see :class:`Detector`)."""
    dtype = tf.as_dtype(images.dtype)
    if dtype != tf.uint8:
        if dtype.is_floating:
            values = np.asarray(images)
            if values.size and np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0:
                raise TypeError(
                    f"`images` are {dtype.name} in 0..1: the signature takes uint8 pixels "
                    f"0..255, and a float array would be cast to 0 and 1 (an almost black "
                    f"image). Send `np.round(images * 255).astype(np.uint8)`."
                )
        raise TypeError(
            f"`images` must be uint8 RGB pixels 0..255, got {dtype.name}; convert "
            f"explicitly (e.g. `np.clip(images, 0, 255).astype(np.uint8)`)."
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"`images` must be uint8 [B, H, W, 3] (RGB, one size per call), got "
            f"shape {list(shape)}."
        )


class Detector:
    """The exported detector as a Python callable, refusing inputs the graph would misread.

    TF Serving, ``tf.make_tensor_proto(..., dtype=tf.uint8)`` and a SavedModel's concrete
    function all convert a float array sent to ``serving_default`` to uint8 without a word:
    pixels in 0..1 become 0 and 1. ``Detector`` checks the dtype first.

    Example::

        detector = Detector.load("/tmp/fcos_serving")   # an export of fcos-export
        outputs = detector(np.asarray(Image.open("photo.jpg").convert("RGB"))[None])
        outputs = detector.detect_image_bytes([open("photo.jpg", "rb").read()])

    Attributes:
        label_map: the ``LabelMap`` (``detection_classes`` are its category ids).
    """

    def __init__(self, images_fn, image_bytes_fn, label_map: LabelMap):
        self._images_fn = images_fn
        self._image_bytes_fn = image_bytes_fn
        self.label_map = label_map

    @classmethod
    def load(cls, path: str) -> "Detector":
        """From an export of ``fcos-export`` (a version folder or its base folder).

        A ``fcos-train`` workdir loads with :func:`fcos_tf.core.rundir.load_detector`.

        Raises:
            FileNotFoundError: when ``path`` holds no SavedModel.
        """
        version = saved_model_version(path)
        if version is None:
            raise FileNotFoundError(
                f"`path` {path!r} holds no SavedModel (saved_model.pb in it or in a "
                f"numbered version folder)."
            )
        loaded = tf.saved_model.load(version)
        images = loaded.signatures[graph.IMAGES_SIGNATURE]
        image_bytes = loaded.signatures[graph.IMAGE_BYTES_SIGNATURE]
        return cls(
            lambda x: images(**{graph.IMAGES_INPUT: x}),
            lambda x: image_bytes(**{graph.IMAGE_BYTES_INPUT: x}),
            LabelMap.load(os.path.join(version, "assets", LABEL_MAP_FILENAME)),
        )

    @classmethod
    def from_model(
        cls, model, label_map: LabelMap, serving_config: graph.ServingConfig
    ) -> "Detector":
        """The serving graph of a Keras ``FCOS`` traced in process (no SavedModel written)."""
        functions = graph.serving_functions(model, label_map, serving_config)
        images_fn, images_signature = functions[graph.IMAGES_SIGNATURE]
        bytes_fn, bytes_signature = functions[graph.IMAGE_BYTES_SIGNATURE]
        return cls(
            tf.function(images_fn, input_signature=images_signature, autograph=False),
            tf.function(bytes_fn, input_signature=bytes_signature, autograph=False),
            label_map,
        )

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``serving_default``: detections of same-size RGB images.

        Args:
            images: uint8 ``[B, H, W, 3]`` RGB pixels 0..255 (numpy or tensor).

        Returns:
            dict of numpy arrays: ``detection_boxes`` float32 ``[B, D, 4]`` normalised
            ``[ymin, xmin, ymax, xmax]``, ``detection_scores`` float32 ``[B, D]``,
            ``detection_classes`` float32 ``[B, D]`` category ids (-1 on padding),
            ``num_detections`` int32 ``[B]``.

        Raises:
            TypeError: for a non-uint8 array (floats in 0..1 are named as such).
            ValueError: for a shape other than ``[B, H, W, 3]``.
        """
        if not hasattr(images, "dtype"):
            images = np.asarray(images)
        _check_images(images)
        return {k: v.numpy() for k, v in self._images_fn(tf.constant(images)).items()}

    def detect_image_bytes(self, image_bytes: Sequence[bytes]) -> dict[str, np.ndarray]:
        """``serving_image_bytes``: detections of JPEG/PNG/GIF/BMP files (any sizes).

        Args:
            image_bytes: the encoded files, ``[B]``.

        Returns:
            The outputs of :meth:`__call__`.
        """
        return {
            k: v.numpy()
            for k, v in self._image_bytes_fn(tf.constant(image_bytes, tf.string)).items()
        }
