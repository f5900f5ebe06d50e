"""COCO evaluation: coordinate mapping back to the original image, category ids, AP values."""

import json

import numpy as np
import pytest

from fcos_tf import evaluation
from fcos_tf.data.label_map import LabelMap

LABEL_MAP = LabelMap([(1, "cat"), (3, "dog"), (7, "bird")])

# Original-image boxes (xywh) of every COCO size range: small < 32^2 <= medium < 96^2 <= large.
GT_IMAGES = [{"id": 11, "height": 300, "width": 400}, {"id": 12, "height": 200, "width": 200}]
GT_ANNOTATIONS = [
    {"image_id": 11, "bbox": [10.0, 20.0, 20.0, 10.0], "category_id": 1},    # small
    {"image_id": 11, "bbox": [100.0, 50.0, 60.0, 60.0], "category_id": 3},   # medium
    {"image_id": 11, "bbox": [150.0, 100.0, 200.0, 150.0], "category_id": 7},  # large
    {"image_id": 12, "bbox": [0.0, 0.0, 120.0, 150.0], "category_id": 3},    # large
]


def _ground_truth():
    return evaluation.coco_from_dicts(GT_IMAGES, GT_ANNOTATIONS, LABEL_MAP)


def test_ground_truth_as_detections_gives_perfect_scores():
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 1.0} for a in GT_ANNOTATIONS]
    metrics = evaluation.coco_evaluate(_ground_truth(), results, LABEL_MAP, verbose=False)
    for name in evaluation.METRIC_NAMES:
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 1.0})


def test_wrong_class_and_missed_boxes_lower_ap():
    results = [{"image_id": 11, "category_id": 1, "bbox": [10.0, 20.0, 20.0, 10.0], "score": 0.9},
               # right box, wrong category: a false positive for "cat", a miss for "dog"
               {"image_id": 11, "category_id": 1, "bbox": [100.0, 50.0, 60.0, 60.0], "score": 0.8}]
    metrics = evaluation.coco_evaluate(_ground_truth(), results, LABEL_MAP, verbose=False)
    assert metrics["per_class_AP"]["cat"] == pytest.approx(1.0)
    assert metrics["per_class_AP"]["dog"] == 0.0
    assert metrics["per_class_AP"]["bird"] == 0.0
    assert metrics["AP"] == pytest.approx(1.0 / 3.0)


def test_no_detections_and_missing_size_range():
    ground_truth = evaluation.coco_from_dicts(
        GT_IMAGES[:1], [dict(GT_ANNOTATIONS[2])], LABEL_MAP)  # one large box only
    metrics = evaluation.coco_evaluate(ground_truth, [], LABEL_MAP, verbose=False)
    assert metrics["AP"] == 0.0
    assert metrics["APs"] is None and metrics["APm"] is None  # no such objects: None, not -1
    assert metrics["per_class_AP"]["cat"] is None


def test_to_original_xywh_divides_by_scale_and_clips():
    boxes = np.array([[10.0, 20.0, 50.0, 40.0], [-4.0, 0.0, 900.0, 30.0]])
    xywh = evaluation.to_original_xywh(boxes, 2.0, (100, 300))
    np.testing.assert_allclose(xywh, [[5.0, 10.0, 20.0, 10.0], [0.0, 0.0, 300.0, 15.0]])


def test_detections_to_coco_maps_classes_and_coordinates():
    detections = {
        "boxes": np.array([[[20.0, 40.0, 60.0, 80.0], [0.0, 0.0, 10.0, 10.0],
                            [0.0, 0.0, 0.0, 0.0]]], np.float32),
        "scores": np.array([[0.9, 0.5, 0.0]], np.float32),
        "classes": np.array([[2, 0, -1]], np.int32),
        "num_detections": np.array([2], np.int32),
    }
    labels = {"image_id": np.array([42]), "scale": np.array([0.5], np.float32),
              "original_size": np.array([[400, 600]], np.int32)}
    results = evaluation.detections_to_coco(detections, labels, LABEL_MAP)
    assert results == [
        {"image_id": 42, "category_id": 7, "bbox": [40.0, 80.0, 80.0, 80.0],
         "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 1, "bbox": [0.0, 0.0, 20.0, 20.0],
         "score": pytest.approx(0.5)},
    ]


def test_ground_truth_from_labels_round_trips_through_the_scale():
    labels = {"image_id": np.array([5, 6]), "scale": np.array([2.0, 1.0], np.float32),
              "original_size": np.array([[50, 60], [32, 32]], np.int32),
              "boxes": np.array([[[2.0, 4.0, 22.0, 44.0], [0, 0, 0, 0]],
                                 [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
              "classes": np.array([[1, -1], [-1, -1]], np.int32)}
    images, annotations = evaluation.ground_truth_from_labels(labels)
    assert images == [{"id": 5, "height": 50, "width": 60}, {"id": 6, "height": 32, "width": 32}]
    assert annotations == [{"image_id": 5, "class": 1, "bbox": [1.0, 2.0, 10.0, 20.0],
                            "iscrowd": 0}]
    labels["is_crowd"] = np.array([[True, False], [False, False]])
    assert evaluation.ground_truth_from_labels(labels)[1][0]["iscrowd"] == 1


class _GroundTruthModel:
    """Stands in for FCOS: 'detects' exactly the labels' boxes of the batch it is given."""

    def __init__(self):
        self.labels = []

    def predict_step(self, images):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        labels = self.labels.pop(0)
        valid = tf.cast(labels["classes"] >= 0, tf.float32)
        return {"boxes": labels["boxes"], "scores": valid,
                "classes": labels["classes"],
                "num_detections": tf.reduce_sum(tf.cast(labels["classes"] >= 0, tf.int32), 1)}


def test_evaluate_end_to_end_on_a_dataset_of_ground_truth(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    labels = {"image_id": np.array([1, 2], np.int64), "scale": np.array([0.5, 2.0], np.float32),
              "original_size": np.array([[200, 200], [50, 50]], np.int32),
              "image_size": np.array([[100, 100], [100, 100]], np.int32),
              "boxes": np.array([[[10.0, 10.0, 60.0, 50.0], [0, 0, 0, 0]],
                                 [[5.0, 5.0, 25.0, 45.0], [50.0, 50.0, 90.0, 70.0]]], np.float32),
              "classes": np.array([[0, -1], [2, 1]], np.int32)}
    images = np.zeros([2, 100, 100, 3], np.float32)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    model = _GroundTruthModel()
    model.labels = [{k: tf.constant(v) for k, v in labels.items()}]
    metrics, kept = evaluation.evaluate(model, dataset, LABEL_MAP, verbose=False,
                                        keep_batches=1)
    assert metrics["AP"] == pytest.approx(1.0)
    # A crowd region counts neither as a hit nor as a miss: flag the second image's
    # class-1 box as crowd and drop its detection; AP stays 1.
    labels["is_crowd"] = np.array([[False, False], [False, True]])
    dataset = tf.data.Dataset.from_tensors((images, labels))
    detected = {k: tf.constant(v) for k, v in labels.items()}
    detected["classes"] = tf.constant([[0, -1], [2, -1]], tf.int32)
    model.labels = [detected]
    crowd_metrics, _ = evaluation.evaluate(model, dataset, LABEL_MAP, verbose=False)
    assert crowd_metrics["AP"] == pytest.approx(1.0)
    assert metrics["num_images"] == 2
    assert len(kept) == 1
    path = evaluation.write_metrics(metrics, str(tmp_path / "metrics.json"))
    written = json.load(open(path))
    assert set(evaluation.METRIC_NAMES) <= set(written)
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in written.items()
               if k in evaluation.METRIC_NAMES)
