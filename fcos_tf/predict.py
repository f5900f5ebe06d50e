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

A file that is not a readable image is skipped with one line giving the reason
(``Skipping x.jpg: truncated``, ``Skipping y.jpg: undecodable (<decoder message>)``) and
counted at the end (``Skipped 2 of 9 files (1 empty,
1 truncated)``). Exit status: 0 when done; 1 with one line on stderr for a missing input or
model, or when no file could be read (``--debug`` or ``FCOS_DEBUG=1`` adds the traceback).
From Python, :class:`Detector` runs an export or a workdir on arrays or encoded files.
"""

import collections
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from fcos_tf import builders, cli, evaluation, rundir, serving
from fcos_tf.data import coco, transforms
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
                found += [
                    os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
                ]
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
    versions = [
        name
        for name in (tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else [])
        if name.strip("/").isdigit()
        and tf.io.gfile.exists(os.path.join(path, name.strip("/"), "saved_model.pb"))
    ]
    if versions:
        return os.path.join(path, str(max(int(v.strip("/")) for v in versions)))
    return None


def _signature_functions(path, checkpoint=None):
    """``(images_fn, image_bytes_fn, label_map)`` of an export or a workdir (see Detector)."""
    version = _saved_model_version(path)
    if version is not None:
        loaded = tf.saved_model.load(version)
        images = loaded.signatures[serving.IMAGES_SIGNATURE]
        image_bytes = loaded.signatures[serving.IMAGE_BYTES_SIGNATURE]
        label_map = LabelMap.load(os.path.join(version, "assets", LABEL_MAP_FILENAME))
        return (
            lambda x: images(**{serving.IMAGES_INPUT: x}),
            lambda x: image_bytes(**{serving.IMAGE_BYTES_INPUT: x}),
            label_map,
        )
    if not tf.io.gfile.exists(os.path.join(path, rundir.CONFIG_FILE)):
        raise FileNotFoundError(
            f"`model` {path!r} is neither a SavedModel (saved_model.pb in "
            f"it or in a numbered version folder) nor a train.py workdir "
            f"(config.json)."
        )
    model, config, label_map = rundir.load_trained_model(path, checkpoint=checkpoint)
    functions = serving.serving_functions(model, label_map, builders.build_serving_config(config))
    images_fn, images_signature = functions[serving.IMAGES_SIGNATURE]
    bytes_fn, bytes_signature = functions[serving.IMAGE_BYTES_SIGNATURE]
    return (
        tf.function(images_fn, input_signature=images_signature, autograph=False),
        tf.function(bytes_fn, input_signature=bytes_signature, autograph=False),
        label_map,
    )


def load_detector(path, checkpoint=None):
    """A function ``image_bytes string [B] -> outputs dict`` and the label map.

    Args:
        path: SavedModel version/base folder, or a ``train.py`` workdir.
        checkpoint: optional checkpoint of the workdir.

    Returns:
        ``(detect, label_map)``.
    """
    _, detect, label_map = _signature_functions(path, checkpoint)
    return detect, label_map


def _check_images(images):
    """Refuses what ``serving_default`` would silently cast to uint8 (see :class:`Detector`)."""
    dtype = tf.as_dtype(images.dtype)
    if dtype != tf.uint8:
        if dtype.is_floating:
            values = np.asarray(images)
            if values.size and np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0:
                raise TypeError(
                    f"`images` are {dtype.name} in 0..1: the signature takes uint8 pixels "
                    f"0..255, and a float array would be cast to 0 and 1 (an almost black "
                    f"image). Send `np.round(images * 255).astype(np.uint8)`."
                )
        raise TypeError(
            f"`images` must be uint8 RGB pixels 0..255, got {dtype.name}; convert "
            f"explicitly (e.g. `np.clip(images, 0, 255).astype(np.uint8)`)."
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"`images` must be uint8 [B, H, W, 3] (RGB, one size per call), got "
            f"shape {list(shape)}."
        )


class Detector:
    """The exported detector as a Python callable, refusing inputs the graph would misread.

    TF Serving, ``tf.make_tensor_proto(..., dtype=tf.uint8)`` and a SavedModel's concrete
    function all convert a float array sent to ``serving_default`` to uint8 without a word:
    pixels in 0..1 become 0 and 1. ``Detector`` checks the dtype first.

    Example::

        detector = Detector.load("/tmp/fcos_serving")   # an export, or a train.py workdir
        outputs = detector(np.asarray(Image.open("photo.jpg").convert("RGB"))[None])
        outputs = detector.detect_image_bytes([open("photo.jpg", "rb").read()])

    Attributes:
        label_map: the ``LabelMap`` (``detection_classes`` are its category ids).
    """

    def __init__(self, images_fn, image_bytes_fn, label_map: LabelMap):
        self._images_fn = images_fn
        self._image_bytes_fn = image_bytes_fn
        self.label_map = label_map

    @classmethod
    def load(cls, path: str, checkpoint: str | None = None) -> "Detector":
        """From an export (version or base folder) or a ``train.py`` workdir.

        Raises:
            FileNotFoundError: when ``path`` is neither.
        """
        return cls(*_signature_functions(path, checkpoint))

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``serving_default``: detections of same-size RGB images.

        Args:
            images: uint8 ``[B, H, W, 3]`` RGB pixels 0..255 (numpy or tensor).

        Returns:
            dict of numpy arrays: ``detection_boxes`` float32 ``[B, D, 4]`` normalised
            ``[ymin, xmin, ymax, xmax]``, ``detection_scores`` float32 ``[B, D]``,
            ``detection_classes`` float32 ``[B, D]`` category ids (-1 on padding),
            ``num_detections`` int32 ``[B]``.

        Raises:
            TypeError: for a non-uint8 array (floats in 0..1 are named as such).
            ValueError: for a shape other than ``[B, H, W, 3]``.
        """
        if not hasattr(images, "dtype"):
            images = np.asarray(images)
        _check_images(images)
        return {k: v.numpy() for k, v in self._images_fn(tf.constant(images)).items()}

    def detect_image_bytes(self, image_bytes: Sequence[bytes]) -> dict[str, np.ndarray]:
        """``serving_image_bytes``: detections of JPEG/PNG/GIF/BMP files (any sizes).

        Args:
            image_bytes: the encoded files, ``[B]``.

        Returns:
            The outputs of :meth:`__call__`.
        """
        return {
            k: v.numpy()
            for k, v in self._image_bytes_fn(tf.constant(image_bytes, tf.string)).items()
        }


def image_id_of(file_name, position):
    """The number in a file name like ``000000397133.jpg``, else ``position``."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return int(stem) if stem.isdigit() else position


def _rounded(result):
    """A COCO result with the box to 1/100 pixel and the score to 5 digits (smaller files)."""
    return dict(result, bbox=[round(v, 2) for v in result["bbox"]], score=round(result["score"], 5))


def draw(image, outputs, label_map, score_threshold):
    """The image with the detections at or above ``score_threshold`` drawn (uint8 RGB)."""
    from fcos_tf.data import visualize

    height, width = image.shape[:2]
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0, :n] * np.array([height, width, height, width])
    xyxy = boxes[:, [1, 0, 3, 2]]
    classes = np.array(
        [label_map.index_of(int(c)) for c in outputs["detection_classes"][0, :n]], np.int32
    )
    return np.asarray(
        visualize.draw_detections(
            image,
            xyxy,
            classes,
            outputs["detection_scores"][0, :n],
            names=label_map.names,
            score_threshold=score_threshold,
        ),
        np.uint8,
    )


def error_reason(error: tf.errors.OpError) -> str:
    """The line of a TensorFlow error that says what went wrong, without graph locations.

    A graph error's message starts with "Graph execution error:" and the Python stack of the
    failing node; the reason is the last line that is not a node or op annotation.
    """
    for line in reversed(error.message.splitlines()):
        line = line.strip()
        if not line or line.startswith(("[[", "File ", "Detected at node")):
            continue
        line = line.split("\t [[")[0].split(" [[{{")[0].strip()
        return line.removeprefix("assertion failed: ")
    return type(error).__name__


def predict(
    model_path: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    score_threshold: float = 0.3,
    checkpoint: str | None = None,
) -> dict:
    """Detects objects in every image of ``inputs``; writes pictures and JSON files.

    A file that is not a readable image (empty, truncated, corrupt, another format) is
    skipped with one line on stderr giving the reason, and counted in a last line.

    Returns:
        The list of COCO result dicts (also in ``<output_dir>/detections.json``).

    Raises:
        FileNotFoundError: for an input path or a model that does not exist.
        ValueError: when no image is found, or none of the files could be read.
    """
    files = find_images(inputs)
    detector = Detector.load(model_path, checkpoint)
    os.makedirs(output_dir, exist_ok=True)
    results, images_info, used_names, skipped = [], [], set(), []
    for position, file_name in enumerate(files, start=1):
        # The reader's cheap check names most problems (empty, truncated, other format);
        # the decoder inside the graph catches the rest.
        reason = coco.check_image_file(file_name)
        if reason is None:
            with open(file_name, "rb") as f:
                encoded = f.read()
            # One image per call: with GroupNorm in the head, padding an image to a larger
            # batch-mate would change its detections slightly.
            try:
                outputs = detector.detect_image_bytes([encoded])
            except tf.errors.InvalidArgumentError as error:
                reason = f"undecodable ({error_reason(error)})"
                if cli.debug_requested():
                    print(error.message, file=sys.stderr)
        if reason is not None:
            print(f"Skipping {file_name}: {reason}", file=sys.stderr, flush=True)
            skipped.append(reason.split(" (")[0])  # counted by kind
            continue
        image = transforms.decode_image(encoded).numpy()
        height, width = image.shape[:2]
        image_id = image_id_of(file_name, position)
        images_info.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )
        results += [
            _rounded(r) for r in evaluation.outputs_to_coco(outputs, [image_id], [(height, width)])
        ]
        name = os.path.splitext(os.path.basename(file_name))[0]
        if name in used_names:  # same name in two folders
            name = f"{name}_{position}"
        used_names.add(name)
        picture = draw(image, outputs, detector.label_map, score_threshold)
        with open(os.path.join(output_dir, f"{name}.png"), "wb") as f:
            f.write(tf.io.encode_png(picture).numpy())
    if skipped:
        counts = ", ".join(
            f"{count} {reason}" for reason, count in sorted(collections.Counter(skipped).items())
        )
        summary = f"{len(skipped)} of {len(files)} files ({counts})"
        if len(skipped) == len(files):
            raise ValueError(f"No image could be read: skipped all {summary}.")
        print(f"Skipped {summary}.", file=sys.stderr, flush=True)
    with open(os.path.join(output_dir, "detections.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(output_dir, "images.json"), "w") as f:
        json.dump(images_info, f, indent=1)
    return results


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "SavedModel (version or base folder) or train.py workdir.")
    flags.DEFINE_string("output", None, "Folder receiving the pictures and the JSON files.")
    flags.DEFINE_float("score_threshold", 0.3, "Minimum score of the detections drawn.")
    flags.DEFINE_string(
        "checkpoint", None, "With a workdir: this checkpoint instead of the newest."
    )
    flags.DEFINE_bool("debug", False, cli.DEBUG_FLAG_HELP)


def main(argv):
    """The command line (flags defined by ``_define_flags`` under ``__main__``)."""
    from absl import flags

    FLAGS = flags.FLAGS
    inputs = argv[1:]
    if not inputs:
        sys.exit("Give at least one image file or folder (flags may come before or after).")
    if not FLAGS.model or not FLAGS.output:
        sys.exit("--model and --output are required.")
    try:
        results = predict(
            FLAGS.model,
            inputs,
            FLAGS.output,
            score_threshold=FLAGS.score_threshold,
            checkpoint=FLAGS.checkpoint,
        )
    except (FileNotFoundError, ValueError) as error:
        cli.fail(str(error), error)
    print(f"{len(results)} detections -> {FLAGS.output}/detections.json", flush=True)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
