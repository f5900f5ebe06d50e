"""Image and box transforms of the input pipeline, in pure TensorFlow (usable in tf.data.map).

Every function works on one example. Boxes are float32 ``[N, 4]`` ``xyxy`` pixels of the image
they come with; classes int32 ``[N]``; crowd flags bool ``[N]``. Randomness is stateless: the
callers pass a ``seed`` (int32/int64 ``[2]``) so a pipeline gives the same output for the same
seed whatever its parallelism.
"""

import tensorflow as tf

from fcos_tf.ops import boxes as box_ops

PIXEL_NORMS = ("caffe", "torchvision", "inception", "detectron2", "maskrcnn_benchmark")
# How resize_size rounds the resized sides: Detectron's round-half-up or torchvision's floor.
RESIZE_ROUNDINGS = ("round", "floor")
# docs/design.md §3 item 20. caffe/MSRA weights: BGR, mean subtracted, 0..255 range.
CAFFE_BGR_MEAN = (102.98, 115.95, 122.77)
# The same BGR, 0..255, mean-only normalisation with the exact means of the FCOS authors'
# released checkpoints: detectron2's PIXEL_MEAN (AdelaiDet models) and maskrcnn-benchmark's
# (tianzhi0549/FCOS models, whose fcos_core keeps maskrcnn-benchmark's defaults).
DETECTRON2_BGR_MEAN = (103.530, 116.280, 123.675)
MASKRCNN_BENCHMARK_BGR_MEAN = (102.9801, 115.9465, 122.7717)
# pixel_norm -> BGR mean of the norms that are "BGR minus a mean, std 1".
BGR_MEANS = {
    "caffe": CAFFE_BGR_MEAN,
    "detectron2": DETECTRON2_BGR_MEAN,
    "maskrcnn_benchmark": MASKRCNN_BENCHMARK_BGR_MEAN,
}
# torchvision weights: RGB in [0, 1], ImageNet mean and std.
TORCHVISION_RGB_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_RGB_STD = (0.229, 0.224, 0.225)
# keras.applications MobileNetV2/V3 weights ("tf" mode of their preprocess_input): RGB in [-1, 1].
INCEPTION_SCALE = 1.0 / 127.5


def decode_image(image_bytes):
    """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to RGB.

    Grayscale images are replicated to three channels and the alpha channel of RGBA images
    is dropped.

    Args:
        image_bytes: string scalar, the encoded file.

    Returns:
        uint8 ``[H, W, 3]``.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    return image


def check_preprocessing(
    *, eval_short_side, max_size, size_divisibility, pixel_norm, resize_rounding
) -> None:
    """Checks the resize, padding and normalisation settings that the input pipeline and
    the serving graph share (:class:`fcos_tf.data.pipeline.PipelineConfig`,
    :class:`fcos_tf.serving.graph.ServingConfig`).

    Raises:
        ValueError: naming the argument: ```pixel_norm` must be ...``.
    """
    for name, value in (
        ("eval_short_side", eval_short_side),
        ("size_divisibility", size_divisibility),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0
    ):
        raise ValueError(f"`max_size` must be a positive integer or None, got {max_size!r}")
    if pixel_norm not in PIXEL_NORMS:
        raise ValueError(f"`pixel_norm` must be one of {PIXEL_NORMS}, got {pixel_norm!r}")
    if resize_rounding not in RESIZE_ROUNDINGS:
        raise ValueError(
            f"`resize_rounding` must be one of {RESIZE_ROUNDINGS}, got {resize_rounding!r}"
        )


def resize_size(original_size, short_side, max_size, rounding="round"):
    """Scale and output size of a short-side resize with a long-side cap.

    The image is scaled so that its short side becomes ``short_side``, unless its long side
    would then exceed ``max_size``, in which case the long side becomes ``max_size``
    (Detectron's ResizeShortestEdge).

    Args:
        original_size: int32 ``[2]`` ``(H0, W0)``.
        short_side: scalar, target short side in pixels.
        max_size: scalar or None, maximum long side in pixels.
        rounding: ``"round"`` (default): ``floor(size * scale + 0.5)`` in float32, round half
            up as Detectron does. ``"floor"``: ``floor(size * scale)`` with the scale and the
            product in float64, which is what torchvision's ``GeneralizedRCNNTransform`` gets
            from ``interpolate(scale_factor=scale, recompute_scale_factor=True)`` (Python
            floats): 480 x 640 -> 800 x 1066, where float32 or rounding would give other sizes.

    Returns:
        scale: float32 scalar, the requested factor (resized / original). With ``"floor"`` the
            two axes differ slightly from it: map boxes with :func:`rescale_boxes`.
        new_size: int32 ``[2]`` ``(H, W)``, at least 1 each.
    """
    if rounding not in RESIZE_ROUNDINGS:
        raise ValueError(f"`rounding` must be one of {RESIZE_ROUNDINGS}, got {rounding!r}.")
    dtype = tf.float64 if rounding == "floor" else tf.float32
    size = tf.cast(original_size, dtype)
    short = tf.reduce_min(size)
    long = tf.reduce_max(size)
    scale = tf.cast(short_side, dtype) / short
    if max_size is not None:
        scale = tf.minimum(scale, tf.cast(max_size, dtype) / long)
    if rounding == "floor":
        new_size = tf.floor(size * scale)
    else:
        # floor(x + 0.5): round half up, as Detectron does (tf.round rounds half to even).
        new_size = tf.floor(size * scale + 0.5)
    return tf.cast(scale, tf.float32), tf.maximum(tf.cast(new_size, tf.int32), 1)


def rescale_boxes(boxes, from_size, to_size):
    """Maps ``xyxy`` boxes from an image of ``from_size`` to the same image at ``to_size``.

    Each axis is scaled by its own ratio ``to / from`` (computed in float32, as torchvision's
    ``resize_boxes``), so the mapping is exact for any resize, also one whose rounding made the
    two axes' factors differ (``resize_size(..., rounding="floor")``).

    Args:
        boxes: float32 ``[..., N, 4]`` ``xyxy`` pixels of the ``from_size`` image.
        from_size: int ``[..., 2]`` ``(H, W)`` the boxes are in (leading dims as ``boxes``
            without its last two, or none).
        to_size: int ``[..., 2]`` ``(H, W)`` to map them to.

    Returns:
        float32 ``[..., N, 4]``.
    """
    ratio = tf.cast(to_size, tf.float32) / tf.cast(from_size, tf.float32)  # [..., 2] (y, x)
    factors = tf.stack([ratio[..., 1], ratio[..., 0], ratio[..., 1], ratio[..., 0]], axis=-1)
    return tf.cast(boxes, tf.float32) * factors[..., None, :]


def random_short_side(min_size, max_size, seed):
    """Uniform random integer short side in ``[min_size, max_size]`` (both inclusive).

    Args:
        min_size: python int.
        max_size: python int >= ``min_size``.
        seed: int ``[2]`` stateless seed.

    Returns:
        int32 scalar.
    """
    if max_size < min_size:
        raise ValueError(f"`max_size` ({max_size}) must be >= `min_size` ({min_size}).")
    return tf.random.stateless_uniform(
        [], seed, minval=min_size, maxval=max_size + 1, dtype=tf.int32
    )


def resize_image(image, new_size):
    """Bilinear resize (half-pixel centres) to ``new_size``; float32 output in 0..255.

    Source coordinates are ``(dst + 0.5) * in / out - 0.5`` with no antialiasing, which is
    also PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` once the output size
    is given (torchvision's detection transform).

    Args:
        image: uint8 or float ``[H0, W0, 3]``.
        new_size: int32 ``[2]`` ``(H, W)``.

    Returns:
        float32 ``[H, W, 3]``. An image already of ``new_size`` is only cast.
    """
    new_size = tf.convert_to_tensor(new_size, tf.int32)
    same = tf.reduce_all(tf.shape(image)[:2] == new_size)
    return tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, new_size, method="bilinear"),
    )


def horizontal_flip(image, boxes):
    """Mirrors an image and its boxes left-right.

    Args:
        image: ``[H, W, C]`` any dtype.
        boxes: float32 ``[N, 4]`` ``xyxy`` pixels of ``image``.

    Returns:
        The flipped image and boxes ``[W - x2, y1, W - x1, y2]``.
    """
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    flipped = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
    return tf.reverse(image, axis=[1]), flipped


def random_horizontal_flip(image, boxes, probability, seed):
    """Applies :func:`horizontal_flip` with ``probability`` (stateless ``seed`` int ``[2]``).

    Returns:
        image, boxes, and a bool scalar telling whether the example was flipped.
    """
    flip = tf.random.stateless_uniform([], seed) < probability
    image, boxes = tf.cond(flip, lambda: horizontal_flip(image, boxes), lambda: (image, boxes))
    return image, boxes, flip


def valid_box_mask(boxes):
    """True for boxes with positive width and height (zero-area and inverted boxes are False).

    Args:
        boxes: float32 ``[N, 4]`` ``xyxy``.

    Returns:
        bool ``[N]``.
    """
    return tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])


def clip_and_filter_boxes(boxes, classes, is_crowd, image_size, drop_crowd):
    """Clips boxes to the image, then drops empty (zero-area, inverted, outside) boxes.

    Args:
        boxes: float32 ``[N, 4]`` ``xyxy`` pixels.
        classes: int32 ``[N]``.
        is_crowd: bool ``[N]``.
        image_size: int32 ``[2]`` ``(H, W)`` of the image the boxes belong to.
        drop_crowd: python bool; also drop crowd boxes (training targets never use them).

    Returns:
        boxes, classes, is_crowd of the kept boxes, in input order.
    """
    boxes = box_ops.clip_xyxy(boxes, image_size)
    keep = valid_box_mask(boxes)
    if drop_crowd:
        keep = tf.logical_and(keep, tf.logical_not(is_crowd))
    return (
        tf.boolean_mask(boxes, keep),
        tf.boolean_mask(classes, keep),
        tf.boolean_mask(is_crowd, keep),
    )


def normalize_image(image, pixel_norm="caffe"):
    """Pixel normalisation matching the backbone weights (docs/design.md §3 item 20).

    Args:
        image: uint8 or float ``[..., 3]`` RGB in 0..255.
        pixel_norm: ``"caffe"`` (BGR order, minus ``CAFFE_BGR_MEAN``, 0..255 range, MSRA/Detectron
            weights), ``"detectron2"`` / ``"maskrcnn_benchmark"`` (the same with
            ``DETECTRON2_BGR_MEAN`` / ``MASKRCNN_BENCHMARK_BGR_MEAN``: the FCOS authors' AdelaiDet
            and tianzhi0549/FCOS checkpoints), ``"torchvision"`` (RGB / 255, minus
            ``TORCHVISION_RGB_MEAN``, divided by ``TORCHVISION_RGB_STD``) or ``"inception"``
            (RGB / 127.5 - 1, i.e. [-1, 1]: ``keras.applications`` MobileNetV2/V3 weights).

    Returns:
        float32 ``[..., 3]``.
    """
    kernel, bias = _normalization_affine(pixel_norm)
    image = tf.cast(image, tf.float32)
    # out = image @ kernel + bias as a 1x1 convolution: one fused pass over the pixels (the
    # element-wise reverse + subtract takes about three times longer on CPU).
    shape = tf.shape(image)
    flat = tf.reshape(image, [1, 1, -1, 3])
    out = tf.nn.bias_add(tf.nn.conv2d(flat, kernel[None, None], strides=1, padding="VALID"), bias)
    out = tf.reshape(out, shape)
    out.set_shape(image.shape)
    return out


def _normalization_affine(pixel_norm):
    """``(kernel [3, 3], bias [3])`` with ``normalize_image(x) = x @ kernel + bias``."""
    if pixel_norm in BGR_MEANS:
        reverse = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # RGB -> BGR
        return tf.constant(reverse), -tf.constant(BGR_MEANS[pixel_norm], tf.float32)
    if pixel_norm == "torchvision":
        std = tf.constant(TORCHVISION_RGB_STD, tf.float32)
        mean = tf.constant(TORCHVISION_RGB_MEAN, tf.float32)
        # (x / 255 - mean) / std
        return tf.linalg.diag(1.0 / (255.0 * std)), -mean / std
    if pixel_norm == "inception":
        # x / 127.5 - 1
        return tf.eye(3) * INCEPTION_SCALE, -tf.ones([3])
    raise ValueError(f"`pixel_norm` must be one of {PIXEL_NORMS}, got {pixel_norm!r}.")


def denormalize_image(image, pixel_norm="caffe"):
    """Inverse of :func:`normalize_image`: float32 ``[..., 3]`` -> uint8 RGB (for pictures)."""
    image = tf.convert_to_tensor(image, tf.float32)
    if pixel_norm in BGR_MEANS:
        image = tf.reverse(image + tf.constant(BGR_MEANS[pixel_norm], tf.float32), axis=[-1])
    elif pixel_norm == "torchvision":
        std = tf.constant(TORCHVISION_RGB_STD, tf.float32)
        mean = tf.constant(TORCHVISION_RGB_MEAN, tf.float32)
        image = (image * std + mean) * 255.0
    elif pixel_norm == "inception":
        image = (image + 1.0) / INCEPTION_SCALE
    else:
        raise ValueError(f"`pixel_norm` must be one of {PIXEL_NORMS}, got {pixel_norm!r}.")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def padded_size(image_size, size_divisor=32, pad_to=None):
    """Size after padding: ``image_size`` rounded up to ``size_divisor``, or ``pad_to``.

    Args:
        image_size: int32 ``[2]`` ``(H, W)``.
        size_divisor: python int >= 1.
        pad_to: optional python ``(H, W)``; must be at least ``image_size`` (checked in graph).

    Returns:
        int32 ``[2]``.
    """
    image_size = tf.convert_to_tensor(image_size, tf.int32)
    if pad_to is not None:
        target = tf.constant(pad_to, tf.int32)
        check = tf.debugging.assert_less_equal(
            image_size,
            target,
            message="image larger than `pad_to`: lower the resize sizes or raise `pad_to`",
        )
        with tf.control_dependencies([check]):
            return tf.identity(target)
    return (image_size + size_divisor - 1) // size_divisor * size_divisor


def pad_image(image, size_divisor=32, pad_to=None):
    """Zero-pads an image at the bottom and right (see :func:`padded_size`).

    Args:
        image: ``[H, W, C]``, typically already normalised (so padding is the mean colour).
        size_divisor: python int >= 1.
        pad_to: optional python ``(H, W)``.

    Returns:
        ``[Hp, Wp, C]`` (static shape when ``pad_to`` is given).
    """
    size = tf.shape(image)[:2]
    target = padded_size(size, size_divisor, pad_to)
    pad = target - size
    image = tf.pad(image, [[0, pad[0]], [0, pad[1]], [0, 0]])
    if pad_to is not None:
        image = tf.ensure_shape(image, [pad_to[0], pad_to[1], None])
    return image


def pad_boxes(boxes, classes, is_crowd, max_boxes):
    """Pads (or truncates to the first ``max_boxes``) boxes to a fixed count M.

    Args:
        boxes: float32 ``[N, 4]``; classes int32 ``[N]``; is_crowd bool ``[N]``.
        max_boxes: python int M.

    Returns:
        boxes float32 ``[M, 4]`` (zeros on padding rows), classes int32 ``[M]`` (-1 on padding
        rows), is_crowd bool ``[M]`` (False on padding rows).
    """
    boxes, classes, is_crowd = boxes[:max_boxes], classes[:max_boxes], is_crowd[:max_boxes]
    pad = max_boxes - tf.shape(classes)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    classes = tf.pad(classes, [[0, pad]], constant_values=-1)
    is_crowd = tf.pad(is_crowd, [[0, pad]], constant_values=False)
    return (
        tf.ensure_shape(boxes, [max_boxes, 4]),
        tf.ensure_shape(classes, [max_boxes]),
        tf.ensure_shape(is_crowd, [max_boxes]),
    )
