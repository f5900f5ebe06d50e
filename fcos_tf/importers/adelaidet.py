r"""The FCOS authors' AdelaiDet (detectron2) COCO checkpoints mapped onto this package's ``FCOS``.

Supported (AdelaiDet ``configs/FCOS-Detection/README.md``), each with a recipe in
``fcos_tf/configs/`` holding its inference settings:

=====================================  ======================  ===========================
checkpoint                             recipe                  architecture
=====================================  ======================  ===========================
FCOS_R_50_1x, FCOS_MS_R_50_2x (+_iou)  fcos_adelaidet_r50      R-50, P3-P7, GroupNorm head
FCOS_MS_R_101_2x (+_iou)               fcos_adelaidet_r101     R-101, P3-P7, GroupNorm head
FCOS_RT_MS_R_50_4x_syncbn              fcos_adelaidet_rt_r50   R-50, P3-P5, GroupNorm head
FCOS_RT_MS_R_50_4x_syncbn_bn_head      fcos_adelaidet_rt_r50_bn  R-50, P3-P5, one BN per level
=====================================  ======================  ===========================

The model is this package's FCOS with detectron2's conventions: ResNet with the stride on the
first 1x1 conv (``layout="caffe"``, MSRA weights) and frozen BN eps 1e-5 (the RT models'
SyncBN layers compute the same in inference), P6 from P5, centerness on the regression tower,
box output ``relu(s_l x) * stride``, BGR input minus detectron2's mean
(``pixel_norm="detectron2"``). The 80 class rows are in the sorted COCO category-id order, the
order of :data:`fcos_tf.data.label_map.COCO_2017_CATEGORIES`.

Names: ``backbone.bottom_up.stem.conv1`` / ``res{2..5}.{b}.conv{1,2,3}`` / ``.shortcut``,
each with its ``.norm``; ``backbone.fpn_lateral{3,4,5}``, ``backbone.fpn_output{3,4,5}``,
``backbone.top_block.p6/p7``; ``proposal_generator.fcos_head.{cls,bbox}_tower.{0..10}``,
``cls_logits``, ``bbox_pred``, ``ctrness``, ``scales.{l}.scale``. ``num_batches_tracked``
counters are ignored, and ``pixel_mean``/``pixel_std`` buffers, when present, must hold
detectron2's normalisation. Every other tensor must map onto the model and every model
weight must be set; a missing, unused or mis-shaped tensor is an error naming it.

Not supported, refused with the reason: the DCN models (deformable convolutions), ResNeXt
(grouped convolutions), DLA-34 and VoVNet backbones.
"""

import re

import numpy as np

from fcos_tf.data.transforms import DETECTRON2_BGR_MEAN
from fcos_tf.importers import fcos_common
from fcos_tf.modeling.backbone import ResNet

SOURCE = "AdelaiDet FCOS state dict"
HEAD_PREFIX = "proposal_generator.fcos_head."
# A name only an AdelaiDet FCOS checkpoint has.
SIGNATURE = HEAD_PREFIX + "ctrness.weight"
_BLOCK = re.compile(r"^backbone\.bottom_up\.res4\.(\d+)\.")
_UNSUPPORTED = (
    (re.compile(r"offset|\.dcn|deform", re.IGNORECASE), "deformable convolutions (DCN models)"),
    (re.compile(r"^backbone\.bottom_up\.(base|level\d)"), "the DLA-34 backbone (FCOS_RT DLA)"),
    (re.compile(r"^backbone\.bottom_up\.(stem\.stem_|stage\d)"), "the VoVNet backbone"),
    (re.compile(r"share_tower\.\d"), "shared tower convs (NUM_SHARE_CONVS > 0)"),
)


def _stage_name(name):
    # Keras "layer{s}_{b}_conv{k}" / "_bn{k}" / "_downsample_{0,1}" / "conv1" / "bn1"
    if name == "conv1":
        return "backbone.bottom_up.stem.conv1"
    if name == "bn1":
        return "backbone.bottom_up.stem.conv1.norm"
    match = re.fullmatch(r"layer(\d)_(\d+)_(conv\d|bn\d|downsample_0|downsample_1)", name)
    if not match:
        raise ValueError(f"Unexpected ResNet layer {name!r}.")
    stage, block, part = int(match.group(1)) + 1, match.group(2), match.group(3)
    base = f"backbone.bottom_up.res{stage}.{block}"
    part = {
        "downsample_0": "shortcut",
        "downsample_1": "shortcut.norm",
        "bn1": "conv1.norm",
        "bn2": "conv2.norm",
        "bn3": "conv3.norm",
    }.get(part, part)
    return f"{base}.{part}"


def recipe_for(state_dict):
    """The recipe of ``fcos_tf/configs/`` for an AdelaiDet FCOS state dict, from its names.

    Raises:
        ValueError: not an AdelaiDet FCOS checkpoint, or an unsupported model (named).
    """
    state_dict = fcos_common.strip_module_prefix(state_dict)
    if SIGNATURE not in state_dict:
        raise ValueError(f"{SOURCE}: no {SIGNATURE!r}: not an AdelaiDet FCOS checkpoint.")
    for name in state_dict:
        for pattern, what in _UNSUPPORTED:
            if pattern.search(name):
                raise ValueError(
                    f"{SOURCE}: {name!r} belongs to {what}, which this package does not "
                    f"implement; the supported models are the R-50/R-101 and FCOS_RT R-50 ones."
                )
    conv2 = state_dict.get("backbone.bottom_up.res2.0.conv2.weight")
    if conv2 is not None and conv2.shape[1] != conv2.shape[0]:
        raise ValueError(
            f"{SOURCE}: 'backbone.bottom_up.res2.0.conv2.weight' of shape {conv2.shape} is a "
            f"grouped convolution (ResNeXt), which this package does not implement."
        )
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, state_dict) if m}
    depth = {6: 50, 23: 101}.get(len(blocks))
    if depth is None:
        raise ValueError(
            f"{SOURCE}: res4 has {len(blocks)} blocks; only ResNet-50 (6) and ResNet-101 (23) "
            f"are supported."
        )
    real_time = "backbone.top_block.p6.weight" not in state_dict
    per_level_bn = f"{HEAD_PREFIX}cls_tower.1.0.weight" in state_dict
    if not real_time:
        if per_level_bn:
            raise ValueError(f"{SOURCE}: a per-level BN head with P6/P7 has no recipe.")
        return f"fcos_adelaidet_r{depth}"
    if depth != 50:
        raise ValueError(f"{SOURCE}: FCOS_RT (no P6/P7) is released with ResNet-50 only.")
    return "fcos_adelaidet_rt_r50_bn" if per_level_bn else "fcos_adelaidet_rt_r50"


def adelaidet_assignments(model):
    """``(torch_name, variable, transform)`` for every weight of ``model``.

    Args:
        model: a built :class:`fcos_tf.modeling.fcos.FCOS` of one of the recipes
            ``fcos_adelaidet_*``.
    """
    backbone = model.backbone
    if not (isinstance(backbone, ResNet) and backbone.layout == "caffe"):
        raise ValueError(
            f"The model does not have the {SOURCE} architecture: the backbone must be a "
            f"ResNet with layout='caffe'."
        )
    num_levels = len(model.strides)
    fcos_common.check_model(
        model,
        SOURCE,
        {
            "fpn_channels": 256,
            "p6_input": "p5",
            "head_num_convs": 4,
            "centerness_on": "regression",
            "norm_reg_targets": True,
        },
    )
    if model.head_norm not in ("group", "bn_per_level", "sync_bn_per_level") or num_levels not in (
        3,
        5,
    ):
        raise ValueError(
            f"The model does not have the {SOURCE} architecture: head_norm "
            f"{model.head_norm!r} (needs 'group' or a per-level BN) and {num_levels} levels "
            f"(needs 3 or 5)."
        )
    assignments = fcos_common.resnet_assignments(backbone, _stage_name)
    fpn = model.fpn
    for index, level in enumerate((3, 4, 5)):
        assignments += fcos_common.conv_pair(
            f"backbone.fpn_lateral{level}", fpn.lateral_convs[index]
        )
        assignments += fcos_common.conv_pair(f"backbone.fpn_output{level}", fpn.output_convs[index])
    for level, conv in zip(("p6", "p7"), fpn.extra_convs):
        assignments += fcos_common.conv_pair(f"backbone.top_block.{level}", conv)
    assignments += fcos_common.head_assignments(model.head, HEAD_PREFIX, "ctrness")
    return assignments


def _check_pixel_buffers(state_dict):
    expected = {"pixel_mean": DETECTRON2_BGR_MEAN, "pixel_std": (1.0, 1.0, 1.0)}
    for name, values in expected.items():
        if name in state_dict:
            found = np.asarray(state_dict[name], np.float64).reshape(-1)
            if found.shape != (3,) or not np.allclose(found, values, atol=1e-3):
                raise ValueError(
                    f"{SOURCE}: {name!r} is {found.tolist()}, but the recipes normalise "
                    f"with {list(values)} (BGR); the checkpoint was trained with another input."
                )


def load_adelaidet_weights(model, state_dict):
    """Sets every weight of ``model`` from an AdelaiDet FCOS state dict.

    Args:
        model: a built ``FCOS`` of the matching ``fcos_adelaidet_*`` recipe (80 classes).
        state_dict: ``{name: array}`` or a path to the ``.pth`` file (``{"model": ...}`` or a
            bare state dict; a ``module.`` prefix on every name is dropped).

    Raises:
        ValueError: architecture mismatch, or a tensor missing, unused or mis-shaped (named).
    """
    state_dict = fcos_common.read_state_dict(state_dict)
    _check_pixel_buffers(state_dict)
    fcos_common.assign_every_tensor(
        model,
        adelaidet_assignments(model),
        state_dict,
        SOURCE,
        ignored=("pixel_mean", "pixel_std"),
    )
