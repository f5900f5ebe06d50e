"""Tests of fcos_tf.modeling.head, and the parameter count of a full ResNet-50 FCOS stack."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.modeling.backbone import FrozenBatchNorm, ResNet, SmallBackbone
from fcos_tf.modeling.fpn import FPN
from fcos_tf.modeling.head import FCOSHead, GroupNorm, Scale
from fcos_tf.ops.locations import feature_map_sizes


def _levels(image_size=(200, 249), channels=32, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, h, w, channels)).astype("float32")
        for h, w in feature_map_sizes(image_size)
    ]


def _small_head(**kwargs):
    defaults = {"num_classes": 5, "channels": 32, "num_convs": 2, "num_groups": 8}
    defaults.update(kwargs)
    return FCOSHead(**defaults)


# ------------------------------------------------------------------------------------ Scale


def test_scale_multiplies_and_round_trips():
    scale = Scale(2.5, name="s")
    np.testing.assert_allclose(scale(np.array([1.0, -2.0], "float32")), [2.5, -5.0])
    assert [w.name for w in scale.trainable_weights] == ["scale"]
    clone = Scale.from_config(scale.get_config())
    assert clone.initial_value == 2.5 and clone.name == "s"


# ------------------------------------------------------------------------------------- head


@pytest.mark.parametrize("image_size", [(200, 249), (512, 512), (800, 1344)])
def test_output_shapes_per_level(image_size):
    levels = _levels(image_size, batch=1)
    outputs = _small_head()(levels)
    assert set(outputs) == {"class_logits", "box_raw", "centerness_logits"}
    for key, depth in (("class_logits", 5), ("box_raw", 4), ("centerness_logits", 1)):
        assert [tuple(t.shape) for t in outputs[key]] == [
            (1, h, w, depth) for h, w in feature_map_sizes(image_size)
        ]


def test_head_is_shared_across_levels():
    level = _levels((64, 64), batch=1)[1]
    head = _small_head(num_levels=2)
    outputs = head([level, level])
    for key in ("class_logits", "box_raw", "centerness_logits"):
        np.testing.assert_allclose(outputs[key][0], outputs[key][1], rtol=1e-6)
    head.scales[1].scale.assign(3.0)
    outputs = head([level, level])
    np.testing.assert_allclose(
        outputs["box_raw"][1], 3.0 * np.asarray(outputs["box_raw"][0]), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(outputs["class_logits"][0], outputs["class_logits"][1], rtol=1e-6)


def test_initial_values():
    head = FCOSHead(num_classes=80)
    head.build([(None, None, None, 256)] * 5)
    for conv in head.cls_tower[::3] + head.box_tower[::3]:
        assert isinstance(conv, keras.layers.Conv2D) and conv.use_bias
        kernel = np.asarray(conv.kernel)
        assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
        np.testing.assert_array_equal(conv.bias, 0.0)
    np.testing.assert_allclose(head.cls_logits.bias, -math.log(99.0), rtol=1e-6)
    assert abs(float(head.cls_logits.bias[0]) + 4.59512) < 1e-4
    np.testing.assert_array_equal(head.box_pred.bias, 0.0)
    np.testing.assert_array_equal(head.centerness_pred.bias, 0.0)
    assert abs(np.asarray(head.box_pred.kernel).std() - 0.01) < 0.001
    assert [float(s.scale) for s in head.scales] == [1.0] * 5
    norms = [
        layer for layer in head.cls_tower if isinstance(layer, keras.layers.GroupNormalization)
    ]
    assert len(norms) == 4 and all(n.groups == 32 and n.epsilon == 1e-5 for n in norms)


def test_initial_foreground_probability():
    keras.utils.set_random_seed(0)  # the mean over 64x64 locations varies by ~5% with the init
    outputs = _small_head()(_levels((64, 64)))
    probabilities = 1.0 / (1.0 + np.exp(-np.asarray(outputs["class_logits"][0])))
    np.testing.assert_allclose(probabilities.mean(), 0.01, rtol=0.05)


@pytest.mark.parametrize("centerness_on", ["regression", "classification"])
def test_centerness_branch_source(centerness_on):
    head = _small_head(centerness_on=centerness_on)
    levels = _levels((64, 64))
    outputs = head(levels)
    tower = head.box_tower if centerness_on == "regression" else head.cls_tower
    x = levels[0]
    for layer in tower:
        x = layer(x)
    np.testing.assert_allclose(
        outputs["centerness_logits"][0], head.centerness_pred(x), rtol=1e-5, atol=1e-6
    )


def test_no_centerness():
    head = _small_head(centerness_on="none")
    outputs = head(_levels((64, 64)))
    assert set(outputs) == {"class_logits", "box_raw"}
    assert head.centerness_pred is None


def test_no_norm():
    head = _small_head(norm=None, num_convs=4, channels=16)
    head(_levels((64, 64), channels=16))
    assert not any(
        isinstance(layer, keras.layers.GroupNormalization)
        for layer in head.cls_tower + head.box_tower
    )
    # 8 tower convs + class, box, centerness predictors + 5 scales.
    expected = 8 * (9 * 16 * 16 + 16) + (9 * 16 * 5 + 5) + (9 * 16 * 4 + 4) + (9 * 16 + 1) + 5
    assert head.count_params() == expected


@pytest.mark.parametrize(
    "kwargs", [{}, {"norm": None}, {"centerness_on": "classification"}], ids=str
)
def test_training_graph_traces_the_towers_once(kwargs):
    """In a training graph one function runs the towers on every level: the eager call's
    outputs bit for bit, its gradients up to the order in which levels are summed."""
    head = _small_head(**kwargs)
    levels = [tf.constant(x) for x in _levels((96, 64))]
    head(levels)

    def outputs_and_gradients(training):
        with tf.GradientTape() as tape:
            outputs = head(levels, training=training)
            loss = tf.add_n([tf.reduce_sum(tf.sin(x)) for value in outputs.values() for x in value])
        return outputs, tape.gradient(loss, head.trainable_variables)

    eager_outputs, eager_gradients = outputs_and_gradients(True)
    step = tf.function(outputs_and_gradients)
    graph_outputs, graph_gradients = step(True)
    for key, per_level in eager_outputs.items():
        for eager, graph in zip(per_level, graph_outputs[key]):
            assert graph.shape == eager.shape
            np.testing.assert_array_equal(graph, eager)
    for variable, eager, graph in zip(head.trainable_variables, eager_gradients, graph_gradients):
        scale = np.abs(eager).max()
        assert scale > 0, variable.path
        np.testing.assert_allclose(graph, eager, rtol=0, atol=1e-6 * scale, err_msg=variable.path)

    def calls_and_head_convs(training):
        graph = step.get_concrete_function(training).graph
        operations = graph.get_operations()
        calls = [op for op in operations if op.type.endswith("PartitionedCall")]
        functions = {op.get_attr("f").name for op in calls}
        return len(calls), len(functions), sum(op.type == "Conv2D" for op in operations)

    # Training: one forward and one backward function, each called on the five levels, and
    # no conv left in the step's own graph. Inference (what export and conversion read):
    # every level's convs in the graph itself.
    assert calls_and_head_convs(True) == (10, 2, 0)
    assert calls_and_head_convs(False) == (0, 0, 5 * (2 * 2 + 3))


def test_config_round_trip():
    head = _small_head(centerness_on="classification", num_levels=3, prior_prob=0.05, name="h")
    levels = _levels((64, 64))[:3]
    expected = head(levels)
    config = head.get_config()
    clone = FCOSHead.from_config(config)
    assert clone.get_config() == config
    clone.build([lvl.shape for lvl in levels])
    clone.set_weights(head.get_weights())
    result = clone(levels)
    for key in expected:
        for a, b in zip(expected[key], result[key]):
            np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"norm": "batch"}, "norm"),
        ({"centerness_on": "box"}, "centerness_on"),
        ({"num_groups": 7}, "num_groups"),
        ({"prior_prob": 1.0}, "prior_prob"),
        ({"num_levels": 0}, "num_levels"),
    ],
)
def test_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        _small_head(**kwargs)


def test_rejects_wrong_number_of_levels():
    with pytest.raises(ValueError, match="5 feature maps"):
        _small_head()(_levels((64, 64))[:4])


# --------------------------------------------------------------------- whole stack


def _fcos_stack(backbone, num_classes, fpn_channels=256, **head_kwargs):
    images = keras.Input((None, None, 3))
    pyramid = FPN(channels=fpn_channels)(backbone(images))
    return keras.Model(images, FCOSHead(num_classes, channels=fpn_channels, **head_kwargs)(pyramid))


def test_resnet50_fcos_parameter_count_matches_torchvision():
    """torchvision fcos_resnet50_fpn (91 classes): 32,269,600 parameters, frozen BN excluded."""
    model = _fcos_stack(ResNet(depth=50), num_classes=91)
    frozen_bn = sum(
        int(np.prod(w.shape))
        for layer in model.get_layer("resnet50").layers
        if isinstance(layer, FrozenBatchNorm)
        for w in layer.weights
    )
    scales = sum(int(np.prod(w.shape)) for w in model.weights if w.name == "scale")
    assert scales == 5
    assert model.count_params() - frozen_bn - scales == 32_269_600


def test_small_stack_end_to_end_shapes():
    model = _fcos_stack(SmallBackbone(), num_classes=3, fpn_channels=32, num_convs=2, num_groups=8)
    outputs = model(np.zeros((1, 200, 249, 3), "float32"))
    assert [tuple(t.shape) for t in outputs["class_logits"]] == [
        (1, h, w, 3) for h, w in feature_map_sizes((200, 249))
    ]


def test_tf_checkpoint_round_trip(tmp_path):
    """Every weight is in tf.train.Checkpoint's object graph (what train.py and export use)."""
    levels = _levels((64, 64))
    head = _small_head()
    head(levels)
    head.scales[2].scale.assign(0.5)
    path = tf.train.Checkpoint(layer=head).write(str(tmp_path / "ckpt"))
    clone = _small_head()
    clone(levels)
    tf.train.Checkpoint(layer=clone).read(path).assert_consumed()
    assert len(clone.weights) == len(head.weights) == 2 * 2 * 4 + 3 * 2 + 5
    for a, b in zip(head.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# -------------------------------------------------------------------------------- GroupNorm


def _group_norm_reference(x, gamma, beta, groups, epsilon=1e-5):
    """float64 numpy GroupNorm of NHWC ``x``."""
    batch, height, width, channels = x.shape
    grouped = x.astype("float64").reshape(batch, height, width, groups, channels // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    variance = grouped.var(axis=(1, 2, 4), keepdims=True)
    normalised = ((grouped - mean) / np.sqrt(variance + epsilon)).reshape(x.shape)
    return normalised * gamma + beta


def _relative_error(actual, expected):
    return np.abs(np.asarray(actual, "float64") - expected).max() / np.abs(expected).max()


def _p3_input(offset, std, seed=0):
    # P3 of an 800 x 1216 input: 100 x 152 cells, 256 channels: 121,600 values per group.
    rng = np.random.default_rng(seed)
    x = (offset + std * rng.normal(size=(1, 100, 152, 256))).astype("float32")
    gamma = rng.uniform(0.5, 1.5, 256).astype("float32")
    beta = rng.normal(size=256).astype("float32")
    return x, gamma, beta


@pytest.mark.parametrize("offset, std", [(50.0, 3.0), (200.0, 1.0), (0.0, 1.0)])
def test_group_norm_float32_error_at_p3(offset, std):
    x, gamma, beta = _p3_input(offset, std)
    expected = _group_norm_reference(x, gamma, beta, 32)
    ours = GroupNorm(32, epsilon=1e-5)
    keras_layer = keras.layers.GroupNormalization(32, epsilon=1e-5)
    for layer in (ours, keras_layer):
        layer.build(x.shape)
        layer.set_weights([gamma, beta])
    error = _relative_error(ours(x), expected)
    # Near float32 resolution (6e-8) whatever the offset (measured 1.4e-7 to 1.7e-7);
    # PyTorch's F.group_norm measures 9e-8 to 4e-6 on these inputs, Keras' layer 1e-5 to 4e-4.
    assert error < 4e-7
    if offset:
        assert _relative_error(keras_layer(x), expected) > 30 * error
    torch = pytest.importorskip("torch")
    theirs = torch.nn.functional.group_norm(
        torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
        32,
        torch.from_numpy(gamma),
        torch.from_numpy(beta),
        eps=1e-5,
    ).numpy()
    torch_error = _relative_error(theirs.transpose(0, 2, 3, 1), expected)
    assert error <= max(torch_error, 3e-7)


@pytest.mark.parametrize("offset, std", [(50.0, 3.0), (200.0, 1.0), (0.0, 1.0)])
def test_group_norm_fused_inference_error_at_p3(offset, std):
    x, gamma, beta = _p3_input(offset, std)
    expected = _group_norm_reference(x, gamma, beta, 32)
    layer = GroupNorm(32, epsilon=1e-5, fused_inference=True)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    fused = tf.function(lambda t: layer(t, training=False))(x)
    error = _relative_error(fused, expected)
    # float32 statistics: the error follows the offset of the data in units of its spread
    # (measured 3.5e-7 centred, 2.8e-6 at 17 std, 2.2e-5 at 200 std).
    assert error < 1e-6 * max(1.0, offset / std)
    # Not the exact path: that one stays near 1.5e-7 whatever the offset.
    exact = _relative_error(layer(x, training=True), expected)
    assert exact < 4e-7
    if offset:
        assert error > 3 * exact


@pytest.mark.parametrize(
    "height, width, channels, groups",
    [(1, 1, 64, 32), (1, 2, 16, 4), (7, 11, 32, 8), (3, 5, 16, 16)],
)
def test_group_norm_fused_inference_small_maps(height, width, channels, groups):
    # n = 1 location (P7 of a small image), one-channel groups and odd sizes: the op's
    # unbiased variance must be turned back into the population one (a wrong factor moves
    # the output by 1e-2 or more; float32 statistics of two channels 3 apart: 6e-6).
    rng = np.random.default_rng(height * width + groups)
    x = (3.0 + rng.normal(size=(1, height, width, channels))).astype("float32")
    gamma = rng.uniform(0.5, 1.5, channels).astype("float32")
    beta = rng.normal(size=channels).astype("float32")
    layer = GroupNorm(groups, epsilon=1e-5, fused_inference=True)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(
        layer(x, training=False), _group_norm_reference(x, gamma, beta, groups), atol=2e-5
    )


def test_group_norm_fused_inference_only_for_one_image_inference():
    rng = np.random.default_rng(3)
    x = (10.0 + rng.normal(size=(2, 6, 9, 16))).astype("float32")
    exact = GroupNorm(4, epsilon=1e-5)
    fused = GroupNorm(4, epsilon=1e-5, fused_inference=True)
    for layer in (exact, fused):
        layer.build(x.shape)
        layer.set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(size=16)])
    fused.set_weights(exact.get_weights())
    # A batch of two and a training call take the exact path: the same result to the bit.
    np.testing.assert_array_equal(fused(x, training=False), exact(x, training=False))
    np.testing.assert_array_equal(fused(x[:1], training=True), exact(x[:1], training=True))
    # One image: the fused path, the same values to float32 rounding but not the same bits.
    one = fused(x[:1], training=False)
    np.testing.assert_allclose(one, exact(x[:1]), atol=1e-5)
    assert np.any(np.asarray(one) != np.asarray(exact(x[:1])))
    # bfloat16 in and out, statistics in float32: the float64 result on the same bfloat16
    # values up to the rounding of the output (2^-8 relative).
    half = GroupNorm(4, epsilon=1e-5, fused_inference=True, dtype="bfloat16")
    half.build(x.shape)
    half.set_weights(exact.get_weights())
    inputs = tf.cast(x[:1], tf.bfloat16)
    out = half(inputs, training=False)
    assert out.dtype == tf.bfloat16
    expected = _group_norm_reference(
        tf.cast(inputs, tf.float32).numpy(), *exact.get_weights(), groups=4
    )
    assert _relative_error(tf.cast(out, tf.float32), expected) < 4e-3
    assert GroupNorm.from_config(fused.get_config()).fused_inference
    assert not GroupNorm.from_config(exact.get_config()).fused_inference


def test_group_norm_is_keras_group_normalization_with_its_variables():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 7, 16)).astype("float32")
    ours = GroupNorm(4, epsilon=1e-5, name="norm")
    reference = keras.layers.GroupNormalization(4, epsilon=1e-5, name="norm")
    ours.build(x.shape)
    reference.build(x.shape)
    assert (
        [(v.name, v.shape) for v in ours.weights]
        == [(v.name, v.shape) for v in reference.weights]
        == [("gamma", (16,)), ("beta", (16,))]
    )
    weights = [rng.uniform(0.5, 1.5, 16).astype("float32"), rng.normal(size=16).astype("float32")]
    ours.set_weights(weights)
    reference.set_weights(weights)
    np.testing.assert_allclose(ours(x), reference(x), atol=1e-5)
    # Training gradients agree too (input and both variables).
    x = tf.constant(x)
    grads = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-4)
    restored = GroupNorm.from_config(ours.get_config())
    assert (restored.groups, restored.epsilon) == (4, 1e-5)
    with pytest.raises(ValueError, match="last axis"):
        GroupNorm(4, axis=1)


@pytest.mark.parametrize(
    "affine, offset, std, shape",
    [
        (True, 20.0, 2.0, (2, 5, 7, 16)),
        (False, 20.0, 2.0, (2, 5, 7, 16)),
        (True, 200.0, 1.0, (2, 30, 44, 32)),
        (True, 0.0, 1.0, (1, 2, 3, 32)),
    ],
)
def test_group_norm_gradients_match_float64(affine, offset, std, shape):
    # Offset data (the case the shifted statistics are for), a P7-sized map and every
    # gradient of the written-out backward pass (inputs, gamma and beta) against autodiff of
    # a float64 GroupNorm.
    rng = np.random.default_rng(7)
    x = (offset + std * rng.normal(size=shape)).astype("float32")
    weights = rng.normal(size=shape)
    channels = shape[-1]
    layer = GroupNorm(4, epsilon=1e-5, scale=affine, center=affine)
    layer.build(x.shape)
    if affine:
        layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(size=channels)])
    inputs = tf.constant(x)
    ours = {}
    for training in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=training)
            loss = tf.reduce_sum(tf.sin(outputs) * weights)
        ours[training] = (outputs, tape.gradient(loss, [inputs] + layer.trainable_weights))
    # The training call's forward pass is the inference call's, to the bit.
    np.testing.assert_array_equal(ours[True][0], ours[False][0])

    x64 = tf.constant(x, tf.float64)
    gamma64 = [tf.Variable(np.asarray(w, "float64")) for w in layer.get_weights()]
    with tf.GradientTape() as tape:
        tape.watch(x64)
        grouped = tf.reshape(x64, shape[:3] + (4, channels // 4))
        mean, variance = tf.nn.moments(grouped, axes=[1, 2, 4], keepdims=True)
        y = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + 1e-5), x.shape)
        if affine:
            y = y * gamma64[0] + gamma64[1]
        loss = tf.reduce_sum(tf.sin(y) * weights)
    expected = tape.gradient(loss, [x64] + gamma64)
    for training in (True, False):  # written out, and autodiff through the inference ops
        assert len(ours[training][1]) == len(expected) == (3 if affine else 1)
        for a, b in zip(ours[training][1], expected):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    if offset >= 200:
        # At 200 standard deviations the written-out input gradient stays near float32
        # resolution (measured 3.2e-7): no term of it carries the offset.
        assert _relative_error(ours[True][1][0], expected[0].numpy()) < 1e-6


def test_group_norm_mixed_precision_statistics_in_float32():
    x, gamma, beta = _p3_input(20.0, 0.5)
    x = x[:, :40, :40]
    layer = GroupNorm(32, epsilon=1e-5, dtype="mixed_bfloat16")
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    inputs = tf.cast(x, tf.bfloat16)  # what the previous conv hands over under the policy
    out = layer(inputs)
    assert out.dtype == tf.bfloat16 and layer.gamma.dtype == "float32"
    # The statistics of what arrives are float32: the output is the float64 result on the
    # same bfloat16 values up to the rounding of the bfloat16 output (2^-8 relative).
    expected = _group_norm_reference(tf.cast(inputs, tf.float32).numpy(), gamma, beta, 32)
    assert _relative_error(tf.cast(out, tf.float32), expected) < 4e-3


def test_head_uses_accurate_group_norm():
    head = _small_head()
    head.build([(None, None, None, 32)] * 5)
    norms = [
        layer
        for layer in head.cls_tower + head.box_tower
        if isinstance(layer, keras.layers.GroupNormalization)
    ]
    assert len(norms) == 4 and all(isinstance(layer, GroupNorm) for layer in norms)


def test_group_norm_converts_to_tflite_builtins():
    layer = GroupNorm(4, epsilon=1e-5)
    layer.build((1, 6, 8, 16))
    rng = np.random.default_rng(2)
    layer.set_weights(
        [rng.uniform(0.5, 1.5, 16).astype("float32"), rng.normal(size=16).astype("float32")]
    )
    fn = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([1, 6, 8, 16])])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    x = (5.0 + rng.normal(size=(1, 6, 8, 16))).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, layer(x), atol=1e-5)


# ------------------------------------------------------------------------ per-level BatchNorm


def _numpy_head_tower_level(head, x, level):
    """float64 numpy of the classification tower of a per-level BN head on one level."""
    y = x.astype(np.float64)
    for layer in head.cls_tower:
        if isinstance(layer, tuple):
            norm = layer[level]
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in norm.get_weights())
            y = (y - mean) / np.sqrt(var + norm.epsilon) * gamma + beta
        elif isinstance(layer, keras.layers.Conv2D):
            y = np.asarray(layer(y.astype("float32")), np.float64)
        else:
            y = np.maximum(y, 0.0)
    return y


@pytest.mark.parametrize("norm", ["bn_per_level", "sync_bn_per_level"])
def test_per_level_batch_norm_head(norm, tmp_path):
    """One BatchNorm per level at each tower position; convs shared; checkpointed."""
    levels = _levels((64, 96), batch=1)
    head = _small_head(norm=norm, num_levels=5)
    head(levels)
    # 2 towers x 2 positions x 5 levels BNs of 4 variables; convs 2 x 2 x 2; predictors; scales.
    assert len(head.weights) == 2 * 2 * 5 * 4 + 2 * 2 * 2 + 3 * 2 + 5
    rng = np.random.default_rng(3)
    for layer in head.cls_tower + head.box_tower:
        for bn in layer if isinstance(layer, tuple) else ():
            bn.set_weights(
                [
                    rng.uniform(0.5, 1.5, 32),
                    rng.normal(0, 0.1, 32),
                    rng.normal(0, 0.1, 32),
                    rng.uniform(0.5, 2.0, 32),
                ]
            )
    assert head.cls_tower[1][0].name == "cls_tower_norm0_p3"
    assert head.box_tower[4][4].name == "box_tower_norm1_p7"
    outputs = head(levels, training=False)
    for level, x in enumerate(levels):
        expected = _numpy_head_tower_level(head, x, level)
        logits = np.asarray(head.cls_logits(expected.astype("float32")))
        np.testing.assert_allclose(outputs["class_logits"][level], logits, atol=1e-4)
    # Another level's statistics give other outputs: the levels do not share their norm.
    wrong = _numpy_head_tower_level(head, levels[0], 1)
    assert (
        np.abs(
            np.asarray(head.cls_logits(wrong.astype("float32")))
            - np.asarray(outputs["class_logits"][0])
        ).max()
        > 1e-2
    )
    path = tf.train.Checkpoint(layer=head).write(str(tmp_path / "ckpt"))
    clone = FCOSHead.from_config(head.get_config())
    clone(levels)
    tf.train.Checkpoint(layer=clone).read(path).assert_consumed()
    for a, b in zip(head.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
