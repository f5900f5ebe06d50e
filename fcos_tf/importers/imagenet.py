"""Pretrained backbone weights: ``keras.applications`` ResNets and torchvision state dicts.

Two sources map onto :class:`fcos_tf.modeling.backbone.ResNet` by layer name:

* ``keras.applications.ResNet50/101`` (ImageNet, MSRA/caffe layout: stride on the first 1x1
  conv, BGR input minus the ImageNet mean, i.e. ``pixel_norm="caffe"``) into
  ``layout="caffe"``. Those models give every conv a bias and use BN epsilon 1.001e-5; both
  are folded into the frozen BN statistics (``mean -= conv_bias``,
  ``variance += 1.001e-5 - bn_epsilon``), which is exact, so the backbone keeps PyTorch's
  epsilon and bias-free convs.
* torchvision ResNet state dicts (``resnet50-*.pth``, ImageNet, RGB ``/255`` then mean/std,
  i.e. ``pixel_norm="torchvision"``) into ``layout="pytorch"``. Reading ``.pth`` files needs
  PyTorch (``pip install 'fcos_tf[torch]'``); ``torch.load(weights_only=True)`` never runs
  code from the file.

A mapping refuses, with an error naming the tensor, a source tensor that is missing,
mis-shaped or left unused, so that a wrong file or layout never loads silently.

``fcos-weights`` (:mod:`fcos_tf.weights`) writes either as a ``.weights.h5`` of the backbone
that ``config.backbone.weights`` takes.
"""

import os

import keras
import numpy as np

from fcos_tf.modeling.backbone import FrozenBatchNorm, ResNet

# Entries of an ImageNet torchvision ResNet state dict that the detector has no use for.
_TORCHVISION_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_NORM_TORCH_SUFFIXES = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


# --------------------------------------------------------------------------------------------
# State-dict plumbing shared with fcos_tf.importers.torchvision
# --------------------------------------------------------------------------------------------


def read_torch_state_dict(path):
    """Reads a PyTorch checkpoint into ``{name: float32 numpy array}``.

    Args:
        path: a ``.pth``/``.pt`` file holding a state dict, or a dict with the state dict
            under ``"model"`` or ``"state_dict"`` (training checkpoints).

    Returns:
        dict from parameter/buffer name to a numpy array (PyTorch layout, e.g. conv weights
        ``[O, I, kh, kw]``).

    Raises:
        ImportError: PyTorch is not installed.
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds something other than a state dict.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"`path`={path!r} does not exist.")
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch .pth files needs PyTorch: pip install "
            "'fcos_tf[torch]' (or `pip install torch`)."
        ) from error
    content = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(content, dict):
        for key in ("model", "state_dict"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not all(torch.is_tensor(v) for v in content.values()):
        raise ValueError(f"{path} does not hold a PyTorch state dict (name -> tensor).")
    return {name: tensor.detach().cpu().numpy() for name, tensor in content.items()}


def torch_conv_to_keras(kernel):
    """PyTorch conv weight ``[O, I, kh, kw]`` -> Keras ``[kh, kw, I, O]``."""
    return np.transpose(kernel, (2, 3, 1, 0))


def assign_state_dict(assignments, state_dict, *, ignore=(), source="state dict"):
    """Copies state-dict tensors into Keras variables; every tensor must be used exactly once.

    Args:
        assignments: list of ``(torch_name, keras_variable, transform)``; ``transform`` maps
            the numpy array to the variable's layout (``None`` = unchanged).
        state_dict: ``{name: numpy array}``.
        ignore: predicate or collection of names that may stay unused (classifier heads,
            ``num_batches_tracked`` counters).
        source: what the state dict is, for error messages.

    Raises:
        ValueError: a tensor is missing, mis-shaped, used twice, or left unused; a variable
            is assigned twice.
    """
    is_ignored = ignore if callable(ignore) else (lambda name: name in ignore)
    used, assigned = set(), set()
    missing = [name for name, _, _ in assignments if name not in state_dict]
    if missing:
        raise ValueError(
            f"{source}: missing tensor(s) {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)} in all)."
        )
    for name, variable, transform in assignments:
        if name in used:
            raise ValueError(f"{source}: tensor {name!r} is mapped twice.")
        if id(variable) in assigned:
            raise ValueError(f"{source}: variable {variable.path} is assigned twice.")
        value = np.asarray(state_dict[name], dtype=np.float32)
        if transform is not None:
            value = transform(value)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{source}: tensor {name!r} of shape {state_dict[name].shape} does "
                f"not fit {variable.path} of shape {tuple(variable.shape)}."
            )
        variable.assign(value)
        used.add(name)
        assigned.add(id(variable))
    unused = sorted(name for name in state_dict if name not in used and not is_ignored(name))
    if unused:
        raise ValueError(
            f"{source}: unused tensor(s) {unused[:10]}"
            f"{' ...' if len(unused) > 10 else ''} ({len(unused)} in all); wrong "
            f"file or wrong model configuration?"
        )


def _norm_layer_variables(layer):
    return [
        (torch_suffix, getattr(layer, keras_name))
        for keras_name, torch_suffix in _NORM_TORCH_SUFFIXES
    ]


def torchvision_resnet_assignments(backbone, prefix=""):
    """``(torch_name, variable, transform)`` for every weight of a pytorch-layout ResNet.

    Keras layer ``layer2_0_downsample_1`` holds torchvision's ``layer2.0.downsample.1``.

    Args:
        backbone: a :class:`fcos_tf.modeling.backbone.ResNet` with ``layout="pytorch"``.
        prefix: prefix of the torchvision names (``"backbone.body."`` inside detectors).

    Returns:
        list of ``(torch_name, keras_variable, transform)``.
    """
    _check_resnet(backbone, "pytorch", "torchvision")
    assignments = []
    for layer in backbone.layers:
        torch_name = prefix + layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            assignments.append((f"{torch_name}.weight", layer.kernel, torch_conv_to_keras))
        elif isinstance(layer, (FrozenBatchNorm, keras.layers.BatchNormalization)):
            assignments.extend(
                (f"{torch_name}.{suffix}", variable, None)
                for suffix, variable in _norm_layer_variables(layer)
            )
    return assignments


def _check_resnet(backbone, layout, source):
    if not isinstance(backbone, ResNet):
        raise TypeError(
            f"`backbone` must be a fcos_tf.modeling.backbone.ResNet, got {type(backbone).__name__}."
        )
    if backbone.layout != layout:
        raise ValueError(
            f"{source} ResNet weights need a backbone with layout={layout!r} "
            f"(where the stride of a downsampling block sits), got "
            f"layout={backbone.layout!r}."
        )


def load_torchvision_resnet_weights(backbone, state_dict):
    """Loads an ImageNet torchvision ResNet state dict into a ``layout="pytorch"`` ResNet.

    The classifier (``fc.*``) and BN ``num_batches_tracked`` counters are ignored; every
    other tensor must map onto the backbone and every backbone weight is set.

    Args:
        backbone: :class:`fcos_tf.modeling.backbone.ResNet` (``layout="pytorch"``, depth matching).
        state_dict: ``{name: array}`` or a path to a ``.pth`` file.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = read_torch_state_dict(os.fspath(state_dict))
    assignments = torchvision_resnet_assignments(backbone)
    _check_covers(backbone, assignments)
    assign_state_dict(
        assignments,
        state_dict,
        source="torchvision ResNet state dict",
        ignore=lambda name: (
            name in _TORCHVISION_CLASSIFIER_KEYS or name.endswith("num_batches_tracked")
        ),
    )


def _check_covers(model, assignments):
    assigned = {id(variable) for _, variable, _ in assignments}
    left = [v.path for v in model.weights if id(v) not in assigned]
    if left:
        raise ValueError(f"No source tensor for {left[:10]} ({len(left)} in all).")


# --------------------------------------------------------------------------------------------
# keras.applications
# --------------------------------------------------------------------------------------------


def keras_applications_layer_name(name):
    """Name in ``keras.applications.ResNet50/101`` of a :class:`ResNet` conv or norm layer.

    ``conv1`` -> ``conv1_conv``, ``bn1`` -> ``conv1_bn``, ``layer2_0_conv1`` ->
    ``conv3_block1_1_conv``, ``layer2_0_bn3`` -> ``conv3_block1_3_bn``,
    ``layer2_0_downsample_0`` -> ``conv3_block1_0_conv``, ``..._downsample_1`` -> ``..._0_bn``.
    """
    if name in ("conv1", "bn1"):
        return "conv1_conv" if name == "conv1" else "conv1_bn"
    parts = name.split("_")
    if len(parts) < 3 or not parts[0].startswith("layer"):
        raise ValueError(f"{name!r} is not a ResNet conv or norm layer name.")
    stage, block = int(parts[0][len("layer") :]), int(parts[1])
    prefix = f"conv{stage + 1}_block{block + 1}"
    if parts[2] == "downsample":
        return f"{prefix}_0_{'conv' if parts[3] == '0' else 'bn'}"
    kind, index = parts[2][:-1], parts[2][-1]
    return f"{prefix}_{index}_{'conv' if kind == 'conv' else 'bn'}"


def _conv_norm_pairs(backbone):
    """``(conv_layer, norm_layer)`` pairs of a ResNet: each conv feeds exactly one norm."""
    pairs = []
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            name = layer.name
            if name == "conv1":
                norm_name = "bn1"
            elif name.endswith("downsample_0"):
                norm_name = name[:-1] + "1"
            else:
                norm_name = name[: -len("convX")] + "bn" + name[-1]
            pairs.append((layer, backbone.get_layer(norm_name)))
    return pairs


def copy_keras_applications_weights(backbone, source):
    """Copies a ``keras.applications`` ResNet (v1) into a ``layout="caffe"`` :class:`ResNet`.

    Conv biases and the BN epsilon of ``source`` are folded into the target's BN statistics
    (``moving_mean - bias``, ``moving_variance + source_eps - target_eps``), exact up to
    float32 rounding. Every conv and BN of ``source`` must be used.

    Args:
        backbone: :class:`ResNet` with ``layout="caffe"``, same depth as ``source``.
        source: ``keras.applications.ResNet50/101`` (any ``include_top``; the classifier is
            not used).

    Raises:
        ValueError: depth or layout mismatch, or a layer of ``source`` left unused.
    """
    _check_resnet(backbone, "caffe", "keras.applications")
    used = set()
    for conv, norm in _conv_norm_pairs(backbone):
        source_conv = _get_source_layer(source, keras_applications_layer_name(conv.name))
        source_norm = _get_source_layer(source, keras_applications_layer_name(norm.name))
        kernel = source_conv.kernel.numpy()
        if kernel.shape != tuple(conv.kernel.shape):
            raise ValueError(
                f"keras.applications layer {source_conv.name} has kernel shape "
                f"{kernel.shape}, {conv.name} expects {tuple(conv.kernel.shape)}."
            )
        bias = source_conv.bias.numpy() if source_conv.use_bias else 0.0
        gamma, beta, mean, variance = (
            w.numpy()
            for w in (
                source_norm.gamma,
                source_norm.beta,
                source_norm.moving_mean,
                source_norm.moving_variance,
            )
        )
        variance = variance + (source_norm.epsilon - norm.epsilon)
        if np.any(variance < 0):
            raise ValueError(
                f"Cannot fold epsilon {source_norm.epsilon} of {source_norm.name} "
                f"into {norm.name} (epsilon {norm.epsilon}): a variance would be "
                f"negative. Build the backbone with a smaller `bn_epsilon`."
            )
        conv.kernel.assign(kernel)
        norm.set_weights([gamma, beta, mean - bias, variance])
        used.update((source_conv.name, source_norm.name))
    unused = [
        layer.name
        for layer in source.layers
        if layer.weights and layer.name not in used and not layer.name.startswith("predictions")
    ]
    if unused:
        raise ValueError(
            f"keras.applications model {source.name!r} has layers {unused[:10]} "
            f"that the backbone does not use: does `depth` match?"
        )


def _get_source_layer(source, name):
    try:
        return source.get_layer(name)
    except ValueError:
        raise ValueError(
            f"keras.applications model {source.name!r} has no layer {name!r}: "
            f"does the backbone depth match?"
        ) from None


class DownloadError(RuntimeError):
    """The ``keras.applications`` ImageNet weights could not be downloaded; the message says
    how to use a local copy instead."""


def build_keras_applications_resnet(depth=50, weights="imagenet"):
    """``keras.applications.ResNet{depth}(include_top=False)`` with the given weights.

    Args:
        depth: 50 or 101.
        weights: ``"imagenet"`` (downloaded by Keras into ``~/.keras/models`` on first use),
            or a local path to the ``keras.applications`` weight file
            (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` or a ``.weights.h5``
            saved from such a model), or ``None`` (random).

    Raises:
        FileNotFoundError: a path that does not exist.
        DownloadError: the download failed (offline machine), with what to do instead.
    """
    constructors = {50: "ResNet50", 101: "ResNet101"}
    if depth not in constructors:
        raise ValueError(f"`depth` must be 50 or 101, got {depth!r}.")
    if weights not in (None, "imagenet") and not os.path.exists(os.fspath(weights)):
        raise FileNotFoundError(
            f"`weights`={weights!r} is neither 'imagenet' nor an existing file."
        )
    constructor = getattr(keras.applications, constructors[depth])
    try:
        return constructor(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as error:
        if weights != "imagenet":
            raise
        filename = f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        reason = " ".join(str(error).split())  # one line
        raise DownloadError(
            f"Could not download the keras.applications ImageNet weights of ResNet-{depth} "
            f"({reason}). On a machine without internet access, copy {filename} (from "
            f"~/.keras/models/ of a machine where `keras.applications.{constructors[depth]}("
            f"include_top=False)` ran) and give its local path instead of 'imagenet' "
            f"(`fcos-weights --source=<path>`)."
        ) from error


def load_keras_applications_weights(backbone, weights="imagenet"):
    """Loads ``keras.applications`` ImageNet ResNet weights into a caffe-layout backbone.

    Args:
        backbone: :class:`fcos_tf.modeling.backbone.ResNet` with ``layout="caffe"``.
        weights: ``"imagenet"`` (download) or a local ``.h5``/``.weights.h5`` path of the
            ``keras.applications`` model (see :func:`build_keras_applications_resnet`).
    """
    _check_resnet(backbone, "caffe", "keras.applications")
    source = build_keras_applications_resnet(backbone.depth, weights)
    copy_keras_applications_weights(backbone, source)


# --------------------------------------------------------------------------------------------
# One entry point for the scripts
# --------------------------------------------------------------------------------------------

WEIGHT_SOURCES = ("auto", "fcos_tf", "keras_applications", "torchvision")


def load_backbone_weights(backbone, weights, source="auto"):
    """Initialises ``backbone`` from ``weights``.

    Args:
        backbone: the backbone model.
        weights: ``"imagenet"`` (``keras.applications`` download) or a file path.
        source: what the file is:
            * ``"fcos_tf"``: a ``.weights.h5`` saved from a backbone of the same architecture
              (``backbone.save_weights``, or the command line of this module);
            * ``"keras_applications"``: ``keras.applications`` ResNet weights, ``.h5`` or
              ``.weights.h5`` (``layout="caffe"``);
            * ``"torchvision"``: a ``.pth``/``.pt`` ResNet state dict (``layout="pytorch"``);
            * ``"auto"`` (default): ``"imagenet"`` and ``.h5`` -> keras_applications,
              ``.weights.h5`` -> fcos_tf, ``.pth``/``.pt`` -> torchvision.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown ``source`` or a file that does not fit the backbone.
        DownloadError: ``"imagenet"`` could not be downloaded.
    """
    if source not in WEIGHT_SOURCES:
        raise ValueError(f"`source` must be one of {WEIGHT_SOURCES}, got {source!r}.")
    if weights == "imagenet":
        if source not in ("auto", "keras_applications"):
            raise ValueError(
                f"`weights`='imagenet' is a keras_applications source, got `source`={source!r}."
            )
        load_keras_applications_weights(backbone, "imagenet")
        return
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"`weights`={path!r} does not exist.")
    if source == "auto":
        if path.endswith((".pth", ".pt")):
            source = "torchvision"
        elif path.endswith(".weights.h5"):
            source = "fcos_tf"
        elif path.endswith(".h5"):
            source = "keras_applications"
        else:
            raise ValueError(
                f"`weights`={path!r}: cannot tell its format from the extension "
                f"(.weights.h5, .h5, .pth); pass `source`."
            )
    if source == "torchvision":
        load_torchvision_resnet_weights(backbone, path)
    elif source == "keras_applications":
        load_keras_applications_weights(backbone, path)
    else:
        backbone.load_weights(path)
