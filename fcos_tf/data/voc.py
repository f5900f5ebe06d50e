"""Reader of Pascal VOC detection data: one XML file per image.

Layout (the VOCdevkit ``VOC2007``/``VOC2012`` folders have it)::

    <root>/Annotations/<id>.xml      boxes of image <id>
    <root>/JPEGImages/<filename>     the image (``<filename>`` of the XML, else <id>.jpg)
    <root>/ImageSets/Main/<split>.txt   the ids of the split, one a line

VOC boxes count pixels from 1 and include their last pixel; they become the package's
pixel-corner boxes as ``(xmin - 1, ymin - 1, xmax, ymax)``. Objects marked ``difficult`` are
kept with ``is_crowd`` True: the pipeline leaves them out of training and evaluation ignores
detections on them, as the VOC evaluation does.

Class names are the 20 VOC classes (:data:`VOC_CLASSES`, category ids 1..20) when every name
found is one of them, else the names found in sorted order; ``class_names`` fixes them.

Bad data follows :func:`fcos_tf.data.coco.read_coco`: a :class:`DatasetError` names the file
for a missing split list, a missing or malformed XML file (with the line and column), an object
without a box or with an unknown name, and a split without usable image; image files that are
missing or broken are skipped and counted.
"""

import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from xml.sax.saxutils import escape

import tensorflow as tf

from fcos_tf.data.coco import ImageRecord, examples_from_records
from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def read_split_ids(list_file: str) -> list[str]:
    """The image ids of a VOC split list (first word of every non-blank line)."""
    if not tf.io.gfile.exists(list_file):
        raise DatasetError(f"Split list not found: {list_file!r}.")
    with tf.io.gfile.GFile(list_file, "r") as f:
        ids = [line.split()[0] for line in f.read().splitlines() if line.strip()]
    seen = set()
    for image_id in ids:
        if image_id in seen:
            raise DatasetError(f"Image id {image_id!r} appears twice in {list_file!r}.")
        seen.add(image_id)
    return ids


def numeric_ids(names: Sequence[str]) -> list[int]:
    """Integer image ids for file stems: the stems themselves when all are decimal numbers
    (``000123`` -> 123, distinct), else the positions 0..N-1 in ``names``' order."""
    if names and all(n.isdigit() for n in names) and len({int(n) for n in names}) == len(names):
        return [int(n) for n in names]
    return list(range(len(names)))


def parse_annotation(xml_file: str) -> tuple[str | None, list[dict]]:
    """Reads one VOC XML file.

    Returns:
        ``(filename, objects)``: the ``<filename>`` (None when absent) and one dict per
        ``<object>`` with ``"name"`` (str), ``"box"`` (xmin, ymin, xmax, ymax floats as written)
        and ``"difficult"`` (bool).

    Raises:
        DatasetError: the file is missing or not well-formed XML, or an object has no name or
            no complete ``<bndbox>``.
    """
    if not tf.io.gfile.exists(xml_file):
        raise DatasetError(f"Annotation file not found: {xml_file!r}.")
    with tf.io.gfile.GFile(xml_file, "rb") as f:
        text = f.read()
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise DatasetError(f"{xml_file!r} is not well-formed XML: {error}.") from None
    filename = (root.findtext("filename") or "").strip() or None
    objects = []
    for number, element in enumerate(root.iter("object"), start=1):
        name = (element.findtext("name") or "").strip()
        box = element.find("bndbox")
        values = [None if box is None else box.findtext(key) for key in _BOX_KEYS]
        if not name or any(v is None for v in values):
            raise DatasetError(
                f"Object {number} of {xml_file!r} needs a <name> and a <bndbox> with "
                f"<xmin>, <ymin>, <xmax>, <ymax>."
            )
        try:
            values = tuple(float(v) for v in values)
        except ValueError:
            raise DatasetError(
                f"Object {number} of {xml_file!r} has a non-numeric <bndbox>: {values}."
            ) from None
        difficult = (element.findtext("difficult") or "0").strip()
        objects.append({"name": name, "box": values, "difficult": difficult not in ("", "0")})
    return filename, objects


def split_label_map(root: str, split: str, class_names: Sequence[str] = ()) -> LabelMap:
    """The :class:`LabelMap` that :func:`read_voc` gives ``split`` (reads the XML files only)."""
    if class_names:
        return LabelMap.from_names(class_names, first_id=1)
    ids = read_split_ids(os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
    objects = [parse_annotation(os.path.join(root, "Annotations", f"{i}.xml"))[1] for i in ids]
    return _label_map_of_names(root, {o["name"] for found in objects for o in found})


def _label_map_of_names(root, found):
    names = list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)
    if names != list(VOC_CLASSES):
        logger.info("Classes of %s (the names found, sorted): %s", root, names)
    return LabelMap.from_names(names, first_id=1)


def read_voc(
    root: str,
    split: str = "train",
    *,
    class_names: Sequence[str] = (),
    label_map: LabelMap | None = None,
    decode: bool = True,
    check_images: bool | str = True,
    skip_empty: bool = False,
) -> ReadResult:
    """Reads a split of a Pascal VOC folder into a dataset of examples.

    Args:
        root: the folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: name of the split list ``ImageSets/Main/<split>.txt`` (``"train"``,
            ``"val"``, ``"trainval"``, ``"test"``).
        class_names: the class names in contiguous-class order (category ids 1..K); () for
            the 20 VOC classes, or the names found when some are not VOC classes.
        label_map: the :class:`LabelMap` to use instead (e.g. the training split's).
        decode, check_images, skip_empty: as in :func:`fcos_tf.data.coco.read_coco`.

    Returns:
        :class:`ReadResult`; image ids are the file ids when all are numbers, else the
        positions in the split list.

    Raises:
        DatasetError: see the module docstring.
    """
    ids = read_split_ids(os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
    parsed = []
    for image_id in ids:
        xml_file = os.path.join(root, "Annotations", f"{image_id}.xml")
        parsed.append((xml_file, *parse_annotation(xml_file)))
    if label_map is None and class_names:
        label_map = LabelMap.from_names(class_names, first_id=1)
    elif label_map is None:
        label_map = _label_map_of_names(root, {o["name"] for _, _, found in parsed for o in found})
    index_of_name = {name: i for i, name in enumerate(label_map.names)}

    records = []
    for number, (image_id, (xml_file, filename, objects)) in enumerate(
        zip(numeric_ids(ids), parsed)
    ):
        if skip_empty and not objects:
            continue
        boxes, classes, difficult = [], [], []
        for o in objects:
            if o["name"] not in index_of_name:
                raise DatasetError(
                    f"{xml_file!r} has an object of unknown class {o['name']!r}; known: "
                    f"{list(label_map.names)}."
                )
            xmin, ymin, xmax, ymax = o["box"]
            boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
            classes.append(index_of_name[o["name"]])
            difficult.append(o["difficult"])
        path = os.path.join(root, "JPEGImages", filename or f"{ids[number]}.jpg")
        records.append(ImageRecord(image_id, path, boxes, classes, difficult))
    return examples_from_records(
        records,
        label_map,
        source=os.path.join(root, "Annotations"),
        where=f"`root`={root!r} for split {split!r}",
        what="images with annotations" if skip_empty else "images",
        decode=decode,
        check_images=check_images,
    )


def write_voc(root: str, split: str, items, label_map: LabelMap) -> list[str]:
    """Writes images and their boxes as a VOC split (the inverse of :func:`read_voc`).

    Args:
        root: the VOC folder to create or fill.
        split: the split list's name.
        items: iterable of dicts: ``"path"`` the image file (copied to ``JPEGImages/`` under
            its own name), ``"height"``, ``"width"`` ints, NumPy ``"boxes"`` float ``[N, 4]``
            xyxy pixels, ``"classes"`` int ``[N]`` 0..K-1, ``"is_crowd"`` bool ``[N]``
            (written as ``difficult``).
        label_map: names of the classes.

    Returns:
        The ids written to ``ImageSets/Main/<split>.txt``.
    """
    for folder in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        tf.io.gfile.makedirs(os.path.join(root, folder))
    stems = []
    for item in items:
        filename = os.path.basename(item["path"])
        stem = os.path.splitext(filename)[0]
        stems.append(stem)
        tf.io.gfile.copy(item["path"], os.path.join(root, "JPEGImages", filename), True)
        lines = [
            "<annotation>",
            f"  <filename>{escape(filename)}</filename>",
            f"  <size><width>{int(item['width'])}</width>"
            f"<height>{int(item['height'])}</height><depth>3</depth></size>",
        ]
        for box, cls, crowd in zip(item["boxes"], item["classes"], item["is_crowd"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            values = (x1 + 1.0, y1 + 1.0, x2, y2)
            lines += [
                "  <object>",
                f"    <name>{escape(label_map.name(int(cls)))}</name>",
                f"    <difficult>{int(bool(crowd))}</difficult>",
                "    <bndbox>"
                + "".join(f"<{k}>{v:.10g}</{k}>" for k, v in zip(_BOX_KEYS, values))
                + "</bndbox>",
                "  </object>",
            ]
        lines.append("</annotation>")
        with tf.io.gfile.GFile(os.path.join(root, "Annotations", f"{stem}.xml"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with tf.io.gfile.GFile(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{stem}\n" for stem in stems))
    return stems
