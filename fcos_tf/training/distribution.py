"""Distribution strategies: which one a run uses, its collective keys, which worker is chief.

One replica per device under ``MirroredStrategy`` (several GPUs of one machine) or
``MultiWorkerMirroredStrategy`` (several machines, ``TF_CONFIG``); the global batch is split
over the replicas and the losses are normalised by global counts (docs/design.md §3 item 13), so
one device or eight give the same update for the same global batch.
"""

import json
import logging
import os
from collections.abc import Sequence

import tensorflow as tf

# Values of config.train.strategy.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
# The TF_CONFIG jobs that train (and that TensorFlow's coordination service coordinates).
_TRAINING_JOBS = ("chief", "worker")

# How long TensorFlow's coordination service waits for a worker's heartbeat before it stops
# the whole cluster. Its default, 10 s, is shorter than a heartbeat can be late when workers
# share a machine's cores with other work (several workers on one host, a loaded CI machine):
# one missed deadline there ended a healthy two-worker run. A worker that is really gone
# still stops the others, a minute later.
HEARTBEAT_TIMEOUT_S = 60


def _tf_config_num_workers():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in _TRAINING_JOBS)


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
        _configure_coordination_service(HEARTBEAT_TIMEOUT_S)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return mirrored_strategy(devices)
    return tf.distribute.get_strategy()


def _configure_coordination_service(heartbeat_timeout_s: float) -> None:
    """Sets up the coordination service as ``MultiWorkerMirroredStrategy`` would, but for the
    heartbeat timeout (the strategy has no option for it and keeps a service set up before it).
    """
    # Private TensorFlow modules: the strategy's own set-up uses the same calls.
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type not in _TRAINING_JOBS:
        return  # evaluators are not coordinated
    cluster_spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
        for job in _TRAINING_JOBS
        if job in cluster_spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000),
        coordinated_jobs=jobs,
    )


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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_thread_pools(intra_op: int = 0, inter_op: int = 0) -> bool:
    """Sizes TensorFlow's CPU thread pools for this process; call it before any TensorFlow op.

    ``intra_op`` threads share one op (a convolution split over cores), ``inter_op`` threads
    run independent ops at once (the classification and regression towers, the head on each
    pyramid level). Small models on few cores run faster with one thread per op and two ops at
    once than with every op split over all cores (BENCHMARKS.md, the default CPU run). The
    sizes also decide how oneDNN splits a convolution, so they are part of what makes a run
    repeat bit for bit on one machine.

    Args:
        intra_op: threads per op; 0 keeps TensorFlow's choice (all cores).
        inter_op: ops run at once; 0 keeps TensorFlow's choice.

    Returns:
        True when the pools have these sizes; False when TensorFlow had started with other
        sizes already (they cannot change then; a warning says which sizes stay).

    Raises:
        ValueError: for a negative or non-integer size.
    """
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0 (0: TensorFlow's), got {value!r}.")
    threading = tf.config.threading
    wanted = {"intra_op": intra_op, "inter_op": inter_op}
    current = {
        "intra_op": threading.get_intra_op_parallelism_threads(),
        "inter_op": threading.get_inter_op_parallelism_threads(),
    }
    if all(not wanted[key] or wanted[key] == current[key] for key in wanted):
        return True
    try:
        if intra_op:
            threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        logging.warning(
            "TensorFlow already runs with thread pools intra_op=%d, inter_op=%d (0 = its "
            "choice); the requested intra_op=%d, inter_op=%d apply only to a new process.",
            current["intra_op"],
            current["inter_op"],
            intra_op,
            inter_op,
        )
        return False
    return True
