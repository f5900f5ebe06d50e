"""Inference post-processing: raw head outputs -> padded per-image detections (Sec. 3, 4.1).

Steps (docs/design.md §3 items 17-18), all batched and shape-polymorphic in the image size:

1. score each (location, class) pair: ``sqrt(sigmoid(cls) * sigmoid(ctr))`` (``sigmoid(cls)``
   without a centerness branch); candidates have ``sigmoid(cls) > score_threshold`` (or,
   torchvision-style, final score > threshold);
2. per pyramid level keep the ``pre_nms_top_k`` candidates with the highest
   ``sigmoid(cls) * sigmoid(ctr)``; one location can contribute several classes;
3. decode ``[x - l, y - t, x + r, y + b]`` (``box_ltrb`` is already in input pixels) at the
   locations of the model's grid and clip to the image (torchvision's box coder does the same:
   its anchor centres are the ``"torchvision"`` grid, its distances scale with the anchor
   size, the nominal stride);
4. class-aware NMS at IoU 0.6, ``max_detections`` per image, padded.

NMS is ``tf.image.combined_non_max_suppression`` with a single box per candidate (q = 1) and a
``[B, N, K]`` score matrix that is non-zero only in the candidate's own class column. The
op runs NMS per class and merges the classes per image in one kernel for the whole batch,
which is what the SavedModel export uses; per-class box copies (q = K) would multiply the
box tensor by K (80 x 5000 boxes per image) for nothing. The alternative ``nms="class_offset"``
shifts each box by ``class * (max coordinate + 1)`` so that boxes of different classes never
overlap and runs the single-class NMS-V5 op per image (a TFLite builtin op, for edge export).
Neither NMS op has an XLA kernel: never call this inside an XLA-compiled function.

``box_plus_one=True`` runs maskrcnn-benchmark's pixel-index box convention (the
tianzhi0549/FCOS checkpoints): boxes are clipped to ``[0, W - 1] x [0, H - 1]`` and NMS measures
widths as ``x2 - x1 + 1``. The second is exact with the ordinary IoU of the NMS ops on boxes
whose ``x2``, ``y2`` are moved by +1 (intersection ``min(x2 + 1) - max(x1)`` and area
``x2 + 1 - x1``), moved back after NMS.

``clip_after_nms=True`` runs detectron2's order (the AdelaiDet checkpoints): NMS on the
unclipped boxes, then clipping to the image and dropping the boxes left with no width or
height.
"""

from collections.abc import Sequence

import tensorflow as tf

from fcos_tf.ops import boxes as box_ops
from fcos_tf.ops.locations import (
    DEFAULT_LOCATION_GRID,
    DEFAULT_LOCATION_OFFSET,
    STRIDES,
    check_location_grid,
    compute_locations,
    feature_map_sizes,
)

SCORE_THRESHOLD_ON = ("class", "final")
NMS_KINDS = ("combined", "class_offset")


def postprocess(
    outputs: dict[str, tf.Tensor],
    image_size: Sequence[int] | tf.Tensor,
    *,
    strides: Sequence[int] = STRIDES,
    location_offset: float = DEFAULT_LOCATION_OFFSET,
    location_grid: str = DEFAULT_LOCATION_GRID,
    score_threshold: float = 0.05,
    score_threshold_on: str = "class",
    pre_nms_top_k: int = 1000,
    nms_iou_threshold: float = 0.6,
    max_detections: int = 100,
    valid_size: tf.Tensor | None = None,
    nms: str = "combined",
    box_plus_one: bool = False,
    clip_after_nms: bool = False,
) -> dict[str, tf.Tensor]:
    """Turns ``FCOS.call`` outputs into at most ``max_detections`` boxes per image.

    Args:
        outputs: dict with ``"class_logits"`` float ``[B, P, K]``, ``"box_ltrb"`` float
            ``[B, P, 4]`` distances in input pixels, and optionally ``"centerness_logits"``
            float ``[B, P]``. P runs over the levels of ``strides`` in the order of
            :func:`fcos_tf.ops.locations.compute_locations`.
        image_size: ``(H, W)`` of the (padded) network input the outputs were computed on:
            python ints or an int32 tensor ``[2]``.
        strides: stride of each level (as in the model).
        location_offset: location offset of the model (0.5 paper, 0 torchvision).
        location_grid: location spacing of the model, ``"paper"`` or ``"torchvision"`` (see
            :mod:`fcos_tf.ops.locations`; the target assignment must have used the same).
        score_threshold: candidate threshold.
        score_threshold_on: ``"class"`` thresholds ``sigmoid(cls)`` (paper, authors' repo);
            ``"final"`` thresholds the final score (torchvision).
        pre_nms_top_k: candidates kept per level before NMS.
        nms_iou_threshold: IoU above which a box of the same class is suppressed.
        max_detections: D, detections kept per image.
        valid_size: optional int32 ``[B, 2]`` ``(H, W)`` of each image's valid (unpadded)
            region; boxes are clipped to it instead of to ``image_size``.
        nms: ``"combined"`` (default, batched combined NMS) or ``"class_offset"`` (NMS-V5 per
            image with per-class coordinate offsets; same result).
        box_plus_one: clip to ``size - 1`` and measure NMS overlaps with the ``+ 1`` pixel
            convention (see the module docstring); default False (continuous coordinates).
        clip_after_nms: NMS on unclipped boxes, then clip and drop empty boxes (detectron2);
            default False (clip before NMS).

    Returns:
        dict:
            ``"boxes"``: float32 ``[B, D, 4]`` ``xyxy`` input pixels, clipped; zeros on padding.
            ``"scores"``: float32 ``[B, D]``, descending per image; 0 on padding.
            ``"classes"``: int32 ``[B, D]`` in ``0..K-1``; -1 on padding rows.
            ``"num_detections"``: int32 ``[B]``, number of valid rows.
    """
    for key in ("class_logits", "box_ltrb"):
        if key not in outputs:
            raise ValueError(f"`outputs` is missing {key!r}; it has {sorted(outputs)}.")
    if score_threshold_on not in SCORE_THRESHOLD_ON:
        raise ValueError(
            f"`score_threshold_on` must be one of {SCORE_THRESHOLD_ON}, got {score_threshold_on!r}."
        )
    check_location_grid(location_grid)
    if nms not in NMS_KINDS:
        raise ValueError(f"`nms` must be one of {NMS_KINDS}, got {nms!r}.")
    if pre_nms_top_k < 1 or max_detections < 1:
        raise ValueError(
            f"`pre_nms_top_k` and `max_detections` must be >= 1, got "
            f"{pre_nms_top_k} and {max_detections}."
        )

    class_logits = tf.cast(outputs["class_logits"], tf.float32)
    box_ltrb = tf.cast(outputs["box_ltrb"], tf.float32)
    num_classes = class_logits.shape[-1]
    if num_classes is None:
        raise ValueError("`outputs['class_logits']` needs a static number of classes K.")
    batch = tf.shape(class_logits)[0]
    level_sizes = [h * w for h, w in feature_map_sizes(image_size, strides)]
    if isinstance(sum(level_sizes), int) and class_logits.shape[1] is not None:
        if class_logits.shape[1] != sum(level_sizes):
            raise ValueError(
                f"`outputs` hold {class_logits.shape[1]} locations, but an input of "
                f"{tuple(image_size)} with strides {tuple(strides)} has "
                f"{sum(level_sizes)}."
            )

    cls_prob = tf.sigmoid(class_logits)  # [B, P, K]
    if outputs.get("centerness_logits") is not None:
        ctr_prob = tf.sigmoid(tf.cast(outputs["centerness_logits"], tf.float32))[..., None]
        ranking = cls_prob * ctr_prob
        scores = tf.sqrt(ranking)
    else:
        ranking = scores = cls_prob
    candidate = (cls_prob if score_threshold_on == "class" else scores) > score_threshold
    # Non-candidates rank below every candidate (scores are >= 0) and are dropped below.
    ranking = tf.where(candidate, ranking, -1.0)

    locations, _ = compute_locations(image_size, strides, location_offset, location_grid)  # [P, 2]
    boxes = box_ops.ltrb_to_xyxy(locations[None], box_ltrb)  # [B, P, 4]
    # Clip to the last pixel index instead of the image edge with box_plus_one.
    last = 1.0 if box_plus_one else 0.0
    if valid_size is not None:
        valid_size = tf.cast(valid_size, tf.float32)
        clip_size = (valid_size[:, 0:1] - last, valid_size[:, 1:2] - last)
    else:
        image_size_f = tf.cast(image_size, tf.float32)
        clip_size = (image_size_f[0] - last, image_size_f[1] - last)
    if not clip_after_nms:
        boxes = box_ops.clip_xyxy(boxes, clip_size)

    sel_boxes, sel_scores, sel_classes = [], [], []
    for lvl_ranking, lvl_scores, lvl_boxes, size in zip(
        tf.split(ranking, level_sizes, axis=1),
        tf.split(scores, level_sizes, axis=1),
        tf.split(boxes, level_sizes, axis=1),
        level_sizes,
    ):
        flat_ranking = tf.reshape(lvl_ranking, [batch, -1])  # [B, n * K], location-major
        top_k = tf.minimum(pre_nms_top_k, size * num_classes)
        top_ranking, top_index = tf.math.top_k(flat_ranking, k=top_k)  # [B, k]
        top_scores = tf.gather(tf.reshape(lvl_scores, [batch, -1]), top_index, batch_dims=1)
        sel_scores.append(tf.where(top_ranking >= 0.0, top_scores, 0.0))
        sel_boxes.append(tf.gather(lvl_boxes, top_index // num_classes, batch_dims=1))
        sel_classes.append(top_index % num_classes)
    sel_boxes = tf.concat(sel_boxes, axis=1)  # [B, N, 4]
    sel_scores = tf.concat(sel_scores, axis=1)  # [B, N]
    sel_classes = tf.concat(sel_classes, axis=1)  # [B, N]
    plus_one = tf.constant([0.0, 0.0, last, last])
    sel_boxes = sel_boxes + plus_one

    if nms == "combined":
        det_boxes, det_scores, det_classes, num = _combined_nms(
            sel_boxes, sel_scores, sel_classes, num_classes, nms_iou_threshold, max_detections
        )
    else:
        det_boxes, det_scores, det_classes, num = _class_offset_nms(
            sel_boxes, sel_scores, sel_classes, nms_iou_threshold, max_detections
        )
    valid = tf.range(max_detections)[None, :] < num[:, None]  # [B, D]
    if clip_after_nms:
        det_boxes, det_scores, det_classes, num, valid = _clip_and_drop_empty(
            det_boxes - plus_one, det_scores, det_classes, valid, clip_size
        )
        det_boxes = det_boxes + plus_one
    return {
        "boxes": tf.where(valid[..., None], det_boxes - plus_one, 0.0),
        "scores": tf.where(valid, det_scores, 0.0),
        "classes": tf.where(valid, det_classes, -1),
        "num_detections": num,
    }


def _clip_and_drop_empty(boxes, scores, classes, valid, clip_size):
    """Clips the kept boxes, drops those with no area, keeps the rest in score order."""
    boxes = box_ops.clip_xyxy(boxes, clip_size)
    nonempty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]) & valid
    # Rows stay sorted by score; the dropped ones move to the end (stable sort on the flag).
    order = tf.argsort(tf.cast(~nonempty, tf.int32), axis=1, stable=True)
    boxes = tf.gather(boxes, order, batch_dims=1)
    scores = tf.gather(scores, order, batch_dims=1)
    classes = tf.gather(classes, order, batch_dims=1)
    num = tf.reduce_sum(tf.cast(nonempty, tf.int32), axis=1)
    valid = tf.range(tf.shape(valid)[1])[None, :] < num[:, None]
    return boxes, scores, classes, num, valid


def _combined_nms(boxes, scores, classes, num_classes, iou_threshold, max_detections):
    # Each candidate's score sits in its own class column; the op keeps scores > 0 only, so
    # non-candidates (score 0) and the other columns never enter NMS.
    score_matrix = tf.one_hot(classes, num_classes, dtype=tf.float32) * scores[..., None]
    result = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        score_matrix,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=0.0,
        pad_per_class=False,
        clip_boxes=False,
    )
    return (
        result.nmsed_boxes,
        result.nmsed_scores,
        tf.cast(result.nmsed_classes, tf.int32),
        result.valid_detections,
    )


def _class_offset_nms(boxes, scores, classes, iou_threshold, max_detections):
    # An offset of (coordinate range + 1) per class id separates the classes completely
    # (torchvision's batched_nms trick); boxes may extend left of 0 when not yet clipped.
    offset = tf.reduce_max(boxes) - tf.minimum(tf.reduce_min(boxes), 0.0) + 1.0
    shifted = boxes + tf.cast(classes, tf.float32)[..., None] * offset

    def one_image(args):
        img_shifted, img_boxes, img_scores, img_classes = args
        keep, kept_scores = tf.image.non_max_suppression_with_scores(
            img_shifted,
            img_scores,
            max_detections,
            iou_threshold=iou_threshold,
            score_threshold=0.0,
        )
        num = tf.shape(keep)[0]
        pad = max_detections - num
        return (
            tf.pad(tf.gather(img_boxes, keep), [[0, pad], [0, 0]]),
            tf.pad(kept_scores, [[0, pad]]),
            tf.pad(tf.gather(img_classes, keep), [[0, pad]]),
            num,
        )

    if boxes.shape[0] == 1:
        # Static batch of one (the TFLite graph): no map_fn, whose WHILE loop the TFLite
        # converter cannot freeze variables around and int8 quantization crashes on.
        outputs = one_image((shifted[0], boxes[0], scores[0], tf.cast(classes[0], tf.int32)))
        det_boxes, det_scores, det_classes, num = (tf.expand_dims(x, 0) for x in outputs)
        return (
            tf.reshape(det_boxes, [1, max_detections, 4]),
            tf.reshape(det_scores, [1, max_detections]),
            tf.reshape(det_classes, [1, max_detections]),
            tf.reshape(num, [1]),
        )
    det_boxes, det_scores, det_classes, num = tf.map_fn(
        tf.autograph.experimental.do_not_convert(one_image),
        (shifted, boxes, scores, tf.cast(classes, tf.int32)),
        fn_output_signature=(
            tf.TensorSpec([max_detections, 4], tf.float32),
            tf.TensorSpec([max_detections], tf.float32),
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    return det_boxes, det_scores, det_classes, num
