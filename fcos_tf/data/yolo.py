"""Reader of YOLO-format detection data: one text file of normalised boxes per image.

Layout (the Ultralytics/YOLOv5 one)::

    <root>/images/<split>/<name>.jpg     the images (.jpg, .jpeg, .png, .bmp, .gif)
    <root>/labels/<split>/<name>.txt     one line per box: ``class cx cy w h``
    <root>/data.yaml or classes.txt      the class names

``class`` is the contiguous class 0..K-1, ``cx cy w h`` the box centre and size as fractions of
the image width and height. An image without a label file, or with an empty one, has no
object (a background image). The pixel boxes need the image size, which is read from the
file's header (no decoding).

Class names come from ``class_names``, else from ``data.yaml``'s ``names:`` (a list, inline
``[a, b]`` or one ``- a`` a line, or a mapping ``0: a``; only this key is read, so PyYAML is not
needed), else from ``classes.txt`` (one name a line). Category ids are the class numbers.

Bad data follows :func:`fcos_tf.data.coco.read_coco`: a :class:`DatasetError` names the file
and line for a label line that is not 5 numbers, a class number out of range and coordinates
outside the image; missing, empty, truncated or corrupt images are skipped and counted.
"""

import ast
import logging
import os
from collections.abc import Sequence

import tensorflow as tf

from fcos_tf.data.coco import ImageRecord, check_image_file, examples_from_records
from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap
from fcos_tf.data.voc import numeric_ids

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Normalised coordinates may exceed [0, 1] by this much (rounding of the writer).
_TOLERANCE = 1e-3


def _unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            return str(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text[1:-1]
    return text


def _without_comment(line):
    """The line up to a ``#`` that is outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _split_inline(body):
    """Items of an inline ``a, 'b, c', d`` list, respecting quotes."""
    items, current, quote = [], "", None
    for char in body:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append(current)
            current = ""
            continue
        current += char
    if current.strip():
        items.append(current)
    return [item for item in items if item.strip()]


def parse_names(yaml_file: str) -> list[str]:
    """The class names of a YOLO ``data.yaml`` (only its top-level ``names:`` key).

    Raises:
        DatasetError: no ``names:`` key, or a mapping whose keys are not 0..K-1.
    """
    with tf.io.gfile.GFile(yaml_file, "r") as f:
        lines = [_without_comment(line).rstrip() for line in f.read().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("names:")), None)
    if start is None:
        raise DatasetError(f"{yaml_file!r} has no top-level `names:` key.")
    inline = lines[start][len("names:") :].strip()
    entries = []
    if inline:
        if inline[0] in "[{" and inline[-1] == {"[": "]", "{": "}"}[inline[0]]:
            entries = _split_inline(inline[1:-1])
        else:
            raise DatasetError(
                f"{yaml_file!r}: `names:` must be a list or mapping, got {inline!r}."
            )
    else:
        for line in lines[start + 1 :]:
            if not line.strip():
                continue
            if not line[0].isspace() and not line.startswith("-"):
                break  # the next top-level key
            entries.append(line.strip())
    names = {}
    for position, entry in enumerate(entries):
        if entry.startswith("-"):
            key, value = position, entry[1:]
        elif ":" in entry:
            key, value = entry.split(":", 1)
            try:
                key = int(_unquote(key))
            except ValueError:
                raise DatasetError(
                    f"{yaml_file!r}: `names:` keys must be class numbers, got {key!r}."
                ) from None
        else:
            key, value = position, entry
        names[key] = _unquote(value)
    if sorted(names) != list(range(len(names))) or not names:
        raise DatasetError(
            f"{yaml_file!r}: `names:` must number the classes 0..K-1, got {sorted(names)}."
        )
    return [names[i] for i in range(len(names))]


def class_names_of(root: str) -> list[str]:
    """The class names of a YOLO folder: ``data.yaml`` (or ``.yml``), else ``classes.txt``."""
    for name in ("data.yaml", "data.yml"):
        path = os.path.join(root, name)
        if tf.io.gfile.exists(path):
            return parse_names(path)
    path = os.path.join(root, "classes.txt")
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "r") as f:
            return [line.strip() for line in f.read().splitlines() if line.strip()]
    raise DatasetError(
        f"No class names for {root!r}: write data.yaml (`names: [...]`) or classes.txt "
        f"there, or pass `class_names`."
    )


def image_size(path: str) -> tuple[int, int] | None:
    """``(height, width)`` from an image file's header, None when it cannot be read."""
    from PIL import Image

    try:
        with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError):
        return None
    return height, width


def parse_label_file(
    label_file: str, num_classes: int
) -> list[tuple[int, float, float, float, float]]:
    """``(class, cx, cy, w, h)`` of every line of a YOLO label file (normalised values).

    Raises:
        DatasetError: naming the file and line, for a line that is not 5 numbers, a class
            out of 0..K-1, a box outside the image or without area.
    """
    with tf.io.gfile.GFile(label_file, "r") as f:
        lines = f.read().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        where = f"{label_file!r} line {number}"
        if len(words) != 5:
            raise DatasetError(
                f"{where} has {len(words)} values; YOLO boxes are 5: `class cx cy w h`."
            )
        try:
            values = [float(w) for w in words]
        except ValueError:
            raise DatasetError(f"{where} is not 5 numbers: {line.strip()!r}.") from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise DatasetError(
                f"{where}: class {words[0]} is not one of the {num_classes} classes 0.."
                f"{num_classes - 1}."
            )
        cx, cy, w, h = values[1:]
        low, high = cx - w / 2, cx + w / 2
        top, bottom = cy - h / 2, cy + h / 2
        if w <= 0 or h <= 0 or min(low, top) < -_TOLERANCE or max(high, bottom) > 1 + _TOLERANCE:
            raise DatasetError(
                f"{where}: box {line.strip()!r} is not inside the image (normalised "
                f"`cx cy w h` with the box within [0, 1])."
            )
        rows.append((int(cls), cx, cy, w, h))
    return rows


def read_yolo(
    root: str,
    split: str = "train",
    *,
    class_names: Sequence[str] = (),
    label_map: LabelMap | None = None,
    decode: bool = True,
    check_images: bool | str = True,
    skip_empty: bool = False,
) -> ReadResult:
    """Reads a split of a YOLO folder into a dataset of examples.

    Args:
        root: the folder holding ``images/<split>/`` and ``labels/<split>/``.
        split: the subfolder name (``"train"``, ``"val"``).
        class_names: the class names (category ids 0..K-1); () to read them from
            ``data.yaml`` or ``classes.txt``.
        label_map: the :class:`LabelMap` to use instead (e.g. the training split's).
        decode, check_images, skip_empty: as in :func:`fcos_tf.data.coco.read_coco`.

    Returns:
        :class:`ReadResult`; images in file-name order, image ids the file names when all are
        numbers, else their positions. No box is crowd.

    Raises:
        DatasetError: see the module docstring.
    """
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "labels", split)
    if not tf.io.gfile.isdir(image_dir):
        raise DatasetError(f"Image folder not found: {image_dir!r}.")
    if label_map is None:
        label_map = LabelMap.from_names(class_names or class_names_of(root))
    files = sorted(
        f
        for f in tf.io.gfile.listdir(image_dir)
        if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
    )
    stems = [os.path.splitext(f)[0] for f in files]
    records, skipped = [], []
    for image_id, filename, stem in zip(numeric_ids(stems), files, stems):
        path = os.path.join(image_dir, filename)
        label_file = os.path.join(label_dir, f"{stem}.txt")
        rows = (
            parse_label_file(label_file, label_map.num_classes)
            if tf.io.gfile.exists(label_file)
            else []
        )
        if skip_empty and not rows:
            continue
        reason = check_image_file(path) if check_images else None
        size = image_size(path) if reason is None else None
        if size is None:
            skipped.append((path, reason or "corrupt"))
            continue
        height, width = size
        boxes = [
            (
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            )
            for _, cx, cy, w, h in rows
        ]
        classes = [cls for cls, *_ in rows]
        records.append(ImageRecord(image_id, path, boxes, classes, [False] * len(rows)))
    return examples_from_records(
        records,
        label_map,
        source=label_dir,
        where=f"`root`={root!r} for split {split!r}",
        what="images with labels" if skip_empty else "images",
        decode=decode,
        check_images=check_images,
        skipped=skipped,
        headers_checked=True,
    )


def write_yolo(root: str, split: str, items, label_map: LabelMap) -> None:
    """Writes images and their boxes as a YOLO split (the inverse of :func:`read_yolo`).

    Args:
        root: the YOLO folder to create or fill; ``data.yaml`` gets the class names.
        split: the subfolder name.
        items: iterable of dicts as :func:`fcos_tf.data.voc.write_voc` takes; crowd boxes
            are left out (YOLO has no such flag).
        label_map: names of the classes.
    """
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "labels", split)
    tf.io.gfile.makedirs(image_dir)
    tf.io.gfile.makedirs(label_dir)
    for item in items:
        filename = os.path.basename(item["path"])
        tf.io.gfile.copy(item["path"], os.path.join(image_dir, filename), True)
        height, width = float(item["height"]), float(item["width"])
        lines = []
        for box, cls, crowd in zip(item["boxes"], item["classes"], item["is_crowd"]):
            if crowd:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            lines.append(
                f"{int(cls)} {(x1 + x2) / 2 / width:.8f} {(y1 + y2) / 2 / height:.8f} "
                f"{(x2 - x1) / width:.8f} {(y2 - y1) / height:.8f}\n"
            )
        stem = os.path.splitext(filename)[0]
        with tf.io.gfile.GFile(os.path.join(label_dir, f"{stem}.txt"), "w") as f:
            f.write("".join(lines))
    with tf.io.gfile.GFile(os.path.join(root, "data.yaml"), "w") as f:
        f.write(f"nc: {label_map.num_classes}\nnames:\n")
        f.write("".join(f"  {i}: {name!r}\n" for i, name in enumerate(label_map.names)))
