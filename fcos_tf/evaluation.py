"""COCO box AP with the official ``pycocotools`` implementation.

Detections come out of the model in network-input pixels of the resized image; COCO scores
them in the pixels of the original image with the dataset's own category ids. The two edges
are crossed here: boxes are divided by the pipeline's ``scale`` and clipped to the original
size, contiguous classes become category ids through the ``LabelMap``.

Ground truth is either the dataset's own annotation file (COCO: the official ``area`` and
``iscrowd`` values) or, for datasets without one (synthetic, TFDS), built from the pipeline's
padded ``boxes``/``classes`` labels mapped back to original pixels.
"""

import contextlib
import io
import json
import logging

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The 12 numbers of COCOeval.summarize(), in its order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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
    coco.dataset = {"images": [dict(i) for i in images], "annotations": annotations,
                    "categories": label_map.to_list()}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_original_xywh(boxes, scale, original_size):
    """Network-input ``xyxy`` boxes -> original-image COCO ``xywh``.

    Args:
        boxes: float ``[N, 4]`` xyxy in network-input pixels.
        scale: the pipeline's resize factor (resized / original), scalar.
        original_size: ``(H0, W0)`` of the original image.

    Returns:
        float64 ``[N, 4]`` ``[x, y, w, h]`` clipped to the original image.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / float(scale)
    height, width = float(original_size[0]), float(original_size[1])
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, height)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0],
                     boxes[:, 3] - boxes[:, 1]], axis=1)


def detections_to_coco(detections, labels, label_map):
    """COCO result dicts for one batch.

    Args:
        detections: dict from ``postprocess``: "boxes" [B, D, 4] xyxy network pixels,
            "scores" [B, D], "classes" [B, D] int (-1 = padding), "num_detections" [B].
        labels: the pipeline's labels dict with "image_id" [B], "scale" [B],
            "original_size" [B, 2] (H0, W0).
        label_map: ``LabelMap`` mapping contiguous classes to category ids.

    Returns:
        list of ``{"image_id", "category_id", "bbox", "score"}``.
    """
    detections = {k: np.asarray(v) for k, v in detections.items()}
    results = []
    for b, image_id in enumerate(np.asarray(labels["image_id"])):
        n = int(detections["num_detections"][b])
        classes = detections["classes"][b, :n]
        keep = classes >= 0
        xywh = to_original_xywh(detections["boxes"][b, :n][keep],
                                np.asarray(labels["scale"])[b],
                                np.asarray(labels["original_size"])[b])
        for box, score, cls in zip(xywh, detections["scores"][b, :n][keep], classes[keep]):
            results.append({"image_id": int(image_id), "category_id": label_map.category_id(cls),
                            "bbox": [round(float(v), 3) for v in box],
                            "score": float(score)})
    return results


def ground_truth_from_labels(labels):
    """Image and annotation dicts rebuilt from the pipeline's padded labels of one batch.

    Returns:
        (images, annotations): lists for ``coco_from_dicts``; annotation boxes are in
        original-image pixels (``boxes / scale``), classes still contiguous (key "class").
    """
    images, annotations = [], []
    original_sizes = np.asarray(labels["original_size"])
    for b, image_id in enumerate(np.asarray(labels["image_id"])):
        images.append({"id": int(image_id), "height": int(original_sizes[b, 0]),
                       "width": int(original_sizes[b, 1])})
        classes = np.asarray(labels["classes"])[b]
        keep = classes >= 0
        # Evaluation batches keep crowd boxes, flagged in "is_crowd" (COCOeval ignores
        # detections matched to them).
        crowd = (np.asarray(labels["is_crowd"])[b] if "is_crowd" in labels
                 else np.zeros_like(classes, bool))
        xywh = to_original_xywh(np.asarray(labels["boxes"])[b][keep],
                                np.asarray(labels["scale"])[b], original_sizes[b])
        for box, cls, is_crowd in zip(xywh, classes[keep], crowd[keep]):
            annotations.append({"image_id": int(image_id), "class": int(cls),
                                "bbox": [float(v) for v in box], "iscrowd": int(is_crowd)})
    return images, annotations


def coco_evaluate(ground_truth, results, label_map, image_ids=None, verbose=True):
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
        detections.dataset = {"images": ground_truth.dataset["images"], "annotations": [],
                              "categories": ground_truth.dataset["categories"]}
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


def predict_dataset(model, dataset, num_images=0):
    """Runs ``model.predict_step`` over ``(images, labels)`` batches.

    Yields:
        ``(detections, labels, images)`` per batch as numpy dicts/arrays.
    """
    predict = tf.function(lambda images: model.predict_step(images), reduce_retracing=True)
    seen = 0
    for images, labels in dataset:
        detections = predict(images)
        labels = {k: v.numpy() for k, v in labels.items()
                  if k in ("image_id", "scale", "original_size", "boxes", "classes",
                           "is_crowd", "image_size")}
        detections = {k: v.numpy() for k, v in detections.items()}
        yield detections, labels, images.numpy()
        seen += images.shape[0]
        if num_images and seen >= num_images:
            return


def evaluate(model, dataset, label_map, *, ground_truth=None, num_images=0, verbose=True,
             keep_batches=0):
    """COCO AP of ``model`` on a validation dataset.

    Args:
        model: an ``FCOS`` model (anything with ``predict_step(images) -> detections``).
        dataset: ``tf.data.Dataset`` of ``(images, labels)`` from the validation pipeline
            (no flips; ``labels`` with "image_id", "scale", "original_size", "boxes",
            "classes").
        label_map: ``LabelMap`` of the dataset.
        ground_truth: a ``COCO`` object (the dataset's annotation file), or None to build it
            from the pipeline's labels.
        num_images: stop after about this many images (0 = the whole dataset).
        verbose: print COCOeval's table.
        keep_batches: number of first batches returned for visualisation.

    Returns:
        (metrics, kept): the dict of ``coco_evaluate`` (plus "num_images") and a list of
        ``(images, detections, labels)`` of the first ``keep_batches`` batches.
    """
    results, gt_images, gt_annotations, image_ids, kept = [], [], [], [], []
    for detections, labels, images in predict_dataset(model, dataset, num_images):
        results += detections_to_coco(detections, labels, label_map)
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
    metrics = coco_evaluate(ground_truth, results, label_map, image_ids=sorted(set(image_ids)),
                            verbose=verbose)
    metrics["num_images"] = len(set(image_ids))
    return metrics, kept


def write_metrics(metrics, path):
    """Writes the metrics dict as indented JSON; returns ``path``."""
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=False)
    return path


def detection_grid(batches, label_map, *, pixel_norm="caffe", num_images=4,
                   score_threshold=0.3):
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
    from fcos_tf.data import transforms  # pylint: disable=import-outside-toplevel

    try:
        from fcos_tf.data import visualize  # pylint: disable=import-outside-toplevel
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
            pictures.append(visualize.draw_detections(
                image, detections["boxes"][b, :n] * zoom, detections["classes"][b, :n],
                detections["scores"][b, :n], names=label_map.names,
                score_threshold=score_threshold))
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
