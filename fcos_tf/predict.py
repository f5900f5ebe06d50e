r"""Runs a detector on image files and writes pictures and COCO-format results.

    python -m fcos_tf.predict --model /tmp/fcos_serving photo.jpg more_photos/ --output /tmp/out
    python -m fcos_tf.predict --model /tmp/fcos_synthetic images/ --output /tmp/out

``--model`` is either an export of ``export_savedmodel.py`` (a version folder, or the base
folder whose newest version is used) or a ``train.py`` workdir (its newest checkpoint). Both
go through the same graph: the ``serving_image_bytes`` signature (decode, resize, normalise,
pad, detect, NMS, rescale to the original image).

Writes into ``--output``:

- ``<name>.png`` per image: the image with boxes, class names and scores drawn (detections
  scoring at least ``--score_threshold``);
- ``detections.json``: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}, ...]`` in original-image pixels, every detection (for ``COCO.loadRes``);
- ``images.json``: ``[{"id", "file_name", "height", "width"}, ...]``, the image ids used. An
  image named by a number (COCO's ``000000397133.jpg``) gets that number as id, the others
  their position (1, 2, ...) in the sorted input list.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from fcos_tf import builders, rundir, serving
from fcos_tf.data import transforms
from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def find_images(paths):
    """Image files among ``paths`` (files, or folders searched recursively), sorted.

    Raises:
        FileNotFoundError: naming a path that does not exist.
        ValueError: when no image is found.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                found += [os.path.join(root, f) for f in files
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"Input path {path!r} does not exist.")
    if not found:
        raise ValueError(f"No image ({', '.join(IMAGE_EXTENSIONS)}) in {list(paths)}.")
    return sorted(found)


def _saved_model_version(path):
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [name for name in (tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else [])
                if name.strip("/").isdigit()
                and tf.io.gfile.exists(os.path.join(path, name.strip("/"), "saved_model.pb"))]
    if versions:
        return os.path.join(path, str(max(int(v.strip("/")) for v in versions)))
    return None


def load_detector(path, checkpoint=None):
    """A function ``image_bytes string [B] -> outputs dict`` and the label map.

    Args:
        path: SavedModel version/base folder, or a ``train.py`` workdir.
        checkpoint: optional checkpoint of the workdir.

    Returns:
        ``(detect, label_map)``.
    """
    version = _saved_model_version(path)
    if version is not None:
        loaded = tf.saved_model.load(version)
        signature = loaded.signatures[serving.IMAGE_BYTES_SIGNATURE]
        label_map = LabelMap.load(os.path.join(version, "assets", LABEL_MAP_FILENAME))
        return (lambda image_bytes: signature(**{serving.IMAGE_BYTES_INPUT: image_bytes}),
                label_map)
    if not tf.io.gfile.exists(os.path.join(path, rundir.CONFIG_FILE)):
        raise FileNotFoundError(f"`model` {path!r} is neither a SavedModel (saved_model.pb in "
                                f"it or in a numbered version folder) nor a train.py workdir "
                                f"(config.json).")
    model, config, label_map = rundir.load_trained_model(path, checkpoint=checkpoint)
    fn, signature = serving.serving_functions(
        model, label_map, builders.build_serving_config(config))[serving.IMAGE_BYTES_SIGNATURE]
    return tf.function(fn, input_signature=signature, autograph=False), label_map


def image_id_of(file_name, position):
    """The number in a file name like ``000000397133.jpg``, else ``position``."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return int(stem) if stem.isdigit() else position


def to_coco(outputs, image_id, height, width):
    """COCO result dicts of one image from the exported outputs (batch row 0)."""
    n = int(outputs["num_detections"][0])
    results = []
    for box, score, category in zip(outputs["detection_boxes"][0, :n],
                                    outputs["detection_scores"][0, :n],
                                    outputs["detection_classes"][0, :n]):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        x, y = xmin * width, ymin * height
        results.append({"image_id": image_id, "category_id": int(category),
                        "bbox": [round(x, 2), round(y, 2), round(xmax * width - x, 2),
                                 round(ymax * height - y, 2)],
                        "score": round(float(score), 5)})
    return results


def draw(image, outputs, label_map, score_threshold):
    """The image with the detections at or above ``score_threshold`` drawn (uint8 RGB)."""
    from fcos_tf.data import visualize  # pylint: disable=import-outside-toplevel

    height, width = image.shape[:2]
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n] * np.array([height, width, height, width])
    xyxy = boxes[:, [1, 0, 3, 2]]
    classes = np.array([label_map.index_of(int(c)) for c in outputs["detection_classes"][0, :n]],
                       np.int32)
    return np.asarray(visualize.draw_detections(
        image, xyxy, classes, outputs["detection_scores"][0, :n], names=label_map.names,
        score_threshold=score_threshold), np.uint8)


def predict(model_path, inputs, output_dir, *, score_threshold=0.3, checkpoint=None):
    """Detects objects in every image of ``inputs``; writes pictures and JSON files.

    Returns:
        The list of COCO result dicts (also in ``<output_dir>/detections.json``).
    """
    files = find_images(inputs)
    detect, label_map = load_detector(model_path, checkpoint)
    os.makedirs(output_dir, exist_ok=True)
    results, images_info, used_names = [], [], set()
    for position, file_name in enumerate(files, start=1):
        with open(file_name, "rb") as f:
            encoded = f.read()
        # One image per call: with GroupNorm in the head, padding an image to a larger
        # batch-mate would change its detections slightly.
        try:
            outputs = {k: v.numpy() for k, v in detect(tf.constant([encoded])).items()}
        except tf.errors.InvalidArgumentError as error:
            print(f"Skipping {file_name}: {error.message.splitlines()[0]}", file=sys.stderr)
            continue
        image = transforms.decode_image(encoded).numpy()
        height, width = image.shape[:2]
        image_id = image_id_of(file_name, position)
        images_info.append({"id": image_id, "file_name": file_name, "height": height,
                            "width": width})
        results += to_coco(outputs, image_id, height, width)
        name = os.path.splitext(os.path.basename(file_name))[0]
        if name in used_names:  # same name in two folders
            name = f"{name}_{position}"
        used_names.add(name)
        picture = draw(image, outputs, label_map, score_threshold)
        with open(os.path.join(output_dir, f"{name}.png"), "wb") as f:
            f.write(tf.io.encode_png(picture).numpy())
    with open(os.path.join(output_dir, "detections.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(output_dir, "images.json"), "w") as f:
        json.dump(images_info, f, indent=1)
    return results


def _define_flags():
    from absl import flags  # pylint: disable=import-outside-toplevel

    flags.DEFINE_string("model", None, "SavedModel (version or base folder) or train.py workdir.")
    flags.DEFINE_string("output", None, "Folder receiving the pictures and the JSON files.")
    flags.DEFINE_float("score_threshold", 0.3, "Minimum score of the detections drawn.")
    flags.DEFINE_string("checkpoint", None,
                        "With a workdir: this checkpoint instead of the newest.")


def main(argv):
    """The command line (flags defined by ``_define_flags`` under ``__main__``)."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    FLAGS = flags.FLAGS  # pylint: disable=invalid-name
    inputs = argv[1:]
    if not inputs:
        sys.exit("Give at least one image file or folder (flags may come before or after).")
    if not FLAGS.model or not FLAGS.output:
        sys.exit("--model and --output are required.")
    try:
        results = predict(FLAGS.model, inputs, FLAGS.output,
                          score_threshold=FLAGS.score_threshold, checkpoint=FLAGS.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(str(error))
    print(f"{len(results)} detections -> {FLAGS.output}/detections.json", flush=True)


if __name__ == "__main__":
    from absl import app  # pylint: disable=import-outside-toplevel

    _define_flags()
    app.run(main)
