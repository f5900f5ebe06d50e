"""A built-in synthetic detection dataset: coloured shapes on cluttered, noisy backgrounds.

It needs no download, is deterministic by seed (image ``i`` of seed ``s`` is always the same,
whatever order or parallelism reads it) and is hard enough to be a useful smoke test:

- six shape classes (:data:`CLASS_NAMES`); the colour is drawn independently of the class, so
  the network has to learn shapes, not colours;
- object sizes log-uniform from a few pixels to nearly the whole image, so every pyramid level
  whose size range fits in the image gets positives;
- objects overlap and occlude each other (drawn in order, each still at least half visible);
- backgrounds are colour gradients with noise and distractor clutter (lines, dots, arcs) drawn
  in the same colours as the objects.

Every shape touches all four sides of its ground-truth box, so the boxes are tight.
:func:`write_coco` writes a dataset as COCO JSON + JPEG files to exercise the COCO reader.
"""

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap

CLASS_NAMES = ("rectangle", "ellipse", "triangle", "cross", "ring", "star")
NUM_CLASSES = len(CLASS_NAMES)
# Saturated colours shared by objects and background clutter.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (250, 250, 250),
    (20, 20, 20),
)


def label_map():
    """The synthetic dataset's :class:`LabelMap` (category ids 1..6, COCO-like)."""
    return LabelMap.from_names(CLASS_NAMES, first_id=1)


def _size_pair(image_size):
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = (int(v) for v in image_size)
    if height < 16 or width < 16:
        raise ValueError(f"`image_size` must be at least 16x16, got {image_size}.")
    return height, width


def _shape_polygon(kind, box, rng):
    """Vertices of a polygonal shape filling ``box`` = (x1, y1, x2, y2) exactly."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if kind == "triangle":
        apex = rng.uniform(0.0, 1.0)
        direction = rng.integers(4)
        if direction == 0:  # apex up
            pts = [(x1 + apex * w, y1), (x2, y2), (x1, y2)]
        elif direction == 1:  # apex down
            pts = [(x1, y1), (x2, y1), (x1 + apex * w, y2)]
        elif direction == 2:  # apex left
            pts = [(x1, y1 + apex * h), (x2, y1), (x2, y2)]
        else:  # apex right
            pts = [(x1, y1), (x2, y1 + apex * h), (x1, y2)]
        return pts
    if kind == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        xs, ys = radii * np.cos(angles), radii * np.sin(angles)
        xs = (xs - xs.min()) / (xs.max() - xs.min())
        ys = (ys - ys.min()) / (ys.max() - ys.min())
        return [(x1 + x * w, y1 + y * h) for x, y in zip(xs, ys)]
    raise ValueError(kind)


def _draw_shape(draw, kind, box, fill, rng):
    """Draws ``kind`` filling ``box`` (PIL pixel-corner coordinates) with colour ``fill``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    # PIL's rectangle/ellipse include their end pixel, hence the -1 on the far sides.
    if kind == "rectangle":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif kind == "ellipse":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif kind == "ring":
        thickness = max(2, int(round(min(w, h) * rng.uniform(0.15, 0.3))))
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], outline=fill, width=thickness)
    elif kind == "cross":
        tx = max(1.0, w * rng.uniform(0.25, 0.4))
        ty = max(1.0, h * rng.uniform(0.25, 0.4))
        cx = x1 + (w - tx) * rng.uniform(0.3, 0.7)
        cy = y1 + (h - ty) * rng.uniform(0.3, 0.7)
        draw.rectangle([x1, cy, x2 - 1, cy + ty - 1], fill=fill)
        draw.rectangle([cx, y1, cx + tx - 1, y2 - 1], fill=fill)
    else:
        draw.polygon(_shape_polygon(kind, box, rng), fill=fill)


def _background(rng, height, width):
    """Gradient + clutter + noise, uint8 ``[H, W, 3]``, and the PIL image to draw on."""
    c0 = rng.uniform(0, 255, 3)
    c1 = rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    base = c0 + t[..., None] * (c1 - c0)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    # Distractors: thin lines, small dots, open arcs — none is a full closed shape of a class.
    scale = min(height, width)
    for _ in range(rng.integers(3, 12)):
        colour = PALETTE[rng.integers(len(PALETTE))]
        kind = rng.integers(3)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if kind == 0:
            draw.line(
                [x, y, rng.uniform(0, width), rng.uniform(0, height)],
                fill=colour,
                width=int(rng.integers(1, 3)),
            )
        elif kind == 1:
            r = rng.uniform(1, max(2.0, scale * 0.01))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            r = rng.uniform(scale * 0.05, scale * 0.3)
            start = rng.uniform(0, 360)
            draw.arc(
                [x - r, y - r, x + r, y + r],
                start,
                start + rng.uniform(30, 150),
                fill=colour,
                width=int(rng.integers(1, 3)),
            )
    return image, draw


def generate_example(
    index,
    *,
    image_size=256,
    seed=0,
    num_objects=(1, 8),
    min_object_size=6,
    max_object_fraction=0.95,
    max_occlusion=0.5,
    noise_std=(0.0, 12.0),
):
    """Draws synthetic image ``index`` of the dataset ``seed`` (pure NumPy/PIL).

    Args:
        index: python int >= 0.
        image_size: ``(H, W)`` or an int for a square image.
        seed: dataset seed.
        num_objects: ``(min, max)`` objects attempted per image (inclusive).
        min_object_size: smallest object side in pixels.
        max_object_fraction: largest object side as a fraction of the image side.
        max_occlusion: an object is not placed if it would hide more than this fraction of an
            earlier object's visible pixels.
        noise_std: ``(min, max)`` of the per-image Gaussian pixel noise std.

    Returns:
        dict of NumPy arrays: ``"image"`` uint8 ``[H, W, 3]``, ``"boxes"`` float32 ``[N, 4]`` xyxy
        pixels, ``"classes"`` int32 ``[N]`` in 0..5, ``"is_crowd"`` bool ``[N]`` (all False),
        ``"image_id"`` int64 (= ``index``).
    """
    height, width = _size_pair(image_size)
    if index < 0:
        raise ValueError(f"`index` must be >= 0, got {index}.")
    rng = np.random.default_rng([int(seed), int(index)])
    image, draw = _background(rng, height, width)

    max_side = max_object_fraction * min(height, width)
    min_side = min(float(min_object_size), max_side)
    visible = []  # bool masks [H, W] of the placed objects' visible pixels
    visible_counts = []
    boxes, classes = [], []
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        for _attempt in range(10):
            # Log-uniform size: as many tiny objects as huge ones (every pyramid level).
            side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            w = int(round(min(side * math.sqrt(aspect), width)))
            h = int(round(min(side / math.sqrt(aspect), height)))
            w, h = max(w, 2), max(h, 2)
            x1 = int(rng.integers(0, width - w + 1))
            y1 = int(rng.integers(0, height - h + 1))
            kind_index = int(rng.integers(NUM_CLASSES))
            colour = tuple(
                int(np.clip(c + rng.normal(0, 15), 0, 255))
                for c in PALETTE[rng.integers(len(PALETTE))]
            )
            mask_image = Image.new("L", (width, height), 0)
            shape_rng_state = rng.bit_generator.state
            _draw_shape(
                ImageDraw.Draw(mask_image),
                CLASS_NAMES[kind_index],
                (x1, y1, x1 + w, y1 + h),
                255,
                rng,
            )
            window = (slice(y1, y1 + h), slice(x1, x1 + w))
            mask = np.asarray(mask_image)[window] > 0
            if not mask.any():
                continue
            # Only the new object's window can lose pixels: check and update it alone.
            if any(
                (m[window] & mask).sum() > max_occlusion * count
                for m, count in zip(visible, visible_counts)
            ):
                continue
            # Redraw with the same random draws onto the image itself.
            rng.bit_generator.state = shape_rng_state
            _draw_shape(draw, CLASS_NAMES[kind_index], (x1, y1, x1 + w, y1 + h), colour, rng)
            for i, m in enumerate(visible):
                visible_counts[i] -= int((m[window] & mask).sum())
                m[window] &= ~mask
            full = np.zeros((height, width), bool)
            full[window] = mask
            visible.append(full)
            visible_counts.append(int(mask.sum()))
            ys, xs = np.nonzero(mask)
            ys, xs = ys + y1, xs + x1
            # Tight box of the drawn pixels, in pixel-corner coordinates.
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            classes.append(kind_index)
            break

    pixels = np.asarray(image, np.float32)
    std = rng.uniform(*noise_std)
    if std > 0:
        pixels = pixels + rng.normal(0.0, std, pixels.shape).astype(np.float32)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return {
        "image": pixels,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, np.int32),
        "is_crowd": np.zeros(len(classes), bool),
        "image_id": np.int64(index),
    }


def synthetic_dataset(
    num_images: int, *, image_size: int | Sequence[int] = 256, seed: int = 0, **kwargs
) -> ReadResult:
    """The synthetic dataset as reader examples.

    Args:
        num_images: number of images (image ids ``0..num_images-1``).
        image_size: ``(H, W)`` or an int for square images.
        seed: dataset seed; the same seed gives the same images.
        **kwargs: forwarded to :func:`generate_example`.

    Returns:
        :class:`~fcos_tf.data.example.ReadResult` whose dataset yields the reader example
        structure. Images are drawn in parallel on the fly; cache the dataset to draw once.
    """
    if num_images < 1:
        raise ValueError(f"`num_images` must be >= 1, got {num_images}.")
    height, width = _size_pair(image_size)

    def draw(index):
        example = generate_example(int(index), image_size=(height, width), seed=seed, **kwargs)
        return (example["image"], example["boxes"], example["classes"], example["is_crowd"])

    def load(index):
        image, boxes, classes, is_crowd = tf.numpy_function(
            draw, [index], (tf.uint8, tf.float32, tf.int32, tf.bool), stateful=False
        )
        return {
            "image": tf.ensure_shape(image, [height, width, 3]),
            "boxes": tf.ensure_shape(boxes, [None, 4]),
            "classes": tf.ensure_shape(classes, [None]),
            "is_crowd": tf.ensure_shape(is_crowd, [None]),
            "image_id": index,
        }

    dataset = tf.data.Dataset.range(num_images).map(
        tf.autograph.experimental.do_not_convert(load),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ReadResult(dataset, label_map(), num_images)


def write_coco(output_dir, num_images, *, image_size=256, seed=0, jpeg_quality=90, **kwargs):
    """Writes the synthetic dataset as COCO JSON + JPEG files.

    Layout: ``<output_dir>/images/<id>.jpg`` and ``<output_dir>/annotations.json`` (category ids
    1..6, ``bbox`` in COCO ``[x, y, w, h]``, ``iscrowd`` 0).

    Args:
        output_dir: folder to create or fill.
        num_images: number of images.
        image_size: ``(H, W)`` or an int.
        seed: dataset seed.
        jpeg_quality: JPEG quality 1..95.
        **kwargs: forwarded to :func:`generate_example`.

    Returns:
        ``(annotation_file, image_dir)``, ready for :func:`fcos_tf.data.coco.read_coco`.
    """
    image_dir = os.path.join(output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    labels = label_map()
    images, annotations = [], []
    for index in range(num_images):
        example = generate_example(index, image_size=image_size, seed=seed, **kwargs)
        file_name = f"{index:06d}.jpg"
        Image.fromarray(example["image"]).save(
            os.path.join(image_dir, file_name), quality=jpeg_quality
        )
        height, width = example["image"].shape[:2]
        images.append({"id": index, "file_name": file_name, "height": height, "width": width})
        for box, cls in zip(example["boxes"].tolist(), example["classes"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": labels.category_id(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    annotation_file = os.path.join(output_dir, "annotations.json")
    with open(annotation_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": labels.to_list()}, f)
    return annotation_file, image_dir
