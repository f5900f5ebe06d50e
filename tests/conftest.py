"""Test session set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy, and
the machine's cores shared out between pytest-xdist workers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices can only be configured before TensorFlow initialises its devices, so it
# happens here, once, for the whole session. Ops still run on /CPU:0 unless a strategy
# spreads them; tests/test_* that need two replicas use /CPU:0 and /CPU:1.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


def _share_cores_between_workers():
    """Under ``pytest -n N``, N worker processes run tests at once. TensorFlow and PyTorch
    would each split every op over all the machine's cores in every worker, and the threads of
    the workers would then wait on each other; each worker gets its share of the cores instead
    (one op at a time per thread, two ops at once, as the small recipes run). The subprocesses
    that tests start (train.py, exports) keep their own settings."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    from fcos_tf.training import distribution

    threads = max(1, (os.cpu_count() or 1) // workers)
    assert distribution.set_thread_pools(threads, 2)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


_share_cores_between_workers()


@pytest.fixture(scope="session")
def two_replicas():
    """A MirroredStrategy over /CPU:0 and /CPU:1, shared by the tests that need one."""
    from fcos_tf.training import distribution

    strategy = distribution.mirrored_strategy(("/CPU:0", "/CPU:1"))
    assert strategy.num_replicas_in_sync == 2
    return strategy
