"""The FCOS authors' MobileNetV2 (tianzhi0549/FCOS ``MNV2-FPN-RETINANET``) -> C3, C4, C5.

The same network as ``keras.applications.MobileNetV2`` at width 1 (inverted residual blocks,
ReLU6, linear bottlenecks), but built as the PyTorch code of the authors' released
``FCOS_*_MNV2_FPN_1x`` models computes it, so that their weights import exactly:

* every stride-2 3x3 convolution pads one pixel on every side (``ZeroPadding2D(1)`` +
  ``valid``); ``keras.applications`` pads bottom/right only, a one-pixel shift;
* BatchNorm epsilon 1e-5 (PyTorch's; ``keras.applications`` uses 1e-3);
* no final 1x1 conv to 1280 channels;
* taps at the outputs of the authors' ``features.6``, ``features.13`` and ``features.17``:
  C3 32 channels (stride 8), C4 96 (16), C5 320 (32).

Layer names are those of ``keras.applications.MobileNetV2`` (``Conv1``, ``bn_Conv1``,
``expanded_conv_depthwise``, ``block_{i}_expand``, ``block_{i}_depthwise_BN``...), so that the
authors' ``features.{k}`` maps onto ``block_{k-1}`` (:mod:`fcos_tf.importers.tianzhi`).

The input is BGR minus maskrcnn-benchmark's mean (``pixel_norm="maskrcnn_benchmark"``), as
the authors trained it. There are no ImageNet weights for this variant here: its weights come
from an authors' checkpoint (``fcos-import``).
"""

import os

import keras

MOBILENET_V2_FCOS = "mobilenet_v2_fcos"
PIXEL_NORM = "maskrcnn_benchmark"
NORMS = ("sync_bn", "bn", "frozen_bn")
# (expansion, output channels, blocks, first stride) of the inverted residual stages.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
# Keras block index (the authors' features index - 1) of the C3, C4, C5 taps.
_TAP_BLOCKS = (5, 12, 16)


@keras.saving.register_keras_serializable(package="fcos_tf")
class FCOSMobileNetV2(keras.Model):
    """The authors' MobileNetV2 trunk: float32 ``[B, H, W, 3]`` -> ``[C3, C4, C5]``.

    ``C_l``: ``[B, ceil(H/s), ceil(W/s), (32, 96, 320)[l]]`` for ``s`` = 8, 16, 32.

    Args:
        alpha: width multiplier; only 1.0 (the released models' width).
        norm: ``"sync_bn"`` (default; the authors' syncbn models), ``"bn"`` or ``"frozen_bn"``
            (BatchNorm in inference mode, statistics kept).
        weights: ``None`` or a ``.weights.h5`` file of this model. Not part of ``get_config``.
        name: model name (default ``"mobilenet_v2_fcos"``).
        **kwargs: passed to ``keras.Model``.
    """

    def __init__(self, alpha=1.0, norm="sync_bn", weights=None, name=None, **kwargs):
        if alpha != 1.0:
            raise ValueError(f"`alpha` of {MOBILENET_V2_FCOS} must be 1.0, got {alpha!r}.")
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
        if weights is not None:
            weights = os.fspath(weights)
            if not os.path.exists(weights):
                raise FileNotFoundError(
                    f"`weights`={weights!r} does not exist ({MOBILENET_V2_FCOS} has no "
                    f"ImageNet download; import an authors' checkpoint with fcos-import)."
                )

        def batch_norm(x, layer_name):
            layer = keras.layers.BatchNormalization(
                epsilon=1e-5, momentum=0.9, synchronized=norm == "sync_bn", name=layer_name
            )
            if norm == "frozen_bn":
                layer.trainable = False  # also puts it in inference mode
            return layer(x)

        def conv(x, filters, kernel_size, stride, layer_name):
            if stride > 1:
                x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{layer_name}_pad")(x)
            return keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=stride,
                padding="same" if stride == 1 else "valid",
                use_bias=False,
                name=layer_name,
            )(x)

        def depthwise(x, stride, layer_name):
            if stride > 1:
                x = keras.layers.ZeroPadding2D(1, name=f"{layer_name}_pad")(x)
            return keras.layers.DepthwiseConv2D(
                3,
                strides=stride,
                padding="same" if stride == 1 else "valid",
                use_bias=False,
                name=layer_name,
            )(x)

        images = keras.Input(shape=(None, None, 3), name="images")
        x = conv(images, 32, 3, 2, "Conv1")
        x = batch_norm(x, "bn_Conv1")
        x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
        block = 0
        taps = []
        for expansion, filters, repeats, first_stride in _STAGES:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                prefix = f"block_{block}_" if block else "expanded_conv_"
                in_channels = x.shape[-1]
                y = x
                if expansion != 1:
                    y = conv(y, in_channels * expansion, 1, 1, f"{prefix}expand")
                    y = batch_norm(y, f"{prefix}expand_BN")
                    y = keras.layers.ReLU(6.0, name=f"{prefix}expand_relu")(y)
                y = depthwise(y, stride, f"{prefix}depthwise")
                y = batch_norm(y, f"{prefix}depthwise_BN")
                y = keras.layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(y)
                y = conv(y, filters, 1, 1, f"{prefix}project")
                y = batch_norm(y, f"{prefix}project_BN")
                if stride == 1 and in_channels == filters:
                    y = keras.layers.Add(name=f"{prefix}add")([x, y])
                x = y
                if block in _TAP_BLOCKS:
                    taps.append(x)
                block += 1
        super().__init__(inputs=images, outputs=taps, name=name or MOBILENET_V2_FCOS, **kwargs)
        self.alpha = float(alpha)
        self.norm = norm
        self.output_channels = tuple(int(t.shape[-1]) for t in taps)
        self.strides = (8, 16, 32)
        self.pixel_norm = PIXEL_NORM
        if weights is not None:
            self.load_weights(weights)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha, "norm": self.norm}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
