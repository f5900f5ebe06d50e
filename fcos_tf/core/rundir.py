"""The run directory: every file a run writes, and reading them back, in one place.

Layout of a ``fcos-train`` work directory (also what ``convert_torchvision`` writes and what
the export, ``predict`` and evaluation read)::

    <workdir>/config.json        the recipe after command-line overrides (CONFIG_FILE)
    <workdir>/label_map.json     contiguous class -> dataset category id (LABEL_MAP_FILENAME)
    <workdir>/checkpoints/       model weights, optimizer slots and step (CHECKPOINTS_DIR)
    <workdir>/tensorboard/       summaries (TENSORBOARD_DIR)
    <workdir>/metrics.json       COCO AP of the last evaluation (METRICS_FILE)
    <workdir>/detections.png     a few validation images with their detections

Checkpoints are written by :class:`fcos_tf.training.checkpoint.Checkpointer`; an export
folder holds numbered versions ``<export_dir>/<version>/`` (TF Serving's layout, see
:func:`fcos_tf.serving.saved_model.next_version`).
"""

import json
import os
from collections.abc import Callable

import keras
import ml_collections
import tensorflow as tf

from fcos_tf.core import builders
from fcos_tf.data.label_map import LABEL_MAP_FILENAME, LabelMap
from fcos_tf.serving.detector import Detector, saved_model_version
from fcos_tf.training.checkpoint import (
    CHECKPOINTS_DIR,
    Checkpointer,
    latest_checkpoint,
    restore_matching,
)

CONFIG_FILE = "config.json"
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

    The saved values are laid over the current defaults (:func:`fcos_tf.core.config.base_config`),
    so a workdir written before a config key was added still loads.

    Raises:
        FileNotFoundError: when ``workdir`` does not exist or holds no ``config.json``.
    """
    from fcos_tf.core import config as config_lib

    path = os.path.join(workdir, CONFIG_FILE)
    if not tf.io.gfile.isdir(workdir):
        raise FileNotFoundError(f"`workdir`={workdir!r} does not exist.")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"No {CONFIG_FILE} in `workdir`={workdir!r}; pass the recipe with --config."
        )
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    config = config_lib.base_config()
    _merge(config, saved)
    return config


def load_trained_model(
    workdir: str | None = None,
    *,
    checkpoint: str | None = None,
    config: ml_collections.ConfigDict | None = None,
    label_map: LabelMap | None = None,
) -> tuple[keras.Model, ml_collections.ConfigDict, LabelMap]:
    """Rebuilds a trained FCOS from a ``fcos-train`` workdir and/or a checkpoint.

    Args:
        workdir: run directory (``config.json``, ``label_map.json``, ``checkpoints/``).
        checkpoint: a checkpoint prefix or folder; default: the newest one of ``workdir``.
        config: the recipe ``ConfigDict``; default: ``<workdir>/config.json``.
        label_map: a ``LabelMap``; default: ``<workdir>/label_map.json``, else the label map
            of the config's dataset (:func:`fcos_tf.core.builders.dataset_label_map`).

    Returns:
        ``(model, config, label_map)``: a float32 ``FCOS`` with the checkpoint's weights.

    Raises:
        fcos_tf.training.checkpoint.CheckpointMismatchError: (a ``ValueError``) when the
            checkpoint does not fit the model built from the config.
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
    with builders.dtype_policy("float32"):
        model = builders.build_model(config, label_map.num_classes, load_backbone_weights=False)
    # The optimizer's slots in the file are not needed.
    restore_matching(tf.train.Checkpoint(model=model), checkpoint, partial=True)
    return model, config, label_map


def write_imported_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    label_map: LabelMap,
    set_weights: Callable[[keras.Model], None],
) -> keras.Model:
    """Writes a run directory holding imported weights, as ``fcos-train`` would at step 0.

    The model and optimizer are the objects a training run builds from ``config`` (so that
    its checkpointer restores them), ``set_weights`` fills the model, and the workdir gets
    ``checkpoints/ckpt-0``, ``config.json`` and ``label_map.json``: evaluation, export,
    ``predict`` and fine-tuning then read it as any run.

    Args:
        workdir: directory to create; must not hold checkpoints already.
        config: the recipe of the imported model.
        label_map: its classes.
        set_weights: sets every weight of the built model (raises on a mismatch).

    Returns:
        The built model, with the imported weights.

    Raises:
        ValueError: ``workdir`` holds checkpoints already, or from ``set_weights``.
    """
    if tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINTS_DIR)) is not None:
        raise ValueError(f"`workdir`={workdir!r} already holds checkpoints; use a new directory.")
    model = builders.build_model(config, label_map.num_classes, load_backbone_weights=False)
    optimizer = builders.build_optimizer(config)
    model.compile(optimizer=optimizer, jit_compile=bool(config.train.jit_compile))
    set_weights(model)
    tf.io.gfile.makedirs(workdir)
    checkpointer = Checkpointer(
        workdir, model, optimizer, tf.distribute.get_strategy(), config.train.keep_checkpoints
    )
    checkpointer.save()
    write_config(config, workdir)
    write_label_map(label_map, workdir)
    return model


def load_detector(path: str, checkpoint: str | None = None) -> Detector:
    """A :class:`~fcos_tf.serving.detector.Detector` of an export or of a workdir.

    Args:
        path: an export of ``fcos-export`` (a version folder or its base folder), or a
            ``fcos-train`` workdir (its newest checkpoint, or ``checkpoint``), whose serving
            graph is then traced in process.
        checkpoint: with a workdir, this checkpoint instead of the newest.

    Raises:
        FileNotFoundError: when ``path`` is neither.
    """
    if saved_model_version(path) is not None:
        return Detector.load(path)
    if not tf.io.gfile.exists(os.path.join(path, CONFIG_FILE)):
        raise FileNotFoundError(
            f"`model` {path!r} is neither a SavedModel (saved_model.pb in it or in a "
            f"numbered version folder) nor a fcos-train workdir (config.json)."
        )
    model, config, label_map = load_trained_model(path, checkpoint=checkpoint)
    return Detector.from_model(model, label_map, builders.build_serving_config(config))
