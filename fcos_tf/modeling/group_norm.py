"""GroupNorm whose float32 statistics are as accurate as PyTorch's (head and small backbone)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="fcos_tf")
class GroupNorm(keras.layers.GroupNormalization):
    """GroupNorm over ``[B, H, W, C]`` whose float32 error is no larger than PyTorch's.

    ``keras.layers.GroupNormalization`` reduces each group (``H * W * C / groups`` values,
    about 120k on P3 at 800 x 1216) in one float32 reduction of the raw values: with a mean
    offset its variance carries relative errors of 1e-5 to 1e-4 and its output about 100x
    PyTorch's error. Here:

    1. each channel is shifted by an estimate of its mean (the mean of every fourth row and
       column), so that the sums below add deviations, not the offset;
    2. each channel's mean ``m`` and mean square ``q`` of the shifted data are means of
       means, over rows, then columns: each partial sum has at most ``max(H, W)`` terms
       (PyTorch reduces in blocks for the same reason); its variance is ``q - m**2``, which
       loses no digits since the shift leaves ``m`` small against the spread;
    3. a group's mean is the mean of its channels' means, taken relative to the mean shift
       of the group (an offset common to its channels cancels exactly there), and its
       variance the mean of ``channel variance + (channel mean - group mean)**2``,
       a mean of non-negative terms;
    4. output ``shifted * f + (beta + (shift - mean) * f)`` per channel, with
       ``f = gamma / sqrt(variance + eps)``, again free of cancellation since ``shifted``
       is centred up to ``m``.

    Every tensor of image size stays ``[B, H, W, C]``; the group arithmetic runs on
    ``[B, G, C / G]`` statistics of static shape. The float32 output error stays near
    1.5e-7 relative whatever the offset (PyTorch: 1e-7 to 4e-6 on the same inputs), at the
    cost of one element-wise pass more than Keras' layer (BENCHMARKS.md). The shift cancels
    exactly in the result, so no gradient flows through it. In a training call
    (``training=True``) the backward pass is GroupNorm's, written out (seven element-wise
    passes over the map, with the same means of means), instead of being differentiated
    through the ops above. Statistics and normalisation run in float32 also under mixed
    precision; the result is cast to the compute dtype. Variables (``gamma``, ``beta``),
    arguments and checkpoints are those of ``keras.layers.GroupNormalization``; every op of
    an inference call is a TFLite builtin (MEAN, SUB, MUL, RSQRT, ADD, RESHAPE,
    STRIDED_SLICE).

    With ``fused_inference=True`` (set by the serving copy of a detector,
    :func:`fcos_tf.serving.precision.inference_model`), a call with ``training`` false on a
    batch statically known to hold one image takes a faster path built from two oneDNN
    fused batch norms: the first, in training mode on the ``[1, H, W, C]`` image, gives each
    channel's mean and variance in one pass (its normalised output is unused); the group
    statistics follow exactly from the channels' (``mean_g`` the mean of the channel means,
    ``var_g`` the mean of ``var_c + (mean_c - mean_g)**2``, a sum of non-negative terms); the
    second, in inference mode, applies them with ``gamma`` and ``beta``, and grappler fuses
    it with a following ReLU. With its ReLU on a 100 x 168 x 256 map it is 1.6x (float32)
    and 2.7x (bfloat16) faster than the path above. Its statistics are float32 sums, so its
    float32 error follows the offset of the data in units of its spread, as for any float32
    statistics: on P3-sized groups 3.5e-7 relative for centred data, 2.8e-6 at an offset of
    17 standard deviations, 2.2e-5 at 200 (the path above: 1.4e-7 to 1.6e-7; PyTorch, which
    accumulates in float64 on the CPU: 8e-8 to 4e-6). Gradients of the inference-mode batch
    norm do not reach its statistics, so the path is for inference graphs only; training
    always takes the path above.

    Args:
        groups: number of groups; must divide the channels.
        epsilon: added to the variance.
        fused_inference: take the fused path described above for one-image inference calls.
        **kwargs: passed to ``keras.layers.GroupNormalization`` (``axis`` must stay -1).

    Call args:
        inputs: float ``[B, H, W, C]``.
        training: the fused path is taken only when this is false (and ``fused_inference``
            is set and ``B`` is statically 1).

    Returns:
        ``[B, H, W, C]`` in the compute dtype.
    """

    def __init__(self, groups=32, epsilon=1e-5, fused_inference=False, **kwargs):
        super().__init__(groups=groups, epsilon=epsilon, **kwargs)
        if self.axis != -1:
            raise ValueError(f"GroupNorm normalises the last axis only, got axis={self.axis}.")
        self.fused_inference = bool(fused_inference)

    def get_config(self):
        return {**super().get_config(), "fused_inference": self.fused_inference}

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"GroupNorm expects [B, H, W, C] inputs, got {input_shape}.")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if self.fused_inference and not training and inputs.shape[0] == 1:
            return self._one_image_inference(inputs)
        channels = inputs.shape[-1]
        x = tf.cast(inputs, tf.float32)
        gamma = tf.ones([channels]) if self.gamma is None else tf.cast(self.gamma, tf.float32)
        beta = tf.zeros([channels]) if self.beta is None else tf.cast(self.beta, tf.float32)
        if training:
            outputs = _normalize_with_gradient(x, gamma, beta, self.groups, self.epsilon)
        else:
            outputs = _normalize(x, gamma, beta, self.groups, self.epsilon)[0]
        return tf.cast(outputs, self.compute_dtype)

    def _one_image_inference(self, inputs):
        """The fused path of the class docstring, for ``[1, H, W, C]`` inputs."""
        channels = inputs.shape[-1]
        group_size = channels // self.groups
        if inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            inputs = tf.cast(inputs, tf.float32)
        ones = tf.ones([channels], tf.float32)
        _, channel_mean, channel_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=ones,
            offset=tf.zeros([channels], tf.float32),
            mean=tf.zeros([0], tf.float32),
            variance=tf.zeros([0], tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The op returns the unbiased variance, n / (n - 1) times the population one (for
        # n = 1 it returns 0, which the factor keeps).
        count = tf.cast(tf.shape(inputs)[1] * tf.shape(inputs)[2], tf.float32)
        channel_variance *= (count - 1.0) / count
        channel_mean = tf.reshape(channel_mean, [self.groups, group_size])
        channel_variance = tf.reshape(channel_variance, [self.groups, group_size])
        mean = tf.reduce_mean(channel_mean, axis=1, keepdims=True)
        variance = tf.reduce_mean(
            channel_variance + tf.square(channel_mean - mean), axis=1, keepdims=True
        )
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=ones if self.gamma is None else tf.cast(self.gamma, tf.float32),
            offset=(
                tf.zeros([channels], tf.float32)
                if self.beta is None
                else tf.cast(self.beta, tf.float32)
            ),
            mean=tf.reshape(tf.broadcast_to(mean, [self.groups, group_size]), [channels]),
            variance=tf.reshape(tf.broadcast_to(variance, [self.groups, group_size]), [channels]),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=False,
        )
        return tf.cast(outputs, self.compute_dtype)


def _normalize(x, gamma, beta, groups, epsilon):
    """The exact path's forward pass on float32 ``[B, H, W, C]``.

    Returns ``(outputs, shifted, rstd, offset)``: ``shifted`` is ``x`` minus each channel's
    shift, ``rstd`` ``[B, G, 1]`` the reciprocal standard deviation of each group and
    ``offset`` ``[B, G, c]`` such that the normalised values are ``shifted * rstd + offset``
    channel by channel (the backward pass of :func:`_normalize_with_gradient` reuses them).
    """

    def grouped(t):
        return _grouped(t, groups)

    # Every tensor of image size stays [B, H, W, C]; the group arithmetic runs on [B, G, c]
    # statistics. Each channel is shifted by the mean of every fourth row and column.
    shift = tf.stop_gradient(tf.reduce_mean(x[:, ::4, ::4], axis=[1, 2], keepdims=True))
    shifted = x - shift
    shifted_mean = _spatial_mean(shifted)  # [B, 1, 1, C]
    channel_variance = _spatial_mean(tf.square(shifted)) - tf.square(shifted_mean)
    # Channel means relative to the mean shift of their group: an offset common to the
    # group's channels cancels exactly in these differences (Sterbenz), so no digits are
    # lost to it.
    shift = grouped(shift)
    relative_shift = shift - tf.reduce_mean(shift, axis=2, keepdims=True)
    channel_mean = grouped(shifted_mean) + relative_shift
    mean = tf.reduce_mean(channel_mean, axis=2, keepdims=True)  # [B, G, 1]
    # The group's variance from its channels': a mean of non-negative terms.
    variance = tf.reduce_mean(
        grouped(channel_variance) + tf.square(channel_mean - mean), axis=2, keepdims=True
    )
    rstd = tf.math.rsqrt(variance + epsilon)
    offset = (relative_shift - mean) * rstd
    gamma = grouped(gamma)
    outputs = shifted * _per_channel(rstd * gamma) + _per_channel(offset * gamma + grouped(beta))
    return outputs, shifted, rstd, offset


def _normalize_with_gradient(x, gamma, beta, groups, epsilon):
    """:func:`_normalize`'s outputs with GroupNorm's backward pass written out.

    With ``n = (x - mean) * rstd`` and upstream gradient ``g`` (per image and group, means
    over the group's locations and channels):

    - ``d_beta = sum(g)`` and ``d_gamma = sum(g * n)`` over images and locations;
    - ``d_x = rstd * (gamma * g - mean(gamma * g) - n * mean(gamma * g * n))``.

    The per-channel sums are means of means as in the forward pass, and ``n`` is expanded as
    ``shifted * rstd + offset`` so that no term carries the data's offset.
    """
    channels = x.shape[-1]

    def grouped(t):
        return _grouped(t, groups)

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        outputs, shifted, rstd, offset = _normalize(x, gamma, beta, groups, epsilon)

        def backward(upstream):
            with tf.name_scope("group_norm_gradient"):
                mean_g = grouped(_spatial_mean(upstream))  # [B, G, c]
                mean_gn = grouped(_spatial_mean(upstream * shifted)) * rstd + offset * mean_g
                locations = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
                d_beta = locations * tf.reshape(tf.reduce_sum(mean_g, axis=0), [channels])
                d_gamma = locations * tf.reshape(tf.reduce_sum(mean_gn, axis=0), [channels])
                gamma_g = grouped(gamma)
                m1 = tf.reduce_mean(gamma_g * mean_g, axis=2, keepdims=True)  # [B, G, 1]
                m2 = tf.reduce_mean(gamma_g * mean_gn, axis=2, keepdims=True)
                # rstd * (gamma * g - m1 - (shifted * rstd + offset) * m2), term by term.
                shifted_factor = tf.broadcast_to(-rstd * rstd * m2, tf.shape(offset))
                d_x = (
                    upstream * _per_channel(rstd * gamma_g)
                    + shifted * _per_channel(shifted_factor)
                    - _per_channel(rstd * (m1 + offset * m2))
                )
                return d_x, d_gamma, d_beta

        return outputs, backward

    return normalize(x, gamma, beta)


def _grouped(t, groups):
    """``[..., C]`` with ``B * C`` values -> ``[B, G, C / G]`` (``[1, G, C / G]`` for ``[C]``)."""
    return tf.reshape(t, [-1, groups, t.shape[-1] // groups])


def _per_channel(t):
    """``[B, G, c]`` -> ``[B, 1, 1, G * c]``."""
    return tf.reshape(t, [-1, 1, 1, t.shape[1] * t.shape[2]])


def _spatial_mean(x):
    """float32 ``[B, H, W, C]`` -> ``[B, 1, 1, C]``: the mean over H, then over W.

    Equal to the mean over the map, with the rounding error of sums of at most ``max(H, W)``
    terms instead of ``H * W``.
    """
    x = tf.reduce_mean(x, axis=1, keepdims=True)
    return tf.reduce_mean(x, axis=2, keepdims=True)
