r"""Accuracy of the bfloat16 SavedModel against the float32 one (``fcos-export --precision``).

    python -m benchmarks.eval_precision --workdir=/tmp/fcos_synthetic
    python -m benchmarks.eval_precision --workdir=/tmp/fcos_synthetic --torchvision_images=4

Two tables:

1. COCO AP on the synthetic validation split of the trained ``--workdir`` (a ``train.py`` run
   of fcos_tf/configs/synthetic_small.py), each export called through its ``serving_default``
   signature on the uint8 validation images, as TF Serving would.
2. With ``--torchvision_images``: torchvision's ``fcos_resnet50_fpn`` with random weights
   (``weights=None, weights_backbone=None``, seeded) converted by
   :func:`fcos_tf.convert_torchvision.convert` into the recipe ``fcos_torchvision_r50``,
   both exports run on that many 800x1333 pictures: the share of the float32 export's
   detections that the bfloat16 export reproduces (same class, IoU >= 0.9, score within
   0.02; one to one, greedily in float32's score order), and the largest differences of
   the final scores ``sqrt(sigmoid(class) * sigmoid(centerness))`` over every location and
   class of one picture. Random weights (``--torchvision_weights`` reads a real .pth, e.g.
   torchvision's COCO file) score every location near the class prior, below the recipe's 0.2
   threshold, so ``--torchvision_score_threshold`` (default 0.05) sets the threshold of both
   exports; the 100 kept detections are then near-ties among thousands of candidates and
   their agreement says little (BENCHMARKS.md).
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf.core import builders, rundir
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import saved_model as export_saved_model
from fcos_tf.serving.precision import PRECISIONS, inference_model
from fcos_tf.training import evaluation


def export_both(model, label_map, serving, root):
    """``{precision: serving_default signature function}`` of fresh exports of ``model``."""
    functions = {}
    for precision in PRECISIONS:
        started = time.perf_counter()
        path = export_saved_model.export_saved_model(
            model,
            label_map,
            os.path.join(root, precision),
            serving,
            warmup=False,
            precision=precision,
        )
        functions[precision] = tf.saved_model.load(path).signatures[serving_lib.IMAGES_SIGNATURE]
        print(f"exported {precision} in {time.perf_counter() - started:.0f} s", flush=True)
    return functions


def box_iou(a, b):
    """IoU of ``[N, 4]`` against ``[M, 4]`` boxes (any corner format, same for both)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def matched(reference, other, *, iou=0.9, score_tolerance=0.02):
    """How many of ``reference``'s detections ``other`` reproduces, one to one.

    Args:
        reference, other: one image's export outputs (``detection_boxes`` [D, 4],
            ``detection_scores`` [D], ``detection_classes`` [D], ``num_detections``).
        iou: least IoU of a match.
        score_tolerance: largest score difference of a match.

    Returns:
        ``(matched, total)``: ints.
    """
    n, m = int(reference["num_detections"]), int(other["num_detections"])
    boxes_a, boxes_b = reference["detection_boxes"][:n], other["detection_boxes"][:m]
    overlap = box_iou(boxes_a, boxes_b) if n and m else np.zeros([n, m])
    same = reference["detection_classes"][:n, None] == other["detection_classes"][None, :m]
    close = (
        np.abs(reference["detection_scores"][:n, None] - other["detection_scores"][None, :m])
        <= score_tolerance
    )
    candidates = np.where(same & close & (overlap >= iou), overlap, -1.0)
    used = np.zeros([m], bool)
    count = 0
    for i in np.argsort(-reference["detection_scores"][:n], kind="stable"):
        row = np.where(used, -1.0, candidates[i])
        if m and row.max() >= 0:
            used[row.argmax()] = True
            count += 1
    return count, n


def synthetic_ap(workdir, scratch):
    model, config, label_map = rundir.load_trained_model(workdir)
    serving = builders.build_serving_config(config)
    functions = export_both(model, label_map, serving, os.path.join(scratch, "synthetic"))
    val = builders.read_split(config, "val")
    images, annotations = [], []
    results = {p: [] for p in PRECISIONS}
    counts = [0, 0]
    for example in val.dataset:
        image = example["image"].numpy()
        image_id = int(example["image_id"])
        height, width = image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for box, cls in zip(example["boxes"].numpy(), example["classes"].numpy()):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": label_map.category_id(cls),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
        outputs = {}
        for precision, fn in functions.items():
            outputs[precision] = {
                k: v.numpy()[0] for k, v in fn(images=tf.constant(image[None])).items()
            }
            batched = {k: v[None] for k, v in outputs[precision].items()}
            results[precision] += evaluation.outputs_to_coco(batched, [image_id], [(height, width)])
        hit, total = matched(outputs["float32"], outputs["bfloat16"])
        counts[0] += hit
        counts[1] += total
    ground_truth = evaluation.coco_from_dicts(images, annotations, label_map)
    metrics = {
        p: evaluation.coco_evaluate(ground_truth, results[p], label_map, verbose=False)
        for p in PRECISIONS
    }
    return metrics, counts, len(images)


def torchvision_match(num_images, score_threshold, scratch, weights=None, seed=0):
    import torch

    from fcos_tf.convert_torchvision import RECIPE, convert
    from fcos_tf.core import config as config_lib
    from fcos_tf.data.label_map import LabelMap

    if weights is None:
        peer = common.torchvision_fcos(800, 1333, seed=seed)
        weights = os.path.join(scratch, "fcos_random.pth")
        torch.save(peer.state_dict(), weights)
    config = config_lib.load_recipe(RECIPE)
    config.model.score_threshold = score_threshold
    model = convert(weights, os.path.join(scratch, "tv_workdir"), config)
    serving = builders.build_serving_config(config)
    functions = export_both(model, LabelMap.coco_2017(), serving, os.path.join(scratch, "tv"))
    # Score error of the bfloat16 network over every location and class of one picture.
    inputs, _ = serving_lib.preprocess_images(
        tf.constant(common.photo(800, 1333, seed=0)[None]), serving
    )
    scores = {}
    for precision in PRECISIONS:
        out = inference_model(model, precision)(inputs, training=False)
        scores[precision] = np.sqrt(
            tf.sigmoid(out["class_logits"]).numpy()
            * tf.sigmoid(out["centerness_logits"]).numpy()[..., None]
        )
    error = np.abs(scores["bfloat16"] - scores["float32"])
    score_error = (float(np.percentile(error, 99.9)), float(error.max()))
    hits, total, per_image = 0, 0, []
    for i in range(num_images):
        image = tf.constant(common.photo(800, 1333, seed=i)[None])
        outputs = {
            p: {k: v.numpy()[0] for k, v in fn(images=image).items()} for p, fn in functions.items()
        }
        hit, n = matched(outputs["float32"], outputs["bfloat16"])
        hits, total = hits + hit, total + n
        per_image.append(f"{hit}/{n}")
    return hits, total, per_image, score_error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir", default=None, help="train.py workdir (synthetic recipe); none: no table 1."
    )
    parser.add_argument("--torchvision_images", type=int, default=0)
    parser.add_argument("--torchvision_score_threshold", type=float, default=0.05)
    parser.add_argument(
        "--torchvision_weights",
        default=None,
        help="A torchvision fcos_resnet50_fpn .pth (e.g. the COCO one); default random weights.",
    )
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="eval_precision_")

    if args.workdir:
        common.print_header(
            "bfloat16 vs float32 SavedModel: COCO AP on the synthetic validation split"
        )
        metrics, (hits, total), num_images = synthetic_ap(args.workdir, scratch)
        rows = [
            [p, metrics[p]["AP"], metrics[p]["AP50"], metrics[p]["AP75"], num_images]
            for p in PRECISIONS
        ]
        rows.append(
            [
                "bfloat16 - float32",
                metrics["bfloat16"]["AP"] - metrics["float32"]["AP"],
                metrics["bfloat16"]["AP50"] - metrics["float32"]["AP50"],
                metrics["bfloat16"]["AP75"] - metrics["float32"]["AP75"],
                f"{hits}/{total} = {hits / max(total, 1):.1%} of float32's detections matched",
            ]
        )
        common.print_table(["export", "AP", "AP50", "AP75", "images"], rows)

    if args.torchvision_images:
        source = args.torchvision_weights or "random weights"
        common.print_header(
            f"bfloat16 vs float32 SavedModel: torchvision fcos_resnet50_fpn ({source}), 800x1333"
        )
        hits, total, per_image, (p999, worst) = torchvision_match(
            args.torchvision_images,
            args.torchvision_score_threshold,
            scratch,
            weights=args.torchvision_weights,
        )
        common.print_table(
            [
                "images",
                "score threshold",
                "float32 detections",
                "matched by bfloat16",
                "share",
                "score error, 99.9th pct / max",
            ],
            [
                [
                    args.torchvision_images,
                    args.torchvision_score_threshold,
                    total,
                    f"{hits} ({', '.join(per_image)})",
                    f"{hits / max(total, 1):.1%}",
                    f"{p999:.4f} / {worst:.4f}",
                ]
            ],
        )


if __name__ == "__main__":
    main()
