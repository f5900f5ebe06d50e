"""Box converters, area, clipping, ltrb encoding and element-wise IoU/GIoU."""

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.ops import boxes as box_lib


def _random_xyxy(rng, n):
    corner = rng.uniform(0, 200, size=(n, 2))
    size = rng.uniform(1, 100, size=(n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def test_converters_by_hand():
    np.testing.assert_allclose(box_lib.xywh_to_xyxy([[10.0, 20.0, 30.0, 40.0]]), [[10, 20, 40, 60]])
    np.testing.assert_allclose(box_lib.xyxy_to_xywh([[10.0, 20.0, 40.0, 60.0]]), [[10, 20, 30, 40]])
    np.testing.assert_allclose(box_lib.yxyx_to_xyxy([[1.0, 2.0, 3.0, 4.0]]), [[2, 1, 4, 3]])
    np.testing.assert_allclose(box_lib.xyxy_to_yxyx([[2.0, 1.0, 4.0, 3.0]]), [[1, 2, 3, 4]])
    # Normalised yxyx of TFDS -> pixels of a 100 x 200 (H x W) image.
    pixels = box_lib.scale_xyxy(box_lib.yxyx_to_xyxy([[0.1, 0.25, 0.5, 0.75]]), 200, 100)
    np.testing.assert_allclose(pixels, [[50, 10, 150, 50]], rtol=1e-6)


def test_converters_round_trip():
    rng = np.random.default_rng(0)
    boxes = _random_xyxy(rng, 50)
    np.testing.assert_allclose(box_lib.xywh_to_xyxy(box_lib.xyxy_to_xywh(boxes)), boxes, atol=1e-4)
    np.testing.assert_array_equal(box_lib.yxyx_to_xyxy(box_lib.xyxy_to_yxyx(boxes)), boxes)
    np.testing.assert_allclose(
        box_lib.scale_xyxy(box_lib.scale_xyxy(boxes, 1 / 320.0, 1 / 240.0), 320.0, 240.0),
        boxes,
        rtol=1e-5,
    )
    # Any leading shape: [2, 25, 4].
    batched = boxes.reshape(2, 25, 4)
    assert box_lib.xyxy_to_xywh(batched).shape == (2, 25, 4)


def test_ltrb_round_trip_and_values():
    # Location (10, 20) in box [4, 5, 30, 60]: l = 6, t = 15, r = 20, b = 40.
    ltrb = box_lib.xyxy_to_ltrb([[10.0, 20.0]], [[4.0, 5.0, 30.0, 60.0]])
    np.testing.assert_allclose(ltrb, [[6, 15, 20, 40]])
    np.testing.assert_allclose(box_lib.ltrb_to_xyxy([[10.0, 20.0]], ltrb), [[4, 5, 30, 60]])
    rng = np.random.default_rng(1)
    boxes = _random_xyxy(rng, 40)
    locations = rng.uniform(0, 300, size=(40, 2)).astype(np.float32)
    decoded = box_lib.ltrb_to_xyxy(locations, box_lib.xyxy_to_ltrb(locations, boxes))
    np.testing.assert_allclose(decoded, boxes, atol=1e-4)
    # Broadcasting: locations [P, 1, 2] against boxes [1, M, 4] -> [P, M, 4].
    pairwise = box_lib.xyxy_to_ltrb(locations[:, None], boxes[None])
    assert pairwise.shape == (40, 40, 4)


def test_area_and_clip():
    boxes = tf.constant([[0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 2.0, 9.0], [1.0, 1.0, 1.0, 4.0]])
    # 10 x 5 = 50; negative width counts as 0; zero width 0.
    np.testing.assert_allclose(box_lib.area(boxes), [50, 0, 0])
    clipped = box_lib.clip_xyxy([[-5.0, 10.0, 120.0, 90.0]], (80, 100))  # H = 80, W = 100
    np.testing.assert_allclose(clipped, [[0, 10, 100, 80]])


@pytest.mark.parametrize(
    "pred, gt, iou, giou",
    [
        # Same location, square 2x2 inside square 4x4: inter 4, union 16, enclosing 16.
        ((1, 1, 1, 1), (2, 2, 2, 2), 4 / 16, 4 / 16),
        # Identical boxes.
        ((3, 1, 2, 5), (3, 1, 2, 5), 1.0, 1.0),
        # pred (1, 0, 3, 2) is [x-1, y, x+3, y+2], area 4 x 2 = 8; gt (2, 1, 1, 1) is
        # [x-2, y-1, x+1, y+1], area 3 x 2 = 6. Intersection: width min(1,2) + min(3,1) = 2,
        # height min(0,1) + min(2,1) = 1 -> 2; union 8 + 6 - 2 = 12; enclosing (2+3) x (1+2)
        # = 15. GIoU = 2/12 - 3/15 = -1/30.
        ((1, 0, 3, 2), (2, 1, 1, 1), 2 / 12, 2 / 12 - 3 / 15),
        # Touching at the location only: pred [x, y, x+2, y+2], gt [x-2, y-2, x, y]: inter 0,
        # union 8, enclosing 4 x 4 = 16: GIoU = 0 - 8/16.
        ((0, 0, 2, 2), (2, 2, 0, 0), 0.0, -0.5),
    ],
)
def test_iou_and_giou_by_hand(pred, gt, iou, giou):
    pred = tf.constant([pred], tf.float32)
    gt = tf.constant([gt], tf.float32)
    np.testing.assert_allclose(box_lib.iou_ltrb(pred, gt), [iou], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(box_lib.giou_ltrb(pred, gt), [giou], rtol=1e-5, atol=1e-6)


def test_iou_ltrb_matches_xyxy_iou():
    # Random ltrb pairs around a common location against an IoU computed from corners.
    rng = np.random.default_rng(2)
    pred = rng.uniform(0, 50, size=(100, 4)).astype(np.float32)
    gt = rng.uniform(0.5, 50, size=(100, 4)).astype(np.float32)
    pb = np.stack([-pred[:, 0], -pred[:, 1], pred[:, 2], pred[:, 3]], 1)  # location at origin
    gb = np.stack([-gt[:, 0], -gt[:, 1], gt[:, 2], gt[:, 3]], 1)
    iw = np.minimum(pb[:, 2], gb[:, 2]) - np.maximum(pb[:, 0], gb[:, 0])
    ih = np.minimum(pb[:, 3], gb[:, 3]) - np.maximum(pb[:, 1], gb[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1])
    area_g = (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1])
    expected = inter / (area_p + area_g - inter)
    np.testing.assert_allclose(box_lib.iou_ltrb(pred, gt), expected, rtol=1e-4, atol=1e-6)
    giou = box_lib.giou_ltrb(pred, gt).numpy()
    assert np.all(giou <= expected + 1e-6) and np.all(giou >= -1 - 1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="boxes"):
        box_lib.xywh_to_xyxy(tf.zeros([3, 5]))
    with pytest.raises(TypeError, match="boxes"):
        box_lib.area(tf.zeros([3, 4], tf.int32))
    with pytest.raises(ValueError, match="locations"):
        box_lib.ltrb_to_xyxy(tf.zeros([3, 3]), tf.zeros([3, 4]))
    with pytest.raises(ValueError, match="gt_ltrb"):
        box_lib.iou_ltrb(tf.zeros([3, 4]), tf.zeros([3, 2]))
