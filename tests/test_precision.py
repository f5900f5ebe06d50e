"""Tests of fcos_tf.serving.precision: folded and bfloat16 copies of a detector, and exports."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.data.label_map import LabelMap
from fcos_tf.modeling.backbone import FrozenBatchNorm, SmallBackbone, build_backbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.modeling.group_norm import GroupNorm
from fcos_tf.serving import bn_folding, precision
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import saved_model as export_saved_model


def _randomise_norms(model, seed=0):
    """BatchNorm/FrozenBatchNorm statistics far from the identity, so that folding matters."""
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, (keras.layers.BatchNormalization, FrozenBatchNorm)):
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


def _small_bn_model(seed=0):
    model = FCOS(
        SmallBackbone(norm="bn", stem_channels=8, channels=(16, 16, 16)),
        3,
        fpn_channels=16,
        head_num_convs=1,
        head_norm="bn",
        score_threshold=0.0,
    )
    model.build((None, None, None, 3))
    assert _randomise_norms(model, seed) > 0
    return model


@pytest.fixture(scope="module")
def resnet_model():
    """FCOS R-50 (FrozenBatchNorm backbone, GroupNorm head) with random statistics."""
    model = FCOS(
        build_backbone("resnet50"), 3, fpn_channels=32, head_num_convs=1, head_num_groups=8
    )
    model.build((None, None, None, 3))
    assert _randomise_norms(model, seed=1) == 53  # every FrozenBatchNorm of the ResNet-50
    return model


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision.*float16"):
        precision.check_precision("float16")
    with pytest.raises(ValueError, match="precision"):
        export_saved_model.export_saved_model(
            _small_bn_model(), LabelMap.from_names(["a", "b", "c"]), "/nonexistent", precision="fp8"
        )


@pytest.mark.parametrize("freeze", [True, False])
def test_serving_copy_runs_one_image_at_a_time_on_fused_group_norm(freeze):
    model = FCOS(
        SmallBackbone(),
        2,
        fpn_channels=16,
        head_num_convs=1,
        head_num_groups=8,
        score_threshold=0.0,
        max_detections=20,
    )
    model.build((None, None, None, 3))
    copy = precision.inference_model(model, "float32", freeze=freeze)
    norms = [
        layer for layer in copy._flatten_layers(recursive=True) if isinstance(layer, GroupNorm)
    ]
    assert norms and all(layer.fused_inference for layer in norms)
    # The model handed in is left as it was: it may go on training.
    assert copy is not model and model.image_network is None
    assert not any(
        layer.fused_inference
        for layer in model._flatten_layers(recursive=True)
        if isinstance(layer, GroupNorm)
    )
    # A batch of two different images: the batched model's detections, image by image.
    images = np.random.default_rng(5).uniform(-2, 2, (2, 64, 96, 3)).astype(np.float32)
    expected = model.predict_step(images)
    actual = tf.function(copy.predict_step)(images)
    assert expected["num_detections"].numpy().tolist() == [20, 20]
    np.testing.assert_array_equal(actual["classes"], expected["classes"])
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)
    # Frozen: the weights are graph constants, read when the copy was made.
    before = copy.image_network(images[:1])["class_logits"]
    for variable in copy.trainable_variables:
        variable.assign(tf.zeros_like(variable))
    after = copy.image_network(images[:1])["class_logits"]
    assert np.array_equal(before, after) == freeze


def test_resnet_frozen_batch_norms_fold_into_the_convolutions(resnet_model):
    folded = precision.inference_model(resnet_model, "float32")
    assert bn_folding.count_batch_norms(resnet_model) == 53
    assert bn_folding.count_batch_norms(folded) == 0
    assert folded.backbone.get_layer("conv1").use_bias
    images = np.random.default_rng(2).uniform(-100, 100, (1, 96, 64, 3)).astype(np.float32)
    expected = resnet_model(images, training=False)
    actual = folded(images, training=False)
    for key in expected:
        scale = float(np.abs(expected[key]).max())
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-5 * scale, err_msg=key)


def test_bfloat16_copy_computes_in_bfloat16_with_float32_outputs(resnet_model):
    copy = precision.inference_model(resnet_model, "bfloat16")
    assert bn_folding.count_batch_norms(copy) == 0
    convs = [
        layer
        for layer in copy._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.Conv2D)
    ]
    # backbone, FPN (3 lateral, 3 output, P6, P7), one conv per tower, three predictors
    assert len(convs) == 53 + 8 + 2 + 3
    assert all(conv.kernel.dtype == "bfloat16" for conv in convs)
    images = np.random.default_rng(2).uniform(-100, 100, (1, 96, 64, 3)).astype(np.float32)
    expected = resnet_model(images, training=False)
    actual = copy(images, training=False)
    for key in expected:
        assert actual[key].dtype == tf.float32
        # bfloat16 keeps 8 significant bits (relative step 2**-8) through ~60 layers: the
        # outputs stay within a few percent of their range.
        scale = float(np.abs(expected[key]).max())
        error = float(np.abs(actual[key] - expected[key]).max())
        assert error < 0.05 * scale, (key, error, scale)
        assert error > 0  # really computed in another precision


def test_folded_float32_saved_model_matches_the_unfolded_keras_model(tmp_path):
    model = _small_bn_model(seed=4)
    label_map = LabelMap.from_names(["a", "b", "c"])
    serving = serving_lib.ServingConfig(eval_short_side=64, max_size=96)
    path = export_saved_model.export_saved_model(
        model, label_map, str(tmp_path), serving, warmup=False
    )
    loaded = tf.saved_model.load(path)
    # The model holds BatchNorm statistics; the export none: all folded into the convs.
    assert any("moving_mean" in variable.name for variable in model.variables)
    assert not any("moving_mean" in variable.name for variable in loaded.variables)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 70, 90, 3)).astype(np.uint8)
    exported = loaded.signatures[serving_lib.IMAGES_SIGNATURE](images=tf.constant(images))
    inputs, meta = serving_lib.preprocess_images(tf.constant(images), serving)
    detections = model.predict_step((inputs, {"image_size": meta["valid_size"]}))
    expected = serving_lib.detections_to_outputs(
        detections, label_map, valid_size=meta["valid_size"], frame_size=meta["original_size"]
    )
    np.testing.assert_array_equal(exported["num_detections"], expected["num_detections"])
    assert int(np.min(expected["num_detections"])) > 10
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(exported[key], expected[key], atol=1e-4, err_msg=key)


def test_bfloat16_copy_of_a_mobilenet_v3_backbone():
    """Its functional graph holds operations that are not layers (hard-swish): no dtype."""
    model = FCOS(
        build_backbone("mobilenet_v3_large", alpha=0.75, norm="sync_bn"),
        3,
        fpn_channels=32,
        head_num_convs=1,
        head_norm="sync_bn",
    )
    model.build((None, None, None, 3))
    assert _randomise_norms(model, seed=6) > 20
    copy = precision.inference_model(model, "bfloat16")
    assert bn_folding.count_batch_norms(copy) == 0
    kernels = [v for v in copy.weights if v.path.endswith("kernel")]
    assert kernels and all(v.dtype == "bfloat16" for v in kernels)
    images = np.random.default_rng(7).uniform(-1, 1, (1, 96, 64, 3)).astype(np.float32)
    expected = model(images, training=False)["class_logits"]
    actual = copy(images, training=False)["class_logits"]
    assert actual.dtype == tf.float32
    scale = float(np.abs(expected).max())
    assert float(np.abs(actual - expected).max()) < 0.05 * scale
