"""Tests of fcos_tf.importers.torchvision against PyTorch functional ops (skipped without torch)."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
import torch_reference  # noqa: E402

from fcos_tf import convert_torchvision as convert_command  # noqa: E402
from fcos_tf.core import builders, rundir  # noqa: E402
from fcos_tf.core import config as config_lib  # noqa: E402
from fcos_tf.data import transforms  # noqa: E402
from fcos_tf.data.label_map import COCO_2017_CATEGORIES  # noqa: E402
from fcos_tf.importers import imagenet as weights_lib  # noqa: E402
from fcos_tf.importers import torchvision as convert_torchvision  # noqa: E402
from fcos_tf.modeling.backbone import FrozenBatchNorm, SmallBackbone  # noqa: E402
from fcos_tf.modeling.fcos import FCOS  # noqa: E402
from fcos_tf.modeling.fpn import upsample_nearest_to  # noqa: E402
from fcos_tf.ops.boxes import ltrb_to_xyxy  # noqa: E402
from fcos_tf.ops.locations import STRIDES, compute_locations, feature_map_sizes  # noqa: E402
from fcos_tf.serving import graph as serving  # noqa: E402
from fcos_tf.training.checkpoint import Checkpointer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("torchvision")

COCO_IDS = [category_id for category_id, _ in COCO_2017_CATEGORIES]
# (H, W) of the end-to-end checks: COCO's most common sizes (resized to 1066 x 800 and
# 800 x 1066 by flooring), one that scales down (800 x 1066, padded to 800 x 1088) and one
# that is not resized but padded to sides that are not multiples of 128 (P6 and P7 spaced by
# 61/64 and 114/121 pixels).
DETECTION_SIZES = ((640, 480), (480, 640), (960, 1280), (800, 1216))
# Candidates per level: torchvision's 1000 (its top 100 come from P3-P5 here), and 20, which
# brings every level into the final 100 (P6 and P7 are where the two grids differ).
TOP_K = (1000, 20)
BOX_TOLERANCE = 1e-2  # pixels of the original image
SCORE_TOLERANCE = 5e-4


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(x):
    return np.transpose(x.detach().numpy(), (0, 2, 3, 1))


@pytest.fixture(scope="module")
def state_dict():
    # The published checkpoint predates torchvision 0.13: legacy FPN names.
    state = torch_reference.fcos_state_dict(num_classes=91, seed=0, legacy_fpn_names=True)
    # The 11 logits that are no COCO category (and background) never fire in trained weights;
    # here they must not either, or torchvision would detect classes the import drops.
    unused = sorted(set(range(convert_torchvision.TORCHVISION_NUM_LOGITS)) - set(COCO_IDS))
    state["head.classification_head.cls_logits.weight"][unused] = 0.0
    state["head.classification_head.cls_logits.bias"][unused] = -30.0
    return state


@pytest.fixture(scope="module")
def converted(state_dict, tmp_path_factory):
    """Runs the command line, then restores the workdir as ``train.py --mode=eval`` does."""
    root = tmp_path_factory.mktemp("convert")
    path = str(root / "fcos_resnet50_fpn_coco.pth")
    torch_reference.save_state_dict(state_dict, path)
    workdir = str(root / "workdir")
    result = subprocess.run(
        [sys.executable, "-m", "fcos_tf.convert_torchvision", path, f"--workdir={workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote {workdir}" in result.stdout
    config = config_lib.load_recipe(convert_command.RECIPE)
    model = builders.build_model(config, len(COCO_IDS))
    optimizer = builders.build_optimizer(config)
    model.compile(optimizer=optimizer)
    checkpointer = Checkpointer(workdir, model, optimizer, tf.distribute.get_strategy())
    step = checkpointer.restore()
    return {
        "model": model,
        "workdir": workdir,
        "path": path,
        "step": step,
        "restored": checkpointer.last_saved_step,
    }


# ------------------------------------------------------------------- layer conventions


def test_strided_conv_padding_matches_pytorch(converted, state_dict):
    backbone = converted["model"].backbone
    rng = np.random.default_rng(0)
    for height, width in ((13, 16), (14, 15)):
        x = rng.normal(size=(1, height, width, 128)).astype("float32")
        ours = backbone.get_layer("layer2_0_conv2")(backbone.get_layer("layer2_0_conv2_pad")(x))
        theirs = F.conv2d(
            _nchw(x),
            torch.from_numpy(state_dict["backbone.body.layer2.0.conv2.weight"]),
            stride=2,
            padding=1,
        )
        assert _relative_error(ours, _nhwc(theirs)) < 1e-4
        x = rng.normal(size=(1, height, width, 256)).astype("float32")
        ours = backbone.get_layer("layer2_0_downsample_0")(x)
        theirs = F.conv2d(
            _nchw(x),
            torch.from_numpy(state_dict["backbone.body.layer2.0.downsample.0.weight"]),
            stride=2,
        )
        assert _relative_error(ours, _nhwc(theirs)) < 1e-4


def test_stem_matches_pytorch(converted, state_dict):
    backbone = converted["model"].backbone
    stem = keras.Model(backbone.input, backbone.get_layer("maxpool").output)
    images = np.random.default_rng(1).normal(size=(1, 37, 50, 3)).astype("float32")
    prefix = "backbone.body."
    x = F.conv2d(
        _nchw(images), torch.from_numpy(state_dict[f"{prefix}conv1.weight"]), stride=2, padding=3
    )
    x = F.batch_norm(
        x,
        *(
            torch.from_numpy(state_dict[f"{prefix}bn1.{k}"])
            for k in ("running_mean", "running_var", "weight", "bias")
        ),
        eps=1e-5,
    )
    x = F.max_pool2d(F.relu(x), kernel_size=3, stride=2, padding=1)
    ours = stem(images)
    assert ours.shape == _nhwc(x).shape == (1, 10, 13, 64)
    assert _relative_error(ours, _nhwc(x)) < 1e-4


def test_max_pool_padding_matches_pytorch(converted):
    backbone = converted["model"].backbone
    x = np.maximum(np.random.default_rng(2).normal(size=(2, 19, 24, 64)), 0).astype("float32")
    ours = backbone.get_layer("maxpool")(backbone.get_layer("maxpool_pad")(x))
    theirs = F.max_pool2d(_nchw(x), kernel_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(ours, _nhwc(theirs))


def test_frozen_bn_epsilon_matches_pytorch():
    rng = np.random.default_rng(3)
    channels = 8
    # Variances comparable to epsilon, so that a different epsilon would show.
    gamma, beta, mean = (rng.normal(size=channels).astype("float32") for _ in range(3))
    variance = rng.uniform(1e-6, 1e-4, channels).astype("float32")
    layer = FrozenBatchNorm()
    layer.build((None, None, None, channels))
    layer.set_weights([gamma, beta, mean, variance])
    x = (mean + rng.normal(scale=1e-2, size=(2, 5, 6, channels))).astype("float32")
    theirs = F.batch_norm(
        _nchw(x),
        torch.from_numpy(mean),
        torch.from_numpy(variance),
        torch.from_numpy(gamma),
        torch.from_numpy(beta),
        training=False,
        eps=1e-5,
    )
    assert _relative_error(layer(x, training=True), _nhwc(theirs)) < 1e-4


def test_group_norm_matches_pytorch(converted, state_dict):
    norm = converted["model"].head.cls_tower[1]
    assert isinstance(norm, keras.layers.GroupNormalization)
    x = (3.0 + 2.0 * np.random.default_rng(4).normal(size=(2, 7, 9, 256))).astype("float32")
    prefix = "head.classification_head.conv.1"
    theirs = F.group_norm(
        _nchw(x),
        32,
        torch.from_numpy(state_dict[f"{prefix}.weight"]),
        torch.from_numpy(state_dict[f"{prefix}.bias"]),
        eps=1e-5,
    )
    assert _relative_error(norm(x), _nhwc(theirs)) < 1e-4


@pytest.mark.parametrize(
    "source, target", [((7, 8), (13, 16)), ((7, 8), (14, 15)), ((4, 4), (8, 8)), ((1, 2), (1, 3))]
)
def test_nearest_upsampling_matches_pytorch(source, target):
    x = np.random.default_rng(5).normal(size=(1,) + source + (3,)).astype("float32")
    lateral = np.zeros((1,) + target + (3,), "float32")
    theirs = F.interpolate(_nchw(x), size=target, mode="nearest")
    np.testing.assert_array_equal(upsample_nearest_to(x, lateral), _nhwc(theirs))


def test_fpn_matches_pytorch_at_odd_size(converted, state_dict):
    rng = np.random.default_rng(6)
    features = [
        rng.normal(size=(1, h, w, c)).astype("float32")
        for (h, w), c in zip(feature_map_sizes((200, 249), (8, 16, 32)), (512, 1024, 2048))
    ]
    theirs = torch_reference.fpn_forward(state_dict, features, prefix="backbone.fpn.")
    ours = converted["model"].fpn(features)
    for level, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, level
        assert _relative_error(a, b) < 1e-4, level


@pytest.mark.parametrize("image_size", [(256, 384), (800, 1216), (1088, 800), (800, 1088)])
def test_torchvision_grid_matches_torchvision_anchor_centres(image_size):
    locations, _ = compute_locations(
        image_size, STRIDES, location_offset=0.0, location_grid="torchvision"
    )
    expected = []
    for stride, (height, width) in zip(STRIDES, feature_map_sizes(image_size)):
        # torchvision: stride = padded size // grid size; square anchor of side = stride,
        # base [-s/2, -s/2, s/2, s/2] rounded, shifted by (j * stride_w, i * stride_h).
        stride_h, stride_w = image_size[0] // height, image_size[1] // width
        base = torch.round(
            torch.tensor([-stride, -stride, stride, stride], dtype=torch.float32) / 2
        )
        shift_y, shift_x = torch.meshgrid(
            torch.arange(height) * stride_h, torch.arange(width) * stride_w, indexing="ij"
        )
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], -1).reshape(-1, 4)
        anchors = shifts + base
        expected.append(((anchors[:, :2] + anchors[:, 2:]) / 2).numpy())
    expected = np.concatenate(expected)
    np.testing.assert_array_equal(locations, expected)
    paper, _ = compute_locations(image_size, STRIDES, location_offset=0.0)
    # The paper's grid is the same only where the padded sides are multiples of 128.
    assert np.array_equal(paper, expected) == (image_size == (256, 384))


# ---------------------------------------------------------------------------- whole model


def test_every_tensor_used_once_and_every_weight_set(converted, state_dict):
    model = converted["model"]
    renamed = convert_torchvision.normalise_state_dict_names(state_dict)
    assignments = convert_torchvision.torchvision_fcos_assignments(model, COCO_IDS)
    names = [name for name, _, _ in assignments]
    assert len(names) == len(set(names)) == len(renamed)
    assert set(names) == set(renamed)
    assigned = {id(v) for _, v, _ in assignments}
    scales = [s.scale for s in model.head.scales]
    assert {v.path for v in model.weights if id(v) not in assigned} == {s.path for s in scales}
    for name, variable, transform in assignments:
        value = renamed[name] if transform is None else transform(renamed[name])
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=name)
    assert [float(s.numpy()) for s in scales] == [1.0] * 5


def test_outputs_match_pytorch(converted, state_dict):
    model = converted["model"]
    images = np.random.default_rng(7).normal(size=(1, 128, 256, 3)).astype("float32")
    theirs = torch_reference.fcos_forward(state_dict, images)
    ours = model(images)

    def flat(per_level):
        return np.concatenate([x.reshape(x.shape[0], -1, x.shape[-1]) for x in per_level], 1)

    class_logits = flat(theirs["class_logits"])[..., COCO_IDS]
    assert _relative_error(ours["class_logits"], class_logits) < 1e-4
    strides = np.concatenate(
        [np.full(h * w, s, "float32") for s, (h, w) in zip(STRIDES, feature_map_sizes((128, 256)))]
    )
    box_ltrb = flat(theirs["bbox_regression"]) * strides[None, :, None]
    assert _relative_error(ours["box_ltrb"], box_ltrb) < 1e-4
    assert (
        _relative_error(ours["centerness_logits"], flat(theirs["centerness_logits"])[..., 0]) < 1e-4
    )
    # torchvision decoding: anchor centre -/+ distance * anchor size (= stride).
    locations, _ = compute_locations((128, 256), STRIDES, location_offset=model.location_offset)
    locations = np.asarray(locations)
    expected_boxes = np.concatenate(
        [locations - box_ltrb[0, :, :2], locations + box_ltrb[0, :, 2:]], -1
    )
    assert _relative_error(ltrb_to_xyxy(locations, ours["box_ltrb"][0]), expected_boxes) < 1e-4


def test_workdir_is_what_train_py_reads(converted):
    workdir = converted["workdir"]
    assert converted["restored"] == 0 and converted["step"] == 0
    assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-0.index"))
    with open(os.path.join(workdir, "label_map.json"), encoding="utf-8") as f:
        label_map = json.load(f)
    assert len(label_map) == 80 and label_map[0] == {"id": 1, "name": "person"}
    assert label_map[-1] == {"id": 90, "name": "toothbrush"}
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["backbone"]["layout"] == "pytorch"
    assert config["locations"]["location_offset"] == 0.0
    assert config["model"]["score_threshold_on"] == "final"
    assert config["pipeline"]["pixel_norm"] == "torchvision"
    model = converted["model"]
    assert (model.location_offset, model.score_threshold, model.num_classes) == (0.0, 0.2, 80)


def test_refuses_existing_workdir(converted):
    with pytest.raises(ValueError, match="already holds checkpoints"):
        convert_command.convert(converted["path"], converted["workdir"])


# --------------------------------------------------------------------------------- errors


def test_missing_unused_and_misshaped_tensors_are_named(converted, state_dict):
    model = converted["model"]
    missing = dict(state_dict)
    del missing["head.regression_head.conv.4.bias"]
    with pytest.raises(ValueError, match=r"missing.*head\.regression_head\.conv\.4\.bias"):
        convert_torchvision.load_torchvision_fcos_weights(model, missing)
    extra = dict(state_dict, **{"head.regression_head.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(ValueError, match=r"unused.*head\.regression_head\.extra\.weight"):
        convert_torchvision.load_torchvision_fcos_weights(model, extra)
    misshaped = dict(state_dict)
    misshaped["backbone.fpn.extra_blocks.p6.weight"] = np.zeros((256, 2048, 3, 3), "float32")
    with pytest.raises(ValueError, match=r"backbone\.fpn\.extra_blocks\.p6\.weight.*shape"):
        convert_torchvision.load_torchvision_fcos_weights(model, misshaped)
    wrong_classes = dict(state_dict)
    wrong_classes["head.classification_head.cls_logits.weight"] = np.zeros(
        (81, 256, 3, 3), "float32"
    )
    with pytest.raises(ValueError, match="91"):
        convert_torchvision.load_torchvision_fcos_weights(model, wrong_classes)


def test_refuses_another_architecture(state_dict):
    model = FCOS(SmallBackbone(), 80, fpn_channels=64, head_num_convs=2, head_num_groups=16)
    model.build((None, None, None, 3))
    with pytest.raises(ValueError, match="ResNet\\(depth=50, layout='pytorch'\\)"):
        convert_torchvision.load_torchvision_fcos_weights(model, state_dict)


def test_legacy_and_current_fpn_names_agree(state_dict):
    renamed = convert_torchvision.normalise_state_dict_names(state_dict)
    assert "backbone.fpn.inner_blocks.0.0.weight" in renamed
    assert "backbone.fpn.inner_blocks.0.weight" not in renamed
    assert convert_torchvision.normalise_state_dict_names(renamed).keys() == renamed.keys()


def test_read_state_dict_needs_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        weights_lib.read_torch_state_dict(str(tmp_path / "missing.pth"))


def test_export_loads_the_workdir(converted):
    """export_savedmodel.py's loader (model-only checkpoint restore) gets every weight."""
    model, config, label_map = rundir.load_trained_model(converted["workdir"])
    assert label_map.num_classes == 80 and config.locations.location_offset == 0.0
    expected = converted["model"].weights
    assert len(model.weights) == len(expected)
    for a, b in zip(model.weights, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# ---------------------------------------------------------------- detections end to end


def _image(height, width, seed):
    """A smooth random RGB picture (noise upsampled), uint8 ``[H, W, 3]``."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (height // 16 + 2, width // 16 + 2, 3))
    image = tf.image.resize(coarse[None], (height, width), method="bicubic")[0]
    return np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8)


def _serving(converted):
    """The exported SavedModel's two signature functions for the converted workdir, as
    ``export_savedmodel.py`` builds and traces them: model, config and label map from the
    workdir, each function a ``tf.function`` with its signature's input spec.

    Returns:
        ``signature(name, top_k)``: the traced function of that signature with ``top_k``
        candidates per level. The count is read when the graph is traced, so each
        ``(name, top_k)`` has its own trace, made once.
    """
    model, config, label_map = rundir.load_trained_model(converted["workdir"])
    functions = serving.serving_functions(model, label_map, builders.build_serving_config(config))
    traced = {}

    def signature(name, top_k):
        if (name, top_k) not in traced:
            function, input_signature = functions[name]
            model.pre_nms_top_k = top_k
            traced[name, top_k] = tf.function(
                function, input_signature=input_signature, autograph=False
            ).get_concrete_function()
        return traced[name, top_k]

    return signature


def _to_pixels(outputs, index, original_size):
    """One image's served outputs -> ``boxes`` xyxy original pixels, ``scores``, ``labels``."""
    num = int(outputs["num_detections"][index])
    height, width = (float(v) for v in original_size)
    ymin, xmin, ymax, xmax = np.moveaxis(
        outputs["detection_boxes"][index, :num].numpy().astype(np.float64), -1, 0
    )
    return {
        "boxes": np.stack([xmin * width, ymin * height, xmax * width, ymax * height], -1),
        "scores": outputs["detection_scores"][index, :num].numpy(),
        "labels": outputs["detection_classes"][index, :num].numpy().astype(np.int64),
    }


def _detect(signature, image, top_ks=TOP_K):
    """Detections of the exported ``serving_default`` graph (resize, normalisation, padding,
    network, decoding, NMS and mapping back as the recipe configures them).

    Returns:
        dict ``{top_k: detections}`` with ``boxes`` (original image pixels), ``scores``,
        ``labels`` (COCO ids) numpy arrays.
    """
    result = {}
    for top_k in top_ks:
        outputs = signature(serving.IMAGES_SIGNATURE, top_k)(tf.constant(image[None]))
        result[top_k] = _to_pixels(outputs, 0, image.shape[:2])
    return result


def _compare(ours, theirs):
    """Pairs every detection of ``theirs`` with one of ``ours`` (same label, closest box).

    Returns:
        ``(matched, max box difference, max score difference)`` over the matched pairs.
    """
    assert len(ours["scores"]) == len(theirs["scores"])
    free = np.ones(len(ours["scores"]), bool)
    box_diff = score_diff = 0.0
    matched = 0
    for box, score, label in zip(theirs["boxes"], theirs["scores"], theirs["labels"]):
        distance = np.abs(ours["boxes"] - box).max(axis=1)
        close = (
            free
            & (ours["labels"] == label)
            & (distance <= BOX_TOLERANCE)
            & (np.abs(ours["scores"] - score) <= SCORE_TOLERANCE)
        )
        if not close.any():
            continue
        index = np.flatnonzero(close)[np.argmin(distance[close])]
        free[index] = False
        matched += 1
        box_diff = max(box_diff, float(distance[index]))
        score_diff = max(score_diff, float(abs(ours["scores"][index] - score)))
    return matched, box_diff, score_diff


@pytest.fixture(scope="module")
def images():
    return {size: _image(*size, seed=index) for index, size in enumerate(DETECTION_SIZES)}


@pytest.fixture(scope="module")
def reference_detections(state_dict, images):
    """``{size: {top_k: detections}}`` of the functional reference."""
    renamed = convert_torchvision.normalise_state_dict_names(state_dict)
    result = {}
    for size, image in images.items():
        head = torch_reference.fcos_forward(renamed, torch_reference.transform(image)[0])
        result[size] = {
            top_k: torch_reference.fcos_detect(renamed, image, top_k=top_k, head=head)
            for top_k in TOP_K
        }
    return result


@pytest.fixture(scope="module")
def served(converted):
    return _serving(converted)


@pytest.fixture(scope="module")
def our_detections(served, images):
    """``{size: {top_k: detections}}`` of the converted model's serving graph."""
    return {size: _detect(served, image) for size, image in images.items()}


def test_resize_sizes_match_torchvision_transform(images):
    for size, image in images.items():
        _, resized = torch_reference.transform(image)
        _, new_size = transforms.resize_size(tf.constant(size), 800, 1333, rounding="floor")
        assert tuple(new_size.numpy()) == resized, size


@pytest.mark.parametrize("size", DETECTION_SIZES)
def test_detections_match_torchvision_reference(our_detections, reference_detections, size):
    for top_k in TOP_K:
        theirs = reference_detections[size][top_k]
        assert len(theirs["scores"]) == 100
        if top_k == 20:
            assert set(theirs["levels"]) == {0, 1, 2, 3, 4}
        matched, box_diff, score_diff = _compare(our_detections[size][top_k], theirs)
        print(
            f"{size}, {top_k} per level: {matched}/100 matched, max box difference "
            f"{box_diff:.2e} px, max score difference {score_diff:.2e}"
        )
        assert matched == 100


def _import_torchvision():
    """torchvision, or None. Its CPU wheel's compiled ops do not load on a CPU-only torch of
    the matching version; the Python parts (models, transforms, box ops) work without them
    once its fake-op registrations, which need the compiled ops, are skipped."""
    try:
        import torchvision

        return torchvision
    except ImportError:
        return None
    except RuntimeError:  # "operator torchvision::nms does not exist"
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        name = "torchvision._meta_registrations"
        sys.modules[name] = types.ModuleType(name)
        import torchvision

        return torchvision


class _SameInputSameOutput(torch.nn.Module):
    """Wraps a module of an eval-mode torchvision model: a call whose input equals the last
    call's returns the last output, so that one image's network runs once for the several
    ``topk_candidates`` that only its post-processing reads."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.last = None

    @staticmethod
    def _same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        return len(a) == len(b) and all(map(_SameInputSameOutput._same, a, b))

    def forward(self, x):
        if self.last is None or not self._same(self.last[0], x):
            self.last = (x, self.module(x))
        return self.last[1]


@pytest.fixture(scope="module")
def torchvision_fcos(state_dict):
    torchvision = _import_torchvision()
    if torchvision is None:
        pytest.skip("torchvision not installed (pip install --no-deps torchvision)")
    from torchvision.ops import boxes as box_ops

    model = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91
    )
    renamed = convert_torchvision.normalise_state_dict_names(state_dict)
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(value) for name, value in renamed.items()}, strict=False
    )
    assert not unexpected
    assert all(name.endswith("num_batches_tracked") for name in missing), missing
    model.eval()
    model.backbone = _SameInputSameOutput(model.backbone)
    model.head = _SameInputSameOutput(model.head)
    with pytest.MonkeyPatch.context() as patch:
        # Its batched_nms calls the compiled op through this module-level name.
        patch.setattr(box_ops, "nms", torch_reference.python_nms)
        yield model


@pytest.mark.parametrize("size", DETECTION_SIZES)
def test_reference_and_ours_match_real_torchvision(
    our_detections, images, reference_detections, torchvision_fcos, size
):
    image = torch.from_numpy(images[size]).permute(2, 0, 1).float() / 255.0
    for top_k in TOP_K:
        torchvision_fcos.topk_candidates = top_k
        with torch.no_grad():
            result = torchvision_fcos([image])[0]
        theirs = {
            "boxes": result["boxes"].numpy(),
            "scores": result["scores"].numpy(),
            "labels": result["labels"].numpy(),
        }
        assert len(theirs["scores"]) == 100
        for name, detections in (
            ("functional reference", reference_detections),
            ("fcos_tf", our_detections),
        ):
            matched, box_diff, score_diff = _compare(detections[size][top_k], theirs)
            print(
                f"{size}, {top_k} per level: {name} vs torchvision {matched}/100, box "
                f"{box_diff:.2e} px, score {score_diff:.2e}"
            )
            assert matched == 100


def test_mixed_size_batch_of_image_bytes_matches_real_torchvision(served, images, torchvision_fcos):
    """One ``serving_image_bytes`` request with the four sizes against one torchvision call on
    the same list: both pad the batch to its largest resized size, which sets the grid."""
    torchvision_fcos.topk_candidates = 20
    encoded = [tf.io.encode_png(images[size]).numpy() for size in DETECTION_SIZES]
    outputs = served(serving.IMAGE_BYTES_SIGNATURE, 20)(tf.constant(encoded))
    tensors = [
        torch.from_numpy(images[size]).permute(2, 0, 1).float() / 255.0 for size in DETECTION_SIZES
    ]
    with torch.no_grad():
        results = torchvision_fcos(tensors)
    for index, (size, result) in enumerate(zip(DETECTION_SIZES, results)):
        theirs = {
            "boxes": result["boxes"].numpy(),
            "scores": result["scores"].numpy(),
            "labels": result["labels"].numpy(),
        }
        matched, box_diff, score_diff = _compare(_to_pixels(outputs, index, size), theirs)
        print(
            f"{size} in a mixed batch: fcos_tf vs torchvision {matched}/100, box "
            f"{box_diff:.2e} px, score {score_diff:.2e}"
        )
        assert len(theirs["scores"]) == 100 and matched == 100
