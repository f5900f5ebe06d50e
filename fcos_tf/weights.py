r"""``fcos-weights``: ImageNet ResNet weights as a ``.weights.h5`` of this package's backbone.

    fcos-weights --source=imagenet --depth=50 --output=resnet50_caffe.weights.h5
    fcos-weights --source=/path/resnet50-0676ba61.pth --output=r50_pt.weights.h5
    python -m fcos_tf.weights ...                                # the same

``--source=imagenet`` downloads ``keras.applications`` weights (caffe layout); ``--source`` may
also be a local ``keras.applications`` weight file (``.h5``, or ``.weights.h5`` with
``--source_format=keras_applications``) for machines without internet, or a torchvision
``.pth`` file (pytorch layout). The mapping is :mod:`fcos_tf.importers.imagenet`; the file
written is what ``config.backbone.weights`` takes.

Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing or
unreadable source, one whose tensors do not fit (the tensor is named), or a download that
failed (with how to use a local copy).
"""

import os
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-weights"


def _define_flags(flag_values):
    from absl import flags

    cli.import_tensorflow()  # the choices below are defined next to TensorFlow code
    from fcos_tf.importers.imagenet import WEIGHT_SOURCES

    flags.DEFINE_string(
        "source",
        "imagenet",
        "'imagenet' (keras.applications, caffe layout), a "
        "keras.applications .h5 file (caffe layout) or a torchvision .pth file "
        "(pytorch layout).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "source_format",
        "auto",
        WEIGHT_SOURCES,
        "Format of --source when its extension does not tell.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum("depth", "50", ["50", "101"], "ResNet depth.", flag_values=flag_values)
    flags.DEFINE_string("output", None, "Path ending in .weights.h5.", flag_values=flag_values)
    flags.mark_flag_as_required("output", flag_values=flag_values)
    flags.register_validator(
        "output",
        lambda path: path.endswith(".weights.h5"),
        "--output must end in .weights.h5",
        flag_values=flag_values,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-weights`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, _ = cli.parse_flags(
        _define_flags,
        argv,
        PROGRAM,
        # The library's `weights` is --source, its `source` --source_format.
        terms={"weights": "--source", "source": "--source_format"},
    )
    cli.set_up_logging()
    if args.source != "imagenet" and not os.path.exists(args.source):
        cli.fail(
            f"Weights not written: --source={args.source} does not exist (give 'imagenet' "
            f"or the path of a weight file)."
        )
    from fcos_tf.importers.imagenet import DownloadError, load_backbone_weights
    from fcos_tf.modeling.backbone import ResNet

    args.depth = int(args.depth)
    torchvision = args.source_format == "torchvision" or (
        args.source_format == "auto" and args.source.endswith((".pth", ".pt"))
    )
    layout = "pytorch" if torchvision else "caffe"
    backbone = ResNet(depth=args.depth, layout=layout)
    source_format = (
        "keras_applications"
        if args.source_format == "auto" and not torchvision
        else args.source_format
    )
    try:
        load_backbone_weights(backbone, args.source, source=source_format)
    except (FileNotFoundError, ValueError, ImportError, DownloadError) as error:
        cli.fail(f"Weights not written: {error}", error)
    backbone.save_weights(args.output)
    print(
        f"Wrote {args.output} (ResNet-{args.depth}, layout={layout!r}; use "
        f"config.backbone.layout={layout!r}, config.pipeline.pixel_norm="
        f"{'torchvision' if layout == 'pytorch' else 'caffe'!r})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
