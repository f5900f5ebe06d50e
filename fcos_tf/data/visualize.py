"""Pictures of what the network is asked to learn, and of what it detects (PIL).

- :func:`render_targets` draws one example of a pipeline batch: the ground-truth boxes and,
  for every pyramid level, its positive locations as dots in the level's colour (the legend in
  the corner), so that assignment, size ranges and center sampling can be checked by eye.
- :func:`save_batch` writes every image of a batch as PNG.
- :func:`draw_detections` draws boxes with class names and scores on any RGB image; training
  and prediction scripts reuse it for detection pictures.

From the command line, one training batch as PNG files: ``fcos-draw-targets``
(:mod:`fcos_tf.draw_targets`).
"""

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from fcos_tf.data import transforms
from fcos_tf.ops import locations as loc

# One colour per level P3..P7 (and more if there are more levels).
LEVEL_COLOURS = (
    (255, 60, 60),
    (255, 200, 0),
    (60, 220, 60),
    (0, 180, 255),
    (200, 80, 255),
    (255, 255, 255),
)
_BOX_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)


def _class_colour(cls):
    return _BOX_COLOURS[int(cls) % len(_BOX_COLOURS)]


def _as_uint8_rgb(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"`image` must be uint8 RGB [H, W, 3], got {image.dtype}.")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`image` must have shape [H, W, 3], got {image.shape}.")
    return image


# Two detections whose boxes overlap this much are taken for one object in a picture.
SAME_OBJECT_IOU = 0.5


def best_class_per_box(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = SAME_OBJECT_IOU
) -> np.ndarray:
    """Indices of the detections to draw: of those that box one object, the best scoring.

    Class-aware NMS keeps one box per class, so an object the model is unsure about comes
    out as several nearly identical boxes of different classes. A picture shows it once,
    with its best class; the detections themselves (JSON, metrics) keep every one.

    Args:
        boxes: float ``[D, 4]`` xyxy pixels.
        scores: float ``[D]``.
        iou_threshold: IoU above which two boxes are the same object.

    Returns:
        int ``[N]`` indices into ``boxes``, best score first.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    kept: list[int] = []
    for i in order:
        if kept:
            other = boxes[kept]
            width = np.minimum(other[:, 2], boxes[i, 2]) - np.maximum(other[:, 0], boxes[i, 0])
            height = np.minimum(other[:, 3], boxes[i, 3]) - np.maximum(other[:, 1], boxes[i, 1])
            inter = np.clip(width, 0, None) * np.clip(height, 0, None)
            iou = inter / np.maximum(areas[kept] + areas[i] - inter, 1e-9)
            if np.any(iou > iou_threshold):
                continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    *,
    score_threshold: float = 0.0,
    width: int = 2,
) -> np.ndarray:
    """Draws boxes with ``name score`` captions.

    With ``scores``, each object is drawn once: of detections whose boxes overlap by more
    than :data:`SAME_OBJECT_IOU`, the best scoring (:func:`best_class_per_box`).

    Args:
        image: uint8 ``[H, W, 3]`` RGB (NumPy array or tensor).
        boxes: float ``[D, 4]`` xyxy pixels of ``image``.
        classes: int ``[D]`` contiguous classes; rows with ``-1`` (padding) are skipped.
        scores: optional float ``[D]``; rows below ``score_threshold`` are skipped.
        names: optional sequence of class names (e.g. ``LabelMap.names``), indexed by class.
        score_threshold: minimum score drawn.
        width: line width in pixels.

    Returns:
        A new uint8 ``[H, W, 3]`` NumPy array.
    """
    picture = Image.fromarray(_as_uint8_rgb(image).copy())
    draw = ImageDraw.Draw(picture)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"`boxes` ({len(boxes)}) and `classes` ({len(classes)}) differ in length.")
    scores = None if scores is None else np.asarray(scores, np.float32).reshape(-1)
    drawn = np.flatnonzero(classes >= 0)
    if scores is not None:
        drawn = drawn[scores[drawn] >= score_threshold]
        drawn = drawn[best_class_per_box(boxes[drawn], scores[drawn])]
    for i in drawn:
        box, cls = boxes[i], classes[i]
        colour = _class_colour(cls)
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        caption = names[int(cls)] if names is not None else str(int(cls))
        if scores is not None:
            caption = f"{caption} {scores[i]:.2f}"
        text_w = 6 * len(caption) + 2
        text_y = y1 - 11 if y1 >= 11 else y1
        draw.rectangle([x1, text_y, x1 + text_w, text_y + 10], fill=colour)
        draw.text((x1 + 1, text_y - 1), caption, fill=(0, 0, 0))
    return np.asarray(picture)


def render_targets(
    image: np.ndarray | tf.Tensor,
    labels: dict,
    index: int = 0,
    *,
    pixel_norm: str = "caffe",
    names: Sequence[str] | None = None,
    strides: Sequence[int] = loc.STRIDES,
    location_offset: float = loc.DEFAULT_LOCATION_OFFSET,
    location_grid: str = loc.DEFAULT_LOCATION_GRID,
) -> np.ndarray:
    """Draws the ground truth and the positive locations of one example of a batch.

    Args:
        image: float32 ``[Hp, Wp, 3]`` normalised network input (one image of the batch).
        labels: the pipeline's labels dict for the batch (NumPy arrays or tensors).
        index: which example of the batch ``labels`` describes.
        pixel_norm: the normalisation the pipeline used (to recover the colours).
        names: optional class names.
        strides: the pipeline's strides.
        location_offset: the pipeline's location offset.
        location_grid: the pipeline's location grid rule.

    Returns:
        uint8 ``[Hp, Wp, 3]`` NumPy array. Dots: positive locations, coloured by level (legend
        top-left); dot radius grows with the level. Boxes: ground truth (crowd boxes dashed
        grey-ish, they get no targets). The padding stays visible as the flat region right and
        below the valid image.
    """
    picture = transforms.denormalize_image(image, pixel_norm).numpy()
    height, width = picture.shape[:2]
    boxes = np.asarray(labels["boxes"][index])
    classes = np.asarray(labels["classes"][index])
    crowd = np.asarray(labels.get("is_crowd", np.zeros_like(classes, bool))[index]).astype(bool)
    picture = draw_detections(picture, boxes[~crowd], classes[~crowd], names=names)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    for box in boxes[crowd & (classes >= 0)]:
        draw.rectangle([float(v) for v in box], outline=(160, 160, 160), width=1)

    points, point_strides = loc.compute_locations(
        (height, width), strides, location_offset, location_grid=location_grid
    )
    points, point_strides = points.numpy(), point_strides.numpy()
    positive = np.asarray(labels["class_targets"][index]) >= 0
    for level, stride in enumerate(strides):
        colour = LEVEL_COLOURS[level % len(LEVEL_COLOURS)]
        radius = 2 + level
        for x, y in points[positive & (point_strides == stride)]:
            draw.ellipse(
                [x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0)
            )
    for level, stride in enumerate(strides):  # legend
        colour = LEVEL_COLOURS[level % len(LEVEL_COLOURS)]
        count = int(np.sum(positive & (point_strides == stride)))
        draw.rectangle([2, 2 + 11 * level, 70, 12 + 11 * level], fill=(0, 0, 0))
        name = f"P{int(stride).bit_length() - 1}"  # stride 2^l -> P_l
        draw.text((4, 1 + 11 * level), f"{name}: {count}", fill=colour)
    return np.asarray(canvas)


def save_batch(
    images: np.ndarray | tf.Tensor,
    labels: dict,
    output_dir: str,
    *,
    pixel_norm: str = "caffe",
    names: Sequence[str] | None = None,
    strides: Sequence[int] = loc.STRIDES,
    location_offset: float = loc.DEFAULT_LOCATION_OFFSET,
    location_grid: str = loc.DEFAULT_LOCATION_GRID,
) -> list[str]:
    """Renders every example of a pipeline batch with :func:`render_targets` to PNG files.

    Args:
        images: float32 ``[B, Hp, Wp, 3]`` from the pipeline.
        labels: the batch's labels dict.
        output_dir: folder (created) receiving ``<image_id>.png``.
        pixel_norm, names, strides, location_offset, location_grid: as in :func:`render_targets`.

    Returns:
        List of the written paths.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    image_ids = np.asarray(labels["image_id"]) if "image_id" in labels else None
    for i in range(int(np.shape(images)[0])):
        picture = render_targets(
            images[i],
            labels,
            i,
            pixel_norm=pixel_norm,
            names=names,
            strides=strides,
            location_offset=location_offset,
            location_grid=location_grid,
        )
        name = f"{int(image_ids[i])}.png" if image_ids is not None else f"{i}.png"
        path = os.path.join(output_dir, name)
        Image.fromarray(picture).save(path)
        paths.append(path)
    return paths
