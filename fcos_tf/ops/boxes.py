"""Box maths in the package convention (``xyxy`` pixels) and converters named by format pair.

IoU and GIoU here are element-wise on pairs of ``ltrb`` distances measured from the same
location: they never build a pairwise N x N matrix (docs/design.md §1: FCOS has ~20k locations).
"""

import tensorflow as tf


def _check_last_dim(boxes, name, size=4):
    boxes = tf.convert_to_tensor(boxes)
    if boxes.shape.rank is not None and boxes.shape.rank < 1:
        raise ValueError(
            f"`{name}` must have rank >= 1 with a last dimension of {size}, "
            f"got shape {boxes.shape}."
        )
    if boxes.shape[-1] is not None and boxes.shape[-1] != size:
        raise ValueError(f"`{name}` must have a last dimension of {size}, got shape {boxes.shape}.")
    if not boxes.dtype.is_floating:
        raise TypeError(f"`{name}` must be a floating-point tensor, got {boxes.dtype.name}.")
    return boxes


def xywh_to_xyxy(boxes):
    """COCO ``[x, y, w, h]`` to ``[x1, y1, x2, y2]`` (same units). Shape ``[..., 4]``."""
    boxes = _check_last_dim(boxes, "boxes")
    x, y, w, h = tf.unstack(boxes, axis=-1)
    return tf.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_xywh(boxes):
    """``[x1, y1, x2, y2]`` to COCO ``[x, y, w, h]`` (same units). Shape ``[..., 4]``."""
    boxes = _check_last_dim(boxes, "boxes")
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def yxyx_to_xyxy(boxes):
    """``[y1, x1, y2, x2]`` to ``[x1, y1, x2, y2]`` (same units). Shape ``[..., 4]``."""
    boxes = _check_last_dim(boxes, "boxes")
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


def xyxy_to_yxyx(boxes):
    """``[x1, y1, x2, y2]`` to ``[y1, x1, y2, x2]`` (same units). Shape ``[..., 4]``."""
    boxes = _check_last_dim(boxes, "boxes")
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


def scale_xyxy(boxes, scale_x, scale_y):
    """Multiplies x coordinates by ``scale_x`` and y coordinates by ``scale_y``.

    Normalised boxes to pixels: ``scale_xyxy(b, W, H)``; pixels to normalised:
    ``scale_xyxy(b, 1 / W, 1 / H)``. Scales broadcast against ``boxes[..., 0]``.
    """
    boxes = _check_last_dim(boxes, "boxes")
    scale_x = tf.cast(scale_x, boxes.dtype)
    scale_y = tf.cast(scale_y, boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y], axis=-1)


def area(boxes):
    """Area of ``xyxy`` boxes ``[..., 4]`` -> ``[...]``; negative extents count as 0."""
    boxes = _check_last_dim(boxes, "boxes")
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.maximum(x2 - x1, 0.0) * tf.maximum(y2 - y1, 0.0)


def clip_xyxy(boxes, image_size):
    """Clips ``xyxy`` pixel boxes ``[..., 4]`` to an image of ``image_size = (H, W)``."""
    boxes = _check_last_dim(boxes, "boxes")
    height = tf.cast(image_size[0], boxes.dtype)
    width = tf.cast(image_size[1], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack(
        [
            tf.clip_by_value(x1, 0.0, width),
            tf.clip_by_value(y1, 0.0, height),
            tf.clip_by_value(x2, 0.0, width),
            tf.clip_by_value(y2, 0.0, height),
        ],
        axis=-1,
    )


def ltrb_to_xyxy(locations, ltrb):
    """Decodes distances to boxes: ``[x - l, y - t, x + r, y + b]``.

    Args:
        locations: float32 ``[..., 2]`` ``(x, y)`` pixels, broadcastable against ``ltrb``.
        ltrb: float32 ``[..., 4]`` distances in pixels.

    Returns:
        float32 ``[..., 4]`` ``xyxy`` pixels.
    """
    ltrb = _check_last_dim(ltrb, "ltrb")
    locations = _check_last_dim(locations, "locations", size=2)
    x, y = locations[..., 0], locations[..., 1]
    left, top, right, bottom = tf.unstack(ltrb, axis=-1)
    return tf.stack([x - left, y - top, x + right, y + bottom], axis=-1)


def xyxy_to_ltrb(locations, boxes):
    """Distances from each location to the sides of a box: ``(x - x1, y - y1, x2 - x, y2 - y)``.

    Args:
        locations: float32 ``[..., 2]`` ``(x, y)`` pixels, broadcastable against ``boxes``.
        boxes: float32 ``[..., 4]`` ``xyxy`` pixels.

    Returns:
        float32 ``[..., 4]``; a location inside the box has all four entries > 0.
    """
    boxes = _check_last_dim(boxes, "boxes")
    locations = _check_last_dim(locations, "locations", size=2)
    x, y = locations[..., 0], locations[..., 1]
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([x - x1, y - y1, x2 - x, y2 - y], axis=-1)


def _ltrb_overlap(pred_ltrb, gt_ltrb):
    pred_ltrb = _check_last_dim(pred_ltrb, "pred_ltrb")
    gt_ltrb = _check_last_dim(gt_ltrb, "gt_ltrb")
    pl, pt, pr, pb = tf.unstack(pred_ltrb, axis=-1)
    gl, gt, gr, gb = tf.unstack(gt_ltrb, axis=-1)
    pred_area = (pl + pr) * (pt + pb)
    gt_area = (gl + gr) * (gt + gb)
    inter = (tf.minimum(pl, gl) + tf.minimum(pr, gr)) * (tf.minimum(pt, gt) + tf.minimum(pb, gb))
    union = pred_area + gt_area - inter
    enclose = (tf.maximum(pl, gl) + tf.maximum(pr, gr)) * (tf.maximum(pt, gt) + tf.maximum(pb, gb))
    return inter, union, enclose


def iou_ltrb(pred_ltrb, gt_ltrb, eps=1e-7):
    """Element-wise IoU of two boxes given as non-negative distances from one location.

    Args:
        pred_ltrb: float ``[..., 4]`` predicted ``(l, t, r, b)`` >= 0.
        gt_ltrb: float ``[..., 4]`` target ``(l, t, r, b)`` > 0, same shape.
        eps: added to the union.

    Returns:
        float ``[...]`` IoU in [0, 1].
    """
    inter, union, _ = _ltrb_overlap(pred_ltrb, gt_ltrb)
    return inter / (union + eps)


def giou_ltrb(pred_ltrb, gt_ltrb, eps=1e-7):
    """Element-wise generalised IoU (Rezatofighi et al. 2019) of ``ltrb`` pairs, in [-1, 1].

    Both boxes contain the location, so the enclosing box is the element-wise max of the
    distances. Shapes as :func:`iou_ltrb`.
    """
    inter, union, enclose = _ltrb_overlap(pred_ltrb, gt_ltrb)
    iou = inter / (union + eps)
    return iou - (enclose - union) / (enclose + eps)
