"""Post-processing goldens from hand-made logits on a 16x16 input with two levels (8, 16).

Locations: P3 (stride 8) at (4, 4), (12, 4), (4, 12), (12, 12); P4 (stride 16) at (8, 8).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.ops.postprocess import postprocess

STRIDES = (8, 16)
SIZE = (16, 16)
NEG = -10.0


def _logit(p):
    return math.log(p / (1 - p))


def _outputs():
    """K = 3. Candidates (sigmoid(cls) > 0.05):

    loc 0 (4, 4):   class 0 p=.8 and class 1 p=.75, ctr .8, box [0, 0, 8, 8]
    loc 2 (4, 12):  class 2 p=.04 (below threshold), ctr ~1, box [3, 11, 5, 13]
    loc 3 (12, 12): class 2 p=.5, ctr .5, box [10, 10, 22, 22] -> clipped [10, 10, 16, 16]
    P4 (8, 8):      class 0 p=.6, ctr .5, box [1, 1, 9, 9]: IoU 49/79 = .62 with loc 0's box
    """
    cls = np.full([1, 5, 3], NEG, np.float32)
    cls[0, 0, 0] = _logit(0.8)
    cls[0, 0, 1] = _logit(0.75)
    cls[0, 2, 2] = _logit(0.04)
    cls[0, 3, 2] = 0.0
    cls[0, 4, 0] = _logit(0.6)
    ctr = np.array([[_logit(0.8), NEG, 30.0, 0.0, 0.0]], np.float32)
    ltrb = np.array(
        [[[4, 4, 4, 4], [1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 10, 10], [7, 7, 1, 1]]], np.float32
    )
    return {
        "class_logits": tf.constant(cls),
        "box_ltrb": tf.constant(ltrb),
        "centerness_logits": tf.constant(ctr),
    }


def _run(outputs=None, **kwargs):
    kwargs.setdefault("max_detections", 5)
    result = postprocess(outputs or _outputs(), SIZE, strides=STRIDES, **kwargs)
    return {k: v.numpy() for k, v in result.items()}


def _check(result, boxes, scores, classes, image=0):
    num = len(scores)
    assert result["num_detections"][image] == num
    np.testing.assert_allclose(result["boxes"][image, :num], boxes, atol=1e-4)
    np.testing.assert_allclose(result["scores"][image, :num], scores, rtol=1e-5)
    np.testing.assert_array_equal(result["classes"][image, :num], classes)
    np.testing.assert_array_equal(result["classes"][image, num:], -1)
    np.testing.assert_array_equal(result["scores"][image, num:], 0.0)
    np.testing.assert_array_equal(result["boxes"][image, num:], 0.0)


@pytest.mark.parametrize("nms", ["combined", "class_offset"])
def test_golden_class_threshold(nms):
    result = _run(nms=nms)
    assert result["boxes"].shape == (1, 5, 4) and result["classes"].dtype == np.int32
    # Same box, different classes: both survive. P4's class-0 box is suppressed by loc 0's.
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16]],
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
    )


@pytest.mark.parametrize("nms", ["combined", "class_offset"])
def test_golden_final_score_threshold(nms):
    # torchvision-style: loc 2 passes with sqrt(.04 * 1) = .2 > .05.
    result = _run(score_threshold_on="final", nms=nms)
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16], [3, 11, 5, 13]],
        [0.8, math.sqrt(0.6), 0.5, 0.2],
        [0, 1, 2, 2],
    )
    result = _run(score_threshold_on="final", score_threshold=0.6, nms=nms)
    _check(result, [[0, 0, 8, 8], [0, 0, 8, 8]], [0.8, math.sqrt(0.6)], [0, 1])


def test_nms_iou_threshold_is_respected():
    # IoU .62 <= .7: the P4 box of class 0 now survives.
    result = _run(nms_iou_threshold=0.7)
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [1, 1, 9, 9], [10, 10, 16, 16]],
        [0.8, math.sqrt(0.6), math.sqrt(0.3), 0.5],
        [0, 1, 0, 2],
    )


@pytest.mark.parametrize("nms", ["combined", "class_offset"])
def test_box_plus_one_convention(nms):
    # loc 0's [0, 0, 8, 8] and P4's [1, 1, 9, 9]: IoU 49/79 = .620 with continuous widths,
    # 8*8 / (81 + 81 - 64) = .653 with the "+1" pixel widths. At a threshold of .64 only the
    # "+1" convention suppresses; it also clips loc 3's box to the last pixel, 15.
    result = _run(nms_iou_threshold=0.64, nms=nms)
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [1, 1, 9, 9], [10, 10, 16, 16]],
        [0.8, math.sqrt(0.6), math.sqrt(0.3), 0.5],
        [0, 1, 0, 2],
    )
    result = _run(nms_iou_threshold=0.64, nms=nms, box_plus_one=True)
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 15, 15]],
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
    )


@pytest.mark.parametrize("nms", ["combined", "class_offset"])
def test_clip_after_nms_drops_empty_boxes(nms):
    # loc 1 (12, 4): class 1 p=.9 with a zero-size box. Kept (last, score sqrt(.9 * s(-10)))
    # when clipping before NMS; dropped by detectron2's order. Loc 3's box is clipped after NMS.
    outputs = _outputs()
    cls = outputs["class_logits"].numpy()
    cls[0, 1, 1] = _logit(0.9)
    ltrb = outputs["box_ltrb"].numpy()
    ltrb[0, 1] = 0.0
    outputs.update(class_logits=tf.constant(cls), box_ltrb=tf.constant(ltrb))
    tiny = math.sqrt(0.9 / (1 + math.exp(10)))
    kept = [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16]]
    _check(
        _run(outputs, nms=nms),
        kept + [[12, 4, 12, 4]],
        [0.8, math.sqrt(0.6), 0.5, tiny],
        [0, 1, 2, 1],
    )
    _check(_run(outputs, nms=nms, clip_after_nms=True), kept, [0.8, math.sqrt(0.6), 0.5], [0, 1, 2])
    valid = tf.constant([[16, 16]], tf.int32)
    _check(
        _run(outputs, nms=nms, clip_after_nms=True, valid_size=valid),
        kept,
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
    )


def test_per_level_top_k():
    # P3 keeps only its two best (location, class) pairs, both at loc 0; loc 3 is dropped.
    result = _run(pre_nms_top_k=2)
    _check(result, [[0, 0, 8, 8], [0, 0, 8, 8]], [0.8, math.sqrt(0.6)], [0, 1])
    result = _run(pre_nms_top_k=2, nms_iou_threshold=0.7)
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [1, 1, 9, 9]],
        [0.8, math.sqrt(0.6), math.sqrt(0.3)],
        [0, 1, 0],
    )


def test_without_centerness_scores_are_class_probabilities():
    outputs = _outputs()
    del outputs["centerness_logits"]
    result = _run(outputs)
    # P4's box (p = .6) is suppressed by loc 0's box of the same class.
    _check(result, [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16]], [0.8, 0.75, 0.5], [0, 1, 2])


def test_max_detections_truncates():
    result = _run(max_detections=2)
    assert result["boxes"].shape == (1, 2, 4)
    _check(result, [[0, 0, 8, 8], [0, 0, 8, 8]], [0.8, math.sqrt(0.6)], [0, 1])


def test_batch_valid_size_and_empty_image():
    one = _outputs()
    empty = {
        "class_logits": tf.fill([1, 5, 3], NEG),
        "box_ltrb": tf.ones([1, 5, 4]),
        "centerness_logits": tf.zeros([1, 5]),
    }
    batch = {k: tf.concat([one[k], one[k], empty[k]], axis=0) for k in one}
    result = _run(batch, valid_size=tf.constant([[16, 16], [12, 14], [16, 16]]))
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16]],
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
        image=0,
    )
    # Second image clipped to its valid 12 x 14 (H x W) region.
    _check(
        result,
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 14, 12]],
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
        image=1,
    )
    _check(result, np.zeros([0, 4]), [], [], image=2)


def test_in_tf_function_with_dynamic_image_size():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None]),
            tf.TensorSpec([2], tf.int32),
        ]
    )
    def run(cls, ltrb, ctr, image_size):
        return postprocess(
            {"class_logits": cls, "box_ltrb": ltrb, "centerness_logits": ctr},
            image_size,
            strides=STRIDES,
            max_detections=5,
        )

    out = _outputs()
    result = run(out["class_logits"], out["box_ltrb"], out["centerness_logits"], tf.constant(SIZE))
    _check(
        {k: v.numpy() for k, v in result.items()},
        [[0, 0, 8, 8], [0, 0, 8, 8], [10, 10, 16, 16]],
        [0.8, math.sqrt(0.6), 0.5],
        [0, 1, 2],
    )
    # A larger input (24 x 32: P3 3x4, P4 2x2 -> 16 locations) through the same graph.
    result = run(
        tf.fill([2, 16, 3], NEG), tf.ones([2, 16, 4]), tf.zeros([2, 16]), tf.constant([24, 32])
    )
    assert result["boxes"].shape == (2, 5, 4)
    np.testing.assert_array_equal(result["num_detections"].numpy(), [0, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="score_threshold_on"):
        _run(score_threshold_on="box")
    with pytest.raises(ValueError, match="nms"):
        _run(nms="soft")
    with pytest.raises(ValueError, match="locations"):
        postprocess(_outputs(), (32, 32), strides=STRIDES)
    with pytest.raises(ValueError, match="box_ltrb"):
        postprocess({"class_logits": tf.zeros([1, 5, 3])}, SIZE, strides=STRIDES)
