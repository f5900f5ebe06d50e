"""Losses: hand-computed values and global-batch normalisation across replicas."""

import math

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.ops import losses

LOG2 = math.log(2.0)


def test_focal_loss_hand_values():
    # p = 0.5 at logit 0: positive 0.25 * 0.5^2 * log 2, negative 0.75 * 0.5^2 * log 2.
    pos_half = 0.25 * 0.25 * LOG2
    neg_half = 0.75 * 0.25 * LOG2
    # p = 0.75 at logit log 3: positive 0.25 * 0.25^2 * -log .75, negative .75 * .75^2 * -log .25.
    pos_three = 0.25 * 0.0625 * -math.log(0.75)
    neg_three = 0.75 * 0.5625 * -math.log(0.25)
    logits = tf.constant([[[0.0, 0.0], [math.log(3.0), math.log(3.0)], [0.0, math.log(3.0)]]])
    targets = tf.constant([[0, -1, 1]])
    got = losses.sigmoid_focal_loss(logits, targets).numpy()
    want = [[pos_half + neg_half, 2 * neg_three, neg_half + pos_three]]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_focal_loss_gamma_zero_no_alpha_is_bce():
    logits = tf.constant([[1.5, -0.3, 0.2]])
    targets = tf.constant([2])
    got = losses.sigmoid_focal_loss(logits, targets, alpha=-1.0, gamma=0.0).numpy()
    p = 1 / (1 + np.exp(-np.array([1.5, -0.3, 0.2])))
    want = -np.log(1 - p[0]) - np.log(1 - p[1]) - np.log(p[2])
    np.testing.assert_allclose(got, [want], rtol=1e-6)


def test_focal_loss_rejects_float_targets():
    with pytest.raises(TypeError, match="class_targets"):
        losses.sigmoid_focal_loss(tf.zeros([2, 3]), tf.zeros([2]))


def test_box_loss_hand_values():
    pred = tf.constant([[1.0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 2, 1], [1, 3, 1, 1]])
    target = tf.constant([[1.0, 1, 1, 1], [2, 2, 2, 2], [1, 1, 1, 1], [3, 1, 1, 1]])
    # Row 2: 2x2 inside 4x4, IoU 1/4, enclosing = union. Row 3: shifted 2x2, IoU 2/6.
    # Row 4: 2x4 and 4x2 crossing: inter 4, union 12, enclosing 16 -> GIoU 1/3 - 1/4.
    giou = losses.box_loss(pred, target, kind="giou").numpy()
    np.testing.assert_allclose(giou, [0.0, 0.75, 2 / 3, 11 / 12], rtol=1e-5, atol=1e-6)
    iou = losses.box_loss(pred, target, kind="iou").numpy()
    np.testing.assert_allclose(
        iou, [0.0, math.log(4.0), math.log(3.0), math.log(3.0)], rtol=1e-5, atol=1e-6
    )


def test_iou_loss_is_finite_for_degenerate_prediction():
    got = losses.box_loss(tf.zeros([1, 4]), tf.ones([1, 4]), kind="iou").numpy()
    assert np.isfinite(got).all() and got[0] > 10.0


def test_box_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        losses.box_loss(tf.ones([1, 4]), tf.ones([1, 4]), kind="l1")


def test_centerness_loss_hand_values():
    got = losses.centerness_loss(
        tf.constant([0.0, 0.0, math.log(3.0)]), tf.constant([1.0, 0.5, 1.0])
    ).numpy()
    np.testing.assert_allclose(got, [LOG2, LOG2, -math.log(0.75)], rtol=1e-6)


def _example():
    """B=1, P=3, K=2: two positives (classes 0 and 1) and one background location."""
    outputs = {
        "class_logits": tf.zeros([1, 3, 2]),
        "box_ltrb": tf.constant([[[1.0, 1, 1, 1], [1, 3, 1, 1], [0, 0, 0, 0]]]),
        "centerness_logits": tf.constant([[0.0, 0.0, 7.0]]),
    }
    labels = {
        "class_targets": tf.constant([[0, 1, -1]]),
        "box_targets": tf.constant([[[2.0, 2, 2, 2], [3, 1, 1, 1], [0, 0, 0, 0]]]),
        "centerness_targets": tf.constant([[1.0, 0.5, 0.0]]),
        "image_id": tf.constant([7], tf.int64),  # ignored
    }
    return outputs, labels


def test_fcos_losses_hand_values():
    outputs, labels = _example()
    got = losses.fcos_losses(outputs, labels)
    pos, neg = 0.25 * 0.25 * LOG2, 0.75 * 0.25 * LOG2
    np.testing.assert_allclose(got["cls_loss"], (2 * (pos + neg) + 2 * neg) / 2, rtol=1e-6)
    # Centerness-weighted GIoU: (0.75 * 1 + 11/12 * 0.5) / (1 + 0.5).
    np.testing.assert_allclose(got["box_loss"], (0.75 + 11 / 24) / 1.5, rtol=1e-5)
    np.testing.assert_allclose(got["ctr_loss"], LOG2, rtol=1e-6)
    assert float(got["num_pos"]) == 2.0
    got_iou = losses.fcos_losses(outputs, labels, box_loss="iou")
    np.testing.assert_allclose(
        got_iou["box_loss"], (math.log(4.0) + 0.5 * math.log(3.0)) / 1.5, rtol=1e-5
    )


def test_fcos_losses_without_centerness_branch():
    outputs, labels = _example()
    del outputs["centerness_logits"]
    got = losses.fcos_losses(outputs, labels)
    assert float(got["ctr_loss"]) == 0.0
    np.testing.assert_allclose(got["box_loss"], (0.75 + 11 / 24) / 1.5, rtol=1e-5)


def test_fcos_losses_no_positives_finite_gradient():
    logits = tf.Variable(tf.zeros([2, 4, 3]))
    ltrb = tf.Variable(tf.zeros([2, 4, 4]))  # degenerate boxes must not leak NaN
    ctr = tf.Variable(tf.zeros([2, 4]))
    labels = {
        "class_targets": -tf.ones([2, 4], tf.int32),
        "box_targets": tf.zeros([2, 4, 4]),
        "centerness_targets": tf.zeros([2, 4]),
    }
    with tf.GradientTape() as tape:
        out = losses.fcos_losses(
            {"class_logits": logits, "box_ltrb": ltrb, "centerness_logits": ctr}, labels
        )
        total = out["cls_loss"] + out["box_loss"] + out["ctr_loss"]
    # Normaliser clipped to 1: 8 background locations x 3 classes x neg_half.
    np.testing.assert_allclose(out["cls_loss"], 24 * 0.75 * 0.25 * LOG2, rtol=1e-6)
    assert float(out["box_loss"]) == 0.0 and float(out["ctr_loss"]) == 0.0
    assert float(out["num_pos"]) == 0.0
    for grad in tape.gradient(total, [logits, ltrb, ctr]):
        assert grad is not None and np.isfinite(grad.numpy()).all()


def test_fcos_losses_missing_key():
    outputs, labels = _example()
    del labels["box_targets"]
    with pytest.raises(ValueError, match="box_targets"):
        losses.fcos_losses(outputs, labels)
    outputs, labels = _example()
    with pytest.raises(ValueError, match="box_loss"):
        losses.fcos_losses(outputs, labels, box_loss="smooth_l1")


def test_global_sum_identity_without_strategy():
    assert float(losses.global_sum(3.0)) == 3.0
    assert float(losses.global_num_positives(0.0)) == 1.0


def _random_batch(seed, batch=4, num_loc=6, num_classes=3):
    rng = np.random.default_rng(seed)
    cls_t = rng.integers(-1, num_classes, size=(batch, num_loc)).astype(np.int32)
    cls_t[1] = -1  # an image without positives
    pos = cls_t >= 0
    outputs = {
        "class_logits": rng.normal(size=(batch, num_loc, num_classes)).astype(np.float32),
        "box_ltrb": rng.uniform(0.5, 4, size=(batch, num_loc, 4)).astype(np.float32),
        "centerness_logits": rng.normal(size=(batch, num_loc)).astype(np.float32),
    }
    labels = {
        "class_targets": cls_t,
        "box_targets": (rng.uniform(0.5, 4, size=(batch, num_loc, 4)) * pos[..., None]).astype(
            np.float32
        ),
        "centerness_targets": (rng.uniform(0.1, 1, size=(batch, num_loc)) * pos).astype(np.float32),
    }
    return outputs, labels


def test_replica_losses_sum_to_single_device_loss(two_replicas):
    outputs, labels = _random_batch(0)
    single = {k: float(v) for k, v in losses.fcos_losses(outputs, labels).items()}

    strategy = two_replicas
    halves = [
        (tf.nest.map_structure(lambda x: x[:2], (outputs, labels))),
        (tf.nest.map_structure(lambda x: x[2:], (outputs, labels))),
    ]

    def replica_fn(ctx):
        return halves[ctx.replica_id_in_sync_group]

    per_replica = strategy.experimental_distribute_values_from_function(replica_fn)

    @tf.function
    def run(data):
        return strategy.run(lambda d: losses.fcos_losses(d[0], d[1]), args=(data,))

    result = run(per_replica)
    for key in ("cls_loss", "box_loss", "ctr_loss"):
        total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, result[key], axis=None))
        np.testing.assert_allclose(total, single[key], rtol=1e-5, err_msg=key)
    # num_pos is already global on every replica.
    for value in strategy.experimental_local_results(result["num_pos"]):
        assert float(value) == single["num_pos"]
