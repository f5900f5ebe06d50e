"""The training loop: ``fit``, the loop around ``keras.Model.fit``.

A run is a sequence of ``fit`` steps bracketed by checkpoints. The global step is the
optimizer's ``iterations`` counter; it is saved with the model weights and the optimizer
slots (:class:`fcos_tf.training.checkpoint.Checkpointer`), so a restart with the same work
directory continues at the same step, with the same momentum and the same point of the
schedule. :class:`fcos_tf.training.callbacks.TrainingControl` decides when to save and when
to stop. The input continues where it was too: ``dataset_fn(start_step)`` starts at the
batch of the restored step.
"""

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from fcos_tf.training.callbacks import EpochProgress, TrainingControl
from fcos_tf.training.checkpoint import Checkpointer
from fcos_tf.training.optimization import global_step

__all__ = ["NonFiniteLossError", "fit"]


class NonFiniteLossError(RuntimeError):
    """Raised by ``fit`` when the loss became NaN or infinite."""


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
    model._fcos_outputs_batched = True


def _no_symbolic_build(iterator=None, data_batch=None):
    return None


def fit(
    model: keras.Model,
    dataset_fn: Callable[[int], tf.data.Dataset],
    *,
    checkpointer: Checkpointer,
    total_steps: int,
    steps_per_epoch: int,
    checkpoint_every: int,
    summary_writer=None,
    log_every: int = 20,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose="auto",
    handle_signals: bool = True,
    on_restored: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Trains from the last checkpoint up to ``total_steps`` with ``model.fit``.

    Args:
        model: a compiled model.
        dataset_fn: ``start_step -> tf.data.Dataset`` of global batches, infinite, whose
            first element is the batch of step ``start_step`` (so that a resumed run sees the
            data a straight run would have seen).
        checkpointer: a ``Checkpointer``; restored here.
        total_steps: step count at which training ends.
        steps_per_epoch: steps per epoch (progress bar unit): epoch e holds the steps
            (e - 1) * steps_per_epoch + 1 .. e * steps_per_epoch, also in a resumed run.
        checkpoint_every: save interval in steps.
        summary_writer: optional ``tf.summary`` writer (chief only).
        log_every: scalar interval in steps.
        callbacks: extra Keras callbacks.
        verbose: ``fit``'s verbosity.
        handle_signals: save and stop on SIGTERM/SIGINT (single-machine runs; a multi-worker
            run relies on its periodic checkpoints).
        on_restored: called with the start step once the checkpoint (if any) is restored,
            before training: the run directory's other files are written there, so that a
            checkpoint that does not fit (an error) leaves them as they were.

    Returns:
        A dict: "start_step", "step" (where it stopped), "interrupted" (signal number or
        None), "history" (Keras History or None).

    Raises:
        NonFiniteLossError: when the loss became NaN or infinite; nothing was saved after the
            last good checkpoint.
    """
    start_step = checkpointer.restore()
    if on_restored is not None:
        on_restored(start_step)
    result = {"start_step": start_step, "step": start_step, "interrupted": None, "history": None}
    if start_step >= total_steps:
        logging.info("Step %d >= total_steps %d: nothing to train.", start_step, total_steps)
        return result
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # A signal reaches one worker, and a save needs all of them: preemption of a
        # multi-worker job is left to the periodic checkpoints.
        handle_signals = False
    control = TrainingControl(
        checkpointer, total_steps, checkpoint_every, summary_writer, log_every, handle_signals
    )
    # Keras epochs of steps_per_epoch steps from the start step, as many as could be needed;
    # TrainingControl stops the run at exactly total_steps. The progress bar (EpochProgress)
    # counts epochs by the step counter, so that a resumed run shows the epoch of its step.
    epochs = -(-total_steps // steps_per_epoch)
    progress = [EpochProgress()] if verbose != 0 else []
    if model.built and model.optimizer.built:
        # Under a strategy Keras (3.15) first averages one batch over the replicas to build
        # the model symbolically. The model and optimizer are built already, so this would
        # only cost an extra pass of the input, and it fails under
        # MultiWorkerMirroredStrategy (its reduce() cannot take the labels dict).
        model._maybe_symbolic_build = _no_symbolic_build
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _give_train_outputs_a_batch_axis(model)
    history = model.fit(
        dataset_fn(start_step),
        epochs=epochs,
        initial_epoch=start_step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,
        callbacks=[control, *progress, *callbacks],
        verbose=verbose,
    )
    result.update(
        step=global_step(model.optimizer), interrupted=control.received_signal, history=history
    )
    if control.non_finite_step is not None:
        raise NonFiniteLossError(
            f"the loss is not finite at step {control.non_finite_step}; training stopped and "
            f"no checkpoint was written after step {checkpointer.last_saved_step} (the last "
            f"good one, in {checkpointer.directory}). Lower config.train.base_lr, lengthen "
            f"the warm-up or set config.train.clip_global_norm."
        )
    return result
