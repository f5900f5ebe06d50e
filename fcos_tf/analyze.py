r"""``fcos-analyze``: what a recipe's target assignment does to its dataset, before training.

    fcos-analyze --output=/tmp/analysis                          # synthetic_small, train split
    fcos-analyze --config=fcos_r50_1x_improved --config.data.coco.root=/data/coco \
        --split=val --output=/tmp/coco_val
    python -m fcos_tf.analyze ...                                 # the same

For every image of the split (``--max_images`` for the first N), the boxes are resized as the
evaluation pipeline resizes them (short side ``pipeline.eval_short_side``, long side at most
``pipeline.max_size``; COCO image sizes come from the annotation file, so no image is decoded)
and assigned with the recipe's ``locations`` (:mod:`fcos_tf.analysis.assignment`). The text
report goes to stdout; ``--output`` receives ``analysis.json`` (every figure, and the boxes
without a positive location with the reason), ``size_histogram.png``,
``positives_per_level.png`` and ``examples/<image_id>.png`` (the first images with their
positive locations per level).

Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line for bad flags, an invalid
config or bad data.
"""

import json
import os
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-analyze"
DEFAULT_RECIPE = "synthetic_small"


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_enum(
        "split", "train", ("train", "val"), "Split analysed.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "output", None, "Folder for analysis.json and the pictures.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "max_images",
        0,
        "Analyse the first N images only (0: all).",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_examples",
        4,
        "Images drawn with their positive locations.",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "anchors", True, "Also compute RetinaNet's anchor BPR.", flag_values=flag_values
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)


def analyze_dataset(config, split, *, max_images=0, anchors=True, read=None):
    """Runs the analysis over a split; returns ``(summary dict, ReadResult)``.

    Args:
        config: the recipe.
        split: "train" | "val".
        max_images: analyse the first N images only (0: all).
        anchors: also compute RetinaNet's anchor recall.
        read: a ``ReadResult`` to analyse instead of ``read_split(config, split)``; its
            examples may carry ``"original_size"`` int32 ``[2]`` instead of the image.
    """
    import numpy as np
    import tensorflow as tf

    from fcos_tf.analysis import assignment, report
    from fcos_tf.core import builders

    if read is None:
        read = builders.read_split(config, split)
    dataset = read.dataset
    if max_images:
        dataset = dataset.take(max_images)
    locations, pipeline = config.locations, config.pipeline
    settings = dict(
        strides=tuple(int(s) for s in locations.strides),
        size_ranges=tuple(tuple(float(v) for v in r) for r in locations.size_ranges),
        center_sampling_radius=float(locations.center_sampling_radius),
        location_offset=float(locations.location_offset),
        location_grid=locations.location_grid,
    )
    size_table = None
    if read.image_sizes:
        # The reader listed the sizes (a COCO file): no image is decoded to learn them.
        sizes = read.image_sizes
        ids = np.array(list(sizes), np.int64)
        values = np.array([h * 100_000 + w for h, w in sizes.values()], np.int64)
        size_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, values), default_value=-1
        )

    def original_size(example):
        if "original_size" in example:
            return tf.cast(example["original_size"], tf.int32)
        if "image" in example:
            return tf.shape(example["image"])[:2]
        if size_table is not None:
            packed = size_table.lookup(tf.cast(example["image_id"], tf.int64))
            return tf.cast(tf.stack([packed // 100_000, packed % 100_000]), tf.int32)
        return tf.shape(tf.image.decode_image(example["image_bytes"], channels=3))[:2]

    def analyse(example):
        prepared = assignment.prepare_boxes(
            tf.cast(example["boxes"], tf.float32),
            example["classes"],
            example["is_crowd"],
            original_size(example),
            short_side=pipeline.eval_short_side,
            max_size=pipeline.max_size,
            resize_rounding=pipeline.resize_rounding,
            size_divisibility=pipeline.size_divisibility,
        )
        stats = assignment.image_statistics(
            prepared["boxes"],
            prepared["classes"],
            prepared["padded_size"],
            anchors=anchors,
            **settings,
        )
        original = tf.gather(tf.cast(example["boxes"], tf.float32), prepared["rows"])
        return example["image_id"], stats, prepared["boxes"], original, prepared["classes"]

    accumulator = report.Accumulator(
        settings["strides"], settings["size_ranges"], read.label_map.names
    )
    options = tf.data.Options()
    options.deterministic = True
    results = dataset.map(analyse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(8)
    for image_id, stats, boxes, original, classes in results.with_options(
        options
    ).as_numpy_iterator():
        accumulator.add(image_id, stats, boxes, original, classes)
    return accumulator.summary(), read


def _draw_examples(config, read, output, count):
    """The first ``count`` images of the split through the evaluation pipeline, drawn."""
    from fcos_tf.core import builders
    from fcos_tf.data.pipeline import make_pipeline
    from fcos_tf.data.visualize import save_batch

    pipeline_config = builders.build_pipeline_config(config, count)
    images, labels = next(
        iter(
            make_pipeline(
                read.dataset.take(count),
                training=False,
                config=pipeline_config,
                repeat=False,
                shuffle_buffer=0,
                deterministic=True,
            )
        )
    )
    return save_batch(
        images,
        labels,
        os.path.join(output, "examples"),
        pixel_norm=config.pipeline.pixel_norm,
        names=read.label_map.names,
        strides=pipeline_config.strides,
        location_offset=pipeline_config.location_offset,
        location_grid=pipeline_config.location_grid,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-analyze`` with ``argv`` (default ``sys.argv[1:]``); returns the status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, recipe_default=DEFAULT_RECIPE)
    cli.set_up_logging()
    from ml_collections import config_flags

    from fcos_tf.analysis import report
    from fcos_tf.core import config as config_lib
    from fcos_tf.data import DatasetError

    config = args.config
    try:
        config_lib.validate_config(config, mode="eval" if args.split == "val" else "train")
    except ValueError as error:
        cli.fail(f"Invalid config: {error}", error)
    try:
        summary, read = analyze_dataset(
            config, args.split, max_images=args.max_images, anchors=args.anchors
        )
    except (DatasetError, FileNotFoundError) as error:
        cli.fail(f"Bad data: {error}", error)
    os.makedirs(args.output, exist_ok=True)
    summary["recipe"] = config_flags.get_config_filename(args["config"])
    summary["split"] = args.split
    with open(os.path.join(args.output, "analysis.json"), "w") as file:
        json.dump(summary, file, indent=1)
    report.size_histogram_png(summary, os.path.join(args.output, "size_histogram.png"))
    report.positives_png(summary, os.path.join(args.output, "positives_per_level.png"))
    if args.num_examples:
        _draw_examples(config, read, args.output, args.num_examples)
    print(report.format_text(summary, f"{PROGRAM}: {config.data.dataset} {args.split}"))
    print(f"Wrote {os.path.join(args.output, 'analysis.json')} and pictures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
