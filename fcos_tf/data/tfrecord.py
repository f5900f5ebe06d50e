"""Sharded TFRecord files of ``tf.train.Example``: the detection keys of the TensorFlow Object
Detection API and the Model Garden.

=================================  =============================================================
key                                value
=================================  =============================================================
``image/encoded``                  the JPEG or PNG file's bytes
``image/format``                   ``jpeg`` or ``png`` (written, not needed to read)
``image/height``, ``image/width``  the image size in pixels (0 or absent: taken from the image)
``image/source_id``                the image id as text (a number becomes the int64 image id;
                                   other text is hashed to one)
``image/object/bbox/xmin`` ...     ``xmin``, ``ymin``, ``xmax``, ``ymax`` normalised to [0, 1]
``image/object/class/label``       the category id of each box (the label map's ids)
``image/object/class/text``        the class name of each box (used when labels are absent)
``image/object/is_crowd``          1 for a crowd box (optional; ``image/object/difficult``, as
                                   the Object Detection API's VOC files have, counts the same)
=================================  =============================================================

The writer (:func:`write_tfrecords`, the ``fcos-convert-dataset`` command) deals the examples
round-robin over ``<output>-00000-of-0000N.tfrecord`` ... and writes ``label_map.json`` next to
them. The reader interleaves the files in that order (so it returns the examples in the order
they were written) and sets ``AutoShardPolicy.FILE``: under ``MultiWorkerMirroredStrategy``
each worker then reads its own files (use at least as many shards as workers) when it
distributes this dataset or maps and batches of it. tf.data cannot follow the files through
``ignore_errors`` or a ``zip``, which :func:`fcos_tf.data.pipeline.make_pipeline` uses, so the
pipeline's batches are sharded by element (each worker reads every file and keeps its share),
as for the other readers; the training and evaluation inputs read with
``shard_by_file=False``, which leaves the policy unset (tf.data's ``AUTO`` then shards the
pipeline's batches by element too) instead of having the pipeline change it, which tf.data
reports with a warning. Every path goes through ``tf.io.gfile``, so object storage paths
(``gs://...``) work.

Bad data: ``check_records=True`` (the default) reads every record once at load time (no image
decoding) and raises a :class:`DatasetError` naming the file and record for a truncated file, a
record that is not a ``tf.train.Example``, no image bytes, box lists of different lengths, an
unknown class or a box outside [0, 1]; it also counts the examples. Without the check the same
problems stop the stream with an error naming the file. Images that fail to decode are skipped
and logged by the pipeline (as with the other readers).
"""

import io
import logging
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap
from fcos_tf.data.transforms import decode_image

logger = logging.getLogger(__name__)

BOX_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))
LABEL_KEY = "image/object/class/label"
TEXT_KEY = "image/object/class/text"
CROWD_KEYS = ("image/object/is_crowd", "image/object/difficult")
# Normalised coordinates may exceed [0, 1] by this much (rounding of other writers).
_TOLERANCE = 1e-3


def shard_paths(output: str, num_shards: int) -> list[str]:
    """``<output>-00000-of-0000N.tfrecord`` ... for ``num_shards`` shards."""
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1, got {num_shards}.")
    return [f"{output}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def image_format(data: bytes) -> str:
    """``"jpeg"``, ``"png"``, ``"gif"``, ``"bmp"`` or ``""`` from a file's first bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"GIF8":
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return ""


def encode_example(
    image_bytes: bytes,
    *,
    height: int,
    width: int,
    image_id: int,
    boxes,
    classes,
    is_crowd,
    label_map: LabelMap,
) -> tf.train.Example:
    """One image as a ``tf.train.Example`` with the keys of the module docstring.

    Args:
        image_bytes: the encoded image file.
        height, width: its size in pixels.
        image_id: int, written as ``image/source_id`` text.
        boxes: float ``[N, 4]`` xyxy pixels.
        classes: int ``[N]`` contiguous classes 0..K-1 (written as category ids and names).
        is_crowd: bool ``[N]``.
        label_map: the classes' category ids and names.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.asarray([width, height, width, height], np.float64)
    normalised = (boxes / scale).astype(np.float32)
    classes = [int(c) for c in np.asarray(classes).reshape(-1)]

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    feature = {
        "image/encoded": strings([image_bytes]),
        "image/format": strings([image_format(image_bytes).encode()]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/source_id": strings([str(int(image_id)).encode()]),
        LABEL_KEY: ints(label_map.category_id(c) for c in classes),
        TEXT_KEY: strings(label_map.name(c).encode() for c in classes),
        CROWD_KEYS[0]: ints(np.asarray(is_crowd, bool).reshape(-1)),
    }
    for column, key in enumerate(BOX_KEYS):
        feature[key] = floats(normalised[:, column])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(
    items: Iterable[dict], output: str, num_shards: int, label_map: LabelMap
) -> tuple[list[str], int]:
    """Writes examples round-robin into sharded TFRecord files, and ``label_map.json``.

    Args:
        items: dicts with ``"image_bytes"`` (the encoded file), ``"boxes"`` float ``[N, 4]``
            xyxy pixels, ``"classes"`` int ``[N]``, ``"is_crowd"`` bool ``[N]``, ``"image_id"``
            int, and optionally ``"height"``, ``"width"`` (else read from the image header).
        output: path prefix, e.g. ``out/train`` -> ``out/train-00000-of-00004.tfrecord``.
        num_shards: number of files; example ``i`` goes to shard ``i % num_shards``.
        label_map: written as ``label_map.json`` in the folder of ``output``.

    Returns:
        ``(paths, count)``: the shard files and the number of examples written.

    Raises:
        DatasetError: the folder's ``label_map.json`` (another split's) differs from
            ``label_map``; nothing is written then.
    """
    from PIL import Image

    paths = shard_paths(output, num_shards)
    folder = os.path.dirname(output)
    label_map_file = os.path.join(folder, LABEL_MAP_FILENAME)
    if tf.io.gfile.exists(label_map_file) and LabelMap.load(label_map_file) != label_map:
        # Another split in the folder: its files' class labels are the ids of that label map.
        raise DatasetError(
            f"{label_map_file!r} holds another label map than this data's "
            f"({LabelMap.load(label_map_file).to_list()} vs {label_map.to_list()}); convert "
            f"with that label map (fcos-convert-dataset --label_map={label_map_file}) or into "
            f"another folder."
        )
    if folder:
        tf.io.gfile.makedirs(folder)
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    count = 0
    try:
        for item in items:
            data = bytes(item["image_bytes"])
            if "height" in item and "width" in item:
                height, width = int(item["height"]), int(item["width"])
            else:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
            example = encode_example(
                data,
                height=height,
                width=width,
                image_id=int(item["image_id"]),
                boxes=item["boxes"],
                classes=item["classes"],
                is_crowd=item["is_crowd"],
                label_map=label_map,
            )
            writers[count % num_shards].write(example.SerializeToString())
            count += 1
    finally:
        for writer in writers:
            writer.close()
    label_map.save(label_map_file)
    return paths, count


def _label_map_for(files, label_map, class_names, label_map_file):
    if label_map is not None:
        return label_map
    if class_names:
        # The Object Detection API numbers the classes of its label maps from 1.
        return LabelMap.from_names(class_names, first_id=1)
    path = label_map_file or os.path.join(os.path.dirname(files[0]), LABEL_MAP_FILENAME)
    if not tf.io.gfile.exists(path):
        raise DatasetError(
            f"No label map for {files[0]!r}: {path!r} does not exist; pass `class_names` "
            f"(category ids 1..K) or `label_map_file`."
        )
    return LabelMap.load(path)


def _check_file(path, label_map):
    """Number of records of one file; DatasetError naming the file and record on bad data."""
    ids, names = set(label_map.category_ids), set(label_map.names)
    index = -1
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            where = f"{path!r} record {index}"
            try:
                feature = tf.train.Example.FromString(record).features.feature
            except Exception:  # protobuf's DecodeError
                raise DatasetError(f"{where} is not a tf.train.Example.") from None
            if (
                not feature["image/encoded"].bytes_list.value[:1]
                or not (feature["image/encoded"].bytes_list.value[0])
            ):
                raise DatasetError(f"{where} has no image bytes (`image/encoded`).")
            coords = [list(feature[k].float_list.value) for k in BOX_KEYS]
            labels = list(feature[LABEL_KEY].int64_list.value)
            texts = [t.decode("utf-8", "replace") for t in feature[TEXT_KEY].bytes_list.value]
            count = len(coords[0])
            if any(len(c) != count for c in coords) or len(labels or texts) != count:
                raise DatasetError(
                    f"{where}: the box and class lists differ in length "
                    f"({[len(c) for c in coords]} coordinates, {len(labels)} labels, "
                    f"{len(texts)} texts)."
                )
            unknown = (
                [v for v in labels if v not in ids]
                if labels
                else [t for t in texts if t not in names]
            )
            if unknown:
                raise DatasetError(
                    f"{where} has unknown class {unknown[0]!r}; the label map has ids "
                    f"{list(label_map.category_ids)} ({list(label_map.names)})."
                )
            for x1, y1, x2, y2 in zip(*coords):
                finite = all(math.isfinite(v) for v in (x1, y1, x2, y2))
                inside = min(x1, y1) >= -_TOLERANCE and max(x2, y2) <= 1 + _TOLERANCE
                if not finite or not inside or x2 < x1 or y2 < y1:
                    raise DatasetError(
                        f"{where}: box ({x1}, {y1}, {x2}, {y2}) is not a normalised "
                        f"xmin <= xmax, ymin <= ymax box in [0, 1]."
                    )
    except tf.errors.DataLossError as error:
        raise DatasetError(
            f"{path!r} is not a complete TFRecord file (after record {index}): "
            f"{error.message.splitlines()[0]}"
        ) from None
    return index + 1


def read_tfrecord(
    file_pattern: str | Sequence[str],
    *,
    class_names: Sequence[str] = (),
    label_map_file: str = "",
    label_map: LabelMap | None = None,
    decode: bool = True,
    check_records: bool = True,
    cycle_length: int = 16,
    shard_by_file: bool = True,
) -> ReadResult:
    """Reads sharded TFRecord files of ``tf.train.Example`` into a dataset of examples.

    Args:
        file_pattern: a glob (``data/train-*-of-*.tfrecord``, ``gs://bucket/train-*``) or a
            list of files; the files are read in sorted order.
        class_names: the class names with category ids 1..K (as the Object Detection API's
            label maps); () to read ``label_map_file``.
        label_map_file: a ``label_map.json``; "" for the one beside the files (the writer's).
        label_map: the :class:`LabelMap` to use instead of the above.
        decode: decode images in the reader (``"image"``), or leave ``"image_bytes"``.
        check_records: read every record once at load time to check it and count the
            examples (see the module docstring); False starts at once (``num_examples`` None).
        cycle_length: files read at once (interleaved record by record).
        shard_by_file: set ``AutoShardPolicy.FILE`` on the dataset; False leaves the policy
            unset (``AUTO``).

    Returns:
        :class:`ReadResult` whose dataset has ``AutoShardPolicy.FILE`` (with
        ``shard_by_file``).

    Raises:
        FileNotFoundError: no file matches ``file_pattern``.
        DatasetError: no label map, or a bad record (with ``check_records``).
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"No TFRecord file matches `file_pattern`={file_pattern!r}.")
    label_map = _label_map_for(files, label_map, class_names, label_map_file)
    num_examples = None
    if check_records:
        num_examples = sum(_check_file(path, label_map) for path in files)
        if not num_examples:
            raise DatasetError(f"No record in the {len(files)} files of {file_pattern!r}.")
        logger.info(
            "Read %d records of %d classes from %d files of %s",
            num_examples,
            label_map.num_classes,
            len(files),
            file_pattern,
        )

    category_ids = tf.constant(label_map.category_ids, tf.int64)
    names = tf.constant(label_map.names, tf.string)
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
        LABEL_KEY: tf.io.VarLenFeature(tf.int64),
        TEXT_KEY: tf.io.VarLenFeature(tf.string),
        **{key: tf.io.VarLenFeature(tf.float32) for key in BOX_KEYS},
        **{key: tf.io.VarLenFeature(tf.int64) for key in CROWD_KEYS},
    }

    def parse(path, record):
        features = tf.io.parse_single_example(record, spec)
        dense = {
            k: tf.sparse.to_dense(v) for k, v in features.items() if isinstance(v, tf.SparseTensor)
        }
        coords = tf.stack([dense[k] for k in BOX_KEYS], axis=-1)  # [N, 4] normalised xyxy
        labels, texts = dense[LABEL_KEY], dense[TEXT_KEY]
        by_label = tf.equal(labels[:, None], category_ids[None, :])
        by_name = tf.equal(texts[:, None], names[None, :])
        match = tf.cond(tf.size(labels) > 0, lambda: by_label, lambda: by_name)
        tf.debugging.Assert(
            tf.logical_and(
                tf.reduce_all(tf.reduce_any(match, axis=1)),
                tf.equal(tf.shape(match)[0], tf.shape(coords)[0]),
            ),
            ["Unknown class or box count mismatch in", path, labels, texts],
        )
        classes = tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=1), tf.int32)
        count = tf.shape(coords)[0]

        def flag(key):
            values = tf.cast(dense[key], tf.bool)
            return tf.concat([values, tf.zeros([count], tf.bool)], 0)[:count]

        is_crowd = tf.logical_or(flag(CROWD_KEYS[0]), flag(CROWD_KEYS[1]))
        source_id = features["image/source_id"]
        numeric = tf.strings.regex_full_match(source_id, "[0-9]{1,18}")
        image_id = tf.cond(
            numeric,
            lambda: tf.strings.to_number(source_id, tf.int64),
            lambda: tf.strings.to_hash_bucket_fast(source_id, 2**62),
        )
        data = features["image/encoded"]
        example = {"is_crowd": is_crowd, "classes": classes, "image_id": image_id}
        height, width = features["image/height"], features["image/width"]
        if decode:
            image = decode_image(data)
            example["image"] = image
            size = tf.cast(tf.shape(image)[:2], tf.float32)
        else:
            example["image_bytes"] = data
            size = tf.cond(
                tf.logical_and(height > 0, width > 0),
                lambda: tf.cast(tf.stack([height, width]), tf.float32),
                lambda: tf.cast(tf.shape(decode_image(data))[:2], tf.float32),
            )
        scale = tf.stack([size[1], size[0], size[1], size[0]])
        example["boxes"] = tf.reshape(coords * scale, [-1, 4])
        return example

    def records(path):
        return tf.data.TFRecordDataset(path).map(lambda record: (path, record))

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    dataset = dataset.interleave(
        tf.autograph.experimental.do_not_convert(records),
        cycle_length=max(1, min(cycle_length, len(files))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.map(
        tf.autograph.experimental.do_not_convert(parse),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if decode:
        # An image that fails to decode is skipped (logged by tf.data), as in the COCO reader;
        # with check_records the other errors were ruled out at load time.
        dataset = dataset.ignore_errors(log_warning=True)
    if shard_by_file:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.FILE
        )
        dataset = dataset.with_options(options)
    return ReadResult(dataset, label_map, num_examples)
