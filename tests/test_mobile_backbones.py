"""Tests of fcos_tf.modeling.mobilenet: taps and strides, weights from a file, norms, errors."""

import keras
import numpy as np
import pytest

from fcos_tf.data import transforms
from fcos_tf.modeling import mobilenet as mobile_backbones
from fcos_tf.modeling.backbone import SmallBackbone, build_backbone
from fcos_tf.modeling.mobilenet import MobileNetBackbone

# Channels of the taps at alpha=1 (the blocks the FCOS authors tap in MobileNetV2).
_CHANNELS = {"mobilenet_v2": (32, 96, 320), "mobilenet_v3_large": (40, 112, 160)}


@pytest.mark.parametrize("variant", mobile_backbones.MOBILE_BACKBONES)
@pytest.mark.parametrize("image_size", [(64, 96), (160, 128)])
def test_taps_are_at_strides_8_16_32(variant, image_size):
    backbone = build_backbone(variant, norm="bn")
    height, width = image_size
    features = backbone(np.zeros((2, height, width, 3), np.float32), training=False)
    assert backbone.strides == (8, 16, 32)
    assert backbone.output_channels == _CHANNELS[variant]
    for feature, stride, channels in zip(features, backbone.strides, _CHANNELS[variant]):
        assert tuple(feature.shape) == (2, height // stride, width // stride, channels)
    # The taps are the last block of each stride: the next layer of the trunk halves the size.
    for tap in mobile_backbones._TAPS[variant]:
        assert backbone.get_layer(tap).name == tap


def test_tap_is_the_output_of_the_keras_applications_block():
    """C4 equals the keras.applications model cut at block_12_add, with the same weights."""
    backbone = MobileNetBackbone("mobilenet_v2", alpha=0.35, norm="bn")
    reference = keras.Model(backbone.inputs, backbone.get_layer("block_12_add").output)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(backbone(x, training=False)[1], reference(x, training=False))


def test_alpha_scales_the_channels():
    backbone = build_backbone("mobilenet_v2", alpha=0.35)
    assert backbone.output_channels == (16, 32, 112)


def test_mobilenet_v3_takes_normalised_input_without_rescaling():
    """include_preprocessing=False: no Rescaling inside, the input is the pipeline's [-1, 1]."""
    backbone = build_backbone("mobilenet_v3_large", alpha=0.75)
    assert not [layer for layer in backbone.layers if isinstance(layer, keras.layers.Rescaling)]
    assert mobile_backbones.PIXEL_NORM == "inception"
    image = np.array([[[0, 127.5, 255]]], np.float32)
    np.testing.assert_allclose(
        transforms.normalize_image(image, "inception"), [[[-1, 0, 1]]], atol=1e-6
    )
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(
        transforms.denormalize_image(transforms.normalize_image(pixels, "inception"), "inception"),
        pixels,
    )


@pytest.mark.parametrize(
    "norm,synchronized,trainable",
    [("sync_bn", True, True), ("bn", False, True), ("frozen_bn", False, False)],
)
def test_norms(norm, synchronized, trainable):
    backbone = MobileNetBackbone("mobilenet_v2", alpha=0.35, norm=norm)
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms
    assert {layer.synchronized for layer in norms} == {synchronized}
    assert {layer.trainable for layer in norms} == {trainable}
    if norm == "frozen_bn":
        # Inference mode whatever the flag: training=True leaves the statistics alone.
        before = [w.numpy().copy() for w in norms[0].non_trainable_weights]
        backbone(np.ones((2, 32, 32, 3), np.float32), training=True)
        for old, new in zip(before, norms[0].non_trainable_weights):
            np.testing.assert_array_equal(old, new.numpy())


def test_weights_from_a_local_keras_applications_file(tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.35, input_shape=(None, None, 3)
    )
    rng = np.random.default_rng(0)
    for weight in source.weights:
        weight.assign(
            rng.normal(0, 0.05, weight.shape).astype(np.float32)
            + (1.0 if "variance" in weight.path or "gamma" in weight.path else 0.0)
        )
    path = str(tmp_path / "mnv2_035.weights.h5")
    source.save_weights(path)
    backbone = build_backbone("mobilenet_v2", alpha=0.35, weights=path)
    x = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    reference = keras.Model(source.inputs, source.get_layer("block_16_project_BN").output)
    np.testing.assert_allclose(
        backbone(x, training=False)[2], reference(x, training=False), rtol=1e-5, atol=1e-5
    )


def test_weight_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'imagenet' nor"):
        build_backbone("mobilenet_v2", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="alpha"):
        build_backbone("mobilenet_v3_large", alpha=0.35, weights="imagenet")
    # No internet here: the download fails with what to do instead.
    with pytest.raises(RuntimeError, match="pass its local path as `weights`"):
        build_backbone("mobilenet_v2", alpha=0.35, weights="imagenet")


def test_bad_arguments():
    with pytest.raises(ValueError, match="`variant`"):
        MobileNetBackbone("mobilenet_v1")
    with pytest.raises(ValueError, match="`norm`"):
        MobileNetBackbone(norm="group")
    with pytest.raises(ValueError, match="must be one of"):
        build_backbone("mobilenet")


def test_config_round_trip():
    backbone = MobileNetBackbone("mobilenet_v3_large", alpha=0.75, norm="bn", name="mnv3")
    clone = MobileNetBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in backbone.weights]


def test_edge_recipe_builds_the_mobile_model():
    from fcos_tf.core import builders
    from fcos_tf.core import config as config_lib

    config = config_lib.load_recipe("synthetic_edge")
    model = builders.build_model(config, 6)
    assert isinstance(model.backbone, MobileNetBackbone)
    # config.backbone.alpha and .norm reach the constructor arguments of the same names.
    assert (model.backbone.alpha, model.backbone.norm) == (0.35, "sync_bn")
    assert model.head.norm == "sync_bn" and model.head.channels == 64
    assert config.pipeline.pixel_norm == model.backbone.pixel_norm


def test_backbone_section_feeds_alpha_and_norm_and_defers_imagenet():
    from fcos_tf.core import builders
    from fcos_tf.core import config as config_lib

    config = config_lib.load_recipe("fcos_mnv2_c128_320")
    assert config.backbone.weights == "imagenet"
    config.backbone.alpha = 0.5
    config.backbone.norm = "frozen_bn"
    # A checkpoint will set every weight: no download is attempted.
    backbone = builders.build_backbone(config.backbone, load_weights=False)
    assert (backbone.variant, backbone.alpha, backbone.norm) == ("mobilenet_v2", 0.5, "frozen_bn")
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and not any(layer.trainable for layer in norms)
    # The MobileNet arguments of the section reach no other backbone (the small one has a
    # `norm` argument too, whose values differ).
    small = config_lib.load_recipe("synthetic_small").backbone
    assert small.norm == "sync_bn"
    assert isinstance(builders.build_backbone(small), SmallBackbone)


# ------------------------------------------------------------ the FCOS authors' MobileNetV2


def test_fcos_mobilenet_v2_is_keras_trunk_without_conv_1():
    """Same layers, names and weight shapes as keras.applications' trunk up to block_16;
    symmetric padding, BN eps 1e-5, ceil sizes at any input size."""
    from fcos_tf.modeling.mobilenet_fcos import FCOSMobileNetV2

    backbone = build_backbone("mobilenet_v2_fcos", norm="frozen_bn")
    assert isinstance(backbone, FCOSMobileNetV2) and backbone.pixel_norm == "maskrcnn_benchmark"
    application = mobile_backbones.build_keras_application("mobilenet_v2")
    ours = {w.path: tuple(w.shape) for w in backbone.weights}
    theirs = {
        w.path: tuple(w.shape) for w in application.weights if not w.path.startswith("Conv_1")
    }
    assert ours == theirs and len(ours) == 51 * 5  # 51 convs, each with a BN
    assert backbone.count_params() == application.count_params() - (320 * 1280 + 4 * 1280)
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 51 and all(n.epsilon == 1e-5 and not n.trainable for n in norms)
    pads = [
        layer.name for layer in backbone.layers if isinstance(layer, keras.layers.ZeroPadding2D)
    ]
    assert pads == [
        f"{name}_pad"
        for name in (
            "Conv1",
            "block_1_depthwise",
            "block_3_depthwise",
            "block_6_depthwise",
            "block_13_depthwise",
        )
    ]
    features = backbone(np.zeros((1, 100, 140, 3), np.float32))
    assert [tuple(f.shape) for f in features] == [(1, 13, 18, 32), (1, 7, 9, 96), (1, 4, 5, 320)]
    assert FCOSMobileNetV2.from_config(backbone.get_config()).norm == "frozen_bn"
    with pytest.raises(ValueError, match="alpha"):
        build_backbone("mobilenet_v2_fcos", alpha=0.5)
    with pytest.raises(FileNotFoundError, match="fcos-import"):
        build_backbone("mobilenet_v2_fcos", weights="imagenet")
