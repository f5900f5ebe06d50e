"""GroupNorm whose float32 statistics are as accurate as PyTorch's (head and small backbone)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="fcos_tf")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNorm over ``[B, H, W, C]`` whose float32 error is no larger than PyTorch's.

    ``keras.layers.GroupNormalization`` reduces each group (``H * W * C / groups`` values,
    about 120k on P3 at 800 x 1216) in one float32 reduction of the raw values: with a mean
    offset its variance carries relative errors of 1e-5 to 1e-4 and its output about 100x
    PyTorch's error. Here, per group:

    1. the data are shifted by an estimate of the mean (the mean of every fourth row and
       column), so that the sums below add deviations, not the offset;
    2. the mean ``m`` and the mean square ``q`` of the shifted data are means of means, over
       rows, then columns, then the group's channels: each partial sum has at most
       ``max(H, W)`` terms (PyTorch reduces in blocks for the same reason);
    3. variance ``q - m**2``: with the shift, ``m`` is small against the spread, so the
       difference loses no digits;
    4. output ``shifted * f + (beta - m * f)`` with ``f = gamma / sqrt(variance + eps)``, again
       free of cancellation since ``shifted`` is centred up to ``m``.

    The float32 output error stays near 1.5e-7 relative whatever the offset (PyTorch: 1e-7
    to 4e-6 on the same inputs), at the cost of one element-wise pass more than Keras'
    layer (BENCHMARKS.md). The shift cancels exactly in the result, so no gradient flows
    through it. Statistics and normalisation run in float32 also under mixed precision; the
    result is cast to the compute dtype. Variables (``gamma``, ``beta``), arguments and
    checkpoints are those of ``keras.layers.GroupNormalization``; every op is a TFLite builtin
    (MEAN, SUB, MUL, RSQRT, ADD, RESHAPE, STRIDED_SLICE).

    Args:
        groups: number of groups; must divide the channels.
        epsilon: added to the variance.
        **kwargs: passed to ``keras.layers.GroupNormalization`` (``axis`` must stay -1).

    Call args:
        inputs: float ``[B, H, W, C]``.

    Returns:
        ``[B, H, W, C]`` in the compute dtype.
    """

    def __init__(self, groups=32, epsilon=1e-5, **kwargs):
        super().__init__(groups=groups, epsilon=epsilon, **kwargs)
        if self.axis != -1:
            raise ValueError(f"GroupNorm normalises the last axis only, got axis={self.axis}.")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"GroupNorm expects [B, H, W, C] inputs, got {input_shape}.")
        super().build(input_shape)

    def call(self, inputs):
        group_size = inputs.shape[-1] // self.groups
        shape = tf.shape(inputs)
        x = tf.reshape(
            tf.cast(inputs, tf.float32), [shape[0], shape[1], shape[2], self.groups, group_size]
        )  # [B,H,W,G,c]
        shift = tf.stop_gradient(
            tf.reduce_mean(x[:, ::4, ::4], axis=[1, 2, 4], keepdims=True)
        )  # [B, 1, 1, G, 1]
        shifted = x - shift
        mean = _mean_of_means(shifted)
        variance = _mean_of_means(tf.square(shifted)) - tf.square(mean)
        factor = tf.math.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            factor = factor * tf.reshape(
                tf.cast(self.gamma, tf.float32), [1, 1, 1, self.groups, group_size]
            )
        bias = -mean * factor
        if self.beta is not None:
            bias = bias + tf.reshape(
                tf.cast(self.beta, tf.float32), [1, 1, 1, self.groups, group_size]
            )
        outputs = shifted * factor + bias
        return tf.cast(tf.reshape(outputs, shape), self.compute_dtype)


def _mean_of_means(x):
    """float32 ``[B, H, W, G, c]`` -> ``[B, 1, 1, G, 1]``: mean over H, then W, then c.

    Equal to the mean over the whole group (each stage averages equal-sized parts), with the
    rounding error of sums of at most ``max(H, W, c)`` terms instead of ``H * W * c``.
    """
    x = tf.reduce_mean(x, axis=1, keepdims=True)
    x = tf.reduce_mean(x, axis=2, keepdims=True)
    return tf.reduce_mean(x, axis=4, keepdims=True)
