"""Reader of COCO-format detection data: an annotation JSON plus a folder of images.

Loaded with pycocotools. Category ids map to contiguous classes through a
:class:`~fcos_tf.data.label_map.LabelMap` (by default the annotation file's categories in id
order). ``iscrowd`` boxes are kept in the examples with ``is_crowd`` True: the pipeline drops
them from training and keeps them for evaluation. Images without annotations are kept as
background-only examples.

Bad data is handled at load time: an annotation naming an unknown image id or category id is a
``ValueError``; image files that are missing, empty, or not a complete JPEG/PNG/GIF/BMP are
skipped, and their number is logged. A file that passes these checks but still fails to decode
is skipped by the pipeline (``ignore_errors``, logged by tf.data).
"""

import logging
import os

import numpy as np
import tensorflow as tf

from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap
from fcos_tf.data.transforms import decode_image

logger = logging.getLogger(__name__)


def check_image_file(path):
    """Cheap validity check of an image file (reads only its first and last bytes).

    Args:
        path: file path.

    Returns:
        None when the file looks like a complete JPEG, PNG, GIF or BMP, otherwise a short reason
        (``"missing"``, ``"empty"``, ``"unknown format"``, ``"truncated"``).
    """
    if not tf.io.gfile.exists(path):
        return "missing"
    size = tf.io.gfile.stat(path).length
    if size == 0:
        return "empty"
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 64))
        tail = f.read()
    if head[:3] == b"\xff\xd8\xff":
        # A JPEG ends with the EOI marker, a PNG with its IEND chunk.
        complete = b"\xff\xd9" in tail
    elif head == b"\x89PNG\r\n\x1a\n":
        complete = b"IEND" in tail
    elif head[:4] == b"GIF8" or head[:2] == b"BM":
        return None
    else:
        return "unknown format"
    # Some valid files carry trailing bytes after the end marker: decode those fully once.
    return None if complete or _decodes(path) else "truncated"


def _decodes(path):
    from PIL import Image  # pylint: disable=import-outside-toplevel

    try:
        with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def _validate_annotations(dataset, label_map, annotation_file):
    image_ids = {image["id"] for image in dataset.get("images", [])}
    for annotation in dataset.get("annotations", []):
        if annotation.get("image_id") not in image_ids:
            raise ValueError(
                f"Annotation {annotation.get('id')} in `annotation_file`={annotation_file!r} "
                f"refers to unknown image id {annotation.get('image_id')!r}.")
        try:
            label_map.index_of(annotation.get("category_id"))
        except (KeyError, TypeError):
            raise ValueError(
                f"Annotation {annotation.get('id')} in `annotation_file`={annotation_file!r} "
                f"refers to unknown category id {annotation.get('category_id')!r}; known ids: "
                f"{list(label_map.category_ids)}.") from None
        bbox = annotation.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise ValueError(f"Annotation {annotation.get('id')} in `annotation_file`="
                             f"{annotation_file!r} needs a 4-number `bbox`, got {bbox!r}.")


def read_coco(annotation_file, image_dir, *, label_map=None, decode=True, check_images=True,
              skip_empty=False):
    """Reads a COCO annotation file and its images into a dataset of examples.

    Args:
        annotation_file: path of the COCO JSON (``images``, ``annotations``, ``categories``).
        image_dir: folder holding each image's ``file_name``.
        label_map: optional :class:`LabelMap` to use (e.g. the training set's, for a validation
            set); by default the file's categories sorted by id.
        decode: decode images in the reader (``"image"``); False leaves ``"image_bytes"`` for the
            pipeline to decode in its parallel map (cheaper to cache and shuffle).
        check_images: skip missing/empty/truncated files at load time (reads a few bytes each).
        skip_empty: drop images with no annotation (default: keep them as background).

    Returns:
        :class:`ReadResult`.

    Raises:
        ValueError: an annotation names an unknown image id or category id, or has a bad bbox.
    """
    from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel

    if not tf.io.gfile.exists(annotation_file):
        raise FileNotFoundError(f"`annotation_file` not found: {annotation_file!r}.")
    coco = COCO(annotation_file)
    if label_map is None:
        categories = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
        if not categories:
            raise ValueError(f"`annotation_file`={annotation_file!r} has no categories.")
        label_map = LabelMap(categories)
    _validate_annotations(coco.dataset, label_map, annotation_file)

    paths, image_ids, counts, all_boxes, all_classes, all_crowd = [], [], [], [], [], []
    skipped = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        path = os.path.join(image_dir, info["file_name"])
        annotations = coco.imgToAnns.get(image_id, [])
        if skip_empty and not annotations:
            continue
        if check_images:
            reason = check_image_file(path)
            if reason is not None:
                skipped.append((path, reason))
                continue
        for annotation in annotations:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            all_boxes.append((x, y, x + w, y + h))
            all_classes.append(label_map.index_of(annotation["category_id"]))
            all_crowd.append(bool(annotation.get("iscrowd", 0)))
        paths.append(path)
        image_ids.append(int(image_id))
        counts.append(len(annotations))
    if skipped:
        reasons = {}
        for _, reason in skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        logger.warning("Skipped %d of %d images of %s (%s); first: %s", len(skipped),
                       len(skipped) + len(paths), annotation_file,
                       ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())), skipped[0][0])
    logger.info("Read %d images, %d boxes, %d classes from %s", len(paths), len(all_boxes),
                label_map.num_classes, annotation_file)

    row_lengths = np.asarray(counts, np.int64)
    boxes = tf.RaggedTensor.from_row_lengths(
        np.asarray(all_boxes, np.float32).reshape(-1, 4), row_lengths)
    classes = tf.RaggedTensor.from_row_lengths(np.asarray(all_classes, np.int32), row_lengths)
    is_crowd = tf.RaggedTensor.from_row_lengths(np.asarray(all_crowd, bool), row_lengths)
    dataset = tf.data.Dataset.from_tensor_slices({
        "path": tf.constant(paths, tf.string),
        "boxes": boxes,
        "classes": classes,
        "is_crowd": is_crowd,
        "image_id": tf.constant(image_ids, tf.int64),
    })

    def load(element):
        example = {k: element[k] for k in ("boxes", "classes", "is_crowd", "image_id")}
        data = tf.io.read_file(element["path"])
        if decode:
            example["image"] = decode_image(data)
        else:
            example["image_bytes"] = data
        return example

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if decode:
        dataset = dataset.ignore_errors(log_warning=True)
    return ReadResult(dataset, label_map, len(paths), skipped)
