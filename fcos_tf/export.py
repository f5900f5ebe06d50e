r"""``fcos-export``: a trained FCOS for TensorFlow Serving (SavedModel) and, optionally, TFLite.

    fcos-export --workdir=/tmp/fcos_synthetic --output=/tmp/fcos_serving
    fcos-export --workdir=/tmp/fcos_synthetic --output=/tmp/fcos_serving --tflite=fp32,fp16,int8
    fcos-export --workdir=/tmp/fcos_synthetic --output=/tmp/fcos_serving --precision=bfloat16
    fcos-export --checkpoint=/tmp/r50/checkpoints/ckpt-90000 \
        --config=fcos_r50_1x_improved --output=/tmp/fcos_r50_serving
    python -m fcos_tf.export ...                                # the same

Writes ``<output>/<version>/`` (TF Serving's layout; the version is the next free integer
unless ``--version`` is given) holding the SavedModel with the ``serving_default`` (uint8
``images``) and ``serving_image_bytes`` (string ``image_bytes``) signatures, the label map
in ``assets/`` and warm-up requests in ``assets.extra/``. The network runs with its
BatchNorms folded into the convolutions and its weights frozen into the graph, one image at
a time, in ``--precision`` (``float32``, or ``bfloat16`` for CPUs with AVX-512 BF16 or AMX,
about 5x faster there; see the README); the signatures and float32 outputs are the same.
With ``--tflite`` it also writes ``<output>/fcos_<variant>.tflite`` at the fixed
``config.export.input_size``; the int8 variant is calibrated on
``config.export.representative_images`` training images.

The recipe comes from ``<workdir>/config.json`` (what ``fcos-train`` wrote) unless
``--config`` is given; ``--config.<section>.<key>=...`` overrides apply either way, e.g.
``--workdir=/tmp/fcos_synthetic --config.pipeline.eval_short_side=96``.

Without ``tensorflow-serving-api`` the SavedModel is written without warm-up records, and
one line after the export's says how to add them (nothing is said when the export fails).
Nothing half-written is left in ``--output`` on a failure.
Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing
workdir or checkpoint, a checkpoint that does not fit the config or an existing version.
"""

import os
import signal
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-export"


def _define_flags(flag_values):
    from absl import flags

    cli.import_tensorflow()  # the choices below are defined next to TensorFlow code
    from fcos_tf.serving.precision import PRECISIONS
    from fcos_tf.serving.tflite import TFLITE_VARIANTS

    cli.define_model_flags(flag_values)
    flags.DEFINE_string(
        "output",
        None,
        "Base export folder (TF Serving --model_base_path).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "version", None, "Version number; default: the next free one.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "model_name", "fcos", "Model name in the warm-up requests.", flag_values=flag_values
    )
    flags.DEFINE_enum(
        "precision",
        "float32",
        list(PRECISIONS),
        "Precision of the SavedModel's network: bfloat16 for CPUs with AVX-512 BF16 or AMX "
        "(inputs, outputs and NMS stay as in float32).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "tflite",
        [],
        f"TFLite variants to write too: any of {', '.join(TFLITE_VARIANTS)}.",
        flag_values=flag_values,
    )
    flags.register_validator(
        "tflite",
        lambda variants: set(variants) <= set(TFLITE_VARIANTS),
        f"--tflite: choose from {', '.join(TFLITE_VARIANTS)}",
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-export`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, workdir_config=True)
    cli.set_up_logging()
    from fcos_tf.core import builders, rundir
    from fcos_tf.serving import graph, saved_model, tflite

    # SIGTERM unwinds like Ctrl-C, so that a half-written export folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Checked before any work: the export goes on without the records, and says so once it
    # has written the SavedModel.
    warmup = saved_model.warmup_available()
    try:
        model, config, label_map = rundir.load_trained_model(
            args.workdir, checkpoint=args.checkpoint, config=args.config
        )
        serving = builders.build_serving_config(config)
        path = saved_model.export_saved_model(
            model,
            label_map,
            args.output,
            serving,
            version=args.version,
            model_name=args.model_name,
            warmup=warmup,
            precision=args.precision,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        cli.fail(f"Export failed: {error}", error)
    print(
        f"SavedModel -> {path} (signatures {graph.IMAGES_SIGNATURE}, "
        f"{graph.IMAGE_BYTES_SIGNATURE}; {label_map.num_classes} classes; network in "
        f"{args.precision})",
        flush=True,
    )
    if not warmup:
        print(
            f"No TF Serving warm-up records: tensorflow-serving-api is not installed; to add "
            f"them, `{saved_model.WARMUP_INSTALL}` and export again.",
            flush=True,
        )
    input_size = tuple(int(v) for v in config.export.input_size)
    for variant in dict.fromkeys(args.tflite):
        images = builders.build_representative_images(config) if variant == "int8" else None
        flatbuffer = tflite.convert_tflite(
            model,
            label_map,
            input_size=input_size,
            pixel_norm=serving.pixel_norm,
            variant=variant,
            representative_images=images,
            max_detections=int(config.export.tflite_max_detections),
        )
        tflite_path = os.path.join(args.output, f"fcos_{variant}.tflite")
        with open(tflite_path, "wb") as f:
            f.write(flatbuffer)
        print(
            f"TFLite {variant} -> {tflite_path} ({len(flatbuffer) / 2**20:.1f} MiB, input "
            f"uint8 [1, {input_size[0]}, {input_size[1]}, 3])",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
