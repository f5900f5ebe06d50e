r"""torchvision's ``fcos_resnet50_fpn`` COCO weights mapped onto this package's ``FCOS``.

``fcos-convert-torchvision`` (:mod:`fcos_tf.convert_torchvision`) writes them into a run
directory with the recipe ``fcos_torchvision_r50``.

The model is this package's FCOS with torchvision's settings (docs/design.md §3, after
item 20): ResNet-50 with the stride on the 3x3 conv and frozen BN eps 1e-5, P6 from P5,
GroupNorm heads with centerness on the regression tower, box output ``relu(x) * stride``
with no per-level scale (the scales are set to 1.0), locations at ``(j * s, i * s)``
(``location_offset=0``), candidates by final score ``sqrt(cls * ctr) > 0.2``, RGB ImageNet
normalisation. torchvision numbers classes by COCO category id (91 logits, 0 = background
and 11 unused ids): the 80 rows of the real categories are kept, in the order of
:data:`fcos_tf.data.label_map.COCO_2017_CATEGORIES`.

Every tensor of the file must map onto the model and every model weight must be set; a
missing, unused or mis-shaped tensor is an error naming it. Reading the file needs PyTorch
(``pip install 'fcos_tf[torch]'``); it is read with ``torch.load(weights_only=True)``.
"""

import os
import re

import keras
import numpy as np

from fcos_tf.data.label_map import COCO_2017_CATEGORIES
from fcos_tf.importers import imagenet as weights_lib
from fcos_tf.modeling.backbone import ResNet

# Logits of torchvision's COCO detectors: index = COCO category id, 0..90.
TORCHVISION_NUM_LOGITS = 91
_LEGACY_FPN_NAME = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")


def normalise_state_dict_names(state_dict):
    """Renames pre-0.13 torchvision FPN entries ``inner_blocks.0.weight`` to ``...0.0.weight``.

    torchvision 0.13 wrapped each FPN conv in a ``Conv2dNormActivation`` (a Sequential), which
    added a ``.0``; the published COCO checkpoint predates it.
    """
    renamed = {}
    for name, value in state_dict.items():
        match = _LEGACY_FPN_NAME.match(name)
        new_name = f"{match.group(1)}.0.{match.group(2)}" if match else name
        if new_name in renamed:
            raise ValueError(f"state dict: {name!r} and another entry both map to {new_name!r}.")
        renamed[new_name] = value
    return renamed


def _check_architecture(model):
    backbone = model.backbone
    problems = []
    if not (isinstance(backbone, ResNet) and backbone.depth == 50 and backbone.layout == "pytorch"):
        problems.append("backbone must be ResNet(depth=50, layout='pytorch')")
    if model.fpn_channels != 256 or model.p6_input != "p5" or len(model.strides) != 5:
        problems.append("FPN must have 256 channels, P6 from P5 and levels P3-P7")
    if model.head_num_convs != 4 or model.head_norm != "group" or model.head_num_groups != 32:
        problems.append("head towers must be 4 convs with GroupNorm(32)")
    if model.centerness_on != "regression":
        problems.append("centerness must be on the regression tower")
    if not model.norm_reg_targets:
        problems.append("norm_reg_targets must be True (box = relu(x) * stride)")
    if problems:
        raise ValueError(
            "The model does not have torchvision fcos_resnet50_fpn's architecture: "
            + "; ".join(problems)
            + "."
        )


def _conv_pair(prefix, conv):
    return [
        (f"{prefix}.weight", conv.kernel, weights_lib.torch_conv_to_keras),
        (f"{prefix}.bias", conv.bias, None),
    ]


def _tower_assignments(prefix, tower):
    """``conv.{3i}`` (conv) and ``conv.{3i+1}`` (GroupNorm) of a torchvision head tower."""
    assignments = []
    convs = [layer for layer in tower if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in tower if isinstance(layer, keras.layers.GroupNormalization)]
    for index, (conv, norm) in enumerate(zip(convs, norms)):
        assignments += _conv_pair(f"{prefix}.conv.{3 * index}", conv)
        assignments += [
            (f"{prefix}.conv.{3 * index + 1}.weight", norm.gamma, None),
            (f"{prefix}.conv.{3 * index + 1}.bias", norm.beta, None),
        ]
    return assignments


def torchvision_fcos_assignments(model, class_ids):
    """``(torch_name, variable, transform)`` for every weight of ``model`` but the scales.

    Args:
        model: a built :class:`fcos_tf.modeling.fcos.FCOS` with torchvision's architecture.
        class_ids: COCO category id (= torchvision logit row) of each of the model's
            ``num_classes`` classes.
    """
    _check_architecture(model)
    class_ids = np.asarray(class_ids, np.int64)
    if class_ids.shape != (model.num_classes,):
        raise ValueError(
            f"`class_ids` must hold one id per class ({model.num_classes}), got "
            f"{class_ids.shape[0]}."
        )
    if class_ids.min() < 0 or class_ids.max() >= TORCHVISION_NUM_LOGITS:
        raise ValueError(
            f"`class_ids` must be in [0, {TORCHVISION_NUM_LOGITS}), got {class_ids.tolist()}."
        )

    def pick_kernel(value):
        if value.shape[0] != TORCHVISION_NUM_LOGITS:
            raise ValueError(
                f"state dict: head.classification_head.cls_logits.weight has "
                f"{value.shape[0]} rows, expected {TORCHVISION_NUM_LOGITS} (one "
                f"per COCO category id)."
            )
        return weights_lib.torch_conv_to_keras(value[class_ids])

    def pick_bias(value):
        if value.shape[0] != TORCHVISION_NUM_LOGITS:
            raise ValueError(
                f"state dict: head.classification_head.cls_logits.bias has "
                f"{value.shape[0]} entries, expected {TORCHVISION_NUM_LOGITS}."
            )
        return value[class_ids]

    assignments = weights_lib.torchvision_resnet_assignments(
        model.backbone, prefix="backbone.body."
    )
    fpn = model.fpn
    for index in range(3):
        assignments += _conv_pair(f"backbone.fpn.inner_blocks.{index}.0", fpn.lateral_convs[index])
        assignments += _conv_pair(f"backbone.fpn.layer_blocks.{index}.0", fpn.output_convs[index])
    for level, conv in zip(("p6", "p7"), fpn.extra_convs):
        assignments += _conv_pair(f"backbone.fpn.extra_blocks.{level}", conv)
    head = model.head
    assignments += _tower_assignments("head.classification_head", head.cls_tower)
    assignments += _tower_assignments("head.regression_head", head.box_tower)
    assignments += [
        ("head.classification_head.cls_logits.weight", head.cls_logits.kernel, pick_kernel),
        ("head.classification_head.cls_logits.bias", head.cls_logits.bias, pick_bias),
    ]
    assignments += _conv_pair("head.regression_head.bbox_reg", head.box_pred)
    assignments += _conv_pair("head.regression_head.bbox_ctrness", head.centerness_pred)
    return assignments


def load_torchvision_fcos_weights(model, state_dict, class_ids=None):
    """Sets every weight of ``model`` from a torchvision ``fcos_resnet50_fpn`` state dict.

    Args:
        model: a built :class:`fcos_tf.modeling.fcos.FCOS` with torchvision's architecture (e.g.
            ``fcos_tf.core.builders.build_model(load_recipe("fcos_torchvision_r50"), 80)``).
        state_dict: ``{name: array}`` or a path to the ``.pth`` file.
        class_ids: COCO category id of each model class; default the 80 COCO 2017 ids
            (``model.num_classes`` must then be 80).

    Raises:
        ValueError: architecture mismatch, or a tensor missing, unused or mis-shaped.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = weights_lib.read_torch_state_dict(os.fspath(state_dict))
    state_dict = normalise_state_dict_names(state_dict)
    if class_ids is None:
        class_ids = [category_id for category_id, _ in COCO_2017_CATEGORIES]
    assignments = torchvision_fcos_assignments(model, class_ids)
    # torchvision's FCOS has no per-level scale: exactly a scale of 1.
    scales = [scale.scale for scale in model.head.scales]
    assigned = {id(variable) for _, variable, _ in assignments} | {id(s) for s in scales}
    left = [v.path for v in model.weights if id(v) not in assigned]
    if left:
        raise ValueError(
            f"No torchvision tensor for model weights {left[:10]} ({len(left)} in all)."
        )
    weights_lib.assign_state_dict(
        assignments,
        state_dict,
        source="torchvision fcos_resnet50_fpn state dict",
        ignore=lambda name: name.endswith("num_batches_tracked"),
    )
    for scale in scales:
        scale.assign(1.0)
