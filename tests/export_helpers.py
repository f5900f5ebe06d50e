"""A small trained workdir and its SavedModel, built once per pytest process.

Shared by tests/test_export.py, tests/test_tflite.py, tests/test_predict.py and one test of
tests/test_evaluation.py: training a few steps and exporting costs about a minute on 2 cores,
so it happens once and the results are cached in module globals. Those tests carry
``SAME_WORKER`` so that under ``pytest -n N`` they run in one worker, which builds it once.
"""

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The mark of every test that uses the workdir (--dist loadgroup, setup.cfg).
SAME_WORKER = pytest.mark.xdist_group("trained_workdir")


def small_config():
    """The synthetic recipe shrunk to seconds: 64-pixel images, 3 training steps.

    The score threshold is lowered to 0.001 so that a barely trained model still returns a
    full set of detections (with random-like scores) to compare between runtimes.
    """
    sys.path.insert(0, ROOT)
    from fcos_tf.configs import synthetic_small
    from fcos_tf.ops import locations

    config = synthetic_small.get_config()
    # The five levels and the 16-channel stem the export tests were written with: after 3
    # steps this model's boxes are not degenerate, so runtimes can be compared box by box.
    config.locations.strides = locations.STRIDES
    config.locations.size_ranges = locations.SIZE_RANGES
    config.backbone.stem_channels = 16
    synthetic = config.data.synthetic
    synthetic.num_train = 8
    synthetic.num_val = 4
    synthetic.image_size = (64, 64)
    pipeline = config.pipeline
    pipeline.train_short_side = (64, 64)
    pipeline.eval_short_side = 64
    pipeline.max_size = 96
    pipeline.cache = False
    train = config.train
    train.batch_size = 2
    train.reference_batch_size = 2
    train.warmup_steps = 0
    train.total_steps = 3
    train.lr_steps = ()
    train.steps_per_epoch = 3
    train.checkpoint_every = 3
    config.model.score_threshold = 0.001
    config.eval.num_visualize = 0
    config.export.input_size = (64, 64)
    config.export.representative_images = 4
    return config


@functools.cache
def _scratch():
    path = tempfile.mkdtemp(prefix="fcos_export_test_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def trained_workdir():
    """Path of a ``train.py``-layout workdir trained for 3 steps (config, label map, ckpt)."""
    from fcos_tf.core import runner as training

    workdir = os.path.join(_scratch(), "workdir")
    training.run(small_config(), workdir, mode="train", verbose=0, handle_signals=False)
    return workdir


@functools.cache
def loaded_model():
    """``(model, config, label_map)`` restored from :func:`trained_workdir`."""
    from fcos_tf.core import rundir

    return rundir.load_trained_model(trained_workdir())


@functools.cache
def saved_model_dir():
    """Version folder of the SavedModel exported from :func:`trained_workdir`."""
    from fcos_tf.core import builders
    from fcos_tf.serving import saved_model as export_saved_model

    model, config, label_map = loaded_model()
    return export_saved_model.export_saved_model(
        model, label_map, os.path.join(_scratch(), "export"), builders.build_serving_config(config)
    )


def test_images():
    """Three uint8 RGB images: two 80x100 (one request of equal sizes) and one 120x70."""
    rng = np.random.RandomState(0)
    images = []
    for height, width in ((80, 100), (80, 100), (120, 70)):
        # Smooth blobs over noise: a picture rather than pure noise.
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([128 + 100 * np.sin(x / (7 + c) + y / (11 - c)) for c in range(3)], -1)
        images.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return images


def convolution_dtypes(signature):
    """``collections.Counter`` of the dtypes of the convolutions a SavedModel signature runs.

    Nested functions included. The export freezes the network's weights into its graph, so
    the precision is read from the convolution ops, not from variables.
    """
    import collections

    import tensorflow as tf

    graph_def = signature.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return collections.Counter(
        tf.dtypes.as_dtype(node.attr["T"].type)
        for node in nodes
        if node.op in ("Conv2D", "DepthwiseConv2dNative")
    )


def run_python(code, *args, timeout=600):
    """Runs ``python -c code args...`` in a fresh process from the repository root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code, *[str(a) for a in args]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def tiny_train_flags(workdir, **train):
    """``train.py`` flags of a seconds-long synthetic run (64-pixel images, a thin head).

    Args:
        workdir: the run directory.
        **train: more ``--config.train.<key>=<value>`` overrides (e.g. ``lr_steps="(1,)"``).
    """
    return [
        f"--workdir={workdir}",
        "--mode=train",
        "--config.data.synthetic.num_train=16",
        "--config.data.synthetic.image_size=(64, 64)",
        "--config.pipeline.train_short_side=(64, 64)",
        "--config.pipeline.max_size=64",
        "--config.pipeline.eval_short_side=64",
        "--config.pipeline.shuffle_buffer=16",
        "--config.model.fpn_channels=16",
        "--config.model.head_num_convs=1",
        "--config.model.head_num_groups=8",
        "--config.train.batch_size=4",
        "--config.train.warmup_steps=1",
        *(f"--config.train.{key}={value}" for key, value in train.items()),
    ]


def small_p2_config():
    """:func:`small_config` with a P2 level: strides 4 to 32 (P2-P5), ranges from 32 pixels."""
    import math

    config = small_config()
    config.locations.strides = (4, 8, 16, 32)
    config.locations.size_ranges = ((-1.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, math.inf))
    return config


@functools.cache
def loaded_p2_model():
    """``(model, config, label_map)`` of a 3-step run of :func:`small_p2_config`."""
    from fcos_tf.core import rundir
    from fcos_tf.core import runner as training

    workdir = os.path.join(_scratch(), "workdir_p2")
    training.run(small_p2_config(), workdir, mode="train", verbose=0, handle_signals=False)
    return rundir.load_trained_model(workdir)


@functools.cache
def p2_saved_model_dir():
    """Version folder of the SavedModel exported from :func:`loaded_p2_model`."""
    from fcos_tf.core import builders
    from fcos_tf.serving import saved_model as export_saved_model

    model, config, label_map = loaded_p2_model()
    return export_saved_model.export_saved_model(
        model,
        label_map,
        os.path.join(_scratch(), "export_p2"),
        builders.build_serving_config(config),
    )


def run_local_workers(command, *, num_workers=2, timeout=400, cwd=None, env=None):
    """Runs ``command`` as ``num_workers`` local workers of one cluster (``TF_CONFIG`` on
    loopback ports) and returns their outputs, each asserted to have exited with 0."""
    sockets = [socket.socket() for _ in range(num_workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    processes = []
    for index in range(num_workers):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        worker_env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
            **(env or {}),
        }
        processes.append(
            subprocess.Popen(
                command,
                cwd=cwd,
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs
