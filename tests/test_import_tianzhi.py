"""tianzhi0549/FCOS checkpoints: import exactness against a PyTorch reference, refusals, and
the whole path ``fcos-import`` -> workdir -> SavedModel for the MobileNetV2 c128 model.

The reference (tests/fcos_authors_reference.py) re-states fcos_core's forward and inference
(FrozenBN without epsilon, the authors' MobileNetV2, clipping to size - 1, "+1" NMS) in float64
on a random state dict with the checkpoint's exact names (``module.`` prefix, BN counters).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fcos_authors_reference as ref  # noqa: E402

from fcos_tf import import_weights  # noqa: E402
from fcos_tf.core import builders, rundir  # noqa: E402
from fcos_tf.core import config as config_lib  # noqa: E402
from fcos_tf.data.label_map import COCO_2017_CATEGORIES  # noqa: E402
from fcos_tf.data.transforms import MASKRCNN_BENCHMARK_BGR_MEAN  # noqa: E402
from fcos_tf.importers import tianzhi  # noqa: E402
from fcos_tf.serving.detector import Detector  # noqa: E402
from fcos_tf.serving.graph import ServingConfig  # noqa: E402
from fcos_tf.serving.saved_model import export_saved_model  # noqa: E402

# recipe -> (backbone, channels)
VARIANTS = {
    "fcos_tianzhi_mnv2": ("mnv2", 256),
    "fcos_tianzhi_mnv2_c128": ("mnv2", 128),
    "fcos_tianzhi_imprv_r101": ("r101", 256),
}
IMAGE_SIZES = [(100, 140), (131, 97)]
STRIDES = (8, 16, 32, 64, 128)


def _model(recipe):
    return builders.build_model(config_lib.load_recipe(recipe), 80, load_backbone_weights=False)


def _reference(state_dict, image, backbone):
    d = ref.to_torch({k[len("module.") :]: v for k, v in state_dict.items()})
    with torch.no_grad():
        if backbone == "mnv2":
            features = ref.mnv2_forward(d, image)
        else:
            features = ref.resnet_forward(d, image, 101, "mrcn", 0.0)
        levels = ref.fpn_forward(d, features, "mrcn", 2)
        if backbone == "mnv2":  # the paper's head: centerness on cls, exp(s x)
            return ref.head_forward(
                d, levels, "rpn.head.", "centerness", "gn", "classification", "exp", STRIDES
            )
        return ref.head_forward(
            d, levels, "rpn.head.", "centerness", "gn", "regression", "relu", STRIDES
        )


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request):
    backbone, channels = VARIANTS[request.param]
    state_dict = tianzhi_state = ref.tianzhi_state_dict(backbone, channels, seed=channels)
    assert tianzhi.recipe_for(tianzhi_state) == request.param
    assert import_weights.detect_source(state_dict) == "tianzhi"
    model = _model(request.param)
    tianzhi.load_tianzhi_weights(model, state_dict)
    return request.param, state_dict, model


def test_raw_outputs_and_detections_match_tianzhi(imported):
    recipe, state_dict, model = imported
    backbone, _ = VARIANTS[recipe]
    # The wide models at one image size (test time), the others at every one.
    for image_size in IMAGE_SIZES if recipe == "fcos_tianzhi_mnv2_c128" else IMAGE_SIZES[:1]:
        nhwc, nchw = ref.padded_input(image_size, seed=image_size[1])
        results = _reference(state_dict, nchw, backbone)
        ref.assert_model_matches(model, nhwc, image_size, results, ref.tianzhi_postprocess, STRIDES)


def test_tensor_counts_and_unsupported_models_are_named():
    for args, count in ((("mnv2", 256), 314), (("mnv2", 128), 314), (("r101", 256), 579)):
        names = ref.tianzhi_state_dict(*args)
        assert len([n for n in names if "num_batches" not in n]) == count
    state_dict = ref.tianzhi_state_dict("r101", 256)
    dcn = dict(state_dict, **{"module.backbone.body.layer3.0.conv2.offset.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="offset.*deformable"):
        tianzhi.recipe_for(dcn)
    resnext = dict(state_dict)
    resnext["module.backbone.body.layer1.0.conv2.weight"] = np.zeros((256, 8, 3, 3))
    with pytest.raises(ValueError, match="grouped convolution"):
        tianzhi.recipe_for(resnext)
    r50 = {k: v for k, v in state_dict.items() if ".layer3." not in k or int(k.split(".")[4]) < 6}
    with pytest.raises(ValueError, match="layer3 has 6 blocks"):
        tianzhi.recipe_for(r50)


@pytest.fixture(scope="module")
def c128_model():
    return _model("fcos_tianzhi_mnv2_c128")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("module.backbone.body.features.14.conv.4.running_mean"),
         r"missing tensor.*features\.14\.conv\.4\.running_mean"),
        (lambda d: d.update({"module.rpn.head.scales.5.scale": np.ones(1)}),
         r"unused tensor.*scales\.5\.scale"),
        (lambda d: d.update({"module.backbone.fpn.fpn_inner2.weight": np.zeros((128, 24, 1, 1))}),
         r"fpn_inner2\.weight.*\(128, 24, 1, 1\)"),
    ],
)  # fmt: skip
def test_bad_checkpoints_are_refused_naming_the_tensor(change, message, c128_model):
    state_dict = ref.tianzhi_state_dict("mnv2", 128)
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        tianzhi.load_tianzhi_weights(c128_model, state_dict)


def test_fcos_import_to_saved_model_matches_the_reference(tmp_path):
    """``fcos-import`` of a c128 checkpoint file, exported; the SavedModel on a uint8 image
    (no resize: short side at the image's) gives the reference's detections."""
    state_dict = ref.tianzhi_state_dict("mnv2", 128, seed=7)
    path = str(tmp_path / "FCOS_syncbn_bs32_c128_MNV2_FPN_1x.pth")
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                "iteration": 90000}, path)  # fmt: skip
    workdir = str(tmp_path / "run")
    assert import_weights.main([path, f"--workdir={workdir}"]) == 0
    model, config, label_map = rundir.load_trained_model(workdir)
    assert config.backbone.name == "mobilenet_v2_fcos" and config.model.box_plus_one
    assert list(label_map.category_ids) == [c for c, _ in COCO_2017_CATEGORIES]
    with pytest.raises(SystemExit):  # the workdir holds a checkpoint now
        import_weights.main([path, f"--workdir={workdir}"])

    height, width = 131, 97
    image = np.random.default_rng(1).integers(0, 256, (1, height, width, 3), np.uint8)
    serving = ServingConfig(
        eval_short_side=min(height, width), max_size=1333, pixel_norm="maskrcnn_benchmark",
        resize_rounding="floor",
    )  # fmt: skip
    export_dir = export_saved_model(model, label_map, str(tmp_path / "export"), serving,
                                    warmup=False)  # fmt: skip
    out = Detector.load(export_dir)(image)

    bgr = image[0, :, :, ::-1].astype(np.float64) - np.asarray(MASKRCNN_BENCHMARK_BGR_MEAN)
    padded = np.zeros((1, 160, 128, 3))
    padded[0, :height, :width] = bgr
    results = _reference(state_dict, torch.from_numpy(padded.transpose(0, 3, 1, 2)), "mnv2")
    reference = ref.tianzhi_postprocess(results, STRIDES, (height, width))
    num = int(out["num_detections"][0])
    ymin, xmin, ymax, xmax = (out["detection_boxes"][0, :num] * ([height, width] * 2)).T
    index = {category_id: i for i, category_id in enumerate(label_map.category_ids)}
    classes = np.array([index[int(c)] for c in out["detection_classes"][0, :num]])
    ref.assert_detections_match(
        np.stack([xmin, ymin, xmax, ymax], 1), out["detection_scores"][0, :num], classes, reference
    )
