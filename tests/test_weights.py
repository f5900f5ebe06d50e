"""Tests of fcos_tf.importers.imagenet: keras.applications and torchvision ResNet weights."""

import keras
import numpy as np
import pytest

from fcos_tf import weights as weights_command
from fcos_tf.importers import imagenet as weights_lib
from fcos_tf.modeling.backbone import ResNet

KERAS_FEATURES = ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    return np.abs(actual - expected).max() / np.abs(expected).max()


def _randomise_keras_resnet(model, seed=0):
    """Random conv biases and BN statistics, so that folding them is actually tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 1.5, c),
                ]
            )
            if layer.name.endswith("_3_bn"):  # keep the residual sum bounded
                layer.gamma.assign(0.3 * layer.gamma.numpy())


@pytest.fixture(scope="module")
def keras_resnet50_file(tmp_path_factory):
    source = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    _randomise_keras_resnet(source)
    path = str(tmp_path_factory.mktemp("kapp") / "resnet50_random.weights.h5")
    source.save_weights(path)
    return source, path


@pytest.fixture(scope="module")
def caffe_backbone():
    return ResNet(depth=50, layout="caffe")


@pytest.fixture(scope="module")
def pytorch_backbone():
    return ResNet(depth=50, layout="pytorch")


# -------------------------------------------------------------------------- keras.applications


def test_keras_applications_names():
    assert weights_lib.keras_applications_layer_name("conv1") == "conv1_conv"
    assert weights_lib.keras_applications_layer_name("bn1") == "conv1_bn"
    assert weights_lib.keras_applications_layer_name("layer2_0_conv1") == "conv3_block1_1_conv"
    assert weights_lib.keras_applications_layer_name("layer3_5_bn3") == "conv4_block6_3_bn"
    assert (
        weights_lib.keras_applications_layer_name("layer4_0_downsample_0") == "conv5_block1_0_conv"
    )
    assert weights_lib.keras_applications_layer_name("layer4_0_downsample_1") == "conv5_block1_0_bn"


def test_keras_applications_features_match(keras_resnet50_file, caffe_backbone):
    """Acceptance: same C3-C5 as keras.applications' conv3/4/5 block outputs."""
    source, path = keras_resnet50_file
    backbone = caffe_backbone
    weights_lib.load_keras_applications_weights(backbone, path)
    reference = keras.Model(source.input, [source.get_layer(n).output for n in KERAS_FEATURES])
    # An odd size, so that every padding convention is exercised.
    images = np.random.default_rng(3).normal(0, 50, size=(2, 97, 131, 3)).astype("float32")
    for ours, theirs in zip(backbone(images), reference(images)):
        assert ours.shape == theirs.shape
        assert _relative_error(ours, theirs) < 1e-4
    # The epsilon difference is folded into the variance, the bias into the mean.
    assert backbone.get_layer("bn1").epsilon == 1e-5


def test_keras_applications_through_load_backbone_weights(keras_resnet50_file, caffe_backbone):
    source, path = keras_resnet50_file
    backbone = caffe_backbone
    weights_lib.load_backbone_weights(backbone, path, source="keras_applications")
    conv = source.get_layer("conv3_block2_2_conv")
    np.testing.assert_array_equal(backbone.get_layer("layer2_1_conv2").kernel, conv.kernel)
    bn = source.get_layer("conv3_block2_2_bn")
    np.testing.assert_allclose(
        backbone.get_layer("layer2_1_bn2").moving_mean,
        bn.moving_mean.numpy() - conv.bias.numpy(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        backbone.get_layer("layer2_1_bn2").moving_variance,
        bn.moving_variance.numpy() + (1.001e-5 - 1e-5),
        rtol=1e-6,
    )


def test_keras_applications_refuses_pytorch_layout(keras_resnet50_file, pytorch_backbone):
    _, path = keras_resnet50_file
    with pytest.raises(ValueError, match="layout='caffe'"):
        weights_lib.load_keras_applications_weights(pytorch_backbone, path)


def test_keras_applications_refuses_depth_mismatch(keras_resnet50_file):
    source, _ = keras_resnet50_file
    with pytest.raises(ValueError, match="depth"):
        weights_lib.copy_keras_applications_weights(ResNet(depth=101, layout="caffe"), source)


def _offline(**kwargs):
    """keras.applications' failure on a machine without internet access, without trying."""
    raise Exception(
        "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- [Errno -3] "
        "Temporary failure in name resolution"
    )


def test_offline_download_error_suggests_a_local_file(monkeypatch, caffe_backbone):
    monkeypatch.setattr(keras.applications, "ResNet50", _offline)
    with pytest.raises(weights_lib.DownloadError, match="local path") as info:
        weights_lib.load_keras_applications_weights(caffe_backbone, "imagenet")
    assert isinstance(info.value, RuntimeError)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(info.value)


def _command_error(argv):
    """The one-line message ``fcos-weights`` exits with (status 1)."""
    with pytest.raises(SystemExit) as info:
        weights_command.main(argv)
    message = info.value.code
    assert isinstance(message, str), message  # sys.exit(message): status 1, the line on stderr
    assert "\n" not in message, message
    return message


def test_command_line_offline_download_is_one_line_with_the_local_file_hint(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.delenv("FCOS_DEBUG", raising=False)
    monkeypatch.setattr(keras.applications, "ResNet50", _offline)
    output = tmp_path / "resnet50_caffe.weights.h5"
    message = _command_error(["--source=imagenet", "--depth=50", f"--output={output}"])
    assert message.startswith(
        "Weights not written: Could not download the keras.applications ImageNet weights of "
        "ResNet-50 (URL fetch failure on https://"
    ), message
    assert "copy resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "(`fcos-weights --source=<path>`)" in message
    assert "Traceback" not in capsys.readouterr().err
    assert not output.exists()


def test_command_line_missing_source_names_the_flag(tmp_path):
    output = f"--output={tmp_path / 'out.weights.h5'}"
    for name in ("x.pth", "resnet50_notop.h5"):
        missing = tmp_path / name
        assert _command_error([f"--source={missing}", output]) == (
            f"Weights not written: --source={missing} does not exist (give 'imagenet' or the "
            f"path of a weight file)."
        )
    assert not (tmp_path / "out.weights.h5").exists()


def test_missing_file_is_named(tmp_path, caffe_backbone):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        weights_lib.load_keras_applications_weights(caffe_backbone, missing)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        weights_lib.load_backbone_weights(caffe_backbone, missing)
    with pytest.raises(ValueError, match="source"):
        weights_lib.load_backbone_weights(caffe_backbone, "imagenet", source="other")


def test_own_weights_file_round_trip(tmp_path, caffe_backbone):
    caffe_backbone.get_layer("layer3_2_conv2").kernel.assign(
        np.full((3, 3, 256, 256), 0.5, "float32")
    )
    path = str(tmp_path / "r50.weights.h5")
    caffe_backbone.save_weights(path)
    clone = ResNet(depth=50, layout="caffe")
    weights_lib.load_backbone_weights(clone, path)
    np.testing.assert_array_equal(clone.get_layer("layer3_2_conv2").kernel, 0.5)
    np.testing.assert_array_equal(
        clone.get_layer("layer1_0_bn2").moving_mean,
        caffe_backbone.get_layer("layer1_0_bn2").moving_mean,
    )


# ------------------------------------------------------------------------------- torchvision


@pytest.fixture(name="torch_reference")
def fixture_torch_reference():
    """The PyTorch reference module; the test is skipped where torch is not installed."""
    pytest.importorskip("torch")
    import torch_reference

    return torch_reference


def test_torchvision_resnet_state_dict_matches_pytorch(tmp_path, torch_reference, pytorch_backbone):
    state = torch_reference.resnet_state_dict(50, seed=0)
    path = str(tmp_path / "resnet50.pth")
    torch_reference.save_state_dict(state, path)
    backbone = pytorch_backbone
    weights_lib.load_backbone_weights(backbone, path)
    images = np.random.default_rng(1).normal(size=(2, 97, 131, 3)).astype("float32")
    expected = torch_reference.resnet_forward(state, images)
    for ours, theirs in zip(backbone(images), expected):
        assert ours.shape == theirs.shape
        assert _relative_error(ours, theirs) < 1e-4
    np.testing.assert_array_equal(
        backbone.get_layer("layer1_0_bn1").moving_variance, state["layer1.0.bn1.running_var"]
    )


def test_torchvision_refuses_caffe_layout(torch_reference, caffe_backbone):
    state = torch_reference.resnet_state_dict(50, seed=0)
    with pytest.raises(ValueError, match="layout='pytorch'"):
        weights_lib.load_torchvision_resnet_weights(caffe_backbone, state)


def test_torchvision_errors_name_the_tensor(torch_reference, pytorch_backbone):
    state = torch_reference.resnet_state_dict(50, seed=0)
    backbone = pytorch_backbone
    missing = dict(state)
    del missing["layer3.4.bn2.running_mean"]
    with pytest.raises(ValueError, match=r"missing.*layer3\.4\.bn2\.running_mean"):
        weights_lib.load_torchvision_resnet_weights(backbone, missing)
    extra = dict(state, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), "float32")})
    with pytest.raises(ValueError, match=r"unused.*layer5\.0\.conv1\.weight"):
        weights_lib.load_torchvision_resnet_weights(backbone, extra)
    misshaped = dict(state, **{"layer2.0.conv2.weight": np.zeros((128, 128, 1, 3), "float32")})
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.weight.*shape"):
        weights_lib.load_torchvision_resnet_weights(backbone, misshaped)
    # A ResNet-50 file for a ResNet-101 backbone: blocks layer3.6..22 are missing.
    with pytest.raises(ValueError, match=r"missing.*layer3\.6\."):
        weights_lib.load_torchvision_resnet_weights(ResNet(depth=101, layout="pytorch"), state)


def test_command_line_converts_torchvision_file(tmp_path, capsys, torch_reference):
    state = torch_reference.resnet_state_dict(50, seed=4)
    source = str(tmp_path / "resnet50.pth")
    torch_reference.save_state_dict(state, source)
    output = str(tmp_path / "r50_pytorch.weights.h5")
    weights_command.main([f"--source={source}", f"--output={output}"])
    assert "layout='pytorch'" in capsys.readouterr().out
    backbone = ResNet(depth=50, layout="pytorch")
    weights_lib.load_backbone_weights(backbone, output)
    np.testing.assert_array_equal(
        backbone.get_layer("layer4_2_conv3").kernel,
        np.transpose(state["layer4.2.conv3.weight"], (2, 3, 1, 0)),
    )


def test_read_torch_state_dict_unwraps_and_rejects(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "wrapped.pth")
    torch.save({"model": {"a.weight": torch.ones(2)}, "epoch": 3}, path)
    assert list(weights_lib.read_torch_state_dict(path)) == ["a.weight"]
    bad = str(tmp_path / "bad.pth")
    torch.save({"a": [1, 2]}, bad)
    with pytest.raises(ValueError, match="state dict"):
        weights_lib.read_torch_state_dict(bad)
