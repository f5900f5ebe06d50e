"""Tests of fcos_tf.serving.bn_folding and of the BatchNorm head: folding, SyncBN over replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.modeling.backbone import SmallBackbone, build_backbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.modeling.head import FCOSHead
from fcos_tf.serving import bn_folding


def _randomise_batch_norms(model, seed=0):
    """Statistics and affine parameters far from their identity init, so folding matters."""
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.5, c),
                    rng.normal(0, 0.5, c),
                    rng.uniform(0.3, 2.0, c),
                ]
            )
            count += 1
    return count


def _assert_same_outputs(original, folded, images):
    expected = original(images, training=False)
    actual = folded(images, training=False)
    assert sorted(expected) == sorted(actual)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-4, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("backbone_name", ["mobilenet_v2", "mobilenet_v3_large"])
def test_folding_keeps_the_outputs_and_removes_every_batch_norm(backbone_name):
    backbone = build_backbone(
        backbone_name, alpha=0.35 if backbone_name == "mobilenet_v2" else 0.75, norm="sync_bn"
    )
    model = FCOS(backbone, 3, fpn_channels=32, head_num_convs=2, head_norm="sync_bn")
    model.build((None, None, None, 3))
    assert _randomise_batch_norms(model) == bn_folding.count_batch_norms(model) > 20
    folded = bn_folding.fold_batch_norms(model)
    assert bn_folding.count_batch_norms(folded) == 0
    assert folded.head.norm is None
    images = np.random.default_rng(1).uniform(-1, 1, (2, 96, 64, 3)).astype(np.float32)
    _assert_same_outputs(model, folded, images)
    # The post-processing settings travel with the copy.
    assert folded.get_config()["score_threshold"] == model.get_config()["score_threshold"]


def test_folding_a_plain_bn_backbone_and_head():
    model = FCOS(SmallBackbone(norm="bn"), 2, fpn_channels=16, head_num_convs=1, head_norm="bn")
    model.build((None, None, None, 3))
    _randomise_batch_norms(model, seed=3)
    folded = bn_folding.fold_batch_norms(model)
    assert bn_folding.count_batch_norms(folded) == 0
    # The folded convs now carry a bias (the BN offset).
    assert folded.backbone.get_layer("c3_conv_conv").use_bias
    _assert_same_outputs(
        model, folded, np.random.default_rng(2).normal(0, 1, (1, 64, 64, 3)).astype("float32")
    )


def test_folded_weights_by_hand():
    """1x1 conv with kernel 2 and bias 1, BN gamma 3 beta 0.5 mean 1 var 4 eps 0."""
    conv = keras.layers.Conv2D(
        1,
        1,
        kernel_initializer=keras.initializers.Constant(2.0),
        bias_initializer=keras.initializers.Constant(1.0),
    )
    conv.build((None, None, None, 1))
    norm = keras.layers.BatchNormalization(epsilon=0.0)
    norm.build((None, None, None, 1))
    norm.set_weights([np.array([3.0]), np.array([0.5]), np.array([1.0]), np.array([4.0])])
    kernel, bias = bn_folding.folded_conv_weights(conv, norm)
    # y = 3 * (2x + 1 - 1) / 2 + 0.5 = 3x + 0.5
    np.testing.assert_allclose(kernel.ravel(), [3.0])
    np.testing.assert_allclose(bias, [0.5])


def test_depthwise_folding_scales_each_output_channel():
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    depthwise.build((None, None, None, 3))
    norm = keras.layers.BatchNormalization()
    norm.build((None, None, None, 6))
    rng = np.random.default_rng(0)
    norm.set_weights(
        [rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)]
    )
    kernel, bias = bn_folding.folded_conv_weights(depthwise, norm)
    folded = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    folded.build((None, None, None, 3))
    folded.set_weights([kernel, bias])
    x = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x), norm(depthwise(x), training=False), rtol=1e-5, atol=1e-5)


def test_group_norm_head_is_left_alone():
    head = FCOSHead(2, channels=8, num_convs=1, norm="group", num_groups=4, num_levels=1)
    head.build([(None, None, None, 8)])
    assert bn_folding.fold_head_batch_norms(head) is head


def test_head_rejects_unknown_norm():
    with pytest.raises(ValueError, match="`norm` must be one of"):
        FCOSHead(2, norm="layer")


# ------------------------------------------------------------------------------ SyncBN


def _head_statistics(norm, strategy, images):
    """Moving statistics of the first tower BN after one training-mode call on ``images``.

    Under ``strategy`` the batch is split evenly over its replicas.
    """
    with strategy.scope():
        head = FCOSHead(2, channels=4, num_convs=1, norm=norm, num_levels=1)
        head.build([(None, None, None, 3)])
    head.set_weights(
        [
            np.full(w.shape, 0.1, np.float32) if "kernel" in w.path else w.numpy()
            for w in head.weights
        ]
    )
    replicas = strategy.num_replicas_in_sync
    shards = np.split(images, replicas)

    @tf.function
    def step(x):
        return head([x], training=True)["box_raw"][0]

    if replicas == 1:
        outputs = [step(tf.constant(images))]
    else:
        values = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(shards[context.replica_id_in_sync_group])
        )
        outputs = strategy.experimental_local_results(strategy.run(step, args=(values,)))
    norm_layer = head.cls_tower[1]
    return (
        norm_layer.moving_mean.numpy(),
        norm_layer.moving_variance.numpy(),
        np.concatenate([np.asarray(o) for o in outputs]),
    )


def test_sync_bn_statistics_are_those_of_the_global_batch(two_replicas):
    rng = np.random.default_rng(0)
    # The two halves differ in mean and spread: per-replica statistics would differ.
    images = np.concatenate([rng.normal(0, 1, (2, 8, 8, 3)), rng.normal(3, 4, (2, 8, 8, 3))])
    images = images.astype(np.float32)
    single = _head_statistics("sync_bn", tf.distribute.get_strategy(), images)
    mirrored = _head_statistics("sync_bn", two_replicas, images)
    for one, two in zip(single, mirrored):
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)
    # Plain BN normalises each replica with its own half: the statistics differ.
    local = _head_statistics("bn", two_replicas, images)
    assert not np.allclose(local[1], single[1], rtol=1e-3)
    assert not np.allclose(local[2], single[2], rtol=1e-3, atol=1e-4)
