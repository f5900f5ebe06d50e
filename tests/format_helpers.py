"""The synthetic dataset written in every format the readers take (COCO, VOC, YOLO, TFRecord)."""

import json
import os

import numpy as np

from fcos_tf.data import synthetic, tfrecord, voc, yolo


def coco_items(annotation_file, image_dir):
    """The images of a COCO file as writer items (path, size, xyxy boxes, classes, crowd)."""
    with open(annotation_file) as f:
        data = json.load(f)
    labels = synthetic.label_map()
    items = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        annotations = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = np.asarray(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)], np.float32
        ).reshape(-1, 4)
        path = os.path.join(image_dir, image["file_name"])
        with open(path, "rb") as f:
            image_bytes = f.read()
        items.append(
            {
                "path": path,
                "image_bytes": image_bytes,
                "image_id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "boxes": boxes,
                "classes": np.asarray(
                    [labels.index_of(a["category_id"]) for a in annotations], np.int32
                ),
                "is_crowd": np.asarray([bool(a["iscrowd"]) for a in annotations], bool),
            }
        )
    return items


def write_all_formats(root, num_images=6, image_size=(64, 80), seed=3, num_shards=3):
    """Writes one synthetic set as COCO, VOC, YOLO and TFRecord under ``root``.

    Returns:
        dict: ``"coco"`` (annotation file, image dir), ``"voc"``, ``"yolo"`` (roots, split
        ``"train"``), ``"tfrecord"`` (the shard files), ``"items"`` (the writer items).
    """
    root = str(root)
    annotation_file, image_dir = synthetic.write_coco(
        os.path.join(root, "coco"), num_images, image_size=image_size, seed=seed
    )
    items = coco_items(annotation_file, image_dir)
    labels = synthetic.label_map()
    voc.write_voc(os.path.join(root, "voc"), "train", items, labels)
    yolo.write_yolo(os.path.join(root, "yolo"), "train", items, labels)
    shards, _ = tfrecord.write_tfrecords(
        items, os.path.join(root, "tfrecord", "train"), num_shards, labels
    )
    return {
        "coco": (annotation_file, image_dir),
        "voc": os.path.join(root, "voc"),
        "yolo": os.path.join(root, "yolo"),
        "tfrecord": shards,
        "items": items,
    }
