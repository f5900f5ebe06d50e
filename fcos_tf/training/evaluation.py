"""COCO box AP with the official ``pycocotools`` implementation.

Evaluation scores what the exported SavedModel returns. Each validation batch goes through
the serving graph's own steps: :meth:`fcos_tf.modeling.fcos.FCOS.predict_step` with each image's
valid (unpadded) size, so boxes are clipped to the image before NMS, then
:func:`fcos_tf.serving.graph.detections_to_outputs`, the export's mapping to the TF Object
Detection API outputs (``[ymin, xmin, ymax, xmax]`` normalised to the original image, category
ids). :func:`outputs_to_coco` turns those outputs into COCO results, exactly as it would turn a
server's response; the network input is the validation pipeline's, which is the serving
preprocessing (``fcos_tf.data.pipeline.preprocess_example``).

Ground truth is either the dataset's own annotation file (COCO: the official ``area`` and
``iscrowd`` values) or, for datasets without one (synthetic, TFDS), built from the pipeline's
padded ``boxes``/``classes`` labels mapped back to original pixels.
"""

import contextlib
import io
import json
import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fcos_tf.data.label_map import LabelMap
from fcos_tf.serving.graph import detections_to_outputs

# The 12 numbers of COCOeval.summarize(), in its order.
METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def coco_from_dicts(images, annotations, label_map):
    """An in-memory ``pycocotools.coco.COCO`` ground truth.

    Args:
        images: list of ``{"id", "height", "width"}``.
        annotations: list of ``{"image_id", "bbox" (xywh original pixels), "category_id",
            "iscrowd" (0/1), "area" (optional; the box area by default)}``.
        label_map: ``LabelMap`` of the dataset (its categories become the GT categories).

    Returns:
        A ``COCO`` object with its index built.
    """
    annotations = [dict(a) for a in annotations]
    for i, annotation in enumerate(annotations):
        annotation.setdefault("area", float(annotation["bbox"][2] * annotation["bbox"][3]))
        annotation.setdefault("iscrowd", 0)
        annotation["id"] = i + 1  # COCOeval needs ids > 0
    coco = COCO()
    coco.dataset = {
        "images": [dict(i) for i in images],
        "annotations": annotations,
        "categories": label_map.to_list(),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_original_xywh(boxes, image_size, original_size):
    """Network-input ``xyxy`` boxes -> original-image COCO ``xywh``.

    Args:
        boxes: float ``[N, 4]`` xyxy in network-input pixels.
        image_size: ``(H, W)`` of the resized image (before padding) the boxes are in.
        original_size: ``(H0, W0)`` of the original image.

    Returns:
        float64 ``[N, 4]`` ``[x, y, w, h]`` clipped to the original image (one ratio per
        axis, as the pipeline resized them).
    """
    height, width = float(original_size[0]), float(original_size[1])
    ratio_y, ratio_x = height / float(image_size[0]), width / float(image_size[1])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * [ratio_x, ratio_y, ratio_x, ratio_y]
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, height)
    return np.stack(
        [boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1
    )


def outputs_to_coco(
    outputs: dict,
    image_ids: Sequence[int] | np.ndarray,
    original_sizes: Sequence[Sequence[int]] | np.ndarray,
) -> list[dict]:
    """COCO result dicts from the exported outputs (a SavedModel's response, or evaluation's).

    Args:
        outputs: dict of the export's outputs (``fcos_tf.serving.graph.OUTPUT_KEYS``), numpy or
            tensors: "detection_boxes" float32 ``[B, D, 4]`` ``[ymin, xmin, ymax, xmax]``
            normalised to the original image, "detection_scores" float32 ``[B, D]``,
            "detection_classes" float ``[B, D]`` category ids (-1 on padding rows),
            "num_detections" int ``[B]``.
        image_ids: int ``[B]``, COCO image id of each row.
        original_sizes: int ``[B, 2]``, ``(H0, W0)`` of each original image.

    Returns:
        list of ``{"image_id", "category_id", "bbox" (xywh original pixels), "score"}``, no
        rounding: COCOeval sees the values the outputs hold.
    """
    boxes = np.asarray(outputs["detection_boxes"], np.float64)
    scores = np.asarray(outputs["detection_scores"])
    categories = np.asarray(outputs["detection_classes"])
    num = np.asarray(outputs["num_detections"])
    image_ids = np.asarray(image_ids).reshape(-1)
    original_sizes = np.asarray(original_sizes).reshape(-1, 2)
    if not len(image_ids) == len(original_sizes) == boxes.shape[0]:
        raise ValueError(
            f"`outputs` hold {boxes.shape[0]} images but `image_ids` has "
            f"{len(image_ids)} and `original_sizes` {len(original_sizes)}."
        )
    results = []
    for b, image_id in enumerate(image_ids):
        n = int(num[b])
        height, width = (float(v) for v in original_sizes[b])
        for (ymin, xmin, ymax, xmax), score, category in zip(
            boxes[b, :n], scores[b, :n], categories[b, :n]
        ):
            if category < 0:
                continue
            x, y = xmin * width, ymin * height
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(round(category)),
                    "bbox": [x, y, xmax * width - x, ymax * height - y],
                    "score": float(score),
                }
            )
    return results


def ground_truth_from_labels(labels):
    """Image and annotation dicts rebuilt from the pipeline's padded labels of one batch.

    Returns:
        (images, annotations): lists for ``coco_from_dicts``; annotation boxes are in
        original-image pixels, classes still contiguous (key "class").
    """
    images, annotations = [], []
    original_sizes = np.asarray(labels["original_size"])
    for b, image_id in enumerate(np.asarray(labels["image_id"])):
        images.append(
            {
                "id": int(image_id),
                "height": int(original_sizes[b, 0]),
                "width": int(original_sizes[b, 1]),
            }
        )
        classes = np.asarray(labels["classes"])[b]
        keep = classes >= 0
        # Evaluation batches keep crowd boxes, flagged in "is_crowd" (COCOeval ignores
        # detections matched to them).
        crowd = (
            np.asarray(labels["is_crowd"])[b]
            if "is_crowd" in labels
            else np.zeros_like(classes, bool)
        )
        xywh = to_original_xywh(
            np.asarray(labels["boxes"])[b][keep],
            np.asarray(labels["image_size"])[b],
            original_sizes[b],
        )
        for box, cls, is_crowd in zip(xywh, classes[keep], crowd[keep]):
            annotations.append(
                {
                    "image_id": int(image_id),
                    "class": int(cls),
                    "bbox": [float(v) for v in box],
                    "iscrowd": int(is_crowd),
                }
            )
    return images, annotations


def coco_evaluate(
    ground_truth: COCO,
    results: list[dict],
    label_map: LabelMap,
    image_ids: Sequence[int] | None = None,
    verbose: bool = True,
) -> dict:
    """Runs ``COCOeval`` (bbox) and returns the 12 numbers and the per-class AP.

    Args:
        ground_truth: a ``pycocotools.coco.COCO``.
        results: list of COCO result dicts (possibly empty).
        label_map: ``LabelMap`` of the evaluated classes.
        image_ids: restrict the evaluation to these images (default: all GT images).
        verbose: print COCOeval's summary table.

    Returns:
        dict: the 12 ``METRIC_NAMES`` as fractions in [0, 1] (``None`` where the split has no
        object of that size, pycocotools' -1) and "per_class_AP" ``{name: AP or None}``.
    """
    if image_ids is None:
        image_ids = sorted(ground_truth.getImgIds())
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            detections = ground_truth.loadRes(results)
    else:  # loadRes refuses an empty list
        detections = COCO()
        detections.dataset = {
            "images": ground_truth.dataset["images"],
            "annotations": [],
            "categories": ground_truth.dataset["categories"],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            detections.createIndex()
    evaluator = COCOeval(ground_truth, detections, iouType="bbox")
    evaluator.params.imgIds = list(image_ids)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(summary.getvalue(), end="")

    def fraction(value):
        return None if value < 0 else float(value)

    metrics = {name: fraction(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}
    # precision: [T IoUs, R recalls, K categories, A areas, M max-dets]; area "all", 100 dets.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        name = label_map.names[label_map.index_of(category_id)]
        per_class[name] = float(values.mean()) if values.size else None
    metrics["per_class_AP"] = per_class
    return metrics


# Labels of the validation pipeline that evaluation reads.
EVAL_LABEL_KEYS = ("image_id", "original_size", "image_size", "boxes", "classes")


def predict_dataset(model, dataset, label_map, num_images=0):
    """Runs the serving graph's detection steps over ``(images, labels)`` batches.

    Per batch: ``model.predict_step((images, {"image_size": ...}))`` (decoding, clipping to
    each image's valid region, NMS) and :func:`fcos_tf.serving.graph.detections_to_outputs` with the
    batch's ``image_size`` and ``original_size``: the exported SavedModel's computation on the
    validation pipeline's preprocessing, which is the serving preprocessing.

    Args:
        model: an ``FCOS`` model (anything with ``predict_step((images, labels))``).
        dataset: ``(images, labels)`` batches with the ``EVAL_LABEL_KEYS`` labels.
        label_map: ``LabelMap`` giving the category ids.
        num_images: stop after about this many images (0 = the whole dataset).

    Yields:
        ``(outputs, detections, labels, images)`` per batch as numpy: the export's outputs
        (``fcos_tf.serving.graph.OUTPUT_KEYS``), the network-pixel detections of ``predict_step``,
        the ``EVAL_LABEL_KEYS`` labels (plus "is_crowd" when present) and the images.

    Raises:
        ValueError: when the labels lack one of ``EVAL_LABEL_KEYS``.
    """
    missing = [k for k in EVAL_LABEL_KEYS if k not in dataset.element_spec[1]]
    if missing:
        raise ValueError(
            f"`dataset` labels lack {missing}; evaluation needs {EVAL_LABEL_KEYS} "
            f"(the validation pipeline's labels)."
        )

    def detect(images, valid_size, original_size):
        detections = model.predict_step((images, {"image_size": valid_size}))
        outputs = detections_to_outputs(
            detections, label_map, valid_size=valid_size, frame_size=original_size
        )
        return outputs, detections

    detect = tf.function(detect, reduce_retracing=True, autograph=False)
    seen = 0
    for images, labels in dataset:
        outputs, detections = detect(images, labels["image_size"], labels["original_size"])
        labels = {
            k: v.numpy() for k, v in labels.items() if k in EVAL_LABEL_KEYS or k == "is_crowd"
        }
        outputs = {k: v.numpy() for k, v in outputs.items()}
        detections = {k: v.numpy() for k, v in detections.items()}
        yield outputs, detections, labels, images.numpy()
        seen += images.shape[0]
        if num_images and seen >= num_images:
            return


def evaluate(
    model: keras.Model,
    dataset: tf.data.Dataset,
    label_map: LabelMap,
    *,
    ground_truth: COCO | None = None,
    num_images: int = 0,
    verbose: bool = True,
    keep_batches: int = 0,
) -> tuple[dict, list]:
    """COCO AP of ``model`` on a validation dataset, scored on the export's outputs.

    Args:
        model: an ``FCOS`` model (anything with ``predict_step((images, labels))``).
        dataset: ``tf.data.Dataset`` of ``(images, labels)`` from the validation pipeline
            (no flips; ``labels`` with the ``EVAL_LABEL_KEYS``).
        label_map: ``LabelMap`` of the dataset.
        ground_truth: a ``COCO`` object (the dataset's annotation file), or None to build it
            from the pipeline's labels.
        num_images: stop after about this many images (0 = the whole dataset).
        verbose: print COCOeval's table.
        keep_batches: number of first batches returned for visualisation.

    Returns:
        (metrics, kept): the dict of ``coco_evaluate`` (plus "num_images") and a list of
        ``(images, detections, labels)`` of the first ``keep_batches`` batches, detections in
        network-input pixels.
    """
    results, gt_images, gt_annotations, image_ids, kept = [], [], [], [], []
    for outputs, detections, labels, images in predict_dataset(
        model, dataset, label_map, num_images
    ):
        results += outputs_to_coco(outputs, labels["image_id"], labels["original_size"])
        image_ids += [int(i) for i in labels["image_id"]]
        if ground_truth is None:
            images_b, annotations_b = ground_truth_from_labels(labels)
            gt_images += images_b
            for annotation in annotations_b:
                annotation["category_id"] = label_map.category_id(annotation.pop("class"))
            gt_annotations += annotations_b
        if len(kept) < keep_batches:
            kept.append((images, detections, labels))
    if not image_ids:
        raise ValueError("dataset: the validation dataset is empty")
    if ground_truth is None:
        ground_truth = coco_from_dicts(gt_images, gt_annotations, label_map)
    logging.info("COCO evaluation on %d images, %d detections.", len(image_ids), len(results))
    metrics = coco_evaluate(
        ground_truth, results, label_map, image_ids=sorted(set(image_ids)), verbose=verbose
    )
    metrics["num_images"] = len(set(image_ids))
    return metrics, kept


def write_metrics(metrics, path):
    """Writes the metrics dict as indented JSON; returns ``path``."""
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=False)
    return path


def detection_grid(batches, label_map, *, pixel_norm="caffe", num_images=4, score_threshold=0.3):
    """One picture of the first validation images with their detections drawn.

    Args:
        batches: list of ``(images, detections, labels)`` numpy batches from ``evaluate``.
        label_map: ``LabelMap`` (class names in the captions).
        pixel_norm: normalisation of the images, to undo it.
        num_images: images in the grid (side by side).
        score_threshold: detections below it are not drawn.

    Returns:
        uint8 ``[H, W', 3]`` numpy image (the valid regions side by side), or None.
    """
    from fcos_tf.data import transforms

    try:
        from fcos_tf.data import visualize
    except ImportError:
        logging.warning("fcos_tf.data.visualize is not available: no detection picture.")
        return None

    pictures = []
    for images, detections, labels in batches:
        for b in range(images.shape[0]):
            if len(pictures) == num_images:
                break
            height, width = (int(v) for v in labels["image_size"][b])
            image = transforms.denormalize_image(images[b, :height, :width], pixel_norm).numpy()
            n = int(detections["num_detections"][b])
            # Small images are enlarged (nearest) so that the captions stay readable.
            zoom = max(1, 384 // max(height, width))
            image = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)
            pictures.append(
                visualize.draw_detections(
                    image,
                    detections["boxes"][b, :n] * zoom,
                    detections["classes"][b, :n],
                    detections["scores"][b, :n],
                    names=label_map.names,
                    score_threshold=score_threshold,
                )
            )
    if not pictures:
        return None
    height = max(p.shape[0] for p in pictures)
    pictures = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in pictures]
    return np.concatenate(pictures, axis=1)


def write_png(image, path):
    """Writes a uint8 ``[H, W, 3]`` image as PNG."""
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())
    return path
