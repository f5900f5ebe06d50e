"""Optimizer and learning-rate schedule of the paper's recipe (docs/design.md §3 item 19).

SGD with momentum 0.9, L2 weight decay 1e-4 on weights only, bias learning rate x2, a
warm-up then step decays counted in iterations, and the learning rate scaled linearly with
the global batch. The global step of a run is the optimizer's ``iterations`` counter.
"""

import bisect
import math
from collections.abc import Sequence

import keras
import tensorflow as tf

# Values of config.train.warmup_method.
WARMUP_METHODS = ("constant", "linear")
# Values of config.train.precision (Keras dtype policies); "mixed_float16" wraps the
# optimizer in a LossScaleOptimizer.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# Variables matched by name: their learning rate is multiplied by the bias factor and they
# get no weight decay (the authors' optimizer builder does the same for every "bias").
_BIAS_NAMES = ("bias", "beta")
# Normalisation scales: no weight decay, normal learning rate.
_NORM_SCALE_NAMES = ("gamma",)


def scaled_learning_rate(base_lr: float, batch_size: int, reference_batch_size: int = 16) -> float:
    """Linear scaling rule: the lr grows with the global batch (0.01 at 16 in the paper)."""
    return base_lr * batch_size / reference_batch_size


@keras.saving.register_keras_serializable(package="fcos_tf")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, then multiply by ``gamma`` at each step boundary; counted in iterations.

    At iteration ``i`` (0-based) the learning rate is
    ``base_lr * warmup(i) * gamma ** (number of boundaries <= i)``, where ``warmup(i)`` is
    ``warmup_factor`` during the first ``warmup_steps`` iterations ("constant", the FCOS 1x
    recipe) or rises linearly from ``warmup_factor`` to 1 ("linear"), and 1 afterwards.

    Args:
        base_lr: learning rate after warm-up (already scaled for the batch size).
        boundaries: increasing iterations at which the rate is multiplied by ``gamma``.
        gamma: decay factor.
        warmup_steps: number of warm-up iterations (0 = none).
        warmup_factor: multiplier at iteration 0.
        warmup_method: "constant" | "linear".
    """

    def __init__(
        self,
        base_lr: float,
        boundaries: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_factor: float = 1.0 / 3.0,
        warmup_method: str = "constant",
    ):
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"warmup_method: expected one of {WARMUP_METHODS}, got {warmup_method!r}"
            )
        boundaries = tuple(int(b) for b in boundaries)
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries: must be increasing, got {boundaries}")
        self.base_lr = float(base_lr)
        self.boundaries = boundaries
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method

    def value(self, step):
        """The learning rate at iteration ``step`` as a python float (for tests and logs)."""
        factor = self.gamma ** bisect.bisect_right(self.boundaries, step)
        if step < self.warmup_steps:
            if self.warmup_method == "constant":
                factor *= self.warmup_factor
            else:
                alpha = step / self.warmup_steps
                factor *= self.warmup_factor * (1.0 - alpha) + alpha
        return self.base_lr * factor

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.reduce_sum(
            tf.cast(step >= tf.constant(self.boundaries or (math.inf,), tf.float32), tf.float32)
        )
        factor = tf.pow(tf.constant(self.gamma, tf.float32), decays)
        if self.warmup_steps > 0:
            if self.warmup_method == "constant":
                warmup = tf.constant(self.warmup_factor, tf.float32)
            else:
                alpha = step / float(self.warmup_steps)
                warmup = self.warmup_factor * (1.0 - alpha) + alpha
            factor = tf.where(step < float(self.warmup_steps), factor * warmup, factor)
        return self.base_lr * factor

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "boundaries": self.boundaries,
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "warmup_method": self.warmup_method,
        }


def _handle(variable):
    """The resource handle of a Keras or TF variable (the local copy in a strategy update)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def _short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def is_bias_like(variable: keras.Variable) -> bool:
    """Biases and normalisation shifts: lr x ``bias_lr_factor``, no weight decay."""
    return _short_name(variable) in _BIAS_NAMES


def is_decayed(variable: keras.Variable) -> bool:
    """Weight decay applies to every trainable variable except biases and norm parameters."""
    name = _short_name(variable)
    return name not in _BIAS_NAMES and name not in _NORM_SCALE_NAMES


@keras.saving.register_keras_serializable(package="fcos_tf")
class DetectionSGD(keras.optimizers.SGD):
    """SGD with momentum, L2 weight decay on weights only and a larger lr for biases.

    The update of each variable is Keras' SGD update for the gradient
    ``g' = bias_lr_factor * g`` (biases) or ``g' = g + l2 * w`` (every other variable
    except normalisation scales, which get ``g' = g``). With momentum SGD, multiplying a
    variable's gradient by a constant is the same as multiplying its learning rate, so this
    is the authors' per-parameter-group optimizer (``BIAS_LR_FACTOR = 2``,
    ``WEIGHT_DECAY_BIAS = 0``) with L2 decay folded into the gradient as in PyTorch's SGD,
    rather than Keras' decoupled ``weight_decay``.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: momentum coefficient.
        l2: weight decay coefficient (1e-4 in the paper).
        bias_lr_factor: learning-rate multiplier for biases (2 in the authors' recipe).
        **kwargs: other ``keras.optimizers.SGD`` arguments (``global_clipnorm``, ...).
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.9,
        l2: float = 1e-4,
        bias_lr_factor: float = 2.0,
        name: str = "detection_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2 = float(l2)
        self.bias_lr_factor = float(bias_lr_factor)
        self._decay_flags = []
        self._bias_flags = []

    def build(self, variables):
        super().build(variables)
        # Decided once per variable, in the order of _get_variable_index.
        self._decay_flags = [is_decayed(v) for v in variables]
        self._bias_flags = [is_bias_like(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        gradient = tf.cast(gradient, variable.dtype)
        if self._bias_flags[index]:
            gradient = gradient * self.bias_lr_factor
        elif self._decay_flags[index] and self.l2 > 0:
            gradient = gradient + self.l2 * tf.convert_to_tensor(variable)
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        # Keras' momentum update, m = momentum * m - lr * g; w += m (Nesterov:
        # w += momentum * m - lr * g), as the one fused kernel TensorFlow has for it: one pass
        # over each variable instead of five element-wise ops and two assignments.
        momentum = self.momentums[index]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable),
            accum=_handle(momentum),
            lr=tf.cast(learning_rate, variable.dtype),
            grad=gradient,
            momentum=tf.cast(self.momentum, variable.dtype),
            use_nesterov=self.nesterov,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"l2": self.l2, "bias_lr_factor": self.bias_lr_factor})
        return config


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """Learning rate the next step will use (python float)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = inner._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(schedule(inner.iterations))
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


def global_step(optimizer: keras.optimizers.Optimizer) -> int:
    """The number of applied updates, the run's clock (python int)."""
    return int(getattr(optimizer, "inner_optimizer", optimizer).iterations.numpy())
