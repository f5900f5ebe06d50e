"""Test session set-up: quiet TensorFlow and two logical CPU devices for MirroredStrategy."""

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


@pytest.fixture(scope="session")
def two_replicas():
    """A MirroredStrategy over /CPU:0 and /CPU:1, shared by the tests that need one."""
    from fcos_tf import distribution

    strategy = distribution.mirrored_strategy(("/CPU:0", "/CPU:1"))
    assert strategy.num_replicas_in_sync == 2
    return strategy
