r"""Exports a trained FCOS as a ``.tflite`` that MediaPipe's ObjectDetector runs.

    python export_edge.py --workdir=/tmp/fcos_edge --output=/tmp/fcos_edge/fcos_int8.tflite
    python export_edge.py --workdir=/tmp/fcos_edge --variant=fp32 --output=/tmp/fcos_fp32.tflite

The model's BatchNorms are folded into its convolutions (:mod:`fcos_tf.bn_folding`), then
the network, its pixel normalisation and builtin-op NMS are converted at the fixed
``config.export.input_size`` (uint8 ``[1, H, W, 3]`` input) with the four outputs of a
detection model with NMS inside (boxes, classes, scores, count) and MediaPipe metadata
(labels, input): :func:`fcos_tf.tflite_metadata.convert_tflite_for_mediapipe`. The int8
variant is calibrated on ``config.export.representative_images`` training images. The file
also runs in LiteRT (:func:`fcos_tf.tflite_client.run_tflite`; ``detection_classes`` holds
the contiguous class there).

The recipe comes from ``<workdir>/config.json`` unless ``--config`` is given;
``--config.<section>.<key>=...`` overrides apply either way, as for ``export_savedmodel.py``.
"""

import logging
import sys

from absl import app, flags

import export_savedmodel

FLAGS = flags.FLAGS


def define_flags(argv: list[str]) -> None:
    """Defines the command line: the model flags of ``export_savedmodel.py``, the output."""
    export_savedmodel.define_model_flags(argv)
    flags.DEFINE_string("output", None, "Path of the .tflite file to write.")
    flags.DEFINE_enum("variant", "int8", ["fp32", "fp16", "int8"], "Precision of the network.")
    flags.mark_flags_as_required(["output"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    from fcos_tf import bn_folding, builders, rundir, tflite_metadata

    if FLAGS.workdir is None and (FLAGS.checkpoint is None or FLAGS.config is None):
        sys.exit("Pass --workdir, or both --checkpoint and --config.")
    model, config, label_map = rundir.load_trained_model(
        FLAGS.workdir, checkpoint=FLAGS.checkpoint, config=FLAGS.config
    )
    serving = builders.build_serving_config(config)
    input_size = tuple(int(v) for v in config.export.input_size)
    images = None
    if FLAGS.variant == "int8":
        images = export_savedmodel.representative_images(
            config, serving, int(config.export.representative_images)
        )
    flatbuffer = tflite_metadata.convert_tflite_for_mediapipe(
        bn_folding.fold_batch_norms(model),
        label_map,
        input_size=input_size,
        pixel_norm=serving.pixel_norm,
        variant=FLAGS.variant,
        representative_images=images,
        max_detections=int(config.export.tflite_max_detections),
    )
    with open(FLAGS.output, "wb") as f:
        f.write(flatbuffer)
    print(
        f"TFLite {FLAGS.variant} with MediaPipe metadata -> {FLAGS.output} "
        f"({len(flatbuffer) / 2**20:.2f} MiB, input uint8 [1, {input_size[0]}, "
        f"{input_size[1]}, 3], {label_map.num_classes} labels)",
        flush=True,
    )


if __name__ == "__main__":
    define_flags(sys.argv)
    app.run(main)
