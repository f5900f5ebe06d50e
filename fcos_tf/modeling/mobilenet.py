"""Mobile backbones from ``keras.applications``: MobileNetV2 and MobileNetV3-Large -> C3, C4, C5.

Both are tapped at the last block of each of the strides 8, 16 and 32, as the FCOS authors
tap MobileNetV2 (their ``FCOS_syncbn_bs32_MNV2_FPN_1x`` and its ``c128`` variant): the
outputs of the inverted-residual blocks, not the wide expansion activations, and not the
final 1x1 classifier conv.

================== ========================= ========================= =========================
variant            C3 (stride 8)             C4 (stride 16)            C5 (stride 32)
================== ========================= ========================= =========================
mobilenet_v2       ``block_5_add``, 32       ``block_12_add``, 96      ``block_16_project_BN``,
                                                                       320
mobilenet_v3_large ``expanded_conv_5_add``,  ``expanded_conv_11_add``, ``expanded_conv_14_add``,
                   40                        112                       160
================== ========================= ========================= =========================

(channels at ``alpha=1``; they scale with ``alpha`` and are rounded to multiples of 8.)

Input normalisation: both sets of ImageNet weights expect RGB in ``[-1, 1]``, the data
pipeline's ``pixel_norm="inception"`` (:data:`PIXEL_NORM`). MobileNetV3's built-in
``Rescaling`` layer, which does the same on ``[0, 255]`` inputs, is left out
(``include_preprocessing=False``) so that every backbone takes pipeline-normalised input.

Departure from docs/design.md §2 (symmetric padding): the strided convolutions keep
``keras.applications``' padding (zero-padding bottom/right for even sizes, TF's ``same``),
because the ImageNet weights were trained with it. Feature maps are ``ceil(H/s) x ceil(W/s)``
for inputs whose sides are multiples of 32, which the pipeline guarantees (padding to a
multiple of ``size_divisibility``); other sizes are refused at call time by the FCOS level
alignment.

Normalisation layers: ``norm="sync_bn"`` (default, the authors' SyncBN: batch statistics over
the global batch under ``MirroredStrategy``), ``"bn"`` (per-replica statistics) or
``"frozen_bn"`` (BN in inference mode, ImageNet statistics kept).
"""

import os

import keras

MOBILE_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large")
PIXEL_NORM = "inception"
MOBILE_NORMS = ("sync_bn", "bn", "frozen_bn")
_TAPS = {
    "mobilenet_v2": ("block_5_add", "block_12_add", "block_16_project_BN"),
    "mobilenet_v3_large": ("expanded_conv_5_add", "expanded_conv_11_add", "expanded_conv_14_add"),
}
# ImageNet weights keras.applications publishes (other alphas train from scratch only).
_IMAGENET_ALPHAS = {
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v3_large": (0.75, 1.0),
}


def build_keras_application(variant, *, alpha=1.0, weights=None):
    """The ``keras.applications`` classifier trunk (``include_top=False``) of ``variant``.

    Args:
        variant: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"``.
        alpha: width multiplier.
        weights: ``None`` (random), ``"imagenet"`` (downloaded by Keras into
            ``~/.keras/models`` on first use) or a local path to the ``keras.applications``
            weight file of the same variant and alpha (``..._no_top.h5``, or a
            ``.weights.h5`` saved from such a model).

    Returns:
        The ``keras.Model`` with input ``(None, None, 3)`` in ``[-1, 1]``.

    Raises:
        ValueError: unknown variant, or ImageNet weights asked for an alpha without them.
        FileNotFoundError: a path that does not exist.
        RuntimeError: the download failed (offline machine), with what to do instead.
    """
    if variant not in MOBILE_BACKBONES:
        raise ValueError(f"`variant` must be one of {MOBILE_BACKBONES}, got {variant!r}.")
    if weights is not None and weights != "imagenet":
        weights = os.fspath(weights)
        if not os.path.exists(weights):
            raise FileNotFoundError(
                f"`weights`={weights!r} is neither 'imagenet' nor an existing file."
            )
    if weights == "imagenet" and alpha not in _IMAGENET_ALPHAS[variant]:
        raise ValueError(
            f"ImageNet weights of {variant} exist for alpha in "
            f"{_IMAGENET_ALPHAS[variant]}, got alpha={alpha!r}."
        )
    if variant == "mobilenet_v2":
        constructor_name = "MobileNetV2"
        kwargs = {}
    else:
        constructor_name = "MobileNetV3Large"
        kwargs = {"include_preprocessing": False}
    constructor = getattr(keras.applications, constructor_name)
    try:
        return constructor(
            include_top=False, weights=weights, alpha=alpha, input_shape=(None, None, 3), **kwargs
        )
    except Exception as error:
        if weights != "imagenet":
            raise
        raise RuntimeError(
            f"Could not download the keras.applications ImageNet weights of {variant} "
            f"(alpha={alpha}) ({error}). On a machine without internet access, copy the "
            f"'*_no_top*.h5' file that `keras.applications.{constructor_name}(include_top="
            f"False, alpha={alpha})` downloads into ~/.keras/models/ on a machine with "
            f"access, and pass its local path as `weights`."
        ) from error


@keras.saving.register_keras_serializable(package="fcos_tf")
class MobileNetBackbone(keras.Model):
    """MobileNetV2 / MobileNetV3-Large trunk: float32 ``[B, H, W, 3]`` -> ``[C3, C4, C5]``.

    ``C_l``: ``[B, H/s, W/s, output_channels[l]]`` for ``s`` = 8, 16, 32 (``H``, ``W``
    multiples of 32). The input is in ``[-1, 1]`` (``pixel_norm="inception"``).

    Args:
        variant: ``"mobilenet_v2"`` or ``"mobilenet_v3_large"``.
        alpha: width multiplier of ``keras.applications`` (1.0 for the ImageNet models the
            authors use).
        norm: ``"sync_bn"`` (default), ``"bn"`` or ``"frozen_bn"``; see the module docstring.
        weights: ``None``, ``"imagenet"`` or a local weight file, see
            :func:`build_keras_application`. Not part of ``get_config``: a model rebuilt from
            its config gets its weights from a checkpoint.
        name: model name (default ``variant``).
        **kwargs: passed to ``keras.Model``.
    """

    def __init__(
        self, variant="mobilenet_v2", alpha=1.0, norm="sync_bn", weights=None, name=None, **kwargs
    ):
        if norm not in MOBILE_NORMS:
            raise ValueError(f"`norm` must be one of {MOBILE_NORMS}, got {norm!r}.")
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0, got {alpha!r}.")
        application = build_keras_application(variant, alpha=alpha, weights=weights)
        for layer in application.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # `synchronized` is read at call time: an all-reduce of the moments over the
                # replicas of the current MirroredStrategy (no-op on one device).
                layer.synchronized = norm == "sync_bn"
                if norm == "frozen_bn":
                    layer.trainable = False  # also puts it in inference mode
        outputs = [application.get_layer(tap).output for tap in _TAPS[variant]]
        super().__init__(
            inputs=application.inputs[0], outputs=outputs, name=name or variant, **kwargs
        )
        self.variant = variant
        self.alpha = float(alpha)
        self.norm = norm
        self.output_channels = tuple(int(x.shape[-1]) for x in outputs)
        self.strides = (8, 16, 32)
        self.pixel_norm = PIXEL_NORM

    def get_config(self):
        return {"name": self.name, "variant": self.variant, "alpha": self.alpha, "norm": self.norm}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
