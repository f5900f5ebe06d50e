"""Feature pyramid: C3-C5 -> P3-P7 (paper Sec. 3.2, docs/design.md §3 item 2).

With ``min_level=2`` it also takes ``C2`` and produces ``P2`` (stride 4) for small objects.
"""

import keras
from keras import ops

# Kaiming-uniform with a=1 (gain 1), i.e. U(+-sqrt(3 / fan_in)): the init of the FPN convs in
# the authors' repo (c2_xavier_fill) and in torchvision. Biases start at 0.
_FPN_KERNEL_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform"},
}
P6_INPUTS = ("p5", "c5")


def upsample_nearest_to(features, target):
    """Nearest-neighbour upsampling of ``features`` to the spatial size of ``target``.

    Equals PyTorch ``F.interpolate(features, size=target.shape[-2:], mode="nearest")`` when
    each target side is ``2n`` or ``2n - 1`` for a source side ``n``, which always holds
    between adjacent pyramid levels (sizes are ``ceil(H / s)``): source index ``floor(i / 2)``
    = ``floor(i * n / size)`` for every output index ``i < size``. Upsampling by 2 and
    cropping is exact for odd sizes, where ``tf.image.resize``'s half-pixel-centred nearest
    mode would pick different rows.

    Args:
        features: ``[B, h, w, C]``.
        target: ``[B, h', w', C']`` with ``h' in {2h - 1, 2h}`` and ``w' in {2w - 1, 2w}``.

    Returns:
        ``[B, h', w', C]``.
    """
    target_shape = ops.shape(target)
    batch, height, width, channels = ops.shape(features)
    # Each row twice ([B, h, 1, w*C] broadcast to [B, h, 2, w*C]), then each column twice
    # ([B, 2h*w, 1, C] to [B, 2h*w, 2, C]): 4-D tensors throughout, as TFLite's kernels
    # need. (Two ops.repeat do the same, but the gradient of their Tile transposes an int32
    # shape tensor, which makes TensorFlow's oneDNN rewrite log an error line in every
    # training process.)
    rows = ops.broadcast_to(
        ops.reshape(features, (batch, height, 1, width * channels)),
        (batch, height, 2, width * channels),
    )
    upsampled = ops.broadcast_to(
        ops.reshape(rows, (batch, 2 * height * width, 1, channels)),
        (batch, 2 * height * width, 2, channels),
    )
    upsampled = ops.reshape(upsampled, (batch, 2 * height, 2 * width, channels))
    return upsampled[:, : target_shape[1], : target_shape[2], :]


@keras.saving.register_keras_serializable(package="fcos_tf")
class FPN(keras.layers.Layer):
    """Feature pyramid network with extra stride-2 levels.

    ``P5..P3``: 1x1 lateral conv of ``C_l`` plus the nearest-upsampled coarser merged map,
    then a 3x3 output conv; no norm, no activation. ``P6`` = 3x3 stride-2 conv on ``P5``
    (or on ``C5``: the paper's RetinaNet-style variant), ``P7`` = 3x3 stride-2 conv on
    ``ReLU(P6)``. Strided convs pad 1 on every side, so level ``s`` is ``ceil(H/s) x ceil(W/s)``.
    With ``num_levels=2`` the top-down path still starts at ``C5``, but ``P5`` is not produced
    (no ``output_p5`` conv).

    Layer names (for weight import): ``lateral_c3..5``, ``output_p3..5``, ``p6``, ``p7``
    (torchvision's ``inner_blocks.0..2``, ``layer_blocks.0..2``, ``extra_blocks.p6/p7``);
    with ``min_level=2`` also ``lateral_c2`` and ``output_p2``.

    Args:
        channels: channels of every output level (256 in the paper).
        p6_input: ``"p5"`` (default, the improved FCOS) or ``"c5"``.
        num_levels: output levels from ``P{min_level}``: from P3, 2 (P3, P4), 3 (to P5),
            4 (P6) or 5 (P7, default); from P2, 2 (P2, P3) to 6 (P2-P7).
        min_level: 3 (default, inputs ``[C3, C4, C5]``) or 2 (inputs ``[C2, C3, C4, C5]``,
            output from ``P2``: the top-down path continues to ``C2``).
        **kwargs: passed to ``keras.layers.Layer``.

    Call args:
        inputs: list ``[C{min_level}, ..., C5]`` of ``[B, h_l, w_l, C_l]`` at strides
            ``2^l``.

    Returns:
        List ``[P{min_level}, ..., P{min_level + num_levels - 1}]`` of
        ``[B, ceil(H/s), ceil(W/s), channels]``.
    """

    def __init__(self, channels=256, p6_input="p5", num_levels=5, min_level=3, **kwargs):
        if "num_extra_levels" in kwargs:  # the argument of earlier versions' configs
            num_levels = 3 + kwargs.pop("num_extra_levels")
        super().__init__(**kwargs)
        if not (isinstance(channels, int) and channels > 0):
            raise ValueError(f"`channels` must be a positive int, got {channels!r}.")
        if p6_input not in P6_INPUTS:
            raise ValueError(f"`p6_input` must be one of {P6_INPUTS}, got {p6_input!r}.")
        if min_level not in (2, 3):
            raise ValueError(f"`min_level` must be 2 or 3, got {min_level!r}.")
        if num_levels not in range(2, 9 - min_level):
            raise ValueError(
                f"`num_levels` must be 2 to {8 - min_level} from P{min_level}, got {num_levels!r}."
            )
        self.channels = channels
        self.p6_input = p6_input
        self.num_levels = num_levels
        self.min_level = min_level
        max_level = min_level + num_levels - 1
        num_extra_levels = max(0, max_level - 5)
        self._input_levels = tuple(range(min_level, 6))  # (2,) 3, 4, 5

        def conv(kernel_size, name, strides=1, padding="same"):
            return keras.layers.Conv2D(
                channels,
                kernel_size,
                strides=strides,
                padding=padding,
                kernel_initializer=_FPN_KERNEL_INIT,
                name=name,
                dtype=self.dtype_policy,
            )

        # Tuples, not lists: Keras 3 leaves list attributes out of tf.train.Checkpoint's
        # object graph, so their weights would silently not be saved or restored there.
        self.lateral_convs = tuple(conv(1, f"lateral_c{level}") for level in self._input_levels)
        self.output_convs = tuple(
            conv(3, f"output_p{level}") for level in self._input_levels if level <= max_level
        )
        self.extra_pads = tuple(
            keras.layers.ZeroPadding2D(1, name=f"p{level}_pad", dtype=self.dtype_policy)
            for level in range(6, 6 + num_extra_levels)
        )
        self.extra_convs = tuple(
            conv(3, f"p{level}", strides=2, padding="valid")
            for level in range(6, 6 + num_extra_levels)
        )

    def _check_inputs(self, input_shapes):
        names = ", ".join(f"C{level}" for level in self._input_levels)
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) != len(
            self._input_levels
        ):
            raise ValueError(f"FPN expects a list [{names}], got {input_shapes!r}.")
        for level, shape in zip(self._input_levels, input_shapes):
            if len(shape) != 4 or shape[-1] is None:
                raise ValueError(f"C{level} must be [B, h, w, C] with known C, got {shape}.")

    def build(self, input_shape):
        self._check_inputs(input_shape)
        for conv, shape in zip(self.lateral_convs, input_shape):
            conv.build(shape)
        level_shape = (None, None, None, self.channels)
        for conv in self.output_convs:
            conv.build(level_shape)
        for index, conv in enumerate(self.extra_convs):
            in_channels = (
                input_shape[-1][-1] if (index == 0 and self.p6_input == "c5") else self.channels
            )
            conv.build((None, None, None, in_channels))

    def call(self, inputs):
        inputs = list(inputs)
        c5 = inputs[-1]
        merged = [self.lateral_convs[-1](c5)]
        for lateral_conv, c in zip(self.lateral_convs[-2::-1], inputs[-2::-1]):
            lateral = lateral_conv(c)
            merged.insert(0, lateral + upsample_nearest_to(merged[0], lateral))
        outputs = [conv(x) for conv, x in zip(self.output_convs, merged)]
        if self.extra_convs:
            p6_source = outputs[5 - self.min_level] if self.p6_input == "p5" else c5
            outputs.append(self.extra_convs[0](self.extra_pads[0](p6_source)))
        if len(self.extra_convs) == 2:
            outputs.append(self.extra_convs[1](self.extra_pads[1](ops.relu(outputs[-1]))))
        return outputs

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)

        def half(size):
            return None if size is None else (size + 1) // 2

        shapes = [(s[0], s[1], s[2], self.channels) for s in input_shape][: self.num_levels]
        for _ in range(self.num_levels - len(shapes)):
            batch, height, width, _ = shapes[-1]
            shapes.append((batch, half(height), half(width), self.channels))
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "p6_input": self.p6_input,
                "num_levels": self.num_levels,
                "min_level": self.min_level,
            }
        )
        return config
