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
given; ``--config.<section>.<key>=...`` overrides apply either way.
"""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", default=None,
                                help_string="Recipe file (configs/*.py); default: the "
                                "workdir's config.json.", lock_config=True)
flags.DEFINE_string("workdir", None, "train.py run directory (config, label map, checkpoints).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or folder; default: the newest of "
                    "--workdir.")
flags.DEFINE_string("output", None, "Base export folder (TF Serving --model_base_path).")
flags.DEFINE_integer("version", None, "Version number; default: the next free one.")
flags.DEFINE_string("model_name", "fcos", "Model name in the warm-up requests.")
flags.DEFINE_list("tflite", [], "TFLite variants to write too: any of fp32, fp16, int8.")
flags.mark_flags_as_required(["output"])
FLAGS = flags.FLAGS


def representative_images(config, serving, count):
    """``count`` training images resized and padded to the TFLite input (int8 calibration)."""
    from fcos_tf import export, training  # pylint: disable=import-outside-toplevel
    from fcos_tf.data import transforms  # pylint: disable=import-outside-toplevel

    examples = training.read_split(config, "train").dataset.take(count)
    images = []
    for example in examples:
        # COCO examples carry the encoded file, the others the decoded pixels.
        image = (example["image"] if "image" in example
                 else transforms.decode_image(example["image_bytes"]))
        images.append(export.tflite_input(image.numpy(), tuple(config.export.input_size),
                                          serving)[0])
    return images


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    from fcos_tf import export  # pylint: disable=import-outside-toplevel

    unknown = [v for v in FLAGS.tflite if v not in export.TFLITE_VARIANTS]
    if unknown:
        sys.exit(f"--tflite: unknown variant(s) {unknown}; choose from {export.TFLITE_VARIANTS}")
    if FLAGS.workdir is None and (FLAGS.checkpoint is None or FLAGS.config is None):
        sys.exit("Pass --workdir, or both --checkpoint and --config.")
    config = FLAGS.config
    if config is None:
        config = export.read_workdir_config(FLAGS.workdir)
    model, config, label_map = export.load_trained_model(
        FLAGS.workdir, checkpoint=FLAGS.checkpoint, config=config)
    serving = export.ServingConfig.from_config(config)
    path = export.export_saved_model(model, label_map, FLAGS.output, serving,
                                     version=FLAGS.version, model_name=FLAGS.model_name)
    print(f"SavedModel -> {path} (signatures {export.IMAGES_SIGNATURE}, "
          f"{export.IMAGE_BYTES_SIGNATURE}; {label_map.num_classes} classes)", flush=True)
    input_size = tuple(int(v) for v in config.export.input_size)
    for variant in FLAGS.tflite:
        images = None
        if variant == "int8":
            images = representative_images(config, serving,
                                           int(config.export.representative_images))
        flatbuffer = export.convert_tflite(
            model, label_map, input_size=input_size, pixel_norm=serving.pixel_norm,
            variant=variant, representative_images=images,
            max_detections=int(config.export.tflite_max_detections))
        tflite_path = os.path.join(FLAGS.output, f"fcos_{variant}.tflite")
        with open(tflite_path, "wb") as f:
            f.write(flatbuffer)
        print(f"TFLite {variant} -> {tflite_path} ({len(flatbuffer) / 2**20:.1f} MiB, input "
              f"uint8 [1, {input_size[0]}, {input_size[1]}, 3])", flush=True)


if __name__ == "__main__":
    app.run(main)
