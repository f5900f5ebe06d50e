"""Pieces shared by the importers of the FCOS authors' checkpoints (AdelaiDet, tianzhi0549/FCOS).

Both codes build the same head (two towers of ``conv3x3 -> norm -> ReLU`` in an
``nn.Sequential``, so convs at indices ``0, 3, 6, 9`` and norms at ``1, 4, 7, 10``; the
predictors ``cls_logits``, ``bbox_pred`` and a centerness conv; one ``Scale`` per level) and the
same ResNet and FPN under other names. The functions here return
``(torch_name, keras_variable, transform)`` lists for
:func:`fcos_tf.importers.imagenet.assign_state_dict`, which checks that every tensor is used
exactly once.
"""

import keras
import numpy as np

from fcos_tf.importers import imagenet as weights_lib
from fcos_tf.modeling.backbone import FrozenBatchNorm

_NORM_SUFFIXES = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


def read_state_dict(state_dict):
    """``{name: array}`` of a state dict or of the path of a ``.pth`` file (``{"model": ...}``
    or a bare state dict), without a ``module.`` prefix on every name."""
    if not isinstance(state_dict, dict):
        state_dict = weights_lib.read_torch_state_dict(str(state_dict))
    return strip_module_prefix(state_dict)


def assign_every_tensor(model, assignments, state_dict, source, ignored=()):
    """Sets every weight of ``model`` from ``state_dict``: each model weight needs a source
    tensor and each source tensor a weight, except BatchNorm counters and ``ignored`` names.

    Raises:
        ValueError: naming a model weight without a tensor, or a tensor missing, unused or
            mis-shaped.
    """
    check_covers(model, assignments, source)
    weights_lib.assign_state_dict(
        assignments,
        state_dict,
        source=source,
        ignore=lambda name: name.endswith("num_batches_tracked") or name in ignored,
    )


def strip_module_prefix(state_dict):
    """Drops the ``module.`` of a DistributedDataParallel model when every name has it."""
    if state_dict and all(name.startswith("module.") for name in state_dict):
        return {name[len("module.") :]: value for name, value in state_dict.items()}
    return dict(state_dict)


def depthwise_to_keras(kernel):
    """PyTorch depthwise weight ``[C, 1, kh, kw]`` -> Keras ``[kh, kw, C, 1]``."""
    return np.transpose(kernel, (2, 3, 0, 1))


def scalar(value):
    """A PyTorch ``Scale`` parameter ``[1]`` -> the Keras scalar ``()``."""
    if value.size != 1:
        return value  # the shape check then names the tensor
    return value.reshape(())


def conv_pair(prefix, conv):
    """``prefix.weight`` and ``prefix.bias`` of a biased conv."""
    return [
        (f"{prefix}.weight", conv.kernel, weights_lib.torch_conv_to_keras),
        (f"{prefix}.bias", conv.bias, None),
    ]


def norm_assignments(prefix, layer):
    """``prefix.{weight,bias,running_mean,running_var}`` of a BatchNorm/FrozenBatchNorm."""
    return [
        (f"{prefix}.{torch_suffix}", getattr(layer, keras_name), None)
        for keras_name, torch_suffix in _NORM_SUFFIXES
    ]


def resnet_assignments(backbone, torch_name):
    """Every weight of a :class:`fcos_tf.modeling.backbone.ResNet` under the source's names.

    Args:
        backbone: the ResNet.
        torch_name: maps a Keras layer name (``conv1``, ``bn1``, ``layer2_0_conv1``,
            ``layer2_0_bn1``, ``layer2_0_downsample_0``, ``layer2_0_downsample_1``) to the
            source's module name.
    """
    assignments = []
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assignments.append(
                (f"{torch_name(layer.name)}.weight", layer.kernel, weights_lib.torch_conv_to_keras)
            )
        elif isinstance(layer, (FrozenBatchNorm, keras.layers.BatchNormalization)):
            assignments += norm_assignments(torch_name(layer.name), layer)
    return assignments


def head_assignments(head, prefix, centerness_name):
    """Every weight of an :class:`fcos_tf.modeling.head.FCOSHead` under the source's names.

    Args:
        head: the head (GroupNorm, or one BatchNorm per level at each tower position).
        prefix: ``"proposal_generator.fcos_head."`` (AdelaiDet) or ``"rpn.head."`` (tianzhi).
        centerness_name: ``"ctrness"`` (AdelaiDet) or ``"centerness"`` (tianzhi).
    """
    assignments = []
    for torch_tower, tower in (("cls_tower", head.cls_tower), ("bbox_tower", head.box_tower)):
        index = 0
        for layer in tower:
            if isinstance(layer, keras.layers.Conv2D):
                assignments += conv_pair(f"{prefix}{torch_tower}.{index}", layer)
            elif isinstance(layer, tuple):  # one BatchNorm per level
                for level, norm in enumerate(layer):
                    assignments += norm_assignments(f"{prefix}{torch_tower}.{index}.{level}", norm)
            elif isinstance(layer, keras.layers.GroupNormalization):
                assignments += [
                    (f"{prefix}{torch_tower}.{index}.weight", layer.gamma, None),
                    (f"{prefix}{torch_tower}.{index}.bias", layer.beta, None),
                ]
            elif isinstance(layer, keras.layers.BatchNormalization):
                assignments += norm_assignments(f"{prefix}{torch_tower}.{index}", layer)
            index += 1
    assignments += conv_pair(f"{prefix}cls_logits", head.cls_logits)
    assignments += conv_pair(f"{prefix}bbox_pred", head.box_pred)
    assignments += conv_pair(f"{prefix}{centerness_name}", head.centerness_pred)
    assignments += [
        (f"{prefix}scales.{level}.scale", scale.scale, scalar)
        for level, scale in enumerate(head.scales)
    ]
    return assignments


def check_covers(model, assignments, source):
    """Fails naming the model weights no source tensor sets."""
    assigned = {id(variable) for _, variable, _ in assignments}
    left = [v.path for v in model.weights if id(v) not in assigned]
    if left:
        raise ValueError(f"No {source} tensor for model weights {left[:10]} ({len(left)} in all).")


def check_model(model, source, expected):
    """Fails listing every ``attribute: (found, expected)`` of ``model`` that differs."""
    problems = [
        f"{name}={getattr(model, name)!r} (needs {value!r})"
        for name, value in expected.items()
        if getattr(model, name) != value
    ]
    if problems:
        raise ValueError(
            f"The model does not have the {source} architecture: {'; '.join(problems)}."
        )
