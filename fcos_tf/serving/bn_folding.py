"""Folding inference BatchNorm into the preceding convolution, for export.

A BatchNorm in inference mode is a per-channel affine map,
``y = x * scale + offset`` with ``scale = gamma / sqrt(moving_variance + epsilon)`` and
``offset = beta - moving_mean * scale``. When it directly follows a convolution whose output
feeds nothing else, ``conv(x, W) + b`` followed by it equals ``conv(x, W * scale) +
(b * scale + offset)`` (``scale`` on the output-channel axis of ``W``; for a depthwise
convolution, on its ``channels * depth_multiplier`` outputs). :func:`fold_batch_norms`
returns a copy of a detector with every such pair merged, so the exported graph holds
convolutions only: in an int8 model every weight is quantized with the statistics already
applied and no normalisation op is left between the convolutions.

Folding uses the moving statistics: the folded model computes what the original computes
with ``training=False``.
"""

import keras
import numpy as np

from fcos_tf.modeling.backbone import FrozenBatchNorm
from fcos_tf.modeling.head import FCOSHead

_NORM_TYPES = (keras.layers.BatchNormalization, FrozenBatchNorm)
_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="fcos_tf")
class FoldedNorm(keras.layers.Layer):
    """Where a BatchNorm was before it was folded into its conv: passes its input through.

    Takes the BatchNorm's call arguments (``mask``, ``training``) so that it slots into the
    functional graph in the BatchNorm's place.
    """

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def batch_norm_affine(norm):
    """``(scale, offset)`` float64 ``[C]`` of an inference-mode BatchNorm or FrozenBatchNorm."""
    gamma, beta, mean, variance = (
        np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in _norm_weights(norm)
    )
    scale = gamma / np.sqrt(variance + norm.epsilon)
    return scale, beta - mean * scale


def _norm_weights(norm):
    if isinstance(norm, FrozenBatchNorm):
        return norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance
    channels = norm.moving_mean.shape[0]
    gamma = norm.gamma if norm.scale else np.ones([channels])
    beta = norm.beta if norm.center else np.zeros([channels])
    return gamma, beta, norm.moving_mean, norm.moving_variance


def folded_conv_weights(conv, norm):
    """Kernel and bias (numpy float32) of ``conv`` with ``norm`` applied after it folded in.

    Args:
        conv: a built ``Conv2D`` or ``DepthwiseConv2D`` (with or without bias).
        norm: the ``BatchNormalization``/``FrozenBatchNorm`` fed by it (last axis).

    Returns:
        ``(kernel, bias)``: kernel of ``conv``'s shape, bias ``[C_out]``.
    """
    if isinstance(norm, keras.layers.BatchNormalization) and norm.axis not in (-1, 3):
        raise ValueError(f"{norm.name}: only channels-last BatchNorm folds, axis={norm.axis}.")
    scale, offset = batch_norm_affine(norm)
    kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # [kh, kw, C, M]: output channel c * M + m.
        kh, kw, channels, multiplier = kernel.shape
        kernel = (kernel.reshape(kh, kw, channels * multiplier) * scale).reshape(kernel.shape)
    else:
        kernel = kernel * scale  # [kh, kw, C_in, C_out]
    bias = np.asarray(keras.ops.convert_to_numpy(conv.bias), np.float64) if conv.use_bias else 0.0
    return kernel.astype(np.float32), (bias * scale + offset).astype(np.float32)


def _producer(tensor):
    return tensor._keras_history.operation


def _conv_norm_pairs(functional):
    """``{conv name: norm layer}`` for every BN whose input is a conv feeding only it."""
    consumers = {}
    for layer in functional.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                consumers.setdefault(id(_producer(tensor)), set()).add(layer.name)
    pairs = {}
    for layer in functional.layers:
        if not isinstance(layer, _NORM_TYPES) or len(layer._inbound_nodes) != 1:
            continue
        producer = _producer(layer.input)
        if (
            isinstance(producer, _CONV_TYPES)
            and len(producer._inbound_nodes) == 1
            and consumers.get(id(producer)) == {layer.name}
        ):
            pairs[producer.name] = layer
    return pairs


def fold_functional_batch_norms(model, dtype=None):
    """A functional ``model`` with every conv -> BatchNorm pair merged into one conv.

    BatchNorms that do not follow a convolution directly are left in place (none in the
    backbones of this package).

    Args:
        model: a functional ``keras.Model`` (e.g. a backbone), built.
        dtype: Keras dtype policy name of every layer of the copy (e.g. ``"bfloat16"``: weights
            stored and computed in bfloat16); None keeps each layer's own. The weights are
            folded in float64 and rounded once, to the copy's variable dtype.

    Returns:
        A new functional ``keras.Model`` (same inputs, outputs and layer names; each folded
        BN becomes a :class:`FoldedNorm` layer of the same name) computing the inference-mode
        outputs of ``model``.
    """
    graph = keras.Model(inputs=model.inputs, outputs=model.outputs, name=model.name)
    pairs = _conv_norm_pairs(graph)
    folded_norms = {norm.name for norm in pairs.values()}

    def clone(layer):
        config = layer.get_config()
        if dtype is not None and isinstance(layer, keras.layers.Layer):
            config["dtype"] = dtype  # (graph operations such as hard-swish's have none)
        if layer.name in pairs:
            config["use_bias"] = True
            return layer.__class__.from_config(config)
        if layer.name in folded_norms:
            return FoldedNorm(name=layer.name, dtype=config.get("dtype"))
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(graph, clone_function=clone)
    for layer in folded.layers:
        if not layer.weights:
            continue  # inputs (renamed by the clone), activations, folded norms
        source = graph.get_layer(layer.name)
        if layer.name in pairs:
            layer.set_weights(list(folded_conv_weights(source, pairs[layer.name])))
        else:
            layer.set_weights(source.get_weights())
    return folded


def fold_head_batch_norms(head):
    """An :class:`fcos_tf.modeling.head.FCOSHead` with ``norm=None`` computing ``head``'s outputs.

    Args:
        head: a built ``FCOSHead`` with ``norm`` ``"bn"`` or ``"sync_bn"`` (any other head
            is returned unchanged: GroupNorm depends on the input and does not fold).

    Returns:
        A built ``FCOSHead`` whose tower convs hold the folded BatchNorms.
    """
    if head.norm not in ("bn", "sync_bn"):
        return head
    config = head.get_config()
    config["norm"] = None
    folded = FCOSHead.from_config(config)
    in_channels = (
        head.cls_tower[0].kernel.shape[2] if head.num_convs else head.cls_logits.kernel.shape[2]
    )
    folded.build([(None, None, None, in_channels)] * head.num_levels)
    for source_tower, target_tower in (
        (head.cls_tower, folded.cls_tower),
        (head.box_tower, folded.box_tower),
    ):
        convs = [layer for layer in source_tower if isinstance(layer, keras.layers.Conv2D)]
        norms = [layer for layer in source_tower if isinstance(layer, _NORM_TYPES)]
        targets = [layer for layer in target_tower if isinstance(layer, keras.layers.Conv2D)]
        for conv, norm, target in zip(convs, norms, targets, strict=True):
            target.set_weights(list(folded_conv_weights(conv, norm)))
    for name in ("cls_logits", "box_pred", "centerness_pred"):
        if getattr(head, name) is not None:
            getattr(folded, name).set_weights(getattr(head, name).get_weights())
    for source, target in zip(head.scales, folded.scales, strict=True):
        target.set_weights(source.get_weights())
    return folded


def fold_batch_norms(model, dtype=None):
    """A copy of an ``FCOS`` detector with every BatchNorm folded into its convolution.

    The copy computes the original's inference outputs (up to float32 rounding) and holds
    no ``BatchNormalization``/``FrozenBatchNorm`` layer where a conv precedes it: the head's
    BN towers (``head_norm="bn"``/``"sync_bn"``) and the backbone's conv -> BN pairs.
    Convert the copy to TFLite (:func:`fcos_tf.serving.tflite.convert_tflite`); keep training the
    original.

    Args:
        model: a built ``fcos_tf.modeling.fcos.FCOS`` whose backbone is a functional
            ``keras.Model``.
        dtype: Keras dtype policy name of the copy (``"bfloat16"`` for a bfloat16 network;
            its outputs and post-processing stay float32); None: float32.

    Returns:
        A built ``FCOS`` with the same post-processing settings.
    """
    from fcos_tf.modeling.fcos import FCOS

    backbone = fold_functional_batch_norms(model.backbone, dtype=dtype)
    for attribute in ("output_channels", "strides", "pixel_norm"):
        if hasattr(model.backbone, attribute):
            setattr(backbone, attribute, getattr(model.backbone, attribute))
    config = model.get_config()
    config.pop("backbone")
    config.pop("dtype")
    if config["head_norm"] in ("bn", "sync_bn"):
        config["head_norm"] = None
    folded = FCOS(backbone, dtype=dtype, **config)
    folded.build((None, None, None, 3))
    folded.fpn.set_weights(model.fpn.get_weights())
    head = fold_head_batch_norms(model.head)
    folded.head.set_weights(head.get_weights())
    return folded


def count_batch_norms(model):
    """Number of BatchNorm/FrozenBatchNorm layers anywhere inside ``model``."""
    return sum(
        isinstance(layer, _NORM_TYPES)
        for layer in model._flatten_layers(include_self=True, recursive=True)
    )
