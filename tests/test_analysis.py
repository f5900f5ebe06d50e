"""fcos-analyze: hand-worked assignment statistics, an independent anchor reference, the command.

The hand-worked image (64 x 192, strides 8 and 16, size ranges (-1, 64] and [64, inf), center
sampling radius 1.5, locations at 4, 12, 20, ... on P3 and 8, 24, 40, ... on P4):

* A (10, 12, 150, 22): no P4 row lies strictly inside 12 < y < 22; the P3 row y = 20 does,
  but every P3 location of that row has max(l, r) > 64 (x - 10 <= 64 and 150 - x <= 64 cannot
  both hold): no candidate with the size ranges, 18 without them -> "between size ranges".
* B (13, 13, 19, 19): 6 x 6 pixels, no location strictly inside -> "smaller than the level
  spacing".
* C (20, 21, 100, 27): no P3 row inside, P4 row 24; its center region (36, 84) holds the P4
  columns 40, 56, 72 with max(l, r) = 60, 44, 52 < 64; the columns 24 (r = 76) and 88
  (l = 68) would pass the P4 range but lie outside the region -> "removed by center sampling"
  (2 candidates without it).
* D (131, 35, 169, 57) class 0 and E (130, 34, 170, 58) class 1: both have the P3 locations
  x = 140, 148, 156 by y = 36, 44, 52 as candidates; D is smaller and takes all 9 -> E "lost
  to a smaller overlapping box"; 9 ambiguous locations of different classes.
* F (4, 36, 36, 60) and G (20, 40, 52, 60), both class 2: F's candidates x = 12, 20, 28 and
  G's x = 28, 36, 44, each by y = 44, 52; the 2 shared ones (x = 28) go to the smaller G:
  F 4 positives, G 6; 2 ambiguous locations of the same class.

BPR 3/7; 19 candidate locations, 11 in several boxes, 9 in boxes of different classes; all
19 positives on P3, none on P4.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf import analyze
from fcos_tf.analysis import assignment, report
from fcos_tf.ops import targets as target_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(
    strides=(8, 16),
    size_ranges=((-1.0, 64.0), (64.0, math.inf)),
    center_sampling_radius=1.5,
    location_offset=0.5,
    location_grid="paper",
)
SIZE = (64, 192)
BOXES = np.array(
    [
        [10, 12, 150, 22],  # A
        [13, 13, 19, 19],  # B
        [20, 21, 100, 27],  # C
        [131, 35, 169, 57],  # D
        [130, 34, 170, 58],  # E
        [4, 36, 36, 60],  # F
        [20, 40, 52, 60],  # G
    ],
    np.float32,
)
CLASSES = np.array([0, 1, 2, 0, 1, 2, 2], np.int32)


def _stats(boxes=BOXES, classes=CLASSES, size=SIZE, **overrides):
    out = assignment.image_statistics(boxes, classes, size, **{**SETTINGS, **overrides})
    return {key: value.numpy() for key, value in out.items()}


def test_hand_worked_image():
    stats = _stats()
    np.testing.assert_array_equal(stats["positives"], [[0, 0, 0, 9, 0, 4, 6], [0] * 7])
    np.testing.assert_array_equal(stats["candidates"], [0, 0, 0, 9, 9, 6, 6])
    np.testing.assert_array_equal(stats["candidates_no_center"], [0, 0, 2, 0, 15, 0, 0])
    np.testing.assert_array_equal(stats["inside"], [18, 0, 5, 0, 21, 0, 0])
    reasons = [assignment.REASONS[r] if r >= 0 else None for r in stats["reason"]]
    assert reasons == [
        "between size ranges",
        "smaller than the level spacing",
        "removed by center sampling",
        None,
        "lost to a smaller overlapping box",
        None,
        None,
    ]
    np.testing.assert_array_equal(stats["ambiguity"], [19, 11, 9])


def test_summary_of_the_hand_worked_image():
    accumulator = report.Accumulator(SETTINGS["strides"], SETTINGS["size_ranges"], "abc")
    stats = _stats()
    accumulator.add(7, stats, BOXES, BOXES * 2, CLASSES)
    accumulator.add(8, _stats(BOXES[3:4], CLASSES[3:4]), BOXES[3:4], BOXES[3:4], CLASSES[3:4])
    summary = accumulator.summary()
    assert summary["num_boxes"] == 8
    assert summary["bpr"] == {"boxes": 8, "recalled": 4, "bpr": 0.5}
    # Areas x 4 in the original image of image 7: A 5600, B 144, C 1920, D 3344, E 3840,
    # F 3072, G 2560; D of image 8: 836.
    assert summary["bpr_per_size"]["small"] == {"boxes": 2, "recalled": 1, "bpr": 0.5}
    assert summary["bpr_per_size"]["medium"] == {"boxes": 6, "recalled": 3, "bpr": 0.5}
    assert summary["bpr_per_class"]["a"]["recalled"] == 2  # D twice; A missed
    assert summary["missed_per_reason"] == {reason: 1 for reason in assignment.REASONS}
    assert [m["box_resized"] for m in summary["missed"]] == BOXES[[0, 1, 2, 4]].tolist()
    assert summary["missed"][0] == {
        "image_id": 7,
        "box": (BOXES[0] * 2).tolist(),
        "box_resized": BOXES[0].tolist(),
        "class": "a",
        "reason": "between size ranges",
    }
    ambiguity = summary["ambiguity"]
    assert ambiguity["candidate_locations"] == 19 + 9
    assert ambiguity["share_several_boxes"] == pytest.approx(11 / 28)
    assert ambiguity["share_different_classes"] == pytest.approx(9 / 28)
    assert summary["positives_per_level"] == {"P3": 28, "P4": 0}
    assert summary["levels_without_positives"] == ["P4"]
    assert summary["positives_per_object"]["histogram"]["0"] == 4
    assert "Levels without any positive location: P4" in report.format_text(summary)


def _reference_anchor_recall(boxes, size):
    """Plain NumPy: every anchor built in a loop, the full [A, M] IoU, the rules written out."""
    anchors = []
    for stride in assignment.ANCHOR_STRIDES:
        rows, cols = -(-size[0] // stride), -(-size[1] // stride)
        for i in range(rows):
            for j in range(cols):
                cx, cy = j * stride + stride // 2, i * stride + stride // 2
                for scale in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)):
                    for ratio in (0.5, 1.0, 2.0):
                        w = 4 * stride * scale / math.sqrt(ratio)
                        h = 4 * stride * scale * math.sqrt(ratio)
                        anchors.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    anchors = np.array(anchors, np.float64)
    ix = np.clip(
        np.minimum(anchors[:, None, 2], boxes[None, :, 2])
        - np.maximum(anchors[:, None, 0], boxes[None, :, 0]),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(anchors[:, None, 3], boxes[None, :, 3])
        - np.maximum(anchors[:, None, 1], boxes[None, :, 1]),
        0,
        None,
    )
    inter = ix * iy
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    best_box = iou.argmax(axis=1)
    best_anchor_iou = iou.max(axis=0)
    matched = np.zeros(len(boxes), bool)
    for a in range(len(anchors)):
        if iou[a].max() >= 0.5:
            matched[best_box[a]] = True
    # Low-quality matches: a box's own best anchor (see anchor_recall).
    out = [matched, matched | (best_anchor_iou >= 0.4), matched | (best_anchor_iou > 0)]
    return np.array(out)


def test_anchor_recall_matches_a_plain_reference():
    got = assignment.anchor_recall(tf.constant(BOXES), SIZE).numpy()
    np.testing.assert_array_equal(got, _reference_anchor_recall(BOXES.astype(np.float64), SIZE))
    # B (6 x 6) overlaps an anchor of at least 32 x 32 by at most 36 px: IoU <= 36 / 1024.
    assert not got[0, 1] and not got[1, 1]
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 150, (12, 2))
    wh = rng.uniform(4, 90, (12, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    got = assignment.anchor_recall(tf.constant(boxes), (256, 256)).numpy()
    np.testing.assert_array_equal(
        got, _reference_anchor_recall(boxes.astype(np.float64), (256, 256))
    )


def test_candidates_agree_with_compute_targets():
    rng = np.random.default_rng(1)
    for _ in range(5):
        xy = rng.uniform(0, 120, (6, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(3, 100, (6, 2))], 1).astype(np.float32)
        classes = rng.integers(0, 3, 6).astype(np.int32)
        masks = target_lib.candidate_masks(boxes, classes, (128, 160), **SETTINGS)
        mask = tf.concat(masks, axis=0).numpy()
        matched = target_lib.compute_targets(boxes, classes, (128, 160), **SETTINGS)[
            "matched_box_index"
        ].numpy()
        # A location is positive exactly when it is a candidate, for its smallest candidate box.
        np.testing.assert_array_equal(matched >= 0, mask.any(axis=1))
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for p in np.flatnonzero(matched >= 0):
            assert mask[p, matched[p]]
            assert area[matched[p]] == area[mask[p]].min()


def test_empty_image():
    stats = _stats(np.zeros([0, 4], np.float32), np.zeros([0], np.int32))
    assert stats["positives"].shape == (2, 0)
    np.testing.assert_array_equal(stats["ambiguity"], [0, 0, 0])
    assert stats["anchor_recalled"].shape == (3, 0)


def test_command_names_the_levels_without_positives(tmp_path, capsys):
    """The synthetic recipe with P5-P7 added back: no synthetic object reaches them."""
    argv = [
        f"--output={tmp_path}",
        "--max_images=6",
        "--num_examples=1",
        "--noanchors",
        "--config=synthetic_small",
        "--config.locations.strides=(8,16,32,64,128)",
        "--config.locations.size_ranges=((-1,64),(64,128),(128,256),(256,512),(512,1e8))",
    ]
    assert analyze.main(argv) == 0
    out = capsys.readouterr().out
    summary = json.load(open(tmp_path / "analysis.json"))
    assert summary["levels_without_positives"] == ["P5", "P6", "P7"]
    assert "Levels without any positive location: P5, P6, P7" in out
    assert "--config.locations.strides='(8, 16)'" in out
    assert os.path.isfile(tmp_path / "size_histogram.png")
    assert os.path.isfile(tmp_path / "positives_per_level.png")
    assert "anchor_bpr" not in summary


def test_fcos_analyze_subprocess(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fcos_tf.analyze",
            "--config=synthetic_small",
            f"--output={tmp_path}",
            "--max_images=8",
            "--num_examples=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.load(open(tmp_path / "analysis.json"))
    assert summary["num_images"] == 8
    assert f"Best possible recall: {100 * summary['bpr']['bpr']:.2f}%" in result.stdout
    # The recipe already stops at P4, where its objects end.
    assert summary["levels"] == ["P3", "P4"]
    assert summary["levels_without_positives"] == []
    assert "Every level gets positive locations." in result.stdout
    assert set(summary["anchor_bpr"]) == set(assignment.ANCHOR_RULES)
    assert len(os.listdir(tmp_path / "examples")) == 2


def test_coco_sizes_come_from_the_json_and_match_the_decoded_images(tmp_path, monkeypatch):
    """The synthetic images written as COCO: same figures as the synthetic reader, no decode."""
    from fcos_tf.core import config as config_lib
    from fcos_tf.data import coco, synthetic

    config = config_lib.load_recipe("synthetic_small")
    config.data.synthetic.num_train = 6
    config.data.synthetic.image_size = (96, 128)
    options = {
        key: tuple(value) if isinstance(value, (list, tuple)) else value
        for key, value in config.data.synthetic.items()
        if key not in ("num_train", "num_val")
    }
    annotations, images = synthetic.write_coco(str(tmp_path / "coco"), 6, **options)
    from_synthetic, _ = analyze.analyze_dataset(config, "train")
    config.data.dataset = "coco"
    config.data.coco.root = str(tmp_path / "coco")
    config.data.coco.train_images = images
    config.data.coco.train_annotations = annotations

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(tf.image, "decode_image", no_decoding)
    loads = []
    load_json = coco._load_json
    monkeypatch.setattr(coco, "_load_json", lambda path: loads.append(path) or load_json(path))
    from_coco, _ = analyze.analyze_dataset(config, "train")
    assert len(loads) == 1  # the reader's load gives the sizes too
    for key in ("num_images", "num_boxes", "bpr", "positives_per_level", "ambiguity"):
        assert from_coco[key] == from_synthetic[key], key
    assert from_coco["num_boxes"] > 6
