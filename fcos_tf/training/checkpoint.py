"""Checkpoints of a run: model weights, optimizer slots and step in ``<workdir>/checkpoints``."""

import logging
import os
import shutil

import keras
import tensorflow as tf

from fcos_tf.training.distribution import is_chief
from fcos_tf.training.optimization import global_step

__all__ = [
    "CHECKPOINTS_DIR",
    "CheckpointMismatchError",
    "Checkpointer",
    "latest_checkpoint",
    "restore_matching",
]

CHECKPOINTS_DIR = "checkpoints"


class CheckpointMismatchError(ValueError):
    """The newest checkpoint of a workdir does not fit the model being trained (another
    recipe, or another code version); the message names the checkpoint and the weight."""


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

    def __init__(
        self,
        workdir: str,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        max_to_keep: int = 3,
    ):
        self.chief = is_chief(strategy)
        # Every worker restores from the chief's checkpoints (the workdir is shared storage
        # on a multi-machine run).
        self.restore_directory = os.path.join(workdir, CHECKPOINTS_DIR)
        self.directory = self.restore_directory
        if not self.chief:
            task_id = strategy.cluster_resolver.task_id
            self.directory = os.path.join(workdir, f"tmp_worker_{task_id}", CHECKPOINTS_DIR)
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=max_to_keep, step_counter=inner.iterations
        )
        self.last_saved_step = None

    def restore(self) -> int:
        """Restores the newest checkpoint if there is one; returns the step (0 when none).

        Raises:
            CheckpointMismatchError: when it does not fit the model and optimizer.
        """
        latest = tf.train.latest_checkpoint(self.restore_directory)
        if latest is None:
            return 0
        restore_matching(self.checkpoint, latest)
        step = global_step(self.optimizer)
        self.last_saved_step = step
        logging.info("Restored %s (step %d).", latest, step)
        return step

    def save(self) -> str | None:
        """Writes a checkpoint for the current step (no-op if it was just written)."""
        step = global_step(self.optimizer)
        if step == self.last_saved_step:
            return None
        path = self.manager.save(checkpoint_number=step)
        self.last_saved_step = step
        if not self.chief:
            shutil.rmtree(os.path.dirname(self.directory), ignore_errors=True)
        return path


def latest_checkpoint(path: str) -> str:
    """The checkpoint prefix of ``path``: a prefix itself, a folder of checkpoints or a workdir.

    Raises:
        FileNotFoundError: naming ``path`` when it holds no checkpoint.
    """
    if tf.io.gfile.exists(path + ".index"):
        return path
    for folder in (os.path.join(path, CHECKPOINTS_DIR), path):
        if tf.io.gfile.isdir(folder):
            latest = tf.train.latest_checkpoint(folder)
            if latest:
                return latest
    raise FileNotFoundError(
        f"No checkpoint at `path`={path!r} (expected a checkpoint prefix, "
        f"a folder of checkpoints or a fcos-train workdir)."
    )


def restore_matching(checkpoint: tf.train.Checkpoint, path: str, *, partial: bool = False):
    """``checkpoint.restore(path)``, checked: every object of ``checkpoint`` gets its value.

    Args:
        checkpoint: the objects to restore (a ``tf.train.Checkpoint``).
        path: a checkpoint prefix.
        partial: values of the file that no object takes (e.g. optimizer slots when only the
            model is restored) are expected, not warned about.

    Returns:
        The load status.

    Raises:
        CheckpointMismatchError: a weight of another shape, or an object without a value
            (another recipe, or another code version).
    """
    status = None
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError) as error:
        if status is not None:
            status.expect_partial()  # the error says it; no warning per value at exit
        raise CheckpointMismatchError(
            f"{path} does not fit the model built from the config (another recipe, or "
            f"another code version?): {str(error)[:400]}"
        ) from error
    return status
