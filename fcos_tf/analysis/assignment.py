"""Per-image statistics of the target assignment: the pure computations behind ``fcos-analyze``.

Everything here runs the project's own assignment (:func:`fcos_tf.ops.targets.compute_targets`
and its per-box form :func:`fcos_tf.ops.targets.candidate_masks`) on the boxes of one image at
the recipe's resize, as TensorFlow ops that run inside ``tf.data.Dataset.map``:

* positives per box and level (best possible recall, paper Sec. 4.1.1 and Table 1: a box is
  recalled when at least one location is assigned to it);
* why a box gets none, found by relaxing one rule at a time: no location strictly inside the
  box on any level even without size ranges and center sampling (``"smaller than the level
  spacing"``), none once the size ranges apply (``"between size ranges"``), none once the
  center region applies (``"removed by center sampling"``), candidates but every one taken by
  a smaller box (``"lost to a smaller overlapping box"``);
* ambiguous locations (Table 2): locations that are candidates for several boxes, and for
  boxes of different classes;
* RetinaNet's anchor assignment for comparison (Table 1): 9 anchors per location (scales
  ``2^0, 2^(1/3), 2^(2/3)`` x aspect ratios 0.5, 1, 2) of sizes 32 to 512 on P3-P7, centred on
  the FCOS locations; a box is recalled when it is the highest-IoU box of an anchor with IoU
  >= 0.5, or with Detectron's low-quality matches: every anchor whose IoU with some box equals
  that box's best IoU is positive too (for its own highest-IoU box), counted when that best IoU
  is >= 0.4 (``"low_quality_0.4"``) or > 0 (``"low_quality_all"``).
"""

import math

import numpy as np
import tensorflow as tf

from fcos_tf.data import transforms
from fcos_tf.ops import boxes as box_lib
from fcos_tf.ops import locations as loc_lib
from fcos_tf.ops import targets as target_lib

# Why a box has no positive location, in the order the rules are applied.
REASONS = (
    "smaller than the level spacing",
    "between size ranges",
    "removed by center sampling",
    "lost to a smaller overlapping box",
)
# RetinaNet (Detectron): P3-P7, anchor size 4 x stride, 3 scales x 3 aspect ratios.
ANCHOR_STRIDES = (8, 16, 32, 64, 128)
ANCHOR_SCALES = (1.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))
ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # height / width
ANCHOR_RULES = ("iou_0.5", "low_quality_0.4", "low_quality_all")
# COCO's size buckets, on the box area in original-image pixels.
SIZE_BUCKETS = ("small", "medium", "large")
SMALL_AREA, MEDIUM_AREA = 32.0**2, 96.0**2


def prepare_boxes(
    boxes,
    classes,
    is_crowd,
    original_size,
    *,
    short_side,
    max_size,
    resize_rounding,
    size_divisibility,
):
    """The boxes of one reader example as the evaluation pipeline sees them, without pixels.

    The same resize as :func:`fcos_tf.data.pipeline` (short side, long-side cap, rounding),
    boxes clipped to the resized image; crowd boxes (never assigned) and empty boxes dropped.

    Args:
        boxes: float32 ``[N, 4]`` xyxy original pixels.
        classes: int32 ``[N]``.
        is_crowd: bool ``[N]``.
        original_size: int32 ``[2]`` ``(H0, W0)``.
        short_side, max_size, resize_rounding: the pipeline's resize.
        size_divisibility: the pipeline's padding multiple.

    Returns:
        dict: ``"boxes"`` float32 ``[N', 4]`` resized xyxy, ``"classes"`` int32 ``[N']``,
        ``"rows"`` int32 ``[N']`` (row of each kept box in the example), ``"image_size"`` and
        ``"padded_size"`` int32 ``[2]``.
    """
    original_size = tf.cast(original_size, tf.int32)
    _, image_size = transforms.resize_size(
        original_size, short_side, max_size, rounding=resize_rounding
    )
    resized = box_lib.clip_xyxy(
        transforms.rescale_boxes(boxes, original_size, image_size), image_size
    )
    keep = transforms.valid_box_mask(resized) & ~tf.cast(is_crowd, tf.bool)
    rows = tf.cast(tf.where(keep)[:, 0], tf.int32)
    return {
        "boxes": tf.gather(resized, rows),
        "classes": tf.gather(tf.cast(classes, tf.int32), rows),
        "rows": rows,
        "image_size": image_size,
        "padded_size": transforms.padded_size(image_size, size_divisibility),
    }


def _count_per_box(index, num_boxes):
    """int32 ``[M]``: how often each box index ``0..M-1`` occurs in ``index`` (-1 ignored)."""
    index = tf.where(index < 0, num_boxes, index)
    return tf.math.unsorted_segment_sum(tf.ones_like(index), index, num_boxes + 1)[:num_boxes]


def _any_level(masks):
    """int32 ``[M]``: candidate locations per box over all levels of ``candidate_masks``."""
    return tf.add_n([tf.reduce_sum(tf.cast(mask, tf.int32), axis=0) for mask in masks])


def retinanet_anchors(image_size, strides=ANCHOR_STRIDES, location_offset=0.5):
    """RetinaNet's anchors, ``A = 9 x locations``, as float32 ``[A, 4]`` xyxy pixels.

    Sizes ``4 x stride`` times the scales, aspect ratios ``h / w`` of :data:`ANCHOR_RATIOS`
    with the area kept, centred on :func:`fcos_tf.ops.locations.compute_locations`.
    """
    locations, location_strides = loc_lib.compute_locations(image_size, strides, location_offset)
    half_sizes = []
    for scale in ANCHOR_SCALES:
        for ratio in ANCHOR_RATIOS:
            half_sizes.append((0.5 * scale / math.sqrt(ratio), 0.5 * scale * math.sqrt(ratio)))
    half = tf.constant(half_sizes, tf.float32) * 4.0  # [9, 2] (w/2, h/2) per unit stride
    half = location_strides[:, None, None] * half[None]  # [P, 9, 2]
    centres = locations[:, None, :]  # [P, 1, 2]
    anchors = tf.concat([centres - half, centres + half], axis=-1)  # [P, 9, 4]
    return tf.reshape(anchors, [-1, 4])


def pairwise_iou(boxes_a, boxes_b):
    """float32 ``[A, M]`` IoU of xyxy ``[A, 4]`` and ``[M, 4]`` (0 where the union is 0)."""
    ax0, ay0, ax1, ay1 = tf.unstack(boxes_a[:, None, :], axis=-1)
    bx0, by0, bx1, by1 = tf.unstack(boxes_b[None, :, :], axis=-1)
    inter = tf.maximum(tf.minimum(ax1, bx1) - tf.maximum(ax0, bx0), 0.0) * tf.maximum(
        tf.minimum(ay1, by1) - tf.maximum(ay0, by0), 0.0
    )
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return tf.math.divide_no_nan(inter, union)


def anchor_recall(boxes, image_size):
    """Which boxes RetinaNet's anchor assignment recalls under each of :data:`ANCHOR_RULES`.

    Args:
        boxes: float32 ``[M, 4]`` xyxy pixels of the network input (valid boxes only).
        image_size: int32 ``[2]`` padded input size the anchors are laid on.

    Returns:
        bool ``[3, M]``, rows in the order of :data:`ANCHOR_RULES`.
    """
    num_boxes = tf.shape(boxes)[0]
    anchors = retinanet_anchors(image_size)
    iou = pairwise_iou(anchors, boxes)  # [A, M]
    # With M = 0 the reductions over boxes are empty: -1 means "no box".
    padded = tf.concat([iou, tf.fill([tf.shape(iou)[0], 1], -1.0)], axis=1)  # [A, M + 1]
    anchor_best = tf.reduce_max(padded, axis=1)
    anchor_box = tf.cast(tf.argmax(padded, axis=1), tf.int32)
    box_best = tf.reduce_max(tf.concat([iou, -tf.ones_like(iou[:1])], axis=0), axis=0)[:num_boxes]
    is_box_best = tf.equal(iou, box_best[None, :])  # [A, M]
    rows = []
    for rule in ANCHOR_RULES:
        positive = anchor_best >= 0.5
        if rule != "iou_0.5":
            floor_ok = box_best >= 0.4 if rule == "low_quality_0.4" else box_best > 0.0
            positive |= tf.reduce_any(is_box_best & floor_ok[None, :], axis=1)
        rows.append(_count_per_box(tf.where(positive, anchor_box, -1), num_boxes) > 0)
    return tf.stack(rows)


def image_statistics(
    boxes,
    classes,
    padded_size,
    *,
    strides,
    size_ranges,
    center_sampling_radius,
    location_offset,
    location_grid,
    anchors=True,
):
    """Assignment statistics of one image (TensorFlow ops; runs in ``tf.data``).

    Args:
        boxes: float32 ``[M, 4]`` xyxy pixels of the network input (valid, non-crowd boxes,
            as :func:`prepare_boxes` returns them).
        classes: int32 ``[M]`` 0..K-1.
        padded_size: int32 ``[2]`` (or python ints) ``(Hp, Wp)`` the locations are laid on.
        strides, size_ranges, center_sampling_radius, location_offset, location_grid: the
            recipe's ``config.locations``.
        anchors: also compute RetinaNet's anchor recall (:func:`anchor_recall`).

    Returns:
        dict of tensors:

        * ``"positives"`` int32 ``[L, M]``: locations assigned to each box per level
          (:func:`compute_targets`);
        * ``"candidates"``, ``"candidates_no_center"``, ``"inside"`` int32 ``[M]``: candidate
          locations over all levels with the recipe's rules, without center sampling, and
          without center sampling and size ranges;
        * ``"reason"`` int32 ``[M]``: index into :data:`REASONS` for boxes without positives,
          -1 for the others;
        * ``"ambiguity"`` int32 ``[3]``: locations that are candidates for at least one box,
          for at least two, for at least two of different classes;
        * ``"anchor_recalled"`` bool ``[3, M]`` (only with ``anchors``).
    """
    settings = dict(strides=strides, location_offset=location_offset, location_grid=location_grid)
    num_boxes = tf.shape(boxes)[0]
    matched = target_lib.compute_targets(
        boxes,
        classes,
        padded_size,
        size_ranges=size_ranges,
        center_sampling_radius=center_sampling_radius,
        **settings,
    )["matched_box_index"]
    per_level = loc_lib.split_per_level(matched, padded_size, strides)
    positives = tf.stack([_count_per_box(level, num_boxes) for level in per_level])  # [L, M]

    masks = target_lib.candidate_masks(
        boxes,
        classes,
        padded_size,
        size_ranges=size_ranges,
        center_sampling_radius=center_sampling_radius,
        **settings,
    )
    candidates = _any_level(masks)
    no_center = _any_level(
        target_lib.candidate_masks(
            boxes,
            classes,
            padded_size,
            size_ranges=size_ranges,
            center_sampling_radius=0.0,
            **settings,
        )
    )
    relaxed = [(-1.0, math.inf)] * len(strides)
    inside = _any_level(
        target_lib.candidate_masks(
            boxes,
            classes,
            padded_size,
            size_ranges=relaxed,
            center_sampling_radius=0.0,
            **settings,
        )
    )
    recalled = tf.reduce_sum(positives, axis=0) > 0
    reason = tf.where(
        recalled,
        -1,
        tf.where(
            inside == 0,
            0,
            tf.where(no_center == 0, 1, tf.where(candidates == 0, 2, 3)),
        ),
    )

    mask = tf.concat(masks, axis=0)  # [P, M]
    count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [P]
    class_row = tf.cast(classes, tf.int32)[None, :]

    # One extra column keeps the reductions defined when M = 0.
    def extra(value):
        return tf.fill([tf.shape(mask)[0], 1], value)

    lowest = tf.reduce_min(
        tf.concat([tf.where(mask, class_row, tf.int32.max), extra(tf.int32.max)], 1), 1
    )
    highest = tf.reduce_max(tf.concat([tf.where(mask, class_row, -1), extra(-1)], 1), 1)
    ambiguity = tf.stack(
        [
            tf.reduce_sum(tf.cast(count >= 1, tf.int32)),
            tf.reduce_sum(tf.cast(count >= 2, tf.int32)),
            tf.reduce_sum(tf.cast((count >= 2) & (lowest != highest), tf.int32)),
        ]
    )
    result = {
        "positives": positives,
        "candidates": candidates,
        "candidates_no_center": no_center,
        "inside": inside,
        "reason": reason,
        "ambiguity": ambiguity,
    }
    if anchors:
        result["anchor_recalled"] = anchor_recall(boxes, padded_size)
    return result


def size_bucket(original_boxes):
    """int ``[N]`` COCO size bucket (index into :data:`SIZE_BUCKETS`) of xyxy boxes by area."""
    original_boxes = np.asarray(original_boxes, np.float64).reshape(-1, 4)
    area = (original_boxes[:, 2] - original_boxes[:, 0]) * (
        original_boxes[:, 3] - original_boxes[:, 1]
    )
    return np.where(area < SMALL_AREA, 0, np.where(area < MEDIUM_AREA, 1, 2))
