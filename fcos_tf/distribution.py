"""Distribution strategies: which one a run uses, its collective keys, which worker is chief.

One replica per device under ``MirroredStrategy`` (several GPUs of one machine) or
``MultiWorkerMirroredStrategy`` (several machines, ``TF_CONFIG``); the global batch is split
over the replicas and the losses are normalised by global counts (DESIGN.md §3 item 13), so
one device or eight give the same update for the same global batch.
"""

import json
import os
from collections.abc import Sequence

import tensorflow as tf

# Values of config.train.strategy.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def _tf_config_num_workers():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def select_strategy(name: str = "auto", devices: Sequence[str] = ()) -> tf.distribute.Strategy:
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
    if name not in STRATEGIES:
        raise ValueError(f"name: unknown strategy {name!r}")
    if name == "multi_worker" or (name == "auto" and _tf_config_num_workers() > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return mirrored_strategy(devices)
    return tf.distribute.get_strategy()


# Collective keys reserved for one MirroredStrategy (TensorFlow's own tests space them so).
_COLLECTIVE_KEYS_PER_STRATEGY = 100_000


def mirrored_strategy(devices: Sequence[str] = ()) -> tf.distribute.MirroredStrategy:
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
    cls._collective_key_base += _COLLECTIVE_KEYS_PER_STRATEGY
    strategy = cls(devices=list(devices) or None)
    cls._collective_key_base += _COLLECTIVE_KEYS_PER_STRATEGY
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, summaries and metrics."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
