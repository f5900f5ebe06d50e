r"""Exports a trained FCOS for TensorFlow Serving (SavedModel) and, optionally, TFLite.

    python export_savedmodel.py --workdir=/tmp/fcos_synthetic --output=/tmp/fcos_serving
    python export_savedmodel.py --workdir=/tmp/fcos_synthetic --output=/tmp/fcos_serving \
        --tflite=fp32,fp16,int8
    python export_savedmodel.py --checkpoint=/tmp/r50/checkpoints/ckpt-90000 \
        --config=configs/fcos_r50_1x_improved.py --output=/tmp/fcos_r50_serving

Writes ``<output>/<version>/`` (TF Serving's layout; the version is the next free integer
unless ``--version`` is given) holding the SavedModel with the ``serving_default`` (uint8
``images``) and ``serving_image_bytes`` (string ``image_bytes``) signatures, the label map
in ``assets/`` and warm-up requests in ``assets.extra/``. With ``--tflite`` it also writes
``<output>/fcos_<variant>.tflite`` at the fixed ``config.export.input_size``; the int8
variant is calibrated on ``config.export.representative_images`` training images.

The recipe comes from ``<workdir>/config.json`` (what train.py wrote) unless ``--config`` is
given; ``--config.<section>.<key>=...`` overrides apply either way, e.g.
``--workdir=/tmp/fcos_synthetic --config.pipeline.eval_short_side=96``.

Without ``tensorflow-serving-api`` the SavedModel is written without warm-up records, and
one line says how to add them. Nothing half-written is left in ``--output`` on a failure.
Exit status: 0 when done; 1 with one line on stderr for a missing workdir or checkpoint, a
checkpoint that does not fit the config or an existing version (``--debug`` or
``FCOS_DEBUG=1`` adds the traceback).
"""

import logging
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _argv_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``argv`` (None when absent)."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def define_model_flags(argv: list[str]) -> None:
    """Defines the flags naming the trained model: ``--config``, ``--workdir``, ``--checkpoint``.

    ``--config`` defaults to the workdir's own config.json. Its default must exist when the
    flag is defined, so that the ``--config.<section>.<key>`` overrides have something to
    apply to: with ``--workdir`` and no ``--config=...`` it is the config the run wrote.
    ``export_edge.py`` shares it.
    """
    workdir = _argv_value(argv, "workdir")
    if _argv_value(argv, "config") is None and workdir:
        from fcos_tf import (
            cli,
            rundir,
        )

        try:
            saved = rundir.read_config(workdir)
        except FileNotFoundError as error:
            cli.fail(str(error), error)
        config_flags.DEFINE_config_dict(
            "config", saved, "The workdir's config.json.", lock_config=True, sys_argv=argv
        )
    else:
        config_flags.DEFINE_config_file(
            "config",
            default=None,
            help_string="Recipe file (configs/*.py); default: the workdir's config.json.",
            lock_config=True,
            sys_argv=argv,
        )
    flags.DEFINE_string("workdir", None, "train.py run directory (config, label map, checkpoints).")
    flags.DEFINE_string(
        "checkpoint", None, "Checkpoint prefix or folder; default: the newest of --workdir."
    )


def define_flags(argv: list[str]) -> None:
    """Defines the command line; ``--config`` defaults to the workdir's own config.json."""
    define_model_flags(argv)
    flags.DEFINE_string("output", None, "Base export folder (TF Serving --model_base_path).")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.")
    flags.DEFINE_string("model_name", "fcos", "Model name in the warm-up requests.")
    flags.DEFINE_list("tflite", [], "TFLite variants to write too: any of fp32, fp16, int8.")
    from fcos_tf import cli

    flags.DEFINE_bool("debug", False, cli.DEBUG_FLAG_HELP)
    flags.mark_flags_as_required(["output"])


def representative_images(config, serving, count):
    """``count`` training images resized and padded to the TFLite input (int8 calibration)."""
    from fcos_tf import builders, tflite_client
    from fcos_tf.data import transforms

    examples = builders.read_split(config, "train").dataset.take(count)
    images = []
    for example in examples:
        # COCO examples carry the encoded file, the others the decoded pixels.
        image = (
            example["image"]
            if "image" in example
            else transforms.decode_image(example["image_bytes"])
        )
        images.append(
            tflite_client.tflite_input(image.numpy(), tuple(config.export.input_size), serving)[0]
        )
    return images


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    from fcos_tf import builders, cli, export_saved_model, export_tflite, rundir
    from fcos_tf import serving as serving_lib

    # SIGTERM unwinds like Ctrl-C, so that a half-written export folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    unknown = [v for v in FLAGS.tflite if v not in export_tflite.TFLITE_VARIANTS]
    if unknown:
        sys.exit(
            f"--tflite: unknown variant(s) {unknown}; choose from {export_tflite.TFLITE_VARIANTS}"
        )
    if FLAGS.workdir is None and (FLAGS.checkpoint is None or FLAGS.config is None):
        sys.exit("Pass --workdir, or both --checkpoint and --config.")
    # Checked before any work: the export goes on without the records and says so.
    warmup = export_saved_model.warmup_available()
    if not warmup:
        print(
            f"No TF Serving warm-up records: tensorflow-serving-api is not installed; to add "
            f"them, `{export_saved_model.WARMUP_INSTALL}` and export again.",
            flush=True,
        )
    try:
        model, config, label_map = rundir.load_trained_model(
            FLAGS.workdir, checkpoint=FLAGS.checkpoint, config=FLAGS.config
        )
        serving = builders.build_serving_config(config)
        path = export_saved_model.export_saved_model(
            model,
            label_map,
            FLAGS.output,
            serving,
            version=FLAGS.version,
            model_name=FLAGS.model_name,
            warmup=warmup,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        cli.fail(f"Export failed: {error}", error)
    print(
        f"SavedModel -> {path} (signatures {serving_lib.IMAGES_SIGNATURE}, "
        f"{serving_lib.IMAGE_BYTES_SIGNATURE}; {label_map.num_classes} classes)",
        flush=True,
    )
    input_size = tuple(int(v) for v in config.export.input_size)
    for variant in FLAGS.tflite:
        images = None
        if variant == "int8":
            images = representative_images(
                config, serving, int(config.export.representative_images)
            )
        flatbuffer = export_tflite.convert_tflite(
            model,
            label_map,
            input_size=input_size,
            pixel_norm=serving.pixel_norm,
            variant=variant,
            representative_images=images,
            max_detections=int(config.export.tflite_max_detections),
        )
        tflite_path = os.path.join(FLAGS.output, f"fcos_{variant}.tflite")
        with open(tflite_path, "wb") as f:
            f.write(flatbuffer)
        print(
            f"TFLite {variant} -> {tflite_path} ({len(flatbuffer) / 2**20:.1f} MiB, input "
            f"uint8 [1, {input_size[0]}, {input_size[1]}, 3])",
            flush=True,
        )


if __name__ == "__main__":
    define_flags(sys.argv)
    app.run(main)
