r"""The FCOS authors' tianzhi0549/FCOS (maskrcnn-benchmark) COCO checkpoints mapped onto ``FCOS``.

Supported (README model zoo of tianzhi0549/FCOS), each with a recipe in ``fcos_tf/configs/``:

=====================================  ==========================  ===========================
checkpoint                             recipe                      architecture
=====================================  ==========================  ===========================
FCOS_syncbn_bs32_MNV2_FPN_1x,          fcos_tianzhi_mnv2           authors' MobileNetV2,
FCOS_bn_bs16_MNV2_FPN_1x                                           256-channel FPN and head
FCOS_syncbn_bs32_c128_MNV2_FPN_1x      fcos_tianzhi_mnv2_c128      128-channel FPN and head
FCOS_imprv_R_101_FPN_2x                fcos_tianzhi_imprv_r101     R-101, improvements
=====================================  ==========================  ===========================

Conventions: BGR input minus maskrcnn-benchmark's mean (``pixel_norm="maskrcnn_benchmark"``);
the ResNet's frozen BN has no epsilon (``bn_epsilon=0``) and its stride on the first 1x1 conv
(``layout="caffe"``); the MobileNetV2 is :class:`fcos_tf.modeling.mobilenet_fcos.FCOSMobileNetV2`
(trained BN, eps 1e-5); P6 from P5, GroupNorm(32) heads with five scales; the MNV2 models use
the paper's original head (centerness on the classification tower, ``exp(s_l x)`` boxes), the
``imprv`` model centerness on the regression tower and ``relu(s_l x) * stride``; boxes clipped
to ``size - 1`` and NMS with the ``+ 1`` pixel widths (``box_plus_one``). The 80 logits (the
code's 81 classes less the background) are in the sorted COCO category-id order.

Names (after the ``module.`` of distributed training, dropped): ``backbone.body.stem.conv1``,
``stem.bn1``, ``layer{1..4}.{b}.conv{1,2,3}`` / ``bn{1,2,3}`` / ``downsample.{0,1}`` or
``backbone.body.features.{0..17}``; ``backbone.fpn.fpn_inner{2,3,4}``,
``fpn_layer{2,3,4}``, ``top_blocks.p6/p7``; ``rpn.head.{cls,bbox}_tower.{0..10}``,
``cls_logits``, ``bbox_pred``, ``centerness``, ``scales.{0..4}.scale``. ``num_batches_tracked``
counters are ignored; every other tensor must be used exactly once (a missing, unused or
mis-shaped tensor is an error naming it).

Not supported, refused with the reason: the ``dcnv2`` models (deformable convolutions) and the
ResNeXt ``X_101`` models (grouped convolutions).
"""

import re

import keras

from fcos_tf.importers import fcos_common
from fcos_tf.importers import imagenet as weights_lib
from fcos_tf.modeling.backbone import ResNet
from fcos_tf.modeling.mobilenet_fcos import FCOSMobileNetV2

SOURCE = "tianzhi0549/FCOS state dict"
HEAD_PREFIX = "rpn.head."
SIGNATURE = HEAD_PREFIX + "centerness.weight"
_BLOCK = re.compile(r"^backbone\.body\.layer3\.(\d+)\.")


def _resnet_name(name):
    # Keras "conv1", "bn1", "layer{s}_{b}_conv{k}" ... -> torchvision-like names under body.
    if name in ("conv1", "bn1"):
        return f"backbone.body.stem.{name}"
    return "backbone.body." + name.replace("_", ".")


def _mobilenet_name(name):
    """Keras ``keras.applications`` MobileNetV2 layer name -> the authors' ``features`` name."""
    if name == "Conv1":
        return "backbone.body.features.0.0"
    if name == "bn_Conv1":
        return "backbone.body.features.0.1"
    first = {
        "expanded_conv_depthwise": "conv.0",
        "expanded_conv_depthwise_BN": "conv.1",
        "expanded_conv_project": "conv.3",
        "expanded_conv_project_BN": "conv.4",
    }
    if name in first:
        return f"backbone.body.features.1.{first[name]}"
    match = re.fullmatch(
        r"block_(\d+)_(expand|expand_BN|depthwise|depthwise_BN|project|project_BN)", name
    )
    if not match:
        raise ValueError(f"Unexpected MobileNetV2 layer {name!r}.")
    part = {
        "expand": "conv.0",
        "expand_BN": "conv.1",
        "depthwise": "conv.3",
        "depthwise_BN": "conv.4",
        "project": "conv.6",
        "project_BN": "conv.7",
    }[match.group(2)]
    return f"backbone.body.features.{int(match.group(1)) + 1}.{part}"


def recipe_for(state_dict):
    """The recipe of ``fcos_tf/configs/`` for a tianzhi0549/FCOS state dict, from its names.

    Raises:
        ValueError: not a tianzhi0549/FCOS checkpoint, or an unsupported model (named).
    """
    state_dict = fcos_common.strip_module_prefix(state_dict)
    if SIGNATURE not in state_dict:
        raise ValueError(f"{SOURCE}: no {SIGNATURE!r}: not a tianzhi0549/FCOS checkpoint.")
    for name in state_dict:
        if re.search(r"offset|deform|dcn", name, re.IGNORECASE):
            raise ValueError(
                f"{SOURCE}: {name!r} belongs to a deformable convolution (dcnv2 models), which "
                f"this package does not implement."
            )
    if "backbone.body.features.0.0.weight" in state_dict:
        channels = state_dict["backbone.fpn.fpn_inner2.weight"].shape[0]
        if channels not in (128, 256):
            raise ValueError(
                f"{SOURCE}: 'backbone.fpn.fpn_inner2.weight' has {channels} channels; the "
                f"released MNV2 models have 256 or 128."
            )
        return "fcos_tianzhi_mnv2" if channels == 256 else "fcos_tianzhi_mnv2_c128"
    conv2 = state_dict.get("backbone.body.layer1.0.conv2.weight")
    if conv2 is not None and conv2.shape[1] != conv2.shape[0]:
        raise ValueError(
            f"{SOURCE}: 'backbone.body.layer1.0.conv2.weight' of shape {conv2.shape} is a "
            f"grouped convolution (ResNeXt X_101 models), which this package does not implement."
        )
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, state_dict) if m}
    if len(blocks) != 23:
        raise ValueError(
            f"{SOURCE}: layer3 has {len(blocks)} blocks; of the ResNet models only "
            f"FCOS_imprv_R_101_FPN_2x (23 blocks) has a recipe."
        )
    return "fcos_tianzhi_imprv_r101"


def tianzhi_assignments(model):
    """``(torch_name, variable, transform)`` for every weight of ``model``.

    Args:
        model: a built :class:`fcos_tf.modeling.fcos.FCOS` of a ``fcos_tianzhi_*`` recipe.
    """
    backbone = model.backbone
    fcos_common.check_model(
        model,
        SOURCE,
        {
            "p6_input": "p5",
            "head_num_convs": 4,
            "head_norm": "group",
            "strides": (8, 16, 32, 64, 128),
        },
    )
    if isinstance(backbone, ResNet):
        if backbone.layout != "caffe" or backbone.bn_epsilon != 0.0:
            raise ValueError(
                f"The model does not have the {SOURCE} architecture: the ResNet needs "
                f"layout='caffe' and bn_epsilon=0 (maskrcnn-benchmark's FrozenBatchNorm2d)."
            )
        assignments = fcos_common.resnet_assignments(backbone, _resnet_name)
    elif isinstance(backbone, FCOSMobileNetV2):
        assignments = []
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                assignments.append(
                    (
                        f"{_mobilenet_name(layer.name)}.weight",
                        layer.kernel,
                        fcos_common.depthwise_to_keras,
                    )
                )
            elif isinstance(layer, keras.layers.Conv2D):
                assignments.append(
                    (
                        f"{_mobilenet_name(layer.name)}.weight",
                        layer.kernel,
                        weights_lib.torch_conv_to_keras,
                    )
                )
            elif isinstance(layer, keras.layers.BatchNormalization):
                assignments += fcos_common.norm_assignments(_mobilenet_name(layer.name), layer)
    else:
        raise ValueError(
            f"The model does not have the {SOURCE} architecture: the backbone must be a "
            f"caffe-layout ResNet or the authors' MobileNetV2 ('mobilenet_v2_fcos')."
        )
    fpn = model.fpn
    for index, level in enumerate((2, 3, 4)):
        assignments += fcos_common.conv_pair(
            f"backbone.fpn.fpn_inner{level}", fpn.lateral_convs[index]
        )
        assignments += fcos_common.conv_pair(
            f"backbone.fpn.fpn_layer{level}", fpn.output_convs[index]
        )
    for level, conv in zip(("p6", "p7"), fpn.extra_convs):
        assignments += fcos_common.conv_pair(f"backbone.fpn.top_blocks.{level}", conv)
    assignments += fcos_common.head_assignments(model.head, HEAD_PREFIX, "centerness")
    return assignments


def load_tianzhi_weights(model, state_dict):
    """Sets every weight of ``model`` from a tianzhi0549/FCOS state dict.

    Args:
        model: a built ``FCOS`` of the matching ``fcos_tianzhi_*`` recipe (80 classes).
        state_dict: ``{name: array}`` or a path to the ``.pth`` file (``{"model": ...}`` or a
            bare state dict; a ``module.`` prefix on every name is dropped).

    Raises:
        ValueError: architecture mismatch, or a tensor missing, unused or mis-shaped (named).
    """
    fcos_common.assign_every_tensor(
        model, tianzhi_assignments(model), fcos_common.read_state_dict(state_dict), SOURCE
    )
