"""The run directory: every file a run writes, and reading them back, in one place.

Layout of a ``train.py`` work directory (also what ``convert_torchvision`` writes and what
the export, ``predict`` and evaluation read)::

    <workdir>/config.json        the recipe after command-line overrides (CONFIG_FILE)
    <workdir>/label_map.json     contiguous class -> dataset category id (LABEL_MAP_FILENAME)
    <workdir>/checkpoints/       model weights, optimizer slots and step (CHECKPOINTS_DIR)
    <workdir>/tensorboard/       summaries (TENSORBOARD_DIR)
    <workdir>/metrics.json       COCO AP of the last evaluation (METRICS_FILE)
    <workdir>/detections.png     a few validation images with their detections

An export folder holds numbered versions ``<export_dir>/<version>/`` (TF Serving's layout),
see :func:`next_version`.
"""

import json
import logging
import os
import shutil

import keras
import ml_collections
import tensorflow as tf

from fcos_tf import builders
from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap
from fcos_tf.distribution import is_chief
from fcos_tf.optimization import global_step

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
METRICS_FILE = "metrics.json"
DETECTIONS_FILE = "detections.png"


# --------------------------------------------------------------------------------------------
# Config and label map
# --------------------------------------------------------------------------------------------


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``<workdir>/config.json`` (the recipe after overrides); returns its path."""
    tf.io.gfile.makedirs(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f, indent=1)
    return path


def write_label_map(label_map: LabelMap, workdir: str) -> str:
    """Writes ``<workdir>/label_map.json``; returns its path."""
    tf.io.gfile.makedirs(workdir)
    return label_map.save(os.path.join(workdir, LABEL_MAP_FILENAME))


def read_label_map(workdir: str) -> LabelMap | None:
    """The label map of ``workdir``, or None when it holds none."""
    if not tf.io.gfile.exists(os.path.join(workdir, LABEL_MAP_FILENAME)):
        return None
    return LabelMap.load(workdir)


def _merge(base, values):
    for key, value in values.items():
        current = base.get(key)
        if hasattr(current, "keys") and isinstance(value, dict):
            _merge(current, value)
            continue
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)  # JSON: lists
        if (
            key in base
            and current is not None
            and value is not None
            and (type(current) is not type(value))
            and not (isinstance(current, float) and isinstance(value, int))
        ):
            base[key] = None  # e.g. a field whose type changed: take the saved value as is
        base[key] = value


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The ``ConfigDict`` a run wrote to ``<workdir>/config.json``.

    The saved values are laid over the current defaults (:func:`fcos_tf.config.base_config`),
    so a workdir written before a config key was added still loads.

    Raises:
        FileNotFoundError: when ``workdir`` holds no ``config.json``.
    """
    from fcos_tf import config as config_lib

    path = os.path.join(workdir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"No {CONFIG_FILE} in `workdir`={workdir!r}; pass the recipe with --config."
        )
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    config = config_lib.base_config()
    _merge(config, saved)
    return config


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
        """Restores the newest checkpoint if there is one; returns the step (0 when none)."""
        latest = tf.train.latest_checkpoint(self.restore_directory)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
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
        f"a folder of checkpoints or a train.py workdir)."
    )


def load_trained_model(
    workdir: str | None = None,
    *,
    checkpoint: str | None = None,
    config: ml_collections.ConfigDict | None = None,
    label_map: LabelMap | None = None,
) -> tuple[keras.Model, ml_collections.ConfigDict, LabelMap]:
    """Rebuilds a trained FCOS from a ``train.py`` workdir and/or a checkpoint.

    Args:
        workdir: run directory (``config.json``, ``label_map.json``, ``checkpoints/``).
        checkpoint: a checkpoint prefix or folder; default: the newest one of ``workdir``.
        config: the recipe ``ConfigDict``; default: ``<workdir>/config.json``.
        label_map: a ``LabelMap``; default: ``<workdir>/label_map.json``, else the label map
            of the config's dataset (:func:`fcos_tf.builders.dataset_label_map`).

    Returns:
        ``(model, config, label_map)``: a float32 ``FCOS`` with the checkpoint's weights.
    """
    if workdir is None and (checkpoint is None or config is None):
        raise ValueError("Pass `workdir`, or both `checkpoint` and `config`.")
    if config is None:
        config = read_config(workdir)
    if label_map is None and workdir is not None:
        label_map = read_label_map(workdir)
    if label_map is None:
        label_map = builders.dataset_label_map(config.data)
    checkpoint = latest_checkpoint(checkpoint or workdir)
    # Serving runs in float32 whatever precision the model was trained with, and the
    # checkpoint holds every weight (no backbone weights file is read).
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = builders.build_model(config, label_map.num_classes, load_backbone_weights=False)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    status = tf.train.Checkpoint(model=model).restore(checkpoint)
    status.expect_partial()  # the optimizer slots are not needed
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(
            f"`checkpoint` {checkpoint} does not hold every weight of the model "
            f"built from the config (another recipe or code version?): "
            f"{str(error)[:400]}..."
        ) from None
    return model, config, label_map


# --------------------------------------------------------------------------------------------
# Export versions
# --------------------------------------------------------------------------------------------


def next_version(export_dir: str) -> int:
    """1 + the largest numeric version folder of ``export_dir`` (1 when there is none)."""
    versions = [
        int(name)
        for name in (tf.io.gfile.listdir(export_dir) if tf.io.gfile.isdir(export_dir) else [])
        if name.strip("/").isdigit()
    ]
    return max(versions, default=0) + 1
