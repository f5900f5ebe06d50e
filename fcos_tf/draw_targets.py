r"""``fcos-draw-targets``: the first training batch of a dataset with its targets, as PNGs.

    fcos-draw-targets --output /tmp/targets                              # synthetic data
    fcos-draw-targets --annotations ann.json --images imgs/ --output /tmp/t
    python -m fcos_tf.draw_targets ...                                   # the same

Each picture shows an augmented training image with its boxes and the positive locations of
every level (:func:`fcos_tf.data.visualize.save_batch`). A dataset with fewer usable images
than ``--batch_size`` gives a smaller batch: all of its images, with a note on stderr.
Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line for bad flags or bad data
(none of the images decodes).
"""

import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-draw-targets"


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_string("output", None, "Folder receiving <image_id>.png.", flag_values=flag_values)
    flags.DEFINE_string(
        "annotations", None, "COCO JSON (default: the synthetic dataset).", flag_values=flag_values
    )
    flags.DEFINE_string("images", None, "Image folder of --annotations.", flag_values=flag_values)
    flags.DEFINE_integer(
        "batch_size",
        4,
        "Images rendered (all of them when the dataset has fewer).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "short_side", ["320", "320"], "Training short-side range MIN,MAX.", flag_values=flag_values
    )
    flags.DEFINE_integer("max_size", 533, "Long side at most.", flag_values=flag_values)
    flags.DEFINE_integer(
        "synthetic_size", 256, "Side of the synthetic images.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "seed", 0, "Seed of the data and the augmentation.", flag_values=flag_values
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["annotations", "images"],
        lambda f: not f["annotations"] or bool(f["images"]),
        "--images is required with --annotations",
        flag_values=flag_values,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-draw-targets`` with ``argv`` (default ``sys.argv[1:]``); returns the status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, terms=cli.COCO_READER_TERMS)
    cli.set_up_logging()
    from fcos_tf.data import DatasetError, coco, pipeline, synthetic
    from fcos_tf.data.visualize import save_batch

    if args.annotations:
        try:
            read = coco.read_coco(args.annotations, args.images, decode=False)
        except (DatasetError, FileNotFoundError) as error:
            cli.fail(f"Bad data: {error}", error)
    else:
        read = synthetic.synthetic_dataset(
            args.batch_size, image_size=args.synthetic_size, seed=args.seed
        )
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=True,
        batch_size=args.batch_size,
        train_short_side=tuple(int(v) for v in args.short_side),
        max_size=args.max_size,
        seed=args.seed,
        deterministic=True,
        repeat=False,
        # The first batch of a dataset smaller than --batch_size is all of it.
        drop_remainder=False,
    )
    images, labels = next(iter(dataset), (None, None))
    if images is None:
        cli.fail(f"Bad data: no image of --annotations={args.annotations} could be decoded.")
    drawn = int(images.shape[0])
    if drawn < args.batch_size:
        usable = f"{drawn} usable image{'s' if drawn > 1 else ''}"
        print(
            f"The dataset has {usable}, fewer than --batch_size={args.batch_size}: drawing "
            f"{'them' if drawn > 1 else 'it'}.",
            file=sys.stderr,
            flush=True,
        )
    for path in save_batch(images, labels, args.output, names=read.label_map.names):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
