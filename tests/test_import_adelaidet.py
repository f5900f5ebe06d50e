"""AdelaiDet FCOS checkpoints: import exactness against a PyTorch reference, and refusals.

The reference (tests/fcos_authors_reference.py) re-states AdelaiDet's forward and inference
in float64 on a random state dict with AdelaiDet's exact names and shapes; the imported
Keras model must give the same raw outputs per level and the same detections (1e-2 px,
5e-4 in score) at image sizes that are not multiples of 32.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fcos_authors_reference as ref  # noqa: E402

from fcos_tf.core import builders  # noqa: E402
from fcos_tf.core import config as config_lib  # noqa: E402
from fcos_tf.importers import adelaidet  # noqa: E402

# recipe -> (depth, real_time, per-level BN head)
VARIANTS = {
    "fcos_adelaidet_r50": (50, False, False),
    "fcos_adelaidet_rt_r50": (50, True, False),
    "fcos_adelaidet_rt_r50_bn": (50, True, True),
    "fcos_adelaidet_r101": (101, False, False),
}
IMAGE_SIZES = [(100, 140), (131, 97)]


def _model(recipe):
    config = config_lib.load_recipe(recipe)
    return builders.build_model(config, 80, load_backbone_weights=False)


def _reference(state_dict, image, depth, real_time, bn_head):
    d = ref.to_torch(state_dict)
    strides = (8, 16, 32) if real_time else (8, 16, 32, 64, 128)
    with torch.no_grad():
        features = ref.resnet_forward(d, image, depth, "d2", 1e-5)
        levels = ref.fpn_forward(d, features, "d2", 0 if real_time else 2)
        results = ref.head_forward(
            d, levels, "proposal_generator.fcos_head.", "ctrness",
            "bn_per_level" if bn_head else "gn", "regression", "relu", strides,
        )  # fmt: skip
    return results, strides


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request):
    depth, real_time, bn_head = VARIANTS[request.param]
    state_dict = ref.adelaidet_state_dict(depth, real_time, bn_head, seed=depth + real_time)
    assert adelaidet.recipe_for(state_dict) == request.param
    model = _model(request.param)
    adelaidet.load_adelaidet_weights(model, state_dict)
    return request.param, state_dict, model


def test_raw_outputs_and_detections_match_adelaidet(imported):
    recipe, state_dict, model = imported
    depth, real_time, bn_head = VARIANTS[recipe]
    # The wide models at one image size (test time), the others at every one.
    for image_size in IMAGE_SIZES[:1] if depth == 101 else IMAGE_SIZES:
        nhwc, nchw = ref.padded_input(image_size, seed=image_size[0])
        results, strides = _reference(state_dict, nchw, depth, real_time, bn_head)
        ref.assert_model_matches(
            model, nhwc, image_size, results, ref.adelaidet_postprocess, strides
        )


def test_tensor_counts_and_unsupported_models_are_named():
    # Tensor counts of the released layouts (without pixel buffers and BN counters).
    for args, count in (((50, False, False), 324), ((101, False, False), 579),
                        ((50, True, False), 318), ((50, True, True), 398)):  # fmt: skip
        names = ref.adelaidet_state_dict(*args)
        assert len([n for n in names if "num_batches" not in n and "pixel" not in n]) == count
    state_dict = ref.adelaidet_state_dict(50, True, False)
    dcn = dict(state_dict, **{"backbone.bottom_up.res5.0.conv2.conv_offset.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="conv_offset.*deformable"):
        adelaidet.recipe_for(dcn)
    resnext = dict(state_dict)
    resnext["backbone.bottom_up.res2.0.conv2.weight"] = np.zeros((128, 4, 3, 3))
    with pytest.raises(ValueError, match="grouped convolution"):
        adelaidet.recipe_for(resnext)
    dla = {"backbone.bottom_up.level0.0.weight": np.zeros(1), adelaidet.SIGNATURE: np.zeros(1)}
    with pytest.raises(ValueError, match="DLA"):
        adelaidet.recipe_for(dla)
    with pytest.raises(ValueError, match="not an AdelaiDet"):
        adelaidet.recipe_for({"rpn.head.centerness.weight": np.zeros(1)})


@pytest.fixture(scope="module")
def rt_model():
    return _model("fcos_adelaidet_rt_r50")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("backbone.bottom_up.res3.2.conv2.norm.running_var"),
         r"missing tensor.*res3\.2\.conv2\.norm\.running_var"),
        (lambda d: d.update({"proposal_generator.fcos_head.cls_tower.12.weight": np.zeros(3)}),
         r"unused tensor.*cls_tower\.12\.weight"),
        (lambda d: d.update({"proposal_generator.fcos_head.cls_logits.bias": np.zeros(81)}),
         r"cls_logits\.bias.*\(81,\)"),
        (lambda d: d.update({"pixel_mean": np.array([102.98, 115.95, 122.77])}),
         "pixel_mean"),
    ],
)  # fmt: skip
def test_bad_checkpoints_are_refused_naming_the_tensor(change, message, rt_model):
    state_dict = ref.adelaidet_state_dict(50, True, False)
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        adelaidet.load_adelaidet_weights(rt_model, state_dict)


def test_model_of_another_recipe_is_refused():
    with pytest.raises(ValueError, match="AdelaiDet FCOS state dict architecture"):
        adelaidet.adelaidet_assignments(_model("fcos_torchvision_r50"))
