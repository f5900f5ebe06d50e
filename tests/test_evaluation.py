"""COCO evaluation: coordinate mapping back to the original image, category ids, AP values."""

import json

import export_helpers as helpers
import numpy as np
import pytest

from fcos_tf.data.label_map import LabelMap
from fcos_tf.training import evaluation

LABEL_MAP = LabelMap([(1, "cat"), (3, "dog"), (7, "bird")])

# Original-image boxes (xywh) of every COCO size range: small < 32^2 <= medium < 96^2 <= large.
GT_IMAGES = [{"id": 11, "height": 300, "width": 400}, {"id": 12, "height": 200, "width": 200}]
GT_ANNOTATIONS = [
    {"image_id": 11, "bbox": [10.0, 20.0, 20.0, 10.0], "category_id": 1},  # small
    {"image_id": 11, "bbox": [100.0, 50.0, 60.0, 60.0], "category_id": 3},  # medium
    {"image_id": 11, "bbox": [150.0, 100.0, 200.0, 150.0], "category_id": 7},  # large
    {"image_id": 12, "bbox": [0.0, 0.0, 120.0, 150.0], "category_id": 3},  # large
]


def _ground_truth():
    return evaluation.coco_from_dicts(GT_IMAGES, GT_ANNOTATIONS, LABEL_MAP)


def test_ground_truth_as_detections_gives_perfect_scores():
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in GT_ANNOTATIONS
    ]
    metrics = evaluation.coco_evaluate(_ground_truth(), results, LABEL_MAP, verbose=False)
    for name in evaluation.METRIC_NAMES:
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 1.0})


def test_wrong_class_and_missed_boxes_lower_ap():
    results = [
        {"image_id": 11, "category_id": 1, "bbox": [10.0, 20.0, 20.0, 10.0], "score": 0.9},
        # right box, wrong category: a false positive for "cat", a miss for "dog"
        {"image_id": 11, "category_id": 1, "bbox": [100.0, 50.0, 60.0, 60.0], "score": 0.8},
    ]
    metrics = evaluation.coco_evaluate(_ground_truth(), results, LABEL_MAP, verbose=False)
    assert metrics["per_class_AP"]["cat"] == pytest.approx(1.0)
    assert metrics["per_class_AP"]["dog"] == 0.0
    assert metrics["per_class_AP"]["bird"] == 0.0
    assert metrics["AP"] == pytest.approx(1.0 / 3.0)


def test_no_detections_and_missing_size_range():
    ground_truth = evaluation.coco_from_dicts(
        GT_IMAGES[:1], [dict(GT_ANNOTATIONS[2])], LABEL_MAP
    )  # one large box only
    metrics = evaluation.coco_evaluate(ground_truth, [], LABEL_MAP, verbose=False)
    assert metrics["AP"] == 0.0
    assert metrics["APs"] is None and metrics["APm"] is None  # no such objects: None, not -1
    assert metrics["per_class_AP"]["cat"] is None


def test_to_original_xywh_maps_each_axis_and_clips():
    boxes = np.array([[10.0, 20.0, 50.0, 40.0], [-4.0, 0.0, 900.0, 30.0]])
    # Resized 100x300 -> 200x600: both axes by 2.
    xywh = evaluation.to_original_xywh(boxes, (200, 600), (100, 300))
    np.testing.assert_allclose(xywh, [[5.0, 10.0, 20.0, 10.0], [0.0, 0.0, 300.0, 15.0]])
    # Resized 100x300 -> 400x600: y by 4, x by 2 (a rounded size scales the axes apart).
    xywh = evaluation.to_original_xywh(boxes[:1], (400, 600), (100, 300))
    np.testing.assert_allclose(xywh, [[5.0, 5.0, 20.0, 5.0]])


def test_outputs_to_coco_maps_normalised_boxes_and_skips_padding():
    # The export's outputs of two images: [ymin, xmin, ymax, xmax] normalised to each original
    # image, category ids as floats, -1 on padding rows.
    outputs = {
        "detection_boxes": np.array(
            [
                [[0.2, 0.1, 0.4, 0.3], [0.0, 0.0, 0.05, 0.025], [0.0, 0.0, 0.0, 0.0]],
                [[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            ],
            np.float32,
        ),
        "detection_scores": np.array([[0.9, 0.5, 0.0], [0.25, 0.0, 0.0]], np.float32),
        "detection_classes": np.array([[7.0, 1.0, -1.0], [3.0, -1.0, -1.0]], np.float32),
        "num_detections": np.array([2, 1], np.int32),
    }
    results = evaluation.outputs_to_coco(
        outputs, np.array([42, 43]), np.array([[400, 600], [50, 80]])
    )
    # Image 42 (400 x 600): x = 0.1 * 600, y = 0.2 * 400, w = 0.2 * 600, h = 0.2 * 400.
    assert [r["image_id"] for r in results] == [42, 42, 43]
    assert [r["category_id"] for r in results] == [7, 1, 3]
    np.testing.assert_allclose(
        [r["bbox"] for r in results],
        [[60.0, 80.0, 120.0, 80.0], [0.0, 0.0, 15.0, 20.0], [40.0, 25.0, 40.0, 25.0]],
        atol=1e-4,
    )
    np.testing.assert_allclose([r["score"] for r in results], [0.9, 0.5, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="image_ids"):
        evaluation.outputs_to_coco(outputs, np.array([42]), np.array([[400, 600]]))


def test_evaluation_maps_through_the_exports_function():
    # Network-pixel detections of an image resized by 0.5 from 400 x 600: evaluation's
    # COCO boxes are the export's outputs read back, in original pixels.
    import tensorflow as tf

    from fcos_tf.serving import graph as serving

    detections = {
        "boxes": tf.constant(
            [[[20.0, 40.0, 60.0, 80.0], [-4.0, 0.0, 400.0, 10.0], [0.0, 0.0, 0.0, 0.0]]]
        ),
        "scores": tf.constant([[0.9, 0.5, 0.0]]),
        "classes": tf.constant([[2, 0, -1]]),
        "num_detections": tf.constant([2]),
    }
    outputs = serving.detections_to_outputs(
        detections,
        LABEL_MAP,
        valid_size=tf.constant([[200, 300]]),
        frame_size=tf.constant([[400, 600]]),
    )
    results = evaluation.outputs_to_coco(
        {k: v.numpy() for k, v in outputs.items()}, [9], [[400, 600]]
    )
    assert [r["category_id"] for r in results] == [7, 1]
    # The second box leaves the image on the left and right: clipped to [0, 600].
    np.testing.assert_allclose(
        [r["bbox"] for r in results], [[40.0, 80.0, 80.0, 80.0], [0.0, 0.0, 600.0, 20.0]], atol=1e-3
    )


def test_ground_truth_from_labels_maps_back_per_axis():
    # Image 5: 50x60 resized to 100x240 (y by 2, x by 4).
    labels = {
        "image_id": np.array([5, 6]),
        "image_size": np.array([[100, 240], [32, 32]]),
        "original_size": np.array([[50, 60], [32, 32]], np.int32),
        "boxes": np.array(
            [[[2.0, 4.0, 22.0, 44.0], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32
        ),
        "classes": np.array([[1, -1], [-1, -1]], np.int32),
    }
    images, annotations = evaluation.ground_truth_from_labels(labels)
    assert images == [{"id": 5, "height": 50, "width": 60}, {"id": 6, "height": 32, "width": 32}]
    assert annotations == [{"image_id": 5, "class": 1, "bbox": [0.5, 2.0, 5.0, 20.0], "iscrowd": 0}]
    labels["is_crowd"] = np.array([[True, False], [False, False]])
    assert evaluation.ground_truth_from_labels(labels)[1][0]["iscrowd"] == 1


class _GroundTruthModel:
    """Stands in for FCOS: 'detects' exactly the labels' boxes of the batch it is given."""

    def __init__(self):
        self.labels = []
        self.valid_sizes = []

    def predict_step(self, data):
        import tensorflow as tf

        _, given = data
        self.valid_sizes.append(given["image_size"])  # evaluation passes the valid region
        labels = self.labels.pop(0)
        valid = tf.cast(labels["classes"] >= 0, tf.float32)
        return {
            "boxes": labels["boxes"],
            "scores": valid,
            "classes": labels["classes"],
            "num_detections": tf.reduce_sum(tf.cast(labels["classes"] >= 0, tf.int32), 1),
        }


def test_evaluate_end_to_end_on_a_dataset_of_ground_truth(tmp_path):
    import tensorflow as tf

    labels = {
        "image_id": np.array([1, 2], np.int64),
        "original_size": np.array([[200, 200], [50, 50]], np.int32),
        "image_size": np.array([[100, 100], [100, 100]], np.int32),
        "boxes": np.array(
            [
                [[10.0, 10.0, 60.0, 50.0], [0, 0, 0, 0]],
                [[5.0, 5.0, 25.0, 45.0], [50.0, 50.0, 90.0, 70.0]],
            ],
            np.float32,
        ),
        "classes": np.array([[0, -1], [2, 1]], np.int32),
    }
    images = np.zeros([2, 100, 100, 3], np.float32)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    model = _GroundTruthModel()
    model.labels = [{k: tf.constant(v) for k, v in labels.items()}]
    metrics, kept = evaluation.evaluate(model, dataset, LABEL_MAP, verbose=False, keep_batches=1)
    assert metrics["AP"] == pytest.approx(1.0)
    assert [v.shape.as_list() for v in model.valid_sizes] == [[2, 2]]  # [B, 2] valid regions
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
    # Labels without the valid sizes: a clear error, not boxes clipped to the padded batch.
    del labels["image_size"]
    with pytest.raises(ValueError, match="image_size"):
        evaluation.evaluate(
            model, tf.data.Dataset.from_tensors((images, labels)), LABEL_MAP, verbose=False
        )
    path = evaluation.write_metrics(metrics, str(tmp_path / "metrics.json"))
    written = json.load(open(path))
    assert set(evaluation.METRIC_NAMES) <= set(written)
    assert all(
        v is None or 0.0 <= v <= 1.0 for k, v in written.items() if k in evaluation.METRIC_NAMES
    )


@pytest.mark.slow
@helpers.SAME_WORKER
def test_saved_model_ap_equals_metrics_json(tmp_path):
    """metrics.json of a run and the AP of its exported SavedModel on the validation images."""
    import shutil

    import tensorflow as tf

    from fcos_tf.core import builders, rundir
    from fcos_tf.core import runner as training
    from fcos_tf.serving import graph as serving
    from fcos_tf.serving import saved_model as export_saved_model

    # The shared 3-step workdir, evaluated at short side 56: the 64x64 originals become
    # 56x56 images padded to 64x64, so clipping to each image and clipping to the padded
    # batch give different boxes (and NMS results) at the bottom and right borders.
    workdir = tmp_path / "workdir"
    shutil.copytree(helpers.trained_workdir(), workdir)
    config = helpers.small_config()
    config.pipeline.eval_short_side = 56
    config.data.synthetic.num_val = 8
    config.eval.batch_size = 4
    training.run(config, str(workdir), mode="eval", verbose=0, handle_signals=False)
    with open(workdir / "metrics.json") as f:
        written = json.load(f)

    # Export as `fcos-export --workdir=... --config.pipeline.eval_short_side=56` does (the
    # workdir's config.json, which evaluating leaves as training wrote it, with the override;
    # the label map from the workdir), then serve each original validation image on its own.
    saved_config = rundir.read_config(str(workdir))
    assert saved_config.pipeline.eval_short_side == helpers.small_config().pipeline.eval_short_side
    saved_config.pipeline.eval_short_side = 56
    model, saved_config, label_map = rundir.load_trained_model(str(workdir), config=saved_config)
    settings = builders.build_serving_config(saved_config)
    assert settings.eval_short_side == 56
    version_dir = export_saved_model.export_saved_model(
        model, label_map, str(tmp_path / "export"), settings, warmup=False
    )
    serve = tf.saved_model.load(version_dir).signatures[serving.IMAGES_SIGNATURE]
    val = builders.read_split(config, "val")
    results = []
    for example in val.dataset:
        image = example["image"]
        outputs = {k: v.numpy() for k, v in serve(images=image[None]).items()}
        results += evaluation.outputs_to_coco(
            outputs, [int(example["image_id"])], [image.shape[:2]]
        )

    # The run's ground truth: rebuilt from the validation pipeline's labels.
    gt_images, gt_annotations = [], []
    for _, labels in builders.build_eval_dataset(config, val.dataset):
        images_b, annotations_b = evaluation.ground_truth_from_labels(
            {k: v.numpy() for k, v in labels.items()}
        )
        gt_images += images_b
        gt_annotations += [
            dict(a, category_id=label_map.category_id(a.pop("class"))) for a in annotations_b
        ]
    assert len(gt_images) == written["num_images"] == 8
    ground_truth = evaluation.coco_from_dicts(gt_images, gt_annotations, label_map)
    served = evaluation.coco_evaluate(ground_truth, results, label_map, verbose=False)

    assert written["AP50"] > 0.0  # something to compare: the detections hit boxes
    # Equal up to float noise between two graphs of the same ops (they agree exactly on
    # these machines). Clipping to the padded batch instead moves AP and AP50 by about 0.2%.
    for name in evaluation.METRIC_NAMES:
        if written[name] is None:
            assert served[name] is None, name
        else:
            assert served[name] == pytest.approx(written[name], rel=1e-6, abs=1e-12), name
    assert served["per_class_AP"] == pytest.approx(written["per_class_AP"], rel=1e-6, abs=1e-12)
