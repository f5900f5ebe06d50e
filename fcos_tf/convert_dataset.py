r"""``fcos-convert-dataset``: COCO, Pascal VOC or YOLO data as sharded TFRecord files.

    fcos-convert-dataset --from=coco --annotations=instances_train2017.json \
        --images=train2017 --output=/data/records/train --num_shards=64
    fcos-convert-dataset --from=voc --root=VOCdevkit/VOC2012 --split=train --output=out/train
    fcos-convert-dataset --from=yolo --root=my_data --split=val --output=out/val --num_shards=4
    python -m fcos_tf.convert_dataset ...                                 # the same

The images are copied as they are (no re-encoding) into ``<output>-00000-of-0000N.tfrecord``
... with the Object Detection API keys (:mod:`fcos_tf.data.tfrecord`), and the label map into
``label_map.json`` beside them; train with ``config.data.dataset="tfrecord"`` and
``config.data.tfrecord.train_file_pattern=<output>-*``. The reader's checks run first: bad
annotations stop the conversion with one line, unusable images are skipped and counted.
``--output`` may be an object storage path that ``tf.io.gfile`` writes (``gs://...``).
Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line for bad flags or bad data.
"""

import os
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-convert-dataset"
FORMATS = ("coco", "voc", "yolo")


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_enum("from", None, FORMATS, "Format of the input data.", flag_values=flag_values)
    flags.DEFINE_string(
        "output",
        None,
        "Path prefix of the shards: DIR/train -> DIR/train-00000-of-0000N.tfrecord.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_shards",
        1,
        "Number of TFRecord files (at least the number of training workers).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_string("annotations", None, "COCO: the annotation JSON.", flag_values=flag_values)
    flags.DEFINE_string("images", None, "COCO: the image folder.", flag_values=flag_values)
    flags.DEFINE_string("root", None, "VOC, YOLO: the dataset folder.", flag_values=flag_values)
    flags.DEFINE_string(
        "split", "train", "VOC, YOLO: the split (list or subfolder name).", flag_values=flag_values
    )
    flags.DEFINE_list(
        "class_names",
        [],
        "VOC, YOLO: the class names in class order (default: the reader's).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "label_map",
        None,
        "A label_map.json to use (e.g. the training split's, when converting a validation split).",
        flag_values=flag_values,
    )
    flags.mark_flags_as_required(["from", "output"], flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["from", "annotations", "images", "root"],
        lambda f: (
            bool(f["annotations"] and f["images"]) if f["from"] == "coco" else bool(f["root"])
        ),
        "--from=coco needs --annotations and --images; --from=voc|yolo needs --root",
        flag_values=flag_values,
    )


def read(args):
    """The reader's ``ReadResult`` of the input (undecoded images)."""
    from fcos_tf.data import LabelMap, coco, voc, yolo

    label_map = LabelMap.load(args.label_map) if args.label_map else None
    source = getattr(args, "from")
    if source == "coco":
        return coco.read_coco(args.annotations, args.images, label_map=label_map, decode=False)
    reader = voc.read_voc if source == "voc" else yolo.read_yolo
    return reader(
        args.root,
        args.split,
        class_names=tuple(args.class_names),
        label_map=label_map,
        decode=False,
    )


def _counted(number, noun):
    """``"1 file"``, ``"2 files"``, ``"1 class"``, ``"6 classes"``."""
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun}{'es' if noun.endswith('s') else 's'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-convert-dataset`` with ``argv`` (default ``sys.argv[1:]``); returns status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, terms=cli.COCO_READER_TERMS)
    cli.set_up_logging()
    from fcos_tf.data import DatasetError
    from fcos_tf.data.label_map import LABEL_MAP_FILENAME
    from fcos_tf.data.tfrecord import write_tfrecords

    try:
        result = read(args)
    except (DatasetError, FileNotFoundError, ValueError) as error:
        cli.fail(f"Bad data: {error}", error)
    items = result.dataset.as_numpy_iterator()
    try:
        paths, count = write_tfrecords(items, args.output, args.num_shards, result.label_map)
    except DatasetError as error:
        cli.fail(f"Bad data: {error}", error)
    files = f"{_counted(len(paths), 'file')}: {paths[0]}"
    if len(paths) > 1:
        files += f" ... {paths[-1]}"
    print(
        f"Wrote {_counted(count, 'image')} ({len(result.skipped)} skipped) of "
        f"{_counted(result.label_map.num_classes, 'class')} into {files}, and "
        f"{os.path.join(os.path.dirname(args.output), LABEL_MAP_FILENAME)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
