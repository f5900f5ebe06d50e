"""Reader of COCO-format detection data: an annotation JSON plus a folder of images.

Category ids map to contiguous classes through a :class:`~fcos_tf.data.label_map.LabelMap`
(by default the annotation file's categories in id order). ``iscrowd`` boxes are kept in the
examples with ``is_crowd`` True: the pipeline drops them from training and keeps them for
evaluation. Images without annotations are kept as background-only examples.

Bad data is handled at load time. A :class:`~fcos_tf.data.errors.DatasetError` names the file
and the entry for: an annotation file that is not complete JSON (with the position), two
image entries with the same id, an annotation naming an unknown image id or category id, and
a split with no usable image at all. Image files that are missing, empty, of an unknown
format, truncated (no end marker) or corrupt (JPEG marker segments before the first scan not
well formed) are skipped, and their number is logged with the reasons; so are the files that
pass these checks but fail to decode before the first one that decodes (so a split whose
files all fail to decode is an error, not an empty dataset). ``check_images="decode"``
decodes every file once at load time, so every undecodable file is skipped and counted; with
the default cheap check a rare undecodable file left in the dataset is skipped by the
pipeline each epoch (see :func:`~fcos_tf.data.pipeline.make_pipeline`).
"""

import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap
from fcos_tf.data.transforms import decode_image

logger = logging.getLogger(__name__)

# JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Bytes read at once from the start of a file; longer JPEG headers (EXIF, ICC) are walked
# with seeks past their segments.
_HEAD_BYTES = 4096


def check_image_file(path):
    """Cheap validity check of an image file (reads its header and last bytes, no decoding).

    Args:
        path: file path.

    Returns:
        None when the file looks like a complete JPEG, PNG, GIF or BMP, otherwise a short reason:
        ``"missing"``, ``"empty"``, ``"unknown format"``, ``"truncated"`` (no end marker and
        not decodable) or ``"corrupt"`` (JPEG marker segments before the first scan, or the
        PNG header chunk, not well formed).
    """
    if not tf.io.gfile.exists(path):
        return "missing"
    size = tf.io.gfile.stat(path).length
    if size == 0:
        return "empty"
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        # A JPEG ends with the EOI marker, a PNG with its IEND chunk.
        if head[:3] == b"\xff\xd8\xff":
            problem = _jpeg_header_problem(f, head, size)
            if problem:
                return problem
            end_marker = b"\xff\xd9"
        elif head[:8] == b"\x89PNG\r\n\x1a\n":
            if head[8:16] != b"\x00\x00\x00\x0dIHDR":
                return "corrupt"
            end_marker = b"IEND"
        elif head[:4] == b"GIF8" or head[:2] == b"BM":
            return None
        else:
            return "unknown format"
        f.seek(max(0, size - 64))
        tail = f.read()
    # Some valid files carry trailing bytes after the end marker: decode those fully once.
    return None if end_marker in tail or _decodes(path) else "truncated"


def _jpeg_header_problem(f, head, size):
    """None when the marker segments from SOI to the first SOS are well formed, else a reason.

    Walks the segments (2-byte marker, 2-byte big-endian length) and checks that a frame
    header (SOF, with a non-zero width and 1 to 4 components) comes before the first scan:
    ``"truncated"`` when the file ends inside them, ``"corrupt"`` when they are not well
    formed (e.g. zeroed or overwritten). The entropy-coded data after SOS is not looked at.
    """

    def read_at(position, count):
        if position + count <= len(head):
            return head[position : position + count]
        f.seek(position)
        return f.read(count)

    position, has_frame = 2, False
    while True:
        marker = read_at(position, 4)
        if position + 2 > size:
            return "truncated"
        if marker[0] != 0xFF:
            return "corrupt"
        kind = marker[1]
        if kind == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if kind == 0xDA:  # start of scan: the entropy-coded data follows
            return None if has_frame else "corrupt"
        if kind == 0x01:  # TEM: a marker without a length
            position += 2
            continue
        if kind in (0x00, 0xD8, 0xD9) or 0xD0 <= kind <= 0xD7:
            return "corrupt"
        length = int.from_bytes(marker[2:4], "big") if len(marker) == 4 else size
        if position + 2 + length > size:
            return "truncated"
        if length < 2:
            return "corrupt"
        if kind in _JPEG_SOF:
            frame = read_at(position + 4, 6)  # precision, height, width, components
            components = frame[5] if len(frame) == 6 else 0
            if (
                not 1 <= components <= 4
                or length != 8 + 3 * components
                or frame[3:5] == b"\x00\x00"
            ):
                return "corrupt"
            has_frame = True
        position += 2 + length


def _decodes(path):
    from PIL import Image

    try:
        with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def _tf_decodes(path):
    """Whether the pipeline's decoder (TensorFlow's) accepts the file."""
    try:
        decode_image(tf.io.read_file(path))
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, tf.errors.NotFoundError):
        return False


def _undecodable(paths, num_parallel_calls=tf.data.AUTOTUNE):
    """Indices of the files TensorFlow's decoder refuses, decoding all of them in parallel."""
    indices = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), tf.constant(paths, tf.string))
    )
    decoded = indices.map(
        tf.autograph.experimental.do_not_convert(
            lambda index, path: (index, tf.shape(decode_image(tf.io.read_file(path))))
        ),
        num_parallel_calls=num_parallel_calls,
        deterministic=False,
    )
    # Only the indices of the files that decode come out.
    good = {int(index) for index, _ in decoded.ignore_errors().as_numpy_iterator()}
    return [i for i in range(len(paths)) if i not in good]


def _load_json(annotation_file):
    if not tf.io.gfile.exists(annotation_file):
        raise FileNotFoundError(f"`annotation_file` not found: {annotation_file!r}.")
    with tf.io.gfile.GFile(annotation_file, "r") as f:
        text = f.read()
    try:
        dataset = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"`annotation_file`={annotation_file!r} is not valid JSON: {error.msg} (line "
            f"{error.lineno} column {error.colno}, character {error.pos} of {len(text)}); is "
            f"the file complete?"
        ) from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise DatasetError(
            f"`annotation_file`={annotation_file!r} is not a COCO annotation "
            f"file: it needs a JSON object with an 'images' list."
        )
    return dataset


def _index_images(dataset, annotation_file):
    """``{image id: image entry}``; refuses entries without id or file name and duplicate ids."""
    images = {}
    for info in dataset["images"]:
        if not isinstance(info, dict) or "id" not in info or "file_name" not in info:
            raise DatasetError(
                f"Image entry {info!r} in `annotation_file`={annotation_file!r} "
                f"needs an 'id' and a 'file_name'."
            )
        first = images.setdefault(info["id"], info)
        if first is not info:
            raise DatasetError(
                f"Image id {info['id']!r} appears twice in `annotation_file`="
                f"{annotation_file!r}: file names {first['file_name']!r} and "
                f"{info['file_name']!r}; COCO image ids must be unique."
            )
    return images


def _validate_annotations(dataset, label_map, annotation_file, images):
    for annotation in dataset.get("annotations", []):
        if not isinstance(annotation, dict):
            raise DatasetError(
                f"Annotation {annotation!r} in `annotation_file`="
                f"{annotation_file!r} is not a JSON object."
            )
        if annotation.get("image_id") not in images:
            raise DatasetError(
                f"Annotation {annotation.get('id')} in `annotation_file`={annotation_file!r} "
                f"refers to unknown image id {annotation.get('image_id')!r}."
            )
        try:
            label_map.index_of(annotation.get("category_id"))
        except (KeyError, TypeError):
            raise DatasetError(
                f"Annotation {annotation.get('id')} in `annotation_file`={annotation_file!r} "
                f"refers to unknown category id {annotation.get('category_id')!r}; known ids: "
                f"{list(label_map.category_ids)}."
            ) from None
        bbox = annotation.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise DatasetError(
                f"Annotation {annotation.get('id')} in `annotation_file`="
                f"{annotation_file!r} needs a 4-number 'bbox', got {bbox!r}."
            )


def read_coco(
    annotation_file: str,
    image_dir: str,
    *,
    label_map: LabelMap | None = None,
    decode: bool = True,
    check_images: bool | str = True,
    skip_empty: bool = False,
) -> ReadResult:
    """Reads a COCO annotation file and its images into a dataset of examples.

    Args:
        annotation_file: path of the COCO JSON (``images``, ``annotations``, ``categories``).
        image_dir: folder holding each image's ``file_name``.
        label_map: optional :class:`LabelMap` to use (e.g. the training set's, for a validation
            set); by default the file's categories sorted by id.
        decode: decode images in the reader (``"image"``); False leaves ``"image_bytes"`` for the
            pipeline to decode in its parallel map (cheaper to cache and shuffle).
        check_images: True: skip missing/empty/truncated/corrupt files at load time (reads the
            header and the last bytes of each), then decode files in order until one decodes,
            skipping those that do not. ``"decode"``: also decode every file once (a parallel
            pass over all the data) and skip each one that fails. False: no check.
        skip_empty: drop images with no annotation (default: keep them as background).

    Returns:
        :class:`ReadResult`; its ``skipped`` lists every skipped file with its reason.

    Raises:
        FileNotFoundError: ``annotation_file`` does not exist.
        DatasetError: the annotation file is not complete JSON, has two image entries with
            the same id, or an annotation names an unknown image id or category id or has a
            bad bbox; or no image of the split is usable (all skipped, or none listed).
    """
    if check_images not in (True, False, "decode"):
        raise ValueError(f"`check_images` must be True, False or 'decode', got {check_images!r}.")
    dataset = _load_json(annotation_file)
    images = _index_images(dataset, annotation_file)
    if label_map is None:
        categories = sorted(dataset.get("categories") or [], key=lambda c: c["id"])
        if not categories:
            raise DatasetError(f"`annotation_file`={annotation_file!r} has no categories.")
        label_map = LabelMap(categories)
    _validate_annotations(dataset, label_map, annotation_file, images)
    annotations_of = {}
    for annotation in dataset.get("annotations", []):
        annotations_of.setdefault(annotation["image_id"], []).append(annotation)

    records = []
    for image_id in sorted(images):
        annotations = annotations_of.get(image_id, [])
        if skip_empty and not annotations:
            continue
        boxes = []
        for annotation in annotations:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            boxes.append((x, y, x + w, y + h))
        records.append(
            ImageRecord(
                image_id=int(image_id),
                path=os.path.join(image_dir, images[image_id]["file_name"]),
                boxes=boxes,
                classes=[label_map.index_of(a["category_id"]) for a in annotations],
                is_crowd=[bool(a.get("iscrowd", 0)) for a in annotations],
            )
        )
    what = "images with annotations" if skip_empty else "images"
    result = examples_from_records(
        records,
        label_map,
        source=annotation_file,
        where=f"`image_dir`={image_dir!r} for `annotation_file`={annotation_file!r}",
        what=what,
        decode=decode,
        check_images=check_images,
    )
    # Evaluation reads the official areas and crowd flags from the file itself.
    return dataclasses.replace(
        result, ground_truth_file=annotation_file, image_sizes=_image_sizes(images)
    )


def _image_sizes(images):
    """``{image_id: (height, width)}`` from the file's image entries; None if one lacks them."""
    sizes = {}
    for image_id, info in images.items():
        try:
            height, width = int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError):
            return None
        if height < 1 or width < 1:
            return None
        sizes[int(image_id)] = (height, width)
    return sizes


@dataclasses.dataclass
class ImageRecord:
    """One image file and its boxes, as the file-based readers (COCO, VOC, YOLO) collect them.

    Attributes:
        image_id: int, unique in the split.
        path: image file path (any ``tf.io.gfile`` path).
        boxes: ``N`` xyxy boxes in original pixels (floats).
        classes: ``N`` contiguous classes 0..K-1.
        is_crowd: ``N`` bools: boxes kept for evaluation only (COCO ``iscrowd``, VOC
            ``difficult``).
    """

    image_id: int
    path: str
    boxes: list
    classes: list
    is_crowd: list


def examples_from_records(
    records,
    label_map,
    *,
    source,
    where,
    what="images",
    decode=True,
    check_images=True,
    skipped=(),
    headers_checked=False,
):
    """Checks the image files of ``records`` and builds the reader's ``ReadResult``.

    The bad-data rules of :func:`read_coco` (see the module docstring) for every reader of
    image files: files that fail the checks are skipped, counted and logged; a split with no
    usable image is a :class:`DatasetError`.

    Args:
        records: list of :class:`ImageRecord` in reading order.
        label_map: the :class:`LabelMap` of the classes.
        source: the annotation file or folder named in the log line.
        where: the phrase naming the data in the error (``"`image_dir`='...' for ..."``).
        what: what ``records`` are, for the error (``"images"``).
        decode: decode images in the reader (``"image"``) or leave ``"image_bytes"``.
        check_images: True, ``"decode"`` or False, as in :func:`read_coco`.
        skipped: ``(path, reason)`` of the images the caller has already skipped.
        headers_checked: the caller has run :func:`check_image_file` on every record (the
            decoding checks of ``check_images`` still run here).

    Returns:
        :class:`ReadResult`.
    """
    if check_images not in (True, False, "decode"):
        raise ValueError(f"`check_images` must be True, False or 'decode', got {check_images!r}.")
    candidates, skipped = [], list(skipped)
    for record in records:
        reason = check_image_file(record.path) if check_images and not headers_checked else None
        if reason is None:
            candidates.append(record)
        else:
            skipped.append((record.path, reason))
    if check_images == "decode":
        bad = set(_undecodable([record.path for record in candidates]))
    elif check_images:
        # Files with a sound header rarely fail to decode; decoding up to the first one that
        # does guarantees that the pipeline has something to decode.
        first = next(
            (i for i, record in enumerate(candidates) if _tf_decodes(record.path)),
            len(candidates),
        )
        bad = set(range(first))
    else:
        bad = set()
    skipped += [(candidates[i].path, "undecodable") for i in sorted(bad)]
    candidates = [c for i, c in enumerate(candidates) if i not in bad]

    reasons = {}
    for _, reason in skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    if not candidates:
        found = len(skipped)
        detail = f": all {found} skipped ({reasons}); first: {skipped[0][0]}" if found else ""
        raise DatasetError(f"No usable image in {where}: it lists {found} {what}{detail}.")
    if skipped:
        logger.warning(
            "Skipped %d of %d images of %s (%s); first: %s",
            len(skipped),
            len(skipped) + len(candidates),
            source,
            reasons,
            skipped[0][0],
        )

    paths, image_ids, counts, all_boxes, all_classes, all_crowd = [], [], [], [], [], []
    for record in candidates:
        all_boxes.extend(record.boxes)
        all_classes.extend(record.classes)
        all_crowd.extend(record.is_crowd)
        paths.append(record.path)
        image_ids.append(int(record.image_id))
        counts.append(len(record.boxes))
    logger.info(
        "Read %d images, %d boxes, %d classes from %s",
        len(paths),
        len(all_boxes),
        label_map.num_classes,
        source,
    )

    row_lengths = np.asarray(counts, np.int64)
    boxes = tf.RaggedTensor.from_row_lengths(
        np.asarray(all_boxes, np.float32).reshape(-1, 4), row_lengths
    )
    classes = tf.RaggedTensor.from_row_lengths(np.asarray(all_classes, np.int32), row_lengths)
    is_crowd = tf.RaggedTensor.from_row_lengths(np.asarray(all_crowd, bool), row_lengths)
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "path": tf.constant(paths, tf.string),
            "boxes": boxes,
            "classes": classes,
            "is_crowd": is_crowd,
            "image_id": tf.constant(image_ids, tf.int64),
        }
    )

    def load(element):
        example = {k: element[k] for k in ("boxes", "classes", "is_crowd", "image_id")}
        data = tf.io.read_file(element["path"])
        if decode:
            example["image"] = decode_image(data)
        else:
            example["image_bytes"] = data
        return example

    examples = examples.map(
        tf.autograph.experimental.do_not_convert(load),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if decode:
        # A file that passed the checks but fails to decode is skipped (logged by tf.data).
        examples = examples.ignore_errors(log_warning=True)
    return ReadResult(examples, label_map, len(paths), skipped)
