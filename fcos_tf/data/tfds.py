"""Reader of TensorFlow Datasets detection datasets (``coco/2017`` and alike).

Any TFDS dataset with the features ``image`` (uint8 ``[H, W, 3]``), ``objects/bbox``
(normalised ``[ymin, xmin, ymax, xmax]``), ``objects/label`` (ClassLabel) and optionally
``objects/is_crowd`` and ``image/id`` works. TFDS labels are already contiguous, so they are the
classes as they are; the label map gives them their dataset category ids (COCO's official ids
for ``coco/*``, the label index otherwise).

TFDS needs the data prepared beforehand (``tfds build coco/2017`` or
``tfds.builder("coco/2017").download_and_prepare()`` on a machine with internet access, then
``data_dir`` pointing at it); the reader never downloads unless asked to.
"""

import logging

import tensorflow as tf

from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import COCO_2017_CATEGORIES, LabelMap
from fcos_tf.ops import boxes as box_ops

logger = logging.getLogger(__name__)


def _label_map_for(name, label_names):
    coco_ids = {n: i for i, n in COCO_2017_CATEGORIES}
    if name.split("/")[0] == "coco":
        if all(n in coco_ids for n in label_names):
            return LabelMap([(coco_ids[n], n) for n in label_names])
        if len(label_names) == len(COCO_2017_CATEGORIES):
            # Label names unknown (dataset info without metadata): TFDS keeps the annotation
            # file's category order, which is the order of the official ids.
            return LabelMap.coco_2017()
    if len(set(label_names)) != len(label_names):
        label_names = [str(i) for i in range(len(label_names))]
    return LabelMap.from_names(label_names)


def tfds_example(features, *, boxes_key="bbox", label_key="label"):
    """Converts one TFDS detection example into the reader example structure.

    Args:
        features: TFDS example dict with ``image`` uint8 ``[H, W, 3]`` and ``objects`` holding
            normalised yxyx ``bbox`` float32 ``[N, 4]``, ``label`` int64 ``[N]`` and optionally
            ``is_crowd`` bool ``[N]``; optionally ``image/id`` int64.
        boxes_key: name of the box feature in ``objects``.
        label_key: name of the label feature in ``objects``.

    Returns:
        Reader example dict (see :class:`~fcos_tf.data.example.ReadResult`). If the object
        features disagree in length, the shortest length wins.
    """
    image = features["image"]
    objects = features["objects"]
    boxes = tf.reshape(tf.cast(objects[boxes_key], tf.float32), [-1, 4])
    labels = tf.cast(objects[label_key], tf.int32)
    if "is_crowd" in objects:
        is_crowd = tf.cast(objects["is_crowd"], tf.bool)
    else:
        is_crowd = tf.zeros_like(labels, tf.bool)
    count = tf.reduce_min(
        tf.stack([tf.shape(boxes)[0], tf.shape(labels)[0], tf.shape(is_crowd)[0]])
    )
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    # Normalised yxyx at the edge -> xyxy pixels of the original image.
    boxes = box_ops.scale_xyxy(box_ops.yxyx_to_xyxy(boxes[:count]), size[1], size[0])
    if image.shape.rank == 3 and image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    image_id = features.get("image/id", tf.constant(-1, tf.int64))  # read_tfds numbers them
    return {
        "image": image,
        "boxes": boxes,
        "classes": labels[:count],
        "is_crowd": is_crowd[:count],
        "image_id": tf.cast(image_id, tf.int64),
    }


def read_tfds(
    name: str = "coco/2017",
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = False,
    shuffle_files: bool = False,
    read_config=None,
) -> ReadResult:
    """Loads a TFDS detection dataset as reader examples.

    Args:
        name: TFDS name, e.g. ``"coco/2017"``.
        split: TFDS split, e.g. ``"train"``, ``"validation"`` or ``"train[:1%]"``.
        data_dir: TFDS data folder (default: TFDS's, ``~/tensorflow_datasets``).
        download: let TFDS download and prepare the data when it is missing.
        shuffle_files: shuffle the record files (training).
        read_config: optional ``tfds.ReadConfig``.

    Returns:
        :class:`~fcos_tf.data.example.ReadResult`.

    Raises:
        FileNotFoundError: the data is not prepared (and ``download`` is False or failed).
        DatasetError: the split has no example.
    """
    import tensorflow_datasets as tfds

    try:
        dataset, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=shuffle_files,
            read_config=read_config,
            with_info=True,
        )
    except Exception as error:  # TFDS raises AssertionError, DatasetNotFoundError, OSError...
        raise FileNotFoundError(
            f"Could not load TFDS dataset {name!r} (split {split!r}, data_dir={data_dir!r}): "
            f"{error}\nTFDS reads prepared data only. Prepare it once on a machine with internet "
            f"access (`tfds build {name}` or tfds.builder({name!r}).download_and_prepare()), "
            f"copy the data folder here and pass its location as `data_dir`; or call with "
            f"download=True; or use the COCO JSON reader (fcos_tf.data.coco.read_coco) on "
            f"local files."
        ) from error
    objects = info.features["objects"]
    if "bbox" not in objects or "label" not in objects:
        raise ValueError(
            f"TFDS dataset {name!r} has no objects/bbox and objects/label "
            f"features; features: {info.features}."
        )
    label_map = _label_map_for(name, list(objects["label"].names))
    if "image/id" not in info.features:
        # Evaluation needs unique image ids: number the examples in reading order.
        dataset = dataset.enumerate().map(
            tf.autograph.experimental.do_not_convert(
                lambda index, features: {**features, "image/id": index}
            )
        )
    dataset = dataset.map(
        tf.autograph.experimental.do_not_convert(tfds_example),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    try:
        num_examples = info.splits[split].num_examples
    except Exception:  # e.g. mocked or sliced splits
        num_examples = None
    if num_examples == 0:
        raise DatasetError(
            f"TFDS dataset {name!r} (data_dir={data_dir!r}) has no example in split {split!r}."
        )
    return ReadResult(dataset, label_map, num_examples or None)
