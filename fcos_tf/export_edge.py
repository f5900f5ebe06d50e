r"""``fcos-export-edge``: a trained FCOS as a ``.tflite`` that MediaPipe's ObjectDetector runs.

    fcos-export-edge --workdir=/tmp/fcos_edge --output=/tmp/fcos_edge/fcos_int8.tflite
    fcos-export-edge --workdir=/tmp/fcos_edge --variant=fp32 --output=/tmp/fcos_fp32.tflite
    python -m fcos_tf.export_edge ...                           # the same

The model's BatchNorms are folded into its convolutions, then the network, its pixel
normalisation and builtin-op NMS are converted at the fixed ``config.export.input_size``
(uint8 ``[1, H, W, 3]`` input) with the four outputs of a detection model with NMS inside
(boxes, classes, scores, count) and MediaPipe metadata (labels, input):
:func:`fcos_tf.serving.tflite_metadata.convert_tflite_for_mediapipe`. The int8 variant is
calibrated on ``config.export.representative_images`` training images. The file also runs
in LiteRT (:func:`fcos_tf.serving.tflite_client.run_tflite`; ``detection_classes`` holds
the contiguous class there).

The recipe comes from ``<workdir>/config.json`` unless ``--config`` is given;
``--config.<section>.<key>=...`` overrides apply either way, as for ``fcos-export``.
Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing
workdir or checkpoint, a checkpoint that does not fit the config, or no MediaPipe (checked
first, before the model is loaded and converted).
"""

import os
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-export-edge"


def _define_flags(flag_values):
    from absl import flags

    cli.define_model_flags(flag_values)
    flags.DEFINE_string(
        "output", None, "Path of the .tflite file to write.", flag_values=flag_values
    )
    flags.DEFINE_enum(
        "variant",
        "int8",
        ["fp32", "fp16", "int8"],
        "Precision of the network.",
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-export-edge`` with ``argv`` (default ``sys.argv[1:]``); returns the status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, workdir_config=True)
    cli.set_up_logging()
    from fcos_tf.core import builders, rundir
    from fcos_tf.serving import tflite_metadata

    try:
        # MediaPipe writes the metadata, the last step: without it, fail before the
        # conversion rather than after it.
        tflite_metadata.import_writer()
    except ImportError as error:
        cli.fail(f"Export failed: {error}", error)
    try:
        model, config, label_map = rundir.load_trained_model(
            args.workdir, checkpoint=args.checkpoint, config=args.config
        )
        serving = builders.build_serving_config(config)
        input_size = tuple(int(v) for v in config.export.input_size)
        images = builders.build_representative_images(config) if args.variant == "int8" else None
        flatbuffer = tflite_metadata.convert_tflite_for_mediapipe(
            model,
            label_map,
            input_size=input_size,
            pixel_norm=serving.pixel_norm,
            variant=args.variant,
            representative_images=images,
            max_detections=int(config.export.tflite_max_detections),
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "wb") as f:
            f.write(flatbuffer)
    except (FileNotFoundError, ValueError, ImportError) as error:
        cli.fail(f"Export failed: {error}", error)
    print(
        f"TFLite {args.variant} with MediaPipe metadata -> {args.output} "
        f"({len(flatbuffer) / 2**20:.2f} MiB, input uint8 [1, {input_size[0]}, "
        f"{input_size[1]}, 3], {label_map.num_classes} labels)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
