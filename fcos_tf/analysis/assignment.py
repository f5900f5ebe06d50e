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
  >= 0.5 (``"iou_0.5"``), or with low-quality matches: also when its best anchor has IoU
  >= 0.4 (``"low_quality_0.4"``, Detectron's RetinaNet) or any overlap
  (``"low_quality_all"``).
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


def _anchor_half_sizes():
    """float32 ``[9, 2]``: ``(w / 2, h / 2)`` of the 9 anchor shapes per unit stride."""
    half_sizes = []
    for scale in ANCHOR_SCALES:
        for ratio in ANCHOR_RATIOS:
            # Area (4 * stride * scale)^2, h / w = ratio.
            half_sizes.append((2.0 * scale / math.sqrt(ratio), 2.0 * scale * math.sqrt(ratio)))
    return tf.constant(half_sizes, tf.float32)


def _axis_overlap(centres, half, lo, hi):
    """float32 ``[n, 9, M]``: overlap along one axis of anchors centred at ``centres [n]``
    with half-sides ``half [9]`` and the boxes' sides ``lo, hi [M]``."""
    centres = centres[:, None, None]
    half = half[None, :, None]
    return tf.nn.relu(
        tf.minimum(centres + half, hi[None, None, :])
        - tf.maximum(centres - half, lo[None, None, :])
    )


def anchor_recall(boxes, image_size):
    """Which boxes RetinaNet's anchor assignment recalls under each of :data:`ANCHOR_RULES`.

    Anchors of one shape lie on a grid, so their intersection with a box is the product of an
    x overlap and a y overlap: the best IoU of a box over a level's anchors of one shape comes
    from the largest x overlap times the largest y overlap, without forming all anchors.
    IoU >= 0.5 needs anchor and box areas within a factor 2, so the ``[h, w, 9, M']`` IoU of a
    level (for each anchor's highest-IoU box) is formed for those boxes only. A box's
    low-quality match is its own best anchor (Detectron hands an anchor that is the best of
    two boxes to its higher-IoU box; here it counts for both).

    Args:
        boxes: float32 ``[M, 4]`` xyxy pixels of the network input (valid boxes only).
        image_size: int32 ``[2]`` (or python ints) padded input size the anchors are laid on.

    Returns:
        bool ``[3, M]``, rows in the order of :data:`ANCHOR_RULES`.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    num_boxes = tf.shape(boxes)[0]
    x0, y0, x1, y1 = tf.unstack(boxes, axis=1)
    box_area = (x1 - x0) * (y1 - y0)  # [M]
    half_unit = _anchor_half_sizes()
    best = tf.fill([num_boxes], -1.0)
    matched = tf.zeros([num_boxes], tf.bool)
    locations, _ = loc_lib.compute_locations(image_size, ANCHOR_STRIDES)
    grids = loc_lib.split_per_level(locations, image_size, ANCHOR_STRIDES)
    sizes = loc_lib.feature_map_sizes(image_size, ANCHOR_STRIDES)
    for stride, grid, (_, width) in zip(ANCHOR_STRIDES, grids, sizes):
        xs, ys = grid[:width, 0], grid[::width, 1]  # [w], [h]
        half = half_unit * float(stride)  # [9, 2]
        anchor_area = 4.0 * half[:, 0] * half[:, 1]  # [9]
        ox = _axis_overlap(xs, half[:, 0], x0, x1)  # [w, 9, M]
        oy = _axis_overlap(ys, half[:, 1], y0, y1)  # [h, 9, M]
        # Two extra rows keep the maxima defined on an empty grid.
        largest = tf.reduce_max(tf.concat([ox, tf.zeros_like(ox[:1])], 0), 0) * tf.reduce_max(
            tf.concat([oy, tf.zeros_like(oy[:1])], 0), 0
        )  # [9, M]
        level_best = largest / (anchor_area[:, None] + box_area[None, :] - largest)
        best = tf.maximum(best, tf.reduce_max(level_best, axis=0))

        band = (box_area >= 0.5 * tf.reduce_min(anchor_area)) & (
            box_area <= 2.0 * tf.reduce_max(anchor_area)
        )
        rows = tf.cast(tf.where(band)[:, 0], tf.int32)  # [M']
        ox_band, oy_band = tf.gather(ox, rows, axis=2), tf.gather(oy, rows, axis=2)
        inter = oy_band[:, None] * ox_band[None]  # [h, w, 9, M']
        iou = inter / (anchor_area[:, None] + tf.gather(box_area, rows)[None, :] - inter)
        iou = tf.reshape(iou, [-1, tf.shape(rows)[0]])  # [A_l, M']
        padded = tf.concat([iou, tf.fill([tf.shape(iou)[0], 1], -1.0)], axis=1)
        anchor_box = tf.gather(
            tf.concat([rows, [-1]], 0), tf.cast(tf.argmax(padded, axis=1), tf.int32)
        )
        positive = tf.reduce_max(padded, axis=1) >= 0.5
        matched |= _count_per_box(tf.where(positive, anchor_box, -1), num_boxes) > 0
    return tf.stack([matched, matched | (best >= 0.4), matched | (best > 0.0)])


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
          without center sampling and size ranges (the last two for the boxes without
          positives only, 0 for the others);
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
    recalled = tf.reduce_sum(positives, axis=0) > 0
    # The relaxed rules only matter for the boxes without positives (few): run them on those.
    missed = tf.cast(tf.where(~recalled)[:, 0], tf.int32)
    missed_boxes, missed_classes = tf.gather(boxes, missed), tf.gather(classes, missed)

    def relaxed_count(**relaxed):
        masks = target_lib.candidate_masks(
            missed_boxes, missed_classes, padded_size, **{**settings, **relaxed}
        )
        return tf.scatter_nd(missed[:, None], _any_level(masks), [num_boxes])

    no_center = relaxed_count(size_ranges=size_ranges, center_sampling_radius=0.0)
    inside = relaxed_count(
        size_ranges=[(-1.0, math.inf)] * len(strides), center_sampling_radius=0.0
    )
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
