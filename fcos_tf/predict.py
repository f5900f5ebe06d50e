r"""``fcos-predict``: runs a detector on image files; writes pictures and COCO-format results.

    fcos-predict --model /tmp/fcos_serving photo.jpg more_photos/ --output /tmp/out
    fcos-predict --model /tmp/fcos_synthetic images/ --output /tmp/out
    python -m fcos_tf.predict ...                                # the same

``--model`` is either an export of ``fcos-export`` (a version folder, or the base folder
whose newest version is used) or a ``fcos-train`` workdir (its newest checkpoint). Both go
through the same graph: the ``serving_image_bytes`` signature (decode, resize, normalise,
pad, detect, NMS, rescale to the original image).

Writes into ``--output``:

- ``<name>.png`` per image: the image with the detections scoring at least
  ``--score_threshold`` drawn, one box per object (the best class of each box, see
  :func:`fcos_tf.data.visualize.best_class_per_box`);
- ``detections.json``: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}, ...]`` in original-image pixels, every detection (for ``COCO.loadRes``);
- ``images.json``: ``[{"id", "file_name", "height", "width"}, ...]``, the image ids used,
  unique (:func:`image_ids`): when every input file is named by a number (COCO's
  ``000000397133.jpg``) and no two by the same one, each image keeps its number as id;
  otherwise every image gets its position (1, 2, ...) in the sorted input list.

A file that is not a readable image is skipped with one line giving the reason
(``Skipping x.jpg: truncated``, ``Skipping y.jpg: undecodable (<decoder message>)``) and
counted at the end (``Skipped 2 of 9 files (1 empty, 1 truncated)``). Exit status
(:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing input or model,
or when no file could be read. From Python, :func:`fcos_tf.core.rundir.load_detector` gives
the :class:`~fcos_tf.serving.detector.Detector` of an export or a workdir.
"""

import collections
import json
import os
import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-predict"


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


def _number_of(file_name):
    """The number naming a file like ``000000397133.jpg`` (397133), else None."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return int(stem) if stem.isascii() and stem.isdigit() else None


def image_ids(files: Sequence[str]) -> list[int]:
    """The COCO ``image_id`` of each of ``files``, all distinct.

    The numbers naming the files (COCO's ``000000397133.jpg`` is 397133) when every file is
    named by a number and no two by the same one (``a/1.jpg`` and ``b/1.jpg``, or ``1.jpg``
    and ``01.png``, are); otherwise the positions 1, 2, ... of the files in ``files``, for all.
    """
    numbers = [_number_of(f) for f in files]
    if None not in numbers and len(set(numbers)) == len(numbers):
        return numbers
    return list(range(1, len(files) + 1))


def _rounded(result):
    """A COCO result with the box to 1/100 pixel and the score to 5 digits (smaller files)."""
    return dict(result, bbox=[round(v, 2) for v in result["bbox"]], score=round(result["score"], 5))


def draw(image, outputs, label_map, score_threshold):
    """The image with the detections at or above ``score_threshold`` drawn (uint8 RGB)."""
    import numpy as np

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


def error_reason(error) -> str:
    """The line of a TensorFlow error (``tf.errors.OpError``) that says what went wrong,
    without graph locations.

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
) -> list[dict]:
    """Detects objects in every image of ``inputs``; writes pictures and JSON files.

    A file that is not a readable image (empty, truncated, corrupt, another format) is
    skipped with one line on stderr giving the reason, and counted in a last line.

    Returns:
        The list of COCO result dicts (also in ``<output_dir>/detections.json``).

    Raises:
        FileNotFoundError: for an input path or a model that does not exist.
        ValueError: for a ``score_threshold`` outside [0, 1], when no image is found, or
            when none of the files could be read.
    """
    import tensorflow as tf

    from fcos_tf.core import rundir
    from fcos_tf.data import coco, transforms
    from fcos_tf.training import evaluation

    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"`score_threshold`={score_threshold} is not a score in [0, 1].")
    files = find_images(inputs)
    ids = image_ids(files)
    detector = rundir.load_detector(model_path, checkpoint)
    os.makedirs(output_dir, exist_ok=True)
    results, images_info, used_names, skipped = [], [], set(), []
    for position, (file_name, image_id) in enumerate(zip(files, ids), start=1):
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


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_string(
        "model",
        None,
        "SavedModel (version or base folder) or fcos-train workdir.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output",
        None,
        "Folder receiving the pictures and the JSON files.",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "score_threshold",
        0.3,
        "Minimum score of the detections drawn, in [0, 1].",
        flag_values=flag_values,
    )
    flags.register_validator(
        "score_threshold",
        lambda value: 0.0 <= value <= 1.0,
        "must be a score in [0, 1]",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "With a workdir: this checkpoint instead of the newest.",
        flag_values=flag_values,
    )
    flags.mark_flags_as_required(["model", "output"], flag_values=flag_values)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-predict`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, inputs = cli.parse_flags(_define_flags, argv, PROGRAM, positional="IMAGE")
    if not inputs:
        cli.fail(
            f"{PROGRAM}: give at least one image file or folder (flags may come before or after)."
        )
    cli.set_up_logging()
    try:
        results = predict(
            args.model,
            inputs,
            args.output,
            score_threshold=args.score_threshold,
            checkpoint=args.checkpoint,
        )
    except (FileNotFoundError, ValueError) as error:
        cli.fail(str(error), error)
    print(f"{len(results)} detections -> {args.output}/detections.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
