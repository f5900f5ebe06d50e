"""Training machinery around ``keras.Model.fit``: strategy, optimizer, schedule, checkpoints.

The recipe is the paper's (DESIGN.md §3 item 19): SGD with momentum 0.9, L2 weight decay
1e-4 on weights only, bias learning rate x2, a warm-up then step decays counted in
iterations, and the learning rate scaled linearly with the global batch.

A run is a sequence of ``fit`` steps bracketed by checkpoints. The global step is the
optimizer's ``iterations`` counter; it is saved with the model weights and the optimizer
slots, so a restart with the same work directory continues at the same step, with the same
momentum and the same point of the schedule. ``TrainingControl`` is the one callback that
decides when to save and when to stop: every ``checkpoint_every`` steps, at the end, on
SIGTERM/SIGINT (save, then stop), and on a non-finite loss (stop without saving, so the last
checkpoint on disk is the last good one). The input continues where it was too: with
``data.resume="replay"`` the batches already seen are produced again and dropped (exact, for
small datasets), with ``"reshuffle"`` a fresh stream seeded by the step starts at once.

``run()`` is what ``train.py`` calls: it reads the config (the only place that unpacks it
into builder arguments), builds data, model and optimizer under the strategy's scope, trains
and evaluates (``fcos_tf.evaluation``), writing everything into the work directory.
"""

import bisect
import json
import logging
import math
import os
import shutil
import signal

import keras
import tensorflow as tf

# Variables matched by name: their learning rate is multiplied by the bias factor and they
# get no weight decay (the authors' optimizer builder does the same for every "bias").
_BIAS_NAMES = ("bias", "beta")
# Normalisation scales: no weight decay, normal learning rate.
_NORM_SCALE_NAMES = ("gamma",)


# Labels the train step uses (see fcos_tf.model.FCOS.train_step).
TRAIN_LABEL_KEYS = ("class_targets", "box_targets", "centerness_targets")


class NonFiniteLossError(RuntimeError):
    """Raised by ``train`` when the loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Distribution
# --------------------------------------------------------------------------------------------

def _tf_config_num_workers():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def select_strategy(name="auto", devices=()):
    """The distribution strategy for a run.

    Args:
        name: "auto": ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` lists more than one
            worker, ``MirroredStrategy`` when more than one GPU is visible, the default
            (single-device) strategy otherwise. "default", "mirrored" or "multi_worker" force
            one.
        devices: devices for "mirrored" (e.g. ``("/cpu:0", "/cpu:1")``); empty = all GPUs.

    Returns:
        A ``tf.distribute.Strategy``. Create it before any other TensorFlow op when it is
        multi-worker (TensorFlow requires the collective ops to be configured first).
    """
    if name not in ("auto", "default", "mirrored", "multi_worker"):
        raise ValueError(f"name: unknown strategy {name!r}")
    if name == "multi_worker" or (name == "auto" and _tf_config_num_workers() > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return mirrored_strategy(devices)
    return tf.distribute.get_strategy()


# Collective keys reserved for one MirroredStrategy (TensorFlow's own tests space them so).
_COLLECTIVE_KEYS_PER_STRATEGY = 100_000


def mirrored_strategy(devices=()):
    """A ``MirroredStrategy`` over ``devices`` (empty = all GPUs) with collective keys of its own.

    Every ``MirroredStrategy`` numbers its all-reduces from the class's
    ``_collective_key_base`` (0 unless set), and the runtime remembers the group and the
    shape of every key it has run: a second strategy of the same process (a second
    ``run()``, a notebook, a test session) would reuse the keys of the first for other
    tensors and fail with "Shape mismatch in the collective instance". The base is moved
    past a fresh range before the strategy is made and again after it, so that neither this
    strategy nor one made later, here or directly, shares keys with another.

    Args:
        devices: device names such as ``("/gpu:0", "/gpu:1")``.

    Returns:
        A new ``tf.distribute.MirroredStrategy``.
    """
    cls = tf.distribute.MirroredStrategy
    cls._collective_key_base += _COLLECTIVE_KEYS_PER_STRATEGY  # pylint: disable=protected-access
    strategy = cls(devices=list(devices) or None)
    cls._collective_key_base += _COLLECTIVE_KEYS_PER_STRATEGY  # pylint: disable=protected-access
    return strategy


def is_chief(strategy):
    """True on the worker that writes checkpoints, summaries and metrics."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


# --------------------------------------------------------------------------------------------
# Schedule and optimizer
# --------------------------------------------------------------------------------------------

def scaled_learning_rate(base_lr, batch_size, reference_batch_size=16):
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

    def __init__(self, base_lr, boundaries=(), gamma=0.1, warmup_steps=0,
                 warmup_factor=1.0 / 3.0, warmup_method="constant"):
        if warmup_method not in ("constant", "linear"):
            raise ValueError(f"warmup_method: expected 'constant' or 'linear', "
                             f"got {warmup_method!r}")
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
        decays = tf.reduce_sum(tf.cast(
            step >= tf.constant(self.boundaries or (math.inf,), tf.float32), tf.float32))
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
        return {"base_lr": self.base_lr, "boundaries": self.boundaries, "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor,
                "warmup_method": self.warmup_method}


def _short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def is_bias_like(variable):
    """Biases and normalisation shifts: lr x ``bias_lr_factor``, no weight decay."""
    return _short_name(variable) in _BIAS_NAMES


def is_decayed(variable):
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

    def __init__(self, learning_rate=0.01, momentum=0.9, l2=1e-4, bias_lr_factor=2.0,
                 name="detection_sgd", **kwargs):
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
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update({"l2": self.l2, "bias_lr_factor": self.bias_lr_factor})
        return config


def build_optimizer(train_config):
    """The optimizer of ``config.train``: ``DetectionSGD`` on a ``WarmupStepSchedule``.

    The learning rate is ``base_lr * batch_size / reference_batch_size``; with mixed
    float16 the optimizer is wrapped in a ``LossScaleOptimizer``.
    """
    lr = scaled_learning_rate(train_config.base_lr, train_config.batch_size,
                              train_config.reference_batch_size)
    schedule = WarmupStepSchedule(
        lr, boundaries=tuple(train_config.lr_steps), gamma=train_config.lr_gamma,
        warmup_steps=train_config.warmup_steps, warmup_factor=train_config.warmup_factor,
        warmup_method=train_config.warmup_method)
    clip = train_config.clip_global_norm or None
    optimizer = DetectionSGD(schedule, momentum=train_config.momentum,
                             l2=train_config.weight_decay,
                             bias_lr_factor=train_config.bias_lr_factor, global_clipnorm=clip)
    if train_config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer):
    """Learning rate the next step will use (python float)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = inner._learning_rate  # pylint: disable=protected-access
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(schedule(inner.iterations))
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


def global_step(optimizer):
    """The number of applied updates, the run's clock (python int)."""
    return int(getattr(optimizer, "inner_optimizer", optimizer).iterations.numpy())


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

class Checkpointer:
    """Saves and restores model weights, optimizer slots and the step in ``<workdir>/checkpoints``.

    On a multi-worker run every worker takes part in saving (the variables are synchronised
    collectively), but only the chief keeps its files; the others write to a scratch folder
    that is removed afterwards, the pattern TensorFlow documents for
    ``MultiWorkerMirroredStrategy``.

    Args:
        workdir: the run's directory.
        model: the ``keras.Model`` (built).
        optimizer: its optimizer (built, so that its slots exist before a restore).
        strategy: the distribution strategy.
        max_to_keep: number of checkpoints kept.
    """

    def __init__(self, workdir, model, optimizer, strategy, max_to_keep=3):
        self.chief = is_chief(strategy)
        # Every worker restores from the chief's checkpoints (the workdir is shared storage
        # on a multi-machine run).
        self.restore_directory = os.path.join(workdir, "checkpoints")
        self.directory = self.restore_directory
        if not self.chief:
            task_id = strategy.cluster_resolver.task_id
            self.directory = os.path.join(workdir, f"tmp_worker_{task_id}", "checkpoints")
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=max_to_keep,
            step_counter=inner.iterations)
        self.last_saved_step = None

    def restore(self):
        """Restores the newest checkpoint if there is one; returns the step (0 when none)."""
        latest = tf.train.latest_checkpoint(self.restore_directory)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        step = global_step(self.optimizer)
        self.last_saved_step = step
        logging.info("Restored %s (step %d).", latest, step)
        return step

    def save(self):
        """Writes a checkpoint for the current step (no-op if it was just written)."""
        step = global_step(self.optimizer)
        if step == self.last_saved_step:
            return None
        path = self.manager.save(checkpoint_number=step)
        self.last_saved_step = step
        if not self.chief:
            shutil.rmtree(os.path.dirname(self.directory), ignore_errors=True)
        return path


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------

class TrainingControl(keras.callbacks.Callback):
    """Checkpoints, stops at the last step, on a signal or on a non-finite loss; logs scalars.

    After every batch, in this order: a non-finite loss stops the run and blocks every later
    save; a pending SIGTERM/SIGINT saves and stops; the step counter reaching
    ``total_steps`` stops; a multiple of ``checkpoint_every`` saves. The end of training
    saves unless the loss went non-finite.

    Args:
        checkpointer: a ``Checkpointer``.
        total_steps: last step of the run.
        checkpoint_every: save interval in steps.
        summary_writer: optional ``tf.summary`` writer for step scalars (chief only).
        log_every: scalar interval in steps.
        handle_signals: install SIGTERM/SIGINT handlers for the duration of training.
    """

    def __init__(self, checkpointer, total_steps, checkpoint_every, summary_writer=None,
                 log_every=20, handle_signals=True):
        super().__init__()
        self.checkpointer = checkpointer
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.summary_writer = summary_writer
        self.log_every = int(log_every)
        self.handle_signals = handle_signals
        self.non_finite_step = None
        self.received_signal = None
        self._previous_handlers = {}

    # Signals arrive between Python bytecodes; the handler only records them, the save
    # happens at the next batch boundary where the variables are consistent.
    def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
        if self.received_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait
        self.received_signal = signum

    def on_train_begin(self, logs=None):
        if self.handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
                except ValueError:  # not the main thread: leave signals alone
                    break

    def _restore_signal_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = global_step(self.model.optimizer)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.non_finite_step = step
            self.model.stop_training = True
            return
        if self.received_signal is not None:
            self.checkpointer.save()
            self.model.stop_training = True
            return
        if self.summary_writer is not None and step % self.log_every == 0:
            with self.summary_writer.as_default(step=step):
                for key, value in logs.items():
                    tf.summary.scalar(f"train/{key}", float(value))
                tf.summary.scalar("train/learning_rate",
                                  current_learning_rate(self.model.optimizer))
        if step >= self.total_steps:
            self.model.stop_training = True
        if step % self.checkpoint_every == 0:
            self.checkpointer.save()

    def on_train_end(self, logs=None):
        self._restore_signal_handlers()
        if self.non_finite_step is None:
            self.checkpointer.save()
        if self.summary_writer is not None:
            self.summary_writer.flush()


def _give_train_outputs_a_batch_axis(model):
    """Lets Keras (3.15) reduce the step's scalar logs under MultiWorkerMirroredStrategy.

    Keras averages each logged value over the workers with ``reduce("MEAN", v, axis=0)``,
    which needs an axis 0; the values are replica-independent already, so ``[1]`` is exact.
    """
    if getattr(model, "_fcos_outputs_batched", False):
        return
    train_step = model.train_step

    def batched_train_step(data):
        return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}

    model.train_step = batched_train_step
    model._fcos_outputs_batched = True  # pylint: disable=protected-access


def _no_symbolic_build(iterator=None, data_batch=None):  # pylint: disable=unused-argument
    return None


def fit(model, dataset_fn, *, checkpointer, total_steps, steps_per_epoch, checkpoint_every,
        summary_writer=None, log_every=20, callbacks=(), verbose="auto", handle_signals=True):
    """Trains from the last checkpoint up to ``total_steps`` with ``model.fit``.

    Args:
        model: a compiled model.
        dataset_fn: ``start_step -> tf.data.Dataset`` of global batches, infinite, whose
            first element is the batch of step ``start_step`` (so that a resumed run sees the
            data a straight run would have seen).
        checkpointer: a ``Checkpointer``; restored here.
        total_steps: step count at which training ends.
        steps_per_epoch: steps per Keras epoch (progress bar unit).
        checkpoint_every: save interval in steps.
        summary_writer: optional ``tf.summary`` writer (chief only).
        log_every: scalar interval in steps.
        callbacks: extra Keras callbacks.
        verbose: ``fit``'s verbosity.
        handle_signals: save and stop on SIGTERM/SIGINT (single-machine runs; a multi-worker
            run relies on its periodic checkpoints).

    Returns:
        A dict: "start_step", "step" (where it stopped), "interrupted" (signal number or
        None), "history" (Keras History or None).

    Raises:
        NonFiniteLossError: when the loss became NaN or infinite; nothing was saved after the
            last good checkpoint.
    """
    start_step = checkpointer.restore()
    result = {"start_step": start_step, "step": start_step, "interrupted": None,
              "history": None}
    if start_step >= total_steps:
        logging.info("Step %d >= total_steps %d: nothing to train.", start_step, total_steps)
        return result
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # A signal reaches one worker, and a save needs all of them: preemption of a
        # multi-worker job is left to the periodic checkpoints.
        handle_signals = False
    control = TrainingControl(checkpointer, total_steps, checkpoint_every, summary_writer,
                              log_every, handle_signals)
    # Epoch e covers steps [e * steps_per_epoch, (e + 1) * steps_per_epoch); a resumed run
    # starts in the epoch of its step and TrainingControl stops it at exactly total_steps.
    epochs = -(-total_steps // steps_per_epoch)
    if model.built and model.optimizer.built:
        # Under a strategy Keras (3.15) first averages one batch over the replicas to build
        # the model symbolically. The model and optimizer are built already, so this would
        # only cost an extra pass of the input, and it fails under
        # MultiWorkerMirroredStrategy (its reduce() cannot take the labels dict).
        model._maybe_symbolic_build = _no_symbolic_build  # pylint: disable=protected-access
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _give_train_outputs_a_batch_axis(model)
    history = model.fit(dataset_fn(start_step), epochs=epochs,
                        initial_epoch=start_step // steps_per_epoch,
                        steps_per_epoch=steps_per_epoch, shuffle=False,
                        callbacks=[control, *callbacks],
                        verbose=verbose)
    result.update(step=global_step(model.optimizer), interrupted=control.received_signal,
                  history=history)
    if control.non_finite_step is not None:
        raise NonFiniteLossError(
            f"the loss is not finite at step {control.non_finite_step}; training stopped and "
            f"no checkpoint was written after step {checkpointer.last_saved_step} (the last "
            f"good one, in {checkpointer.directory}). Lower config.train.base_lr, lengthen "
            f"the warm-up or set config.train.clip_global_norm.")
    return result


# --------------------------------------------------------------------------------------------
# Builders: the only place where the config is unpacked into keyword arguments
# --------------------------------------------------------------------------------------------

def build_model(model_config, num_classes):
    """An ``FCOS`` model from ``config.model`` (built, weights loaded if configured)."""
    from fcos_tf.backbone import build_backbone  # pylint: disable=import-outside-toplevel
    from fcos_tf.model import FCOS  # pylint: disable=import-outside-toplevel

    m = model_config
    backbone_kwargs = {}
    if m.backbone.startswith("resnet"):
        backbone_kwargs = {"layout": m.backbone_layout, "freeze_at": m.backbone_freeze_at}
    elif m.backbone.startswith("mobilenet"):
        # ImageNet ("imagenet" or a keras.applications file) loads inside the constructor.
        backbone_kwargs = {"alpha": m.get("backbone_alpha", 1.0),
                           "norm": m.get("backbone_norm", "sync_bn"),
                           "weights": m.backbone_weights or None}
    backbone = build_backbone(m.backbone, **backbone_kwargs)
    if m.backbone_weights and not m.backbone.startswith("mobilenet"):
        backbone.load_weights(m.backbone_weights)
    model = FCOS(
        backbone, num_classes, fpn_channels=m.fpn_channels, p6_input=m.p6_input,
        head_num_convs=m.head_num_convs, head_norm=m.head_norm,
        head_num_groups=m.head_num_groups, centerness_on=m.centerness_on,
        norm_reg_targets=m.norm_reg_targets, location_offset=m.location_offset,
        box_loss=m.box_loss, focal_alpha=m.focal_alpha, focal_gamma=m.focal_gamma,
        score_threshold=m.score_threshold, score_threshold_on=m.score_threshold_on,
        pre_nms_top_k=m.pre_nms_top_k, nms_iou_threshold=m.nms_iou_threshold,
        max_detections=m.max_detections)
    model.build((None, None, None, 3))
    return model


def _pipeline_config(data_config, batch_size):
    from fcos_tf.data.pipeline import PipelineConfig  # pylint: disable=import-outside-toplevel

    d = data_config
    low, high = tuple(d.train_short_side)
    return PipelineConfig(
        batch_size=batch_size, min_size=low, max_size_short=high, eval_size=d.eval_short_side,
        max_size=d.max_size, flip_probability=d.hflip_prob, pixel_norm=d.pixel_norm,
        size_divisor=d.size_divisibility, max_boxes=d.max_boxes,
        center_sampling_radius=d.center_sampling_radius, shuffle_buffer=d.shuffle_buffer,
        cache=bool(d.cache), deterministic=bool(d.deterministic), seed=d.seed)


def read_split(config, split):
    """Reader examples of ``split`` ("train" | "val") as a ``ReadResult``.

    For COCO the result also carries the annotation file (``ground_truth_file`` attribute) so
    that evaluation uses the official areas and crowd flags.
    """
    d = config.data
    if d.dataset == "synthetic":
        from fcos_tf.data import synthetic  # pylint: disable=import-outside-toplevel

        # The validation images are another seed's: never seen in training.
        num = d.synthetic_num_train if split == "train" else d.synthetic_num_val
        seed = d.synthetic_seed if split == "train" else d.synthetic_seed + 1_000_003
        result = synthetic.synthetic_dataset(
            num, image_size=tuple(d.synthetic_image_size), seed=seed,
            num_objects=tuple(d.synthetic_num_objects),
            min_object_size=d.synthetic_min_object_size,
            noise_std=tuple(d.synthetic_noise_std), max_occlusion=d.synthetic_max_occlusion,
            max_object_fraction=d.synthetic_max_object_fraction)
        result.ground_truth_file = None
        return result
    if d.dataset == "coco":
        from fcos_tf.config import dataset_paths  # pylint: disable=import-outside-toplevel
        from fcos_tf.data.coco import read_coco  # pylint: disable=import-outside-toplevel

        paths = dataset_paths(config)
        annotations = paths[f"{split}_annotations"]
        result = read_coco(annotations, paths[f"{split}_images"], decode=False)
        result.ground_truth_file = annotations if split == "val" else None
        return result
    from fcos_tf.data import tfds as tfds_reader  # pylint: disable=import-outside-toplevel

    result = tfds_reader.read_tfds(
        d.tfds_name, split=d.tfds_train_split if split == "train" else d.tfds_val_split,
        data_dir=d.tfds_data_dir or None)
    result.ground_truth_file = None
    return result


def train_dataset_fn(config, examples):
    """``start_step -> dataset`` of training batches (global batch), see ``fit``."""
    from fcos_tf.data.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel

    pipeline_config = _pipeline_config(config.data, config.train.batch_size)

    def targets_only(images, labels):
        # The train step reads only the targets. Dropping the rest also keeps Keras' first
        # batch under a strategy (averaged over replicas to build the model) free of bools.
        return images, {key: labels[key] for key in TRAIN_LABEL_KEYS}

    def pipeline(start_step):
        if config.data.resume == "replay" or start_step == 0:
            dataset = make_pipeline(examples, training=True, config=pipeline_config)
            # Exact continuation: the batches of steps 0..start_step-1 are produced and
            # dropped (input pipeline only, no model compute).
            return dataset.skip(start_step) if start_step else dataset
        # A fresh, still deterministic stream for this resume point.
        seed = hash((config.data.seed, int(start_step))) % (2 ** 31)
        return make_pipeline(examples, training=True, config=pipeline_config, seed=seed)

    def dataset_fn(start_step):
        # Built inside flat_map, the pipeline's seeded shuffle and augmentation seeds start
        # afresh for every iterator: Keras iterates a dataset once more under a strategy
        # (to build the model), and a reshuffling dataset object would otherwise give that
        # second iterator another order than a single-device run or a resumed run sees.
        dataset = tf.data.Dataset.range(1).flat_map(lambda _: pipeline(start_step))
        return dataset.map(targets_only)

    return dataset_fn


def eval_dataset(config, examples):
    """Validation batches (no flip, fixed short side, every image once)."""
    from fcos_tf.data.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel

    pipeline_config = _pipeline_config(config.data, config.eval.batch_size)
    return make_pipeline(examples, training=False, config=pipeline_config, repeat=False,
                         shuffle_buffer=0, deterministic=True)


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------

def create_summary_writer(logdir):
    """A ``tf.summary`` writer, or None (with a warning) when TensorBoard is not installed."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    if importlib.util.find_spec("tensorboard") is None:
        logging.warning("TensorBoard is not installed: no summaries (pip install tensorboard).")
        return None
    return tf.summary.create_file_writer(logdir)


def _write_json(path, obj):
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(obj, f, indent=1)


def evaluate_and_report(model, config, val_examples, label_map, workdir, summary_writer=None,
                        step=0, verbose=True):
    """COCO AP on the validation split; writes ``metrics.json`` and ``detections.png``.

    Returns:
        The metrics dict of :func:`fcos_tf.evaluation.evaluate` (plus "step").
    """
    from fcos_tf import evaluation  # pylint: disable=import-outside-toplevel

    ground_truth = None
    if getattr(val_examples, "ground_truth_file", None):
        import contextlib, io  # pylint: disable=import-outside-toplevel,multiple-imports
        from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel

        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO(val_examples.ground_truth_file)
    dataset = eval_dataset(config, val_examples.dataset)
    keep = -(-config.eval.num_visualize // config.eval.batch_size)
    metrics, kept = evaluation.evaluate(model, dataset, label_map, ground_truth=ground_truth,
                                        num_images=config.eval.num_images, verbose=verbose,
                                        keep_batches=keep)
    metrics["step"] = int(step)
    evaluation.write_metrics(metrics, os.path.join(workdir, "metrics.json"))
    picture = None
    if config.eval.num_visualize and kept:
        picture = evaluation.detection_grid(
            kept, label_map, pixel_norm=config.data.pixel_norm,
            num_images=config.eval.num_visualize,
            score_threshold=config.eval.visualize_score_threshold)
        if picture is not None:
            evaluation.write_png(picture, os.path.join(workdir, "detections.png"))
    if summary_writer is not None:
        with summary_writer.as_default(step=int(step)):
            for name in evaluation.METRIC_NAMES:
                if metrics[name] is not None:
                    tf.summary.scalar(f"eval/{name}", metrics[name])
            if picture is not None:
                tf.summary.image("eval/detections", picture[None], max_outputs=1)
        summary_writer.flush()
    return metrics


def run(config, workdir, mode="train_and_eval", strategy=None, *, verbose="auto",
        handle_signals=True, callbacks=()):
    """Trains and/or evaluates one recipe in ``workdir`` (what ``train.py`` does).

    Args:
        config: a validated ``ConfigDict`` (see ``fcos_tf.config.validate_config``).
        workdir: run directory: checkpoints/, tensorboard/, config.json, label_map.json,
            metrics.json, detections.png.
        mode: "train_and_eval" | "train" | "eval".
        strategy: distribution strategy (default: ``select_strategy`` of the config).
        verbose: Keras progress-bar verbosity.
        handle_signals: save and stop on SIGTERM/SIGINT.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        dict with "step", "interrupted" (signal number or None), "model" and, when
        evaluated, "metrics".
    """
    if mode not in ("train_and_eval", "train", "eval"):
        raise ValueError(f"mode: expected train_and_eval, train or eval, got {mode!r}")
    strategy = strategy or select_strategy(config.train.strategy, config.train.devices)
    chief = is_chief(strategy)
    tf.io.gfile.makedirs(workdir)
    keras.utils.set_random_seed(config.train.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.train.precision)
    try:
        return _run(config, workdir, mode, strategy, chief, verbose, handle_signals, callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(config, workdir, mode, strategy, chief, verbose, handle_signals, callbacks):
    train_examples = read_split(config, "train") if mode != "eval" else None
    val_examples = read_split(config, "val") if mode != "train" else None
    label_map = (train_examples or val_examples).label_map
    if chief:
        _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
        label_map.save(os.path.join(workdir, "label_map.json"))

    with strategy.scope():
        model = build_model(config.model, label_map.num_classes)
        optimizer = build_optimizer(config.train)
        model.compile(optimizer=optimizer, jit_compile=bool(config.train.jit_compile))
        optimizer.build(model.trainable_variables)
    checkpointer = Checkpointer(workdir, model, optimizer, strategy,
                                config.train.keep_checkpoints)
    writer = create_summary_writer(os.path.join(workdir, "tensorboard")) if chief else None
    result = {"step": 0, "interrupted": None, "model": model}
    if mode != "eval":
        logging.info("Training %s for %d steps, global batch %d on %d replica(s), workdir %s.",
                     config.model.backbone, config.train.total_steps, config.train.batch_size,
                     strategy.num_replicas_in_sync, workdir)
        fit_result = fit(model, train_dataset_fn(config, train_examples.dataset),
                         checkpointer=checkpointer, total_steps=config.train.total_steps,
                         steps_per_epoch=config.train.steps_per_epoch,
                         checkpoint_every=config.train.checkpoint_every, summary_writer=writer,
                         log_every=config.train.log_every, verbose=verbose,
                         handle_signals=handle_signals, callbacks=callbacks)
        result.update(step=fit_result["step"], interrupted=fit_result["interrupted"])
        if fit_result["interrupted"] is not None:
            logging.warning("Interrupted by signal %d at step %d; checkpoint saved in %s.",
                            fit_result["interrupted"], fit_result["step"],
                            checkpointer.directory)
            return result
    else:
        result["step"] = checkpointer.restore()
        if checkpointer.last_saved_step is None:
            raise ValueError(f"workdir: no checkpoint in {checkpointer.directory} to evaluate")
    if mode != "train" and chief:
        result["metrics"] = evaluate_and_report(model, config, val_examples, label_map, workdir,
                                                writer, result["step"])
    return result
