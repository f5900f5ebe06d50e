"""A training run: ``fit`` (the loop around ``keras.Model.fit``) and ``run`` (what train.py does).

A run is a sequence of ``fit`` steps bracketed by checkpoints. The global step is the
optimizer's ``iterations`` counter; it is saved with the model weights and the optimizer
slots (:class:`fcos_tf.rundir.Checkpointer`), so a restart with the same work directory
continues at the same step, with the same momentum and the same point of the schedule.
:class:`fcos_tf.callbacks.TrainingControl` decides when to save and when to stop. The input
continues where it was too (``config.train.resume``, see
:func:`fcos_tf.builders.build_train_dataset`).

``run()`` builds data, model and optimizer with :mod:`fcos_tf.builders` under the strategy's
scope, trains and evaluates (``fcos_tf.evaluation``), writing everything into the work
directory through :mod:`fcos_tf.rundir`.
"""

import contextlib
import importlib.util
import io
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import ml_collections
import tensorflow as tf

from fcos_tf import builders, rundir
from fcos_tf.callbacks import TrainingControl
from fcos_tf.distribution import is_chief
from fcos_tf.optimization import global_step

RUN_MODES = ("train_and_eval", "train", "eval")


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
    checkpointer: rundir.Checkpointer,
    total_steps: int,
    steps_per_epoch: int,
    checkpoint_every: int,
    summary_writer=None,
    log_every: int = 20,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose="auto",
    handle_signals: bool = True,
) -> dict[str, Any]:
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
    # Epoch e covers steps [e * steps_per_epoch, (e + 1) * steps_per_epoch); a resumed run
    # starts in the epoch of its step and TrainingControl stops it at exactly total_steps.
    epochs = -(-total_steps // steps_per_epoch)
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
        callbacks=[control, *callbacks],
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


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------


def create_summary_writer(logdir: str):
    """A ``tf.summary`` writer, or None (with a warning) when TensorBoard is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        logging.warning("TensorBoard is not installed: no summaries (pip install tensorboard).")
        return None
    return tf.summary.create_file_writer(logdir)


def evaluate_and_report(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    val_examples,
    label_map,
    workdir: str,
    summary_writer=None,
    step: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """COCO AP on the validation split; writes ``metrics.json`` and ``detections.png``.

    Returns:
        The metrics dict of :func:`fcos_tf.evaluation.evaluate` (plus "step").
    """
    from fcos_tf import evaluation

    ground_truth = None
    if getattr(val_examples, "ground_truth_file", None):
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO(val_examples.ground_truth_file)
    dataset = builders.build_eval_dataset(config, val_examples.dataset)
    keep = -(-config.eval.num_visualize // config.eval.batch_size)
    metrics, kept = evaluation.evaluate(
        model,
        dataset,
        label_map,
        ground_truth=ground_truth,
        num_images=config.eval.num_images,
        verbose=verbose,
        keep_batches=keep,
    )
    metrics["step"] = int(step)
    evaluation.write_metrics(metrics, os.path.join(workdir, rundir.METRICS_FILE))
    picture = None
    if config.eval.num_visualize and kept:
        picture = evaluation.detection_grid(
            kept,
            label_map,
            pixel_norm=config.pipeline.pixel_norm,
            num_images=config.eval.num_visualize,
            score_threshold=config.eval.visualize_score_threshold,
        )
        if picture is not None:
            evaluation.write_png(picture, os.path.join(workdir, rundir.DETECTIONS_FILE))
    if summary_writer is not None:
        with summary_writer.as_default(step=int(step)):
            for name in evaluation.METRIC_NAMES:
                if metrics[name] is not None:
                    tf.summary.scalar(f"eval/{name}", metrics[name])
            if picture is not None:
                tf.summary.image("eval/detections", picture[None], max_outputs=1)
        summary_writer.flush()
    return metrics


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    mode: str = "train_and_eval",
    strategy: tf.distribute.Strategy | None = None,
    *,
    verbose="auto",
    handle_signals: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains and/or evaluates one recipe in ``workdir`` (what ``train.py`` does).

    Args:
        config: a validated ``ConfigDict`` (see ``fcos_tf.config.validate_config``).
        workdir: run directory: checkpoints/, tensorboard/, config.json, label_map.json,
            metrics.json, detections.png.
        mode: "train_and_eval" | "train" | "eval".
        strategy: distribution strategy (default: :func:`fcos_tf.builders.build_strategy`).
        verbose: Keras progress-bar verbosity.
        handle_signals: save and stop on SIGTERM/SIGINT.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        dict with "step", "interrupted" (signal number or None), "model" and, when
        evaluated, "metrics".
    """
    if mode not in RUN_MODES:
        raise ValueError(f"mode: expected one of {RUN_MODES}, got {mode!r}")
    strategy = strategy or builders.build_strategy(config)
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
    train_examples = builders.read_split(config, "train") if mode != "eval" else None
    val_examples = builders.read_split(config, "val") if mode != "train" else None
    label_map = (train_examples or val_examples).label_map
    if chief:
        rundir.write_config(config, workdir)
        rundir.write_label_map(label_map, workdir)

    with strategy.scope():
        model = builders.build_model(config, label_map.num_classes)
        optimizer = builders.build_optimizer(config)
        model.compile(optimizer=optimizer, jit_compile=bool(config.train.jit_compile))
        optimizer.build(model.trainable_variables)
    checkpointer = rundir.Checkpointer(
        workdir, model, optimizer, strategy, config.train.keep_checkpoints
    )
    writer = None
    if chief:
        writer = create_summary_writer(os.path.join(workdir, rundir.TENSORBOARD_DIR))
    result = {"step": 0, "interrupted": None, "model": model}
    if mode != "eval":
        logging.info(
            "Training %s for %d steps, global batch %d on %d replica(s), workdir %s.",
            config.backbone.name,
            config.train.total_steps,
            config.train.batch_size,
            strategy.num_replicas_in_sync,
            workdir,
        )
        fit_result = fit(
            model,
            builders.build_train_dataset(config, train_examples.dataset),
            checkpointer=checkpointer,
            total_steps=config.train.total_steps,
            steps_per_epoch=config.train.steps_per_epoch,
            checkpoint_every=config.train.checkpoint_every,
            summary_writer=writer,
            log_every=config.train.log_every,
            verbose=verbose,
            handle_signals=handle_signals,
            callbacks=callbacks,
        )
        result.update(step=fit_result["step"], interrupted=fit_result["interrupted"])
        if fit_result["interrupted"] is not None:
            logging.warning(
                "Interrupted by signal %d at step %d; checkpoint saved in %s.",
                fit_result["interrupted"],
                fit_result["step"],
                checkpointer.directory,
            )
            return result
    else:
        result["step"] = checkpointer.restore()
        if checkpointer.last_saved_step is None:
            raise ValueError(f"workdir: no checkpoint in {checkpointer.directory} to evaluate")
    if mode != "train" and chief:
        result["metrics"] = evaluate_and_report(
            model, config, val_examples, label_map, workdir, writer, result["step"]
        )
    return result
