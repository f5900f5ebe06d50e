"""A whole run of a recipe: build data, model and optimizer, train, evaluate (``fcos-train``).

``run()`` builds everything with :mod:`fcos_tf.core.builders` under the strategy's scope,
trains with :func:`fcos_tf.training.loop.fit` and evaluates with
:mod:`fcos_tf.training.evaluation`, writing every file into the work directory through
:mod:`fcos_tf.core.rundir`.
"""

import contextlib
import importlib.util
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import keras
import ml_collections
import tensorflow as tf

from fcos_tf.core import builders, rundir
from fcos_tf.core.config import RUN_MODES
from fcos_tf.training.checkpoint import CHECKPOINTS_DIR, Checkpointer
from fcos_tf.training.distribution import is_chief
from fcos_tf.training.loop import NonFiniteLossError, fit

__all__ = ["RUN_MODES", "NonFiniteLossError", "create_summary_writer", "evaluate_and_report", "run"]


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
        The metrics dict of :func:`fcos_tf.training.evaluation.evaluate` (plus "step").
    """
    from fcos_tf.training import evaluation

    ground_truth = None
    if val_examples.ground_truth_file:
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
    """Trains and/or evaluates one recipe in ``workdir`` (what ``fcos-train`` does).

    Args:
        config: a validated ``ConfigDict`` (see ``fcos_tf.core.config.validate_config``).
        workdir: run directory: checkpoints/, tensorboard/, config.json, label_map.json,
            metrics.json, detections.png.
        mode: "train_and_eval" | "train" | "eval".
        strategy: distribution strategy (default: :func:`fcos_tf.core.builders.build_strategy`).
        verbose: Keras progress-bar verbosity.
        handle_signals: save and stop on SIGTERM/SIGINT.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        dict with "step", "interrupted" (signal number or None), "model" and, when
        evaluated, "metrics".

    Raises:
        FileNotFoundError: in "eval" mode, when ``workdir`` holds no checkpoint (nothing is
            written then).
    """
    if mode not in RUN_MODES:
        raise ValueError(f"mode: expected one of {RUN_MODES}, got {mode!r}")
    if mode == "eval":
        # Before anything is written into the workdir: a mistyped --workdir leaves nothing.
        checkpoints = os.path.join(workdir, CHECKPOINTS_DIR)
        if not tf.io.gfile.isdir(checkpoints) or not tf.train.latest_checkpoint(checkpoints):
            raise FileNotFoundError(
                f"no checkpoint in {checkpoints} to evaluate (train there first, or give the "
                f"--workdir of a trained run)"
            )
    strategy = strategy or builders.build_strategy(config)
    chief = is_chief(strategy)
    tf.io.gfile.makedirs(workdir)
    keras.utils.set_random_seed(config.train.seed)
    with builders.dtype_policy(config.train.precision):
        return _run(config, workdir, mode, strategy, chief, verbose, handle_signals, callbacks)


def _run(config, workdir, mode, strategy, chief, verbose, handle_signals, callbacks):
    train_examples = builders.read_split(config, "train") if mode != "eval" else None
    val_examples = builders.read_split(config, "val") if mode != "train" else None
    label_map = (train_examples or val_examples).label_map

    def record_run(start_step=None):
        """config.json and label_map.json, once the workdir's checkpoint fits the model (a
        refused resume or evaluation leaves the files of the run that trained it)."""
        if chief:
            rundir.write_config(config, workdir)
            rundir.write_label_map(label_map, workdir)

    with strategy.scope():
        model = builders.build_model(config, label_map.num_classes)
        optimizer = builders.build_optimizer(config)
        model.compile(optimizer=optimizer, jit_compile=bool(config.train.jit_compile))
    checkpointer = Checkpointer(workdir, model, optimizer, strategy, config.train.keep_checkpoints)
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
            on_restored=record_run,
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
        result["step"] = checkpointer.restore()  # run() checked that there is one
        if not tf.io.gfile.exists(os.path.join(workdir, rundir.CONFIG_FILE)):
            # Evaluating leaves the record of the run that trained the workdir as it is.
            record_run()
    if mode != "train" and chief:
        result["metrics"] = evaluate_and_report(
            model, config, val_examples, label_map, workdir, writer, result["step"]
        )
    return result
