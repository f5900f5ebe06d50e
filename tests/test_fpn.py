"""Tests of fcos_tf.modeling.fpn: level sizes, top-down merge, extra levels, config."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.modeling.fpn import FPN, upsample_nearest_to
from fcos_tf.ops.locations import STRIDES, feature_map_sizes


def _features(image_size, channels=(8, 12, 16), batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, h, w, c)).astype("float32")
        for (h, w), c in zip(feature_map_sizes(image_size, (8, 16, 32)), channels)
    ]


def _torch_nearest_indices(in_size, out_size):
    # PyTorch F.interpolate(mode="nearest"): src = min(floor(dst * in / out), in - 1).
    return np.minimum(np.floor(np.arange(out_size) * (in_size / out_size)).astype(int), in_size - 1)


@pytest.mark.parametrize("image_size", [(200, 249), (512, 512), (800, 1344)])
def test_level_sizes_are_ceil(image_size):
    outputs = FPN(channels=16)(_features(image_size))
    expected = [
        (1, math.ceil(image_size[0] / s), math.ceil(image_size[1] / s), 16) for s in STRIDES
    ]
    assert [tuple(p.shape) for p in outputs] == expected


def test_compute_output_shape_matches_call():
    fpn = FPN(channels=16)
    shapes = fpn.compute_output_shape([(2, 25, 32, 8), (2, 13, 16, 12), (2, 7, 8, 16)])
    assert shapes == [(2, 25, 32, 16), (2, 13, 16, 16), (2, 7, 8, 16), (2, 4, 4, 16), (2, 2, 2, 16)]


@pytest.mark.parametrize(
    "in_size, out_size", [(7, 13), (7, 14), (8, 16), (4, 7), (1, 1), (1, 2), (25, 49)]
)
def test_upsample_matches_pytorch_nearest(in_size, out_size):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, in_size, in_size + 1, 3)).astype("float32")
    out_w = 2 * (in_size + 1) - 1
    target = np.zeros((2, out_size, out_w, 5), "float32")
    rows = _torch_nearest_indices(in_size, out_size)
    cols = _torch_nearest_indices(in_size + 1, out_w)
    expected = source[:, rows][:, :, cols]
    result = np.asarray(upsample_nearest_to(source, target))
    np.testing.assert_array_equal(result, expected)


def test_upsample_gradient_sums_each_block_and_transposes_no_int32_shape():
    # The gradient of an output pixel goes to its source pixel: each source pixel gets the
    # sum of the 2x2 block it was copied to, cropped at odd target sizes (7x9 from 4x5).
    rng = np.random.default_rng(1)
    source = tf.constant(rng.normal(size=(2, 4, 5, 3)).astype("float32"))
    upstream = rng.normal(size=(2, 7, 9, 3)).astype("float32")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None] * 4)])
    def gradient(x, target):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = upsample_nearest_to(x, target)
        return tape.gradient(y, x, output_gradients=upstream)

    padded = np.pad(upstream, [(0, 0), (0, 1), (0, 1), (0, 0)])
    expected = padded.reshape(2, 4, 2, 5, 2, 3).sum(axis=(2, 4))
    result = gradient(source, tf.zeros([2, 7, 9, 1]))
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6, atol=1e-6)
    # An int32 Transpose in a graph makes TensorFlow's oneDNN rewrite log "oneDNN supports
    # DT_INT32 only on platforms with AVX-512" in every process that trains (the gradient of
    # the Tile of ops.repeat has one).
    graph = gradient.get_concrete_function().graph
    transposes = [op for op in graph.get_operations() if op.type == "Transpose"]
    assert not [op.name for op in transposes if op.get_attr("T") == tf.int32]


def _identity_fpn(channels, num_levels=5, p6_input="p5"):
    """An FPN whose convs copy their input (1x1 identity, 3x3 centre-tap identity), bias 0."""
    fpn = FPN(channels=channels, num_levels=num_levels, p6_input=p6_input)
    fpn.build([(None, None, None, channels)] * 3)
    eye = np.eye(channels, dtype="float32")
    centre = np.zeros((3, 3, channels, channels), "float32")
    centre[1, 1] = eye
    zeros = np.zeros(channels, "float32")
    for conv in fpn.lateral_convs:
        conv.set_weights([eye[None, None], zeros])
    for conv in fpn.output_convs + fpn.extra_convs:
        conv.set_weights([centre, zeros])
    return fpn


def test_top_down_merge_golden_at_odd_size():
    c3, c4, c5 = _features((200, 249), channels=(4, 4, 4))
    p3, p4, p5, p6, p7 = (np.asarray(p) for p in _identity_fpn(4)([c3, c4, c5]))
    np.testing.assert_allclose(p5, c5, rtol=1e-6)
    rows, cols = _torch_nearest_indices(7, 13), _torch_nearest_indices(8, 16)
    expected_p4 = c4 + c5[:, rows][:, :, cols]
    np.testing.assert_allclose(p4, expected_p4, rtol=1e-5, atol=1e-6)
    rows, cols = _torch_nearest_indices(13, 25), _torch_nearest_indices(16, 32)
    np.testing.assert_allclose(p3, c3 + expected_p4[:, rows][:, :, cols], rtol=1e-5, atol=1e-6)
    # Stride-2 centre-tap conv with symmetric padding 1 reads input cell (2i, 2j); TF's "same"
    # would read (2i + 1, 2j + 1) for even sizes. P7 takes ReLU(P6).
    np.testing.assert_allclose(p6, p5[:, ::2, ::2], rtol=1e-6)
    np.testing.assert_allclose(p7, np.maximum(p6, 0)[:, ::2, ::2], rtol=1e-6)


def test_p6_from_c5():
    c3, c4, c5 = _features((128, 128), channels=(4, 4, 4))
    fpn = _identity_fpn(4, p6_input="c5")
    # Make P5 differ from C5 so that the source of P6 is visible.
    fpn.output_convs[2].set_weights(
        [2.0 * fpn.output_convs[2].get_weights()[0], np.zeros(4, "float32")]
    )
    outputs = [np.asarray(p) for p in fpn([c3, c4, c5])]
    np.testing.assert_allclose(outputs[2], 2.0 * c5, rtol=1e-6)
    np.testing.assert_allclose(outputs[3], c5[:, ::2, ::2], rtol=1e-6)


def test_p6_input_channels():
    features = _features((64, 64), channels=(8, 12, 16))
    fpn_p5 = FPN(channels=6)
    fpn_c5 = FPN(channels=6, p6_input="c5")
    fpn_p5(features), fpn_c5(features)
    assert fpn_p5.extra_convs[0].kernel.shape == (3, 3, 6, 6)
    assert fpn_c5.extra_convs[0].kernel.shape == (3, 3, 16, 6)
    assert fpn_c5.extra_convs[1].kernel.shape == (3, 3, 6, 6)


@pytest.mark.parametrize("num_levels", [2, 3, 4, 5])
def test_num_levels(num_levels):
    features = _features((256, 256))
    outputs = FPN(channels=8, num_levels=num_levels)(features)
    assert [tuple(p.shape[1:3]) for p in outputs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)][
        :num_levels
    ]


def test_two_levels_merge_c5_top_down_without_p5():
    # P3 and P4 only: C5 still feeds the top-down path, and no output_p5 conv is made.
    c3, c4, c5 = _features((128, 160), channels=(4, 4, 4))
    full = [np.asarray(p) for p in _identity_fpn(4)([c3, c4, c5])]
    fpn = _identity_fpn(4, num_levels=2)
    two = [np.asarray(p) for p in fpn([c3, c4, c5])]
    assert len(two) == 2 and [c.name for c in fpn.output_convs] == ["output_p3", "output_p4"]
    assert not fpn.extra_convs
    np.testing.assert_allclose(two[0], full[0], rtol=1e-6)
    np.testing.assert_allclose(two[1], full[1], rtol=1e-6)
    assert np.abs(two[1] - c4).max() > 0.1  # C5 was merged in


def test_config_of_earlier_versions_loads():
    # Configs written before `num_levels` named the extra levels instead.
    fpn = FPN.from_config({"channels": 8, "p6_input": "p5", "num_extra_levels": 1})
    assert fpn.num_levels == 4 and fpn.get_config()["num_levels"] == 4


def test_parameter_count_resnet_channels():
    fpn = FPN()
    fpn.build([(None, None, None, 512), (None, None, None, 1024), (None, None, None, 2048)])
    laterals = (512 + 1024 + 2048) * 256 + 3 * 256
    three_by_three = 5 * (9 * 256 * 256 + 256)
    assert fpn.count_params() == laterals + three_by_three == 3_868_672


def test_init_biases_zero_kernels_kaiming_uniform_a1():
    fpn = FPN(channels=64)
    fpn.build([(None, None, None, 64)] * 3)
    kernel = np.asarray(fpn.output_convs[0].kernel)
    bound = math.sqrt(3.0 / (9 * 64))
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.9 * bound
    assert all(
        np.all(np.asarray(conv.bias) == 0)
        for conv in fpn.lateral_convs + fpn.output_convs + fpn.extra_convs
    )


def test_inside_functional_model_with_dynamic_size():
    inputs = [keras.Input((None, None, c)) for c in (8, 12, 16)]
    model = keras.Model(inputs, FPN(channels=8)(inputs))
    outputs = model(_features((200, 249)))
    assert [tuple(p.shape[1:3]) for p in outputs] == feature_map_sizes((200, 249))


def test_config_round_trip():
    fpn = FPN(channels=32, p6_input="c5", num_levels=4, name="neck")
    features = _features((96, 160))
    expected = fpn(features)
    clone = FPN.from_config(fpn.get_config())
    assert (clone.channels, clone.p6_input, clone.num_levels, clone.name) == (
        32,
        "c5",
        4,
        "neck",
    )
    clone.build([f.shape for f in features])
    clone.set_weights(fpn.get_weights())
    for a, b in zip(expected, clone(features)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"channels": 0}, "channels"),
        ({"p6_input": "p4"}, "p6_input"),
        ({"num_levels": 6}, "num_levels"),
        ({"num_levels": 1}, "num_levels"),
    ],
)
def test_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        FPN(**kwargs)


def test_rejects_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="C3, C4, C5"):
        FPN(channels=8)(_features((64, 64))[:2])


def test_tf_checkpoint_round_trip(tmp_path):
    """Every weight is in tf.train.Checkpoint's object graph (what train.py and export use)."""
    features = _features((64, 96))
    fpn = FPN(channels=8)
    fpn(features)
    path = tf.train.Checkpoint(layer=fpn).write(str(tmp_path / "ckpt"))
    clone = FPN(channels=8)
    clone(features)
    tf.train.Checkpoint(layer=clone).read(path).assert_consumed()
    assert len(clone.weights) == 16
    for a, b in zip(fpn.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_p2_level_from_c2():
    """min_level=2: P2 from C2 at stride 4; P3 and above are the min_level=3 pyramid's."""
    rng = np.random.default_rng(3)
    shapes = [(1, 16, 24, 8), (1, 8, 12, 16), (1, 4, 6, 24), (1, 2, 3, 32)]
    c2, c3, c4, c5 = (tf.constant(rng.normal(size=s), tf.float32) for s in shapes)
    with_p2 = FPN(channels=8, num_levels=5, min_level=2)
    outputs = with_p2([c2, c3, c4, c5])
    assert [tuple(o.shape) for o in outputs] == [
        (1, 16, 24, 8),
        (1, 8, 12, 8),
        (1, 4, 6, 8),
        (1, 2, 3, 8),
        (1, 1, 2, 8),
    ]
    assert with_p2.compute_output_shape([s for s in shapes]) == [tuple(o.shape) for o in outputs]
    plain = FPN(channels=8, num_levels=4)
    plain([c3, c4, c5])
    for name in (
        "lateral_c3",
        "lateral_c4",
        "lateral_c5",
        "output_p3",
        "output_p4",
        "output_p5",
        "p6",
    ):
        source = next(layer for layer in with_p2._flatten_layers() if layer.name == name)
        target = next(layer for layer in plain._flatten_layers() if layer.name == name)
        target.set_weights(source.get_weights())
    for got, want in zip(outputs[1:], plain([c3, c4, c5])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    # P2 = output_p2(lateral_c2(C2) + nearest-upsampled merged P3 map).
    merged3 = with_p2.lateral_convs[1](c3) + upsample_nearest_to(
        with_p2.lateral_convs[2](c4) + upsample_nearest_to(with_p2.lateral_convs[3](c5), c4), c3
    )
    p2 = with_p2.output_convs[0](with_p2.lateral_convs[0](c2) + upsample_nearest_to(merged3, c2))
    np.testing.assert_allclose(outputs[0].numpy(), p2.numpy(), rtol=1e-5, atol=1e-5)
    assert FPN.from_config(with_p2.get_config()).min_level == 2
    with pytest.raises(ValueError, match="C2, C3, C4, C5"):
        FPN(channels=8, min_level=2)([c3, c4, c5])
