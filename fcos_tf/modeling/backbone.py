"""Backbones that turn an image into the feature maps C3, C4, C5 (strides 8, 16, 32).

* :class:`ResNet`: ResNet-50/101 with frozen BatchNorm (docs/design.md §3 item 1). Two layouts:
  ``"pytorch"`` puts the stride of a downsampling block on its 3x3 conv (torchvision),
  ``"caffe"`` on its first 1x1 conv (MSRA/Detectron ``stride_in_1x1``, and
  ``keras.applications``). Layer names follow torchvision's parameter names with dots
  replaced by underscores (``layer2_0_conv1``, ``layer2_0_downsample_0``, ``bn1``), so that a
  torchvision state dict or a ``keras.applications`` model maps onto them by name
  (:mod:`fcos_tf.importers.imagenet`).
* :class:`SmallBackbone`: a few conv + norm + ReLU stages (~0.3 M parameters) that trains in
  minutes on a CPU, for tests and smoke runs.
* MobileNetV2 and MobileNetV3-Large from ``keras.applications``
  (:class:`fcos_tf.modeling.mobilenet.MobileNetBackbone`), for the edge profile.
* The FCOS authors' MobileNetV2 (``"mobilenet_v2_fcos"``,
  :class:`fcos_tf.modeling.mobilenet_fcos.FCOSMobileNetV2`), for their released MNV2 models.

Every strided convolution pads explicitly and symmetrically (``ZeroPadding2D`` + ``valid``)
like PyTorch; TF's ``same`` pads more on the bottom/right for stride 2 (docs/design.md §2). The size
of ``C_l`` for an input ``H x W`` is therefore ``ceil(H / s) x ceil(W / s)``.
"""

import contextlib
import threading

import keras
import tensorflow as tf

from fcos_tf.modeling.group_norm import GroupNorm
from fcos_tf.modeling.mobilenet import MOBILE_BACKBONES, MobileNetBackbone
from fcos_tf.modeling.mobilenet_fcos import MOBILENET_V2_FCOS, FCOSMobileNetV2

# torchvision initialises ResNet convolutions with kaiming_normal_(mode="fan_out") (ReLU gain).
_RESNET_KERNEL_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
_BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_LAYOUTS = ("pytorch", "caffe")
# Names build_backbone accepts.
BACKBONES = ("small", "resnet50", "resnet101") + MOBILE_BACKBONES + (MOBILENET_V2_FCOS,)
_RESNET_NORMS = ("frozen_bn", "bn")
_SMALL_NORMS = ("group", "bn", "none")

# Set while a ResNet with ``fold_frozen_bn`` runs its forward pass (per thread, as a
# MirroredStrategy replica traces in its own thread): only then do its FrozenBNConv2D layers
# apply their norm and the norms pass their input through. Called on their own, or through
# another model built from them, the layers compute what a Conv2D and a FrozenBatchNorm do.
# ``training`` is the flag of that forward pass.
_FOLDING = threading.local()


def _folding_active():
    return getattr(_FOLDING, "depth", 0) > 0


def _folding_in_training():
    return _folding_active() and bool(getattr(_FOLDING, "training", False))


@contextlib.contextmanager
def _folded_frozen_norms(training=False):
    depth = getattr(_FOLDING, "depth", 0)
    outer_training = getattr(_FOLDING, "training", False)
    _FOLDING.depth, _FOLDING.training = depth + 1, bool(training)
    try:
        yield
    finally:
        _FOLDING.depth, _FOLDING.training = depth, outer_training


@keras.saving.register_keras_serializable(package="fcos_tf")
class FrozenBatchNorm(keras.layers.Layer):
    """BatchNorm with fixed statistics and affine parameters: ``y = x * scale + offset``.

    ``scale = gamma / sqrt(moving_variance + epsilon)``, ``offset = beta - moving_mean * scale``.
    All four weights are non-trainable and the layer computes the same thing whatever the
    ``training`` flag, so ImageNet statistics survive fine-tuning with small per-device
    batches (docs/design.md §3 item 1). The weight names and order (gamma, beta, moving_mean,
    moving_variance) are those of ``keras.layers.BatchNormalization``, so ``set_weights``
    takes a Keras BN layer's ``get_weights()`` unchanged.

    Args:
        epsilon: added to the variance; 1e-5 as PyTorch (``keras.applications`` uses 1.001e-5).
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not epsilon >= 0:
            raise ValueError(f"`epsilon` must be >= 0, got {epsilon}.")
        self.epsilon = float(epsilon)
        # Set by FrozenBNConv2D.fold_norm: inside its ResNet's forward pass, the conv feeding
        # this layer applies it.
        self.folded = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"FrozenBatchNorm needs a known channel dimension, got {input_shape}.")
        # autocast=False: the statistics stay float32 under mixed precision.
        for weight_name, init in (
            ("gamma", "ones"),
            ("beta", "zeros"),
            ("moving_mean", "zeros"),
            ("moving_variance", "ones"),
        ):
            setattr(
                self,
                weight_name,
                self.add_weight(
                    name=weight_name,
                    shape=(channels,),
                    initializer=init,
                    trainable=False,
                    autocast=False,
                ),
            )

    def affine(self):
        """``(scale, offset)``, float32 ``[C]``: the layer computes ``x * scale + offset``."""
        # TensorFlow ops on the values, read once: the same ops as Keras' variable
        # arithmetic, which takes several times longer to trace (53 norms in a ResNet-50).
        gamma, beta, mean, variance = (
            tf.convert_to_tensor(weight)
            for weight in (self.gamma, self.beta, self.moving_mean, self.moving_variance)
        )
        scale = gamma * tf.math.rsqrt(variance + self.epsilon)
        return scale, beta - mean * scale

    def call(self, inputs, training=None):
        del training  # Inference mode always.
        if self.folded and _folding_active():
            return inputs
        scale, offset = self.affine()
        outputs = tf.cast(inputs, self.variable_dtype) * scale + offset
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="fcos_tf")
class FrozenBNConv2D(keras.layers.Conv2D):
    """``Conv2D`` that can apply the :class:`FrozenBatchNorm` it feeds inside the convolution.

    After :meth:`fold_norm`, while its :class:`ResNet` runs its forward pass, the layer
    computes ``conv(x, W * scale) + offset`` (its own bias, if any, scaled too): what the conv
    followed by the norm computes, up to rounding, and the norm passes its input through. The
    weights stay where they are (the kernel here, the statistics in the norm), so
    checkpoints, the weight importers and the export's BatchNorm folding see the same layers
    as with a plain ``Conv2D``. A step saves the norm's multiply-add over the activations,
    its casts under mixed precision and its gradient, and a ReLU that follows fuses into the
    convolution. ``W * scale`` is taken in the variable dtype (float32 under a mixed policy)
    and rounded once to the compute dtype.

    Called on its own, or through another model built from the ResNet's layers (a sub-model
    that ends at this conv), the layer is a ``Conv2D``.

    In a training forward pass of its ResNet, a trainable 1x1 convolution of stride 1 in
    bfloat16 takes its kernel's gradient from a matrix product, ``reshape(x)^T @
    reshape(dy)``, instead of oneDNN's ``Conv2DBackpropFilter``, which runs 1x1 kernels in
    bfloat16 at about the float32 rate, 1.8-3.2x slower than the product on an AMX CPU
    (BENCHMARKS.md, "Train step: 1x1 kernel gradients as matrix products"; with AVX-512
    BF16 and no AMX the product is 0-40% faster). The forward
    convolution and the input's gradient are TensorFlow's own ops, unchanged. (A strided
    1x1 convolution keeps oneDNN's kernel gradient: sampling its input first costs more
    than the product saves.)
    """

    def __init__(self, *args, **kwargs):
        # The kernel is read in its own dtype and cast after the norm's scale is applied.
        kwargs["autocast"] = False
        super().__init__(*args, **kwargs)
        self._norm_affine = None

    def fold_norm(self, norm):
        """Apply ``norm`` (a :class:`FrozenBatchNorm` fed only by this layer) in this layer."""
        if not isinstance(norm, FrozenBatchNorm):
            raise TypeError(f"fold_norm takes a FrozenBatchNorm, got {type(norm).__name__}.")
        # A bound method, not the layer: the norm must not become a tracked sub-layer.
        self._norm_affine = norm.affine
        norm.folded = True

    def call(self, inputs):
        # TensorFlow ops on the weights' values, as in FrozenBatchNorm.affine.
        kernel = tf.convert_to_tensor(self.kernel)
        bias = tf.convert_to_tensor(self.bias) if self.use_bias else None
        if self._norm_affine is not None and _folding_active():
            scale, offset = self._norm_affine()
            kernel = kernel * tf.cast(scale, kernel.dtype)
            bias = offset if bias is None else tf.cast(bias, scale.dtype) * scale + offset
        kernel = tf.cast(kernel, self.compute_dtype)
        if self._matmul_kernel_gradient(inputs):
            outputs = _conv1x1_with_matmul_kernel_gradient(inputs, kernel, self.padding.upper())
        else:
            outputs = self.convolution_op(inputs, kernel)
        if bias is not None:
            # BiasAdd (as Keras' add of a vector), which grappler fuses into the convolution.
            outputs = tf.nn.bias_add(outputs, tf.cast(bias, self.compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _matmul_kernel_gradient(self, inputs):
        """Whether this call takes the kernel gradient of the class docstring's last part."""
        return (
            self.trainable
            and _folding_in_training()
            and self.compute_dtype == "bfloat16"
            and inputs.dtype == tf.bfloat16
            and tuple(self.kernel_size) == (1, 1)
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )


def _conv1x1_with_matmul_kernel_gradient(inputs, kernel, padding):
    """Stride-1 ``Conv2D`` of ``[B, H, W, Cin]`` with a 1x1 ``kernel`` whose gradient is a matmul.

    The kernel gradient of a 1x1 convolution of stride 1 (``same`` and ``valid`` alike pad
    nothing) is ``sum over locations of x (outer) dy``; the input gradient is the op
    TensorFlow's own ``Conv2D`` gradient uses.
    """

    @tf.custom_gradient
    def conv(x, w):
        outputs = tf.nn.conv2d(x, w, 1, padding)

        def gradient(upstream):
            with tf.name_scope("conv1x1_gradient"):
                d_x = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x),
                    filter=w,
                    out_backprop=upstream,
                    strides=[1, 1, 1, 1],
                    padding=padding,
                )
                return d_x, conv1x1_kernel_gradient(x, upstream)

        return outputs, gradient

    return conv(inputs, kernel)


def conv1x1_kernel_gradient(inputs, upstream):
    """The ``[1, 1, Cin, Cout]`` kernel gradient of a stride-1 1x1 convolution, as a matmul.

    ``sum over locations of x (outer) dy``: ``reshape(inputs)^T @ reshape(upstream)`` for
    ``[B, H, W, Cin]`` inputs and ``[B, H, W, Cout]`` upstream gradients.
    """
    channels_in, channels_out = inputs.shape[-1], upstream.shape[-1]
    kernel_gradient = tf.matmul(
        tf.reshape(inputs, [-1, channels_in]),
        tf.reshape(upstream, [-1, channels_out]),
        transpose_a=True,
    )
    return tf.reshape(kernel_gradient, [1, 1, channels_in, channels_out])


def _conv(
    x,
    filters,
    kernel_size,
    stride,
    name,
    trainable=True,
    use_bias=False,
    kernel_initializer=_RESNET_KERNEL_INIT,
    layer_class=keras.layers.Conv2D,
):
    """Conv with PyTorch padding ``kernel_size // 2``: explicit when strided, ``same`` otherwise.

    For odd kernels and stride 1, TF's ``same`` is the symmetric ``k // 2`` padding; for
    stride 2 it is not, hence the ``ZeroPadding2D`` (named ``<name>_pad``) + ``valid``.

    Returns:
        ``(outputs, conv layer)``.
    """
    padding = "same"
    if stride > 1:
        if kernel_size > 1:
            x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    conv = layer_class(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        trainable=trainable,
        name=name,
    )
    return conv(x), conv


def _conv_norm(x, filters, kernel_size, stride, name, norm_name, norm, trainable):
    """A ResNet conv and its norm; a frozen BN is folded into the conv when ``norm`` says so.

    Args:
        norm: ``(kind, epsilon, fold)``: kind ``"frozen_bn"`` or ``"bn"``; ``fold`` applies a
            frozen BN inside the conv (:class:`FrozenBNConv2D`).
    """
    kind, epsilon, fold = norm
    fold = fold and kind == "frozen_bn"
    layer_class = FrozenBNConv2D if fold else keras.layers.Conv2D
    y, conv = _conv(x, filters, kernel_size, stride, name, trainable, layer_class=layer_class)
    if kind == "frozen_bn":
        norm_layer = FrozenBatchNorm(epsilon=epsilon, name=norm_name)
    else:
        # A frozen stage's plain BN is set non-trainable, which also puts it in inference mode.
        norm_layer = keras.layers.BatchNormalization(
            epsilon=epsilon, momentum=0.9, trainable=trainable, name=norm_name
        )
    y = norm_layer(y)
    if fold:
        conv.fold_norm(norm_layer)
    return y


def _bottleneck(x, filters, stride, downsample, layout, norm, name, trainable):
    """ResNet bottleneck ``1x1 -> 3x3 -> 1x1 (x4 channels)`` plus a projection shortcut."""
    stride_1x1, stride_3x3 = (stride, 1) if layout == "caffe" else (1, stride)
    shortcut = x
    if downsample:
        names = (f"{name}_downsample_0", f"{name}_downsample_1")
        shortcut = _conv_norm(x, 4 * filters, 1, stride, *names, norm, trainable)
    y = _conv_norm(x, filters, 1, stride_1x1, f"{name}_conv1", f"{name}_bn1", norm, trainable)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv_norm(y, filters, 3, stride_3x3, f"{name}_conv2", f"{name}_bn2", norm, trainable)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv_norm(y, 4 * filters, 1, 1, f"{name}_conv3", f"{name}_bn3", norm, trainable)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@keras.saving.register_keras_serializable(package="fcos_tf")
class ResNet(keras.Model):
    """ResNet-50/101 trunk: float32 ``[B, H, W, 3]`` -> ``[C3, C4, C5]``.

    ``C3``: ``[B, ceil(H/8), ceil(W/8), 512]``, ``C4``: ``[B, ceil(H/16), ceil(W/16), 1024]``,
    ``C5``: ``[B, ceil(H/32), ceil(W/32), 2048]``. The input is already normalised as the
    weights expect (``fcos_tf.data.transforms.normalize_image``).

    Stages are numbered as in torchvision: 0 is the stem (``conv1``, ``bn1``, max-pool),
    1..4 are ``layer1``..``layer4`` (Detectron's res2..res5).

    Args:
        depth: 50 or 101.
        layout: ``"pytorch"`` (stride on the 3x3 conv, torchvision weights) or ``"caffe"``
            (stride on the first 1x1 conv, MSRA/Detectron and ``keras.applications`` weights).
        freeze_at: the stem and the first ``freeze_at - 1`` stages get non-trainable
            convolutions: 0 freezes nothing, 1 the stem, 2 (default, Detectron's
            ``FREEZE_CONV_BODY_AT=2`` and torchvision's ``trainable_backbone_layers=3``) the stem
            and ``layer1``, 5 everything. Setting ``trainable`` on the model afterwards
            overrides it.
        norm: ``"frozen_bn"`` (:class:`FrozenBatchNorm`, default) or ``"bn"`` (trainable
            ``keras.layers.BatchNormalization``; batch statistics are per replica).
        bn_epsilon: epsilon of every norm layer (1e-5 as PyTorch; 0, allowed with
            ``norm="frozen_bn"`` only, as maskrcnn-benchmark's ``FrozenBatchNorm2d``).
        min_level: 3 (default): ``[C3, C4, C5]``; 2: ``[C2, C3, C4, C5]`` with ``C2`` the
            output of ``layer1``, ``[B, ceil(H/4), ceil(W/4), 256]`` (for a P2 pyramid level).
        fold_frozen_bn: with ``norm="frozen_bn"``, the forward pass applies each norm inside
            the convolution before it (:class:`FrozenBNConv2D`; default): the same weights
            and outputs, a faster step.
        name: model name.
        **kwargs: passed to ``keras.Model``.
    """

    def __init__(
        self,
        depth=50,
        layout="pytorch",
        freeze_at=2,
        norm="frozen_bn",
        bn_epsilon=1e-5,
        min_level=3,
        fold_frozen_bn=True,
        name=None,
        **kwargs,
    ):
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"`depth` must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth!r}.")
        if layout not in _LAYOUTS:
            raise ValueError(f"`layout` must be one of {_LAYOUTS}, got {layout!r}.")
        if not (isinstance(freeze_at, int) and 0 <= freeze_at <= 5):
            raise ValueError(f"`freeze_at` must be an int in [0, 5], got {freeze_at!r}.")
        if norm not in _RESNET_NORMS:
            raise ValueError(f"`norm` must be one of {_RESNET_NORMS}, got {norm!r}.")
        # maskrcnn-benchmark's FrozenBatchNorm2d (the tianzhi0549/FCOS ResNets) has no
        # epsilon at all: 0 is allowed for frozen statistics, whose variances are stored.
        if not (bn_epsilon > 0 or (bn_epsilon == 0 and norm == "frozen_bn")):
            raise ValueError(
                f"`bn_epsilon` must be > 0 (or 0 with norm='frozen_bn'), got {bn_epsilon!r}."
            )
        _check_min_level(min_level)
        name = name or f"resnet{depth}"

        images = keras.Input(shape=(None, None, 3), name="images")
        stem_trainable = freeze_at < 1
        norm_spec = (norm, bn_epsilon, fold_frozen_bn)
        x = _conv_norm(images, 64, 7, 2, "conv1", "bn1", norm_spec, stem_trainable)
        x = keras.layers.ReLU(name="relu")(x)
        # PyTorch pads the max-pool with -inf; after the ReLU every window holds a value >= 0,
        # so zero padding gives the same maximum.
        x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)

        features = []
        for stage, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth], start=1):
            filters = 64 * 2 ** (stage - 1)
            for block in range(num_blocks):
                stride = 2 if (block == 0 and stage > 1) else 1
                x = _bottleneck(
                    x,
                    filters,
                    stride,
                    downsample=block == 0,
                    layout=layout,
                    norm=norm_spec,
                    name=f"layer{stage}_{block}",
                    trainable=freeze_at <= stage,
                )
            if stage + 1 >= min_level:
                features.append(x)

        super().__init__(inputs=images, outputs=features, name=name, **kwargs)
        self.depth = depth
        self.layout = layout
        self.freeze_at = freeze_at
        self.norm = norm
        self.bn_epsilon = float(bn_epsilon)
        self.min_level = int(min_level)
        self.fold_frozen_bn = bool(fold_frozen_bn)
        self.output_channels = (256, 512, 1024, 2048)[min_level - 2 :]
        self.strides = (4, 8, 16, 32)[min_level - 2 :]

    def call(self, inputs, training=None, mask=None):
        if not self.fold_frozen_bn:
            return super().call(inputs, training=training, mask=mask)
        with _folded_frozen_norms(training):
            return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return {
            "name": self.name,
            "depth": self.depth,
            "layout": self.layout,
            "freeze_at": self.freeze_at,
            "norm": self.norm,
            "bn_epsilon": self.bn_epsilon,
            "min_level": self.min_level,
            "fold_frozen_bn": self.fold_frozen_bn,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="fcos_tf")
class SmallBackbone(keras.Model):
    """A tiny CPU backbone: float32 ``[B, H, W, 3]`` -> ``[C3, C4, C5]`` at strides 8/16/32.

    Two stride-2 stem convs, then three stages of ``[3x3 stride-2 conv, 3x3 conv]``, each conv
    followed by a norm (GroupNorm: :class:`fcos_tf.modeling.group_norm.GroupNorm`) and a ReLU. With
    the defaults it has ~0.3 M parameters. Output sizes are ``ceil(H/s) x ceil(W/s)`` and channels
    ``channels``.

    Args:
        channels: output channels of C3, C4, C5.
        stem_channels: channels of the two stem convs.
        norm: ``"group"`` (default: per-example, so one device and several replicas compute
            the same thing), ``"bn"`` or ``"none"``.
        num_groups: groups of the GroupNorm; must divide every channel count.
        min_level: 3 (default): ``[C3, C4, C5]``; 2: ``[C2, C3, C4, C5]`` with ``C2`` the
            stem's output (stride 4, ``stem_channels``).
        name: model name.
        **kwargs: passed to ``keras.Model``.
    """

    def __init__(
        self,
        channels=(32, 64, 128),
        stem_channels=16,
        norm="group",
        num_groups=8,
        min_level=3,
        name="small_backbone",
        **kwargs,
    ):
        _check_min_level(min_level)
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"`channels` must be 3 positive ints, got {channels!r}.")
        if norm not in _SMALL_NORMS:
            raise ValueError(f"`norm` must be one of {_SMALL_NORMS}, got {norm!r}.")
        if norm == "group" and any(c % num_groups for c in (stem_channels,) + channels):
            raise ValueError(
                f"`num_groups`={num_groups} must divide `stem_channels` and every "
                f"entry of `channels`, got {stem_channels} and {channels}."
            )

        def conv_norm_relu(x, filters, stride, layer_name):
            x, _ = _conv(
                x,
                filters,
                3,
                stride,
                f"{layer_name}_conv",
                use_bias=norm == "none",
                kernel_initializer="he_normal",
            )
            if norm == "group":
                x = GroupNorm(num_groups, epsilon=1e-5, name=f"{layer_name}_norm")(x)
            elif norm == "bn":
                x = keras.layers.BatchNormalization(
                    epsilon=1e-5, momentum=0.9, name=f"{layer_name}_norm"
                )(x)
            return keras.layers.ReLU(name=f"{layer_name}_relu")(x)

        images = keras.Input(shape=(None, None, 3), name="images")
        x = conv_norm_relu(images, stem_channels, 2, "stem1")
        x = conv_norm_relu(x, stem_channels, 2, "stem2")
        features = [x] if min_level == 2 else []
        for level, filters in zip((3, 4, 5), channels):
            x = conv_norm_relu(x, filters, 2, f"c{level}_down")
            x = conv_norm_relu(x, filters, 1, f"c{level}_conv")
            features.append(x)

        super().__init__(inputs=images, outputs=features, name=name, **kwargs)
        self.channels = channels
        self.stem_channels = int(stem_channels)
        self.norm = norm
        self.num_groups = int(num_groups)
        self.min_level = int(min_level)
        self.output_channels = ((int(stem_channels),) if min_level == 2 else ()) + channels
        self.strides = (4, 8, 16, 32)[min_level - 2 :]

    def get_config(self):
        return {
            "name": self.name,
            "channels": list(self.channels),
            "stem_channels": self.stem_channels,
            "norm": self.norm,
            "num_groups": self.num_groups,
            "min_level": self.min_level,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Lowest backbone level a backbone family can return (C2 needs min_level=2).
MIN_LEVELS = (2, 3)


def _check_min_level(min_level):
    if min_level not in MIN_LEVELS:
        raise ValueError(f"`min_level` must be one of {MIN_LEVELS}, got {min_level!r}.")


def build_backbone(name: str, **kwargs) -> keras.Model:
    """Builds a backbone by name.

    Args:
        name: ``"resnet50"``, ``"resnet101"``, ``"small"``, ``"mobilenet_v2"``,
            ``"mobilenet_v3_large"`` or ``"mobilenet_v2_fcos"``.
        **kwargs: passed to :class:`ResNet` (``layout``, ``freeze_at``, ``norm``,
            ``bn_epsilon``, ``min_level``), :class:`SmallBackbone` (``min_level`` too) or
            :class:`fcos_tf.modeling.mobilenet.MobileNetBackbone` /
            :class:`fcos_tf.modeling.mobilenet_fcos.FCOSMobileNetV2` (``alpha``, ``norm``,
            ``weights``).

    Returns:
        A ``keras.Model`` mapping float32 ``[B, H, W, 3]`` to ``[C3, C4, C5]`` (``[C2, ...,
        C5]`` with ``min_level=2``), with
        ``.output_channels`` and ``.strides`` attributes.
    """
    if name == "resnet50":
        return ResNet(depth=50, **kwargs)
    if name == "resnet101":
        return ResNet(depth=101, **kwargs)
    if name == "small":
        return SmallBackbone(**kwargs)
    if name in MOBILE_BACKBONES:
        return MobileNetBackbone(variant=name, **kwargs)
    if name == MOBILENET_V2_FCOS:
        return FCOSMobileNetV2(**kwargs)
    raise ValueError(f"`name` must be one of {BACKBONES}, got {name!r}.")
