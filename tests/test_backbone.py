"""Tests of fcos_tf.modeling.backbone: frozen BN, ResNet layouts and freezing, small backbone."""

import collections
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.core import builders
from fcos_tf.modeling import backbone as backbone_lib
from fcos_tf.modeling.backbone import FrozenBatchNorm, ResNet, SmallBackbone, build_backbone

IMAGE_SIZES = [(200, 249), (512, 512), (800, 1344)]


def _ceil_sizes(height, width, strides=(8, 16, 32)):
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


@pytest.fixture(scope="module")
def resnet50():
    return ResNet(depth=50)


# ----------------------------------------------------------------------------- FrozenBatchNorm


def _frozen_bn_with_values(epsilon=1e-5, **kwargs):
    layer = FrozenBatchNorm(epsilon=epsilon, **kwargs)
    layer.build((None, 2))
    layer.set_weights(
        [
            np.array([2.0, 0.5], "float32"),  # gamma
            np.array([1.0, -1.0], "float32"),  # beta
            np.array([3.0, 0.0], "float32"),  # moving_mean
            np.array([4.0, 0.25], "float32"),
        ]
    )  # moving_variance
    return layer


def test_frozen_bn_golden_values():
    layer = _frozen_bn_with_values(epsilon=0.0)
    x = np.array([[5.0, 1.0], [3.0, -2.0]], "float32")
    # channel 0: 2 * (x - 3) / 2 + 1; channel 1: 0.5 * x / 0.5 - 1.
    expected = np.array([[3.0, 0.0], [1.0, -3.0]], "float32")
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_frozen_bn_uses_epsilon():
    layer = _frozen_bn_with_values(epsilon=1e-5)
    out = np.asarray(layer(np.array([[5.0, 3.0]], "float32")))
    # 1.99994 with epsilon, 2.0 without.
    np.testing.assert_allclose(out[0, 1], 0.5 * 3.0 / math.sqrt(0.25 + 1e-5) - 1.0, rtol=1e-6)
    assert FrozenBatchNorm().epsilon == 1e-5


def test_frozen_bn_ignores_training_and_never_updates():
    layer = _frozen_bn_with_values()
    before = [w.copy() for w in layer.get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32") * 10.0
    out_train = layer(x, training=True)
    out_infer = layer(x, training=False)
    np.testing.assert_array_equal(out_train, out_infer)
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 4
    for w_before, w_after in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(w_before, w_after)
    # Even a trainable=True toggle leaves the statistics non-trainable.
    layer.trainable = True
    assert layer.trainable_weights == []


def test_frozen_bn_takes_keras_batchnorm_weights():
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    bn.build((None, 3))
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 2, 3).astype("float32") for _ in range(4)])
    frozen = FrozenBatchNorm(epsilon=1e-5)
    frozen.build((None, 3))
    frozen.set_weights(bn.get_weights())
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(frozen(x), bn(x, training=False), rtol=1e-5, atol=1e-6)


def test_frozen_bn_mixed_precision_keeps_float32_statistics():
    layer = _frozen_bn_with_values(dtype="mixed_float16")
    assert all(w.dtype == "float32" for w in layer.weights)
    out = layer(np.array([[5.0, 1.0]], "float32"))
    assert out.dtype == "float16"
    np.testing.assert_allclose(np.asarray(out, "float32"), [[3.0, 0.0]], atol=1e-2)


def test_frozen_bn_config_round_trip():
    layer = FrozenBatchNorm(epsilon=1e-3, name="bn_x")
    clone = FrozenBatchNorm.from_config(layer.get_config())
    assert clone.epsilon == 1e-3 and clone.name == "bn_x"


# ---------------------------------------------------------------------------------- ResNet


def test_resnet50_feature_shapes_at_800x1344(resnet50):
    specs = resnet50.compute_output_spec(keras.KerasTensor((1, 800, 1344, 3)))
    expected = [(1, h, w, c) for (h, w), c in zip(_ceil_sizes(800, 1344), (512, 1024, 2048))]
    assert [tuple(s.shape) for s in specs] == expected
    assert resnet50.output_channels == (512, 1024, 2048)


@pytest.mark.parametrize("layout", ["pytorch", "caffe"])
def test_resnet50_forward_odd_size(layout):
    model = ResNet(depth=50, layout=layout)
    features = model(np.random.default_rng(0).normal(size=(1, 200, 249, 3)).astype("float32"))
    assert [tuple(f.shape) for f in features] == [
        (1, h, w, c) for (h, w), c in zip(_ceil_sizes(200, 249), (512, 1024, 2048))
    ]
    assert all(np.isfinite(np.asarray(f)).all() for f in features)


def test_resnet50_conv_parameter_count(resnet50):
    # torchvision resnet50: 25,557,032 parameters = convs + 53,120 BN affine + 2,049,000 fc.
    conv_params = sum(
        int(np.prod(w.shape))
        for layer in resnet50.layers
        if isinstance(layer, keras.layers.Conv2D)
        for w in layer.weights
    )
    assert conv_params == 25_557_032 - 53_120 - 2_049_000
    bn_params = sum(
        int(np.prod(w.shape))
        for layer in resnet50.layers
        if isinstance(layer, FrozenBatchNorm)
        for w in layer.weights
    )
    assert bn_params == 2 * 53_120  # affine + statistics


def test_resnet101_stage_depths():
    model = ResNet(depth=101)
    names = {layer.name for layer in model.layers}
    assert "layer3_22_conv3" in names and "layer3_23_conv3" not in names
    assert "layer4_2_conv3" in names and "layer4_3_conv3" not in names
    conv_params = sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        for w in layer.weights
    )
    # torchvision resnet101: 44,549,160 = convs + 105,344 BN affine + 2,049,000 fc.
    assert conv_params == 44_549_160 - 105_344 - 2_049_000


def test_torchvision_style_layer_names(resnet50):
    names = {layer.name for layer in resnet50.layers}
    for expected in (
        "conv1",
        "bn1",
        "layer1_0_conv1",
        "layer1_0_bn1",
        "layer1_0_downsample_0",
        "layer1_0_downsample_1",
        "layer2_3_conv3",
        "layer3_5_bn3",
        "layer4_0_downsample_0",
    ):
        assert expected in names
    assert "layer1_1_downsample_0" not in names


@pytest.mark.parametrize(
    "layout, stride_1x1, stride_3x3", [("pytorch", (1, 1), (2, 2)), ("caffe", (2, 2), (1, 1))]
)
def test_layouts_place_the_stride(layout, stride_1x1, stride_3x3):
    model = ResNet(depth=50, layout=layout)
    for stage in (2, 3, 4):
        assert model.get_layer(f"layer{stage}_0_conv1").strides == stride_1x1
        assert model.get_layer(f"layer{stage}_0_conv2").strides == stride_3x3
        assert model.get_layer(f"layer{stage}_0_downsample_0").strides == (2, 2)
        assert model.get_layer(f"layer{stage}_1_conv2").strides == (1, 1)
    assert model.get_layer("layer1_0_conv2").strides == (1, 1)


def test_strided_convs_pad_explicitly_and_symmetrically(resnet50):
    assert resnet50.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    assert resnet50.get_layer("conv1").padding == "valid"
    assert resnet50.get_layer("maxpool_pad").padding == ((1, 1), (1, 1))
    assert resnet50.get_layer("layer2_0_conv2_pad").padding == ((1, 1), (1, 1))
    assert resnet50.get_layer("layer2_0_conv2").padding == "valid"
    assert resnet50.get_layer("layer2_0_downsample_0").padding == "valid"


def test_stem_symmetric_padding_golden():
    """A centre-tap 7x7 stride-2 stem conv reads pixel (2i, 2j): PyTorch's pad 3, not TF same."""
    model = ResNet(depth=50, freeze_at=0)
    stem = keras.Model(model.input, model.get_layer("conv1").output)
    kernel = np.zeros((7, 7, 3, 64), "float32")
    kernel[3, 3, 0, 0] = 1.0
    model.get_layer("conv1").set_weights([kernel])
    image = np.random.default_rng(0).normal(size=(1, 10, 12, 3)).astype("float32")
    out = np.asarray(stem(image))
    np.testing.assert_allclose(out[0, :, :, 0], image[0, ::2, ::2, 0], rtol=1e-6)


@pytest.mark.parametrize(
    "freeze_at, frozen_prefixes, trainable_prefixes",
    [
        (0, (), ("conv1", "layer1_", "layer4_")),
        (1, ("conv1",), ("layer1_", "layer2_")),
        (2, ("conv1", "layer1_"), ("layer2_", "layer3_", "layer4_")),
        (5, ("conv1", "layer1_", "layer2_", "layer3_", "layer4_"), ()),
    ],
)
def test_freeze_at(freeze_at, frozen_prefixes, trainable_prefixes):
    model = ResNet(depth=50, freeze_at=freeze_at)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer in convs:
        if layer.name.startswith(frozen_prefixes or ("<none>",)):
            assert not layer.trainable_weights, layer.name
        if layer.name.startswith(trainable_prefixes or ("<none>",)):
            assert layer.trainable_weights, layer.name
    # Frozen BN: no trainable weight outside the convolutions.
    conv_trainable = sum(len(layer.trainable_weights) for layer in convs)
    assert len(model.trainable_weights) == conv_trainable


def test_default_freeze_trainable_parameter_count(resnet50):
    trainable = sum(int(np.prod(w.shape)) for w in resnet50.trainable_weights)
    # Stem conv 7*7*3*64 and layer1's convs are frozen.
    layer1 = sum(
        int(np.prod(w.shape))
        for layer in resnet50.layers
        if layer.name.startswith("layer1_") and isinstance(layer, keras.layers.Conv2D)
        for w in layer.weights
    )
    assert layer1 == 212_992
    assert trainable == 25_557_032 - 53_120 - 2_049_000 - 9_408 - layer1


def test_frozen_bn_model_unchanged_by_training_call():
    model = ResNet(depth=50, freeze_at=5)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, FrozenBatchNorm):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                    rng.normal(0, 0.1, c).astype("float32"),
                    rng.normal(0, 0.1, c).astype("float32"),
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                ]
            )
    before = [w.copy() for w in model.get_weights()]
    image = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    out_train = model(image, training=True)
    out_infer = model(image, training=False)
    for a, b in zip(out_train, out_infer):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_plain_bn_option():
    model = ResNet(depth=50, norm="bn", freeze_at=2)
    assert isinstance(model.get_layer("layer2_0_bn1"), keras.layers.BatchNormalization)
    assert model.get_layer("layer2_0_bn1").trainable
    assert not model.get_layer("layer1_0_bn1").trainable


def test_resnet_config_round_trip():
    model = ResNet(depth=50, layout="caffe", freeze_at=3, bn_epsilon=1.001e-5, name="trunk")
    config = model.get_config()
    assert config == {
        "name": "trunk",
        "depth": 50,
        "layout": "caffe",
        "freeze_at": 3,
        "norm": "frozen_bn",
        "bn_epsilon": 1.001e-5,
        "min_level": 3,
        "fold_frozen_bn": True,
    }
    clone = ResNet.from_config(config)
    assert clone.get_layer("layer2_0_conv1").strides == (2, 2)
    assert clone.get_layer("layer2_0_bn1").epsilon == 1.001e-5
    assert not clone.get_layer("layer2_0_conv1").trainable_weights
    assert len(clone.weights) == len(model.weights)
    # Serialised as a Keras object (how FCOS stores its backbone).
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(restored, ResNet) and restored.layout == "caffe"


def test_resnet_frozen_bn_epsilon_zero():
    # maskrcnn-benchmark's FrozenBatchNorm2d has no epsilon: every norm layer gets 0.
    model = ResNet(depth=50, layout="caffe", bn_epsilon=0.0)
    norms = [layer for layer in model.layers if isinstance(layer, FrozenBatchNorm)]
    assert len(norms) == 53 and all(layer.epsilon == 0.0 for layer in norms)
    assert ResNet.from_config(model.get_config()).bn_epsilon == 0.0


# ------------------------------------------------------------- frozen BN folded into the convs


def _resnets_with_random_statistics(seed=0, **kwargs):
    """A folding and a non-folding ResNet-50 with the same weights and random BN statistics."""
    folded = ResNet(depth=50, fold_frozen_bn=True, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in folded.weights:
        name = variable.path.split("/")[-1]
        shape = tuple(variable.shape)
        if name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5 if name == "gamma" else 2.0, shape))
        elif name in ("beta", "moving_mean"):
            variable.assign(rng.normal(0.0, 0.2, shape))
    plain = ResNet(depth=50, fold_frozen_bn=False, **kwargs)
    plain.set_weights(folded.get_weights())
    return folded, plain


def test_folded_frozen_bn_same_weights_outputs_and_gradients():
    # float64, so that the comparison sees the algebra, not float32 rounding amplified by
    # ReLUs flipping near zero through 16 blocks of random weights.
    with builders.dtype_policy("float64"):
        folded, plain = _resnets_with_random_statistics(freeze_at=2)
    # Same variables in the same order under the same paths: checkpoints load either way.
    assert [v.path for v in folded.weights] == [v.path for v in plain.weights]
    assert [v.path for v in folded.trainable_weights] == [v.path for v in plain.trainable_weights]
    images = tf.constant(np.random.default_rng(1).normal(size=(2, 64, 96, 3)), tf.float64)
    weights = [
        tf.random.stateless_normal([1, 1, 1, c], [5, i], dtype=tf.float64)
        for i, c in enumerate((512, 1024, 2048))
    ]

    def outputs_and_gradients(model):
        with tf.GradientTape() as tape:
            features = model(images)
            loss = sum(tf.reduce_sum(f * w) for f, w in zip(features, weights, strict=True))
        return features, tape.gradient(loss, model.trainable_weights)

    features_folded, grads_folded = outputs_and_gradients(folded)
    features_plain, grads_plain = outputs_and_gradients(plain)
    for a, b in zip(features_folded, features_plain, strict=True):
        assert a.dtype == tf.float64
        np.testing.assert_allclose(a, b, atol=1e-10 * float(tf.reduce_max(tf.abs(b))))
    assert len(grads_folded) == len(grads_plain) == 42  # the convs of layer2..layer4
    for a, b in zip(grads_folded, grads_plain, strict=True):
        assert float(tf.norm(b)) > 0
        assert float(tf.norm(a - b) / tf.norm(b)) < 1e-10


def test_folded_frozen_bn_leaves_no_norm_arithmetic_on_activations():
    """Traced forward pass: the folded ResNet multiplies only weights, never a feature map."""

    def feature_map_multiplies(model):
        graph = (
            tf.function(lambda x: model(x))
            .get_concrete_function(tf.TensorSpec([2, 64, 64, 3], tf.float32))
            .graph
        )
        # Batch 2: a kernel's first dimension is 1, 3 or 7; a feature map's is the batch.
        return sum(
            op.type == "Mul" and op.outputs[0].shape.as_list()[:1] == [2]
            for op in graph.get_operations()
        )

    folded, plain = ResNet(depth=50), ResNet(depth=50, fold_frozen_bn=False)
    assert feature_map_multiplies(plain) == 53  # one per FrozenBatchNorm
    assert feature_map_multiplies(folded) == 0


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_folded_offsets_are_bias_adds(policy):
    """Each folded norm's offset is a BiasAdd on its convolution's output, which grappler
    fuses into the convolution (an AddV2 is not fused the same way, and in bfloat16 rounds
    differently)."""
    with builders.dtype_policy(policy):
        model = ResNet(depth=50)
    graph = (
        tf.function(lambda x: model(x, training=True))
        .get_concrete_function(tf.TensorSpec([1, 64, 64, 3], tf.float32))
        .graph
    )
    adds = collections.Counter(
        (op.type, op.outputs[0].shape.rank) for op in graph.get_operations() if "Add" in op.type
    )
    # One BiasAdd per norm; the other adds on feature maps are the 16 residual connections.
    assert adds[("BiasAdd", 4)] == 53
    assert adds[("AddV2", 4)] == 16


def test_folded_frozen_bn_mixed_bfloat16_close_to_float32():
    folded, plain = _resnets_with_random_statistics()
    # Layers read the global policy when the functional ResNet creates them.
    with builders.dtype_policy("mixed_bfloat16"):
        folded16 = ResNet(depth=50)
        plain16 = ResNet(depth=50, fold_frozen_bn=False)
    assert folded16.get_layer("layer1_0_conv1").compute_dtype == "bfloat16"
    folded16.set_weights(folded.get_weights())
    plain16.set_weights(folded.get_weights())
    images = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype("float32")
    reference = plain(images)[-1]
    scale = float(tf.reduce_max(tf.abs(reference)))

    def error(model):
        out = tf.cast(model(images)[-1], tf.float32)
        return float(tf.reduce_max(tf.abs(out - reference))) / scale

    # The kernel times the BN scale is rounded to bfloat16 once; the unfolded path rounds
    # the conv output before its float32 multiply-add. Both stay at bfloat16's error.
    assert error(folded16) < 0.1 and error(plain16) < 0.1
    assert error(folded16) < 2 * error(plain16)


def test_folded_layers_called_alone_are_conv_and_frozen_bn():
    folded, plain = _resnets_with_random_statistics()
    conv, norm = folded.get_layer("layer1_0_conv1"), folded.get_layer("layer1_0_bn1")
    assert isinstance(conv, backbone_lib.FrozenBNConv2D) and norm.folded
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 8, 8, 64)), tf.float32)
    raw = tf.nn.conv2d(x, conv.kernel, 1, "SAME")
    np.testing.assert_allclose(conv(x), raw, rtol=1e-5, atol=1e-5)
    scale, offset = norm.affine()
    np.testing.assert_allclose(norm(raw), raw * scale + offset, rtol=1e-5, atol=1e-5)
    # A sub-model that ends at a folded conv returns the conv's own output.
    stem = keras.Model(folded.input, folded.get_layer("conv1").output)
    stem_plain = keras.Model(plain.input, plain.get_layer("conv1").output)
    images = np.random.default_rng(4).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(stem(images), stem_plain(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv1x1_matmul_kernel_gradient_equals_tensorflows(padding):
    # float64: the two kernel gradients differ only in the order of their sums.
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 7, 5)), tf.float64)
    w = tf.constant(rng.normal(size=(1, 1, 5, 3)), tf.float64)
    upstream_seed = tf.constant(rng.normal(size=(3,)), tf.float64)

    def outputs_and_gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
            # A loss whose gradient differs per location and channel.
            loss = tf.reduce_sum(tf.sin(y) * upstream_seed)
        return (y, *tape.gradient(loss, [x, w]))

    ours = outputs_and_gradients(
        lambda x, w: backbone_lib._conv1x1_with_matmul_kernel_gradient(x, w, padding)
    )
    reference = outputs_and_gradients(lambda x, w: tf.nn.conv2d(x, w, 1, padding))
    assert ours[0].shape == (2, 9, 7, 3)
    np.testing.assert_array_equal(ours[0], reference[0])  # the same forward op
    np.testing.assert_array_equal(ours[1], reference[1])  # the same input-gradient op
    np.testing.assert_allclose(ours[2], reference[2], rtol=1e-12, atol=1e-12)


def test_bfloat16_training_takes_1x1_kernel_gradients_from_matmuls(monkeypatch):
    folded, _ = _resnets_with_random_statistics()
    with builders.dtype_policy("mixed_bfloat16"):
        model = ResNet(depth=50)
    model.set_weights(folded.get_weights())
    images = tf.constant(np.random.default_rng(5).normal(size=(2, 64, 48, 3)), tf.float32)

    def gradients(training=True):
        # The trainable weights only, as FCOS.train_step watches them.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([variable.value for variable in model.trainable_weights])
            features = model(images, training=training)
            loss = sum(tf.reduce_mean(tf.cast(f, tf.float32) ** 2) for f in features)
        return tape.gradient(loss, model.trainable_weights)

    def gradient_ops(training):
        step = tf.function(lambda: gradients(training))
        graph = step.get_concrete_function().graph
        return collections.Counter(op.type for op in graph.get_operations())

    # layer2..layer4 hold 13 blocks: 26 1x1 convs of stride 1, 3 strided 1x1 projections
    # (they keep oneDNN's kernel gradient) and 13 3x3 convs.
    ops = gradient_ops(training=True)
    assert ops["MatMul"] == 26 and ops["Conv2DBackpropFilter"] == 16
    # Inference-mode calls (what an export traces) and float32 keep TensorFlow's gradient.
    ops = gradient_ops(training=False)
    assert ops["MatMul"] == 0 and ops["Conv2DBackpropFilter"] == 42
    # The same gradients as TensorFlow's own, up to bfloat16 rounding of each kernel's sum
    # (the input gradients are the same ops, so no difference compounds down the network).
    ours = gradients()
    monkeypatch.setattr(
        backbone_lib.FrozenBNConv2D, "_matmul_kernel_gradient", lambda self, inputs: False
    )
    reference = gradients()
    assert len(ours) == len(reference) == 42
    for variable, a, b in zip(model.trainable_weights, ours, reference, strict=True):
        error = float(tf.norm(tf.cast(a - b, tf.float32)) / tf.norm(tf.cast(b, tf.float32)))
        assert error < 8e-3, variable.path


def test_fold_norm_takes_only_a_frozen_bn():
    conv = backbone_lib.FrozenBNConv2D(4, 1)
    with pytest.raises(TypeError, match="FrozenBatchNorm"):
        conv.fold_norm(keras.layers.BatchNormalization())
    # Plain BN ResNets keep plain convolutions.
    model = ResNet(depth=50, norm="bn")
    assert not any(isinstance(layer, backbone_lib.FrozenBNConv2D) for layer in model.layers)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"depth": 34}, "depth"),
        ({"layout": "tf"}, "layout"),
        ({"freeze_at": 6}, "freeze_at"),
        ({"norm": "group"}, "norm"),
        ({"norm": "bn", "bn_epsilon": 0.0}, "bn_epsilon"),
        ({"bn_epsilon": -1e-5}, "bn_epsilon"),
    ],
)
def test_resnet_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ResNet(**kwargs)


# --------------------------------------------------------------------------- SmallBackbone


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_small_backbone_shapes(image_size):
    model = SmallBackbone()
    features = model(np.zeros((2,) + image_size + (3,), "float32"))
    expected = [(2, h, w, c) for (h, w), c in zip(_ceil_sizes(*image_size), (32, 64, 128))]
    assert [tuple(f.shape) for f in features] == expected
    assert model.output_channels == (32, 64, 128) and model.strides == (8, 16, 32)


def test_small_backbone_is_small_and_trainable():
    model = SmallBackbone()
    assert 200_000 <= model.count_params() <= 1_000_000
    assert len(model.trainable_weights) == len(model.weights)


@pytest.mark.parametrize(
    "norm, norm_class",
    [
        ("group", keras.layers.GroupNormalization),
        ("bn", keras.layers.BatchNormalization),
        ("none", None),
    ],
)
def test_small_backbone_norms(norm, norm_class):
    model = SmallBackbone(norm=norm)
    norms = [layer for layer in model.layers if "norm" in layer.name]
    if norm_class is None:
        assert norms == []
        assert model.get_layer("c3_down_conv").use_bias
    else:
        assert norms and all(isinstance(layer, norm_class) for layer in norms)
        assert not model.get_layer("c3_down_conv").use_bias


def test_small_backbone_save_and_reload(tmp_path):
    model = SmallBackbone(channels=(16, 32, 48), stem_channels=8, num_groups=4, name="tiny")
    image = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype("float32")
    expected = model(image)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, SmallBackbone) and restored.channels == (16, 32, 48)
    for a, b in zip(expected, restored(image)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_small_backbone_rejects_bad_groups():
    with pytest.raises(ValueError, match="num_groups"):
        SmallBackbone(channels=(30, 64, 128))
    with pytest.raises(ValueError, match="norm"):
        SmallBackbone(norm="layer")


# -------------------------------------------------------------------------- build_backbone


def test_build_backbone():
    assert isinstance(build_backbone("small", channels=(8, 16, 32), num_groups=4), SmallBackbone)
    model = build_backbone("resnet50", layout="caffe")
    assert isinstance(model, ResNet) and model.depth == 50 and model.layout == "caffe"
    with pytest.raises(ValueError, match="name"):
        build_backbone("vgg16")


def test_every_custom_layer_has_get_config():
    """Every Keras layer or model class of the package that takes constructor arguments
    stores them in its own ``get_config`` (so ``from_config`` and saving round-trip)."""
    import importlib
    import inspect
    import pkgutil

    import fcos_tf

    classes = set()
    for info in pkgutil.walk_packages(fcos_tf.__path__, "fcos_tf."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, keras.layers.Layer):
                classes.add(cls)
    assert {
        backbone_lib.FrozenBatchNorm,
        backbone_lib.ResNet,
        backbone_lib.SmallBackbone,
    } <= classes
    assert len(classes) >= 8, sorted(c.__name__ for c in classes)

    def arguments(init):
        return {
            name
            for name, p in inspect.signature(init).parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }

    missing = []
    for cls in classes:
        if "__init__" not in cls.__dict__ or "get_config" in cls.__dict__:
            continue
        # Without a get_config of its own, the inherited one must store every argument.
        owner = next(base for base in cls.__mro__[1:] if "get_config" in base.__dict__)
        if not arguments(cls.__init__) <= arguments(owner.__init__):
            missing.append(f"{cls.__module__}.{cls.__name__}")
    assert not missing, missing


@pytest.mark.parametrize("name", ["resnet50", "small"])
def test_min_level_2_returns_c2(name):
    kwargs = {"stem_channels": 8, "num_groups": 8} if name == "small" else {}
    backbone = build_backbone(name, min_level=2, **kwargs)
    features = backbone(tf.zeros([1, 64, 96, 3]))
    assert [tuple(f.shape[1:3]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert backbone.strides == (4, 8, 16, 32)
    assert [int(f.shape[-1]) for f in features] == list(backbone.output_channels)
    # The same layers as the min_level=3 backbone: its weights load unchanged.
    plain = build_backbone(name, **kwargs)
    assert [w.shape for w in plain.weights] == [w.shape for w in backbone.weights]
    with pytest.raises(ValueError, match="min_level"):
        build_backbone(name, min_level=4, **kwargs)
