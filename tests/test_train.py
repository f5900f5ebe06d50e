"""Training: schedule, optimizer, replicas, resume, interruption, NaN stop, multi-worker."""

import glob
import json
import os
import signal
import subprocess
import sys

import export_helpers as helpers
import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.core import builders
from fcos_tf.core import runner as training
from fcos_tf.training import distribution, optimization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ schedule


def test_schedule_constant_warmup_then_steps():
    schedule = optimization.WarmupStepSchedule(
        0.01,
        boundaries=(6, 8),
        gamma=0.1,
        warmup_steps=3,
        warmup_factor=1.0 / 3.0,
        warmup_method="constant",
    )
    expected = [0.01 / 3] * 3 + [0.01] * 3 + [0.001] * 2 + [0.0001] * 2
    for step, lr in enumerate(expected):
        assert schedule.value(step) == pytest.approx(lr), step
        assert float(schedule(tf.constant(step))) == pytest.approx(lr, rel=1e-6), step


def test_schedule_linear_warmup():
    schedule = optimization.WarmupStepSchedule(
        0.02, warmup_steps=4, warmup_factor=0.5, warmup_method="linear"
    )
    # factor = 0.5 * (1 - i / 4) + i / 4
    for step, lr in enumerate([0.01, 0.0125, 0.015, 0.0175, 0.02, 0.02]):
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6)
        assert schedule.value(step) == pytest.approx(lr)
    assert optimization.WarmupStepSchedule.from_config(schedule.get_config()).value(
        1
    ) == pytest.approx(0.0125)


def test_linear_scaling_rule():
    assert optimization.scaled_learning_rate(0.01, 8, 16) == pytest.approx(0.005)
    assert optimization.scaled_learning_rate(0.01, 64, 16) == pytest.approx(0.04)


# ----------------------------------------------------------------------------- optimizer


class _Params(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(2, 1), initializer="ones", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="ones", name="bias")
        self.gamma = self.add_weight(shape=(1,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(1,), initializer="ones", name="beta")


def test_optimizer_decays_weights_only_and_doubles_bias_lr():
    layer = _Params()
    layer.build(None)
    variables = [layer.kernel, layer.bias, layer.gamma, layer.beta]
    optimizer = optimization.DetectionSGD(0.1, momentum=0.0, l2=0.5, bias_lr_factor=2.0)
    optimizer.apply([tf.ones_like(v) for v in variables], variables)
    # kernel: 1 - 0.1 * (1 + 0.5 * 1); bias/beta: 1 - 2 * 0.1 * 1; gamma: 1 - 0.1 * 1.
    np.testing.assert_allclose(layer.kernel.numpy(), [[0.85], [0.85]], rtol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), [0.8], rtol=1e-6)
    np.testing.assert_allclose(layer.beta.numpy(), [0.8], rtol=1e-6)
    np.testing.assert_allclose(layer.gamma.numpy(), [0.9], rtol=1e-6)


def test_optimizer_momentum_matches_hand_computation():
    layer = _Params()
    layer.build(None)
    optimizer = optimization.DetectionSGD(0.1, momentum=0.9, l2=0.0, bias_lr_factor=2.0)
    for _ in range(2):
        optimizer.apply([tf.ones([1])], [layer.bias])
    # v1 = -0.1 * 2 = -0.2; v2 = 0.9 * v1 - 0.2 = -0.38; bias = 1 - 0.2 - 0.38.
    np.testing.assert_allclose(layer.bias.numpy(), [0.42], rtol=1e-6)
    assert int(optimizer.iterations.numpy()) == 2


@pytest.mark.parametrize("nesterov", [False, True])
def test_optimizer_fused_update_equals_keras_sgd(nesterov):
    """The fused momentum kernel gives Keras SGD's updates (on g + l2 * w), bit for bit."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 5)).astype("float32")
    ours = keras.Variable(start, name="kernel")
    reference = keras.Variable(start, name="kernel")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])
    optimizer = optimization.DetectionSGD(schedule, momentum=0.9, l2=1e-2, nesterov=nesterov)
    keras_sgd = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=nesterov)
    for _ in range(4):  # across the learning-rate step
        gradient = tf.constant(rng.normal(size=(3, 5)).astype("float32"))
        optimizer.apply([gradient], [ours])
        keras_sgd.apply([gradient + 1e-2 * reference.value], [reference])
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())
    np.testing.assert_array_equal(optimizer.momentums[0].numpy(), keras_sgd.momentums[0].numpy())
    assert not np.array_equal(ours.numpy(), start)


# ------------------------------------------------------------------------- tiny recipe


def tiny_config(total_steps=3, **train_overrides):
    """The synthetic recipe shrunk to seconds: 64x64 images, batch 4, a thin head."""
    sys.path.insert(0, REPO)
    from fcos_tf.configs import synthetic_small

    config = synthetic_small.get_config()
    synthetic = config.data.synthetic
    synthetic.num_train, synthetic.num_val, synthetic.image_size = 16, 4, (64, 64)
    synthetic.num_objects = (1, 3)
    pipeline = config.pipeline
    pipeline.train_short_side, pipeline.eval_short_side, pipeline.max_size = (64, 64), 64, 64
    pipeline.shuffle_buffer = 16
    config.model.fpn_channels, config.model.head_num_convs = 16, 1
    config.model.head_num_groups = 8
    train = config.train
    train.batch_size, train.warmup_steps, train.total_steps = 4, 1, total_steps
    train.lr_steps = (max(1, total_steps - 1),)
    train.steps_per_epoch, train.checkpoint_every, train.log_every = 2, 2, 1
    train.update(train_overrides)
    config.eval.batch_size, config.eval.num_visualize = 4, 0
    return config


def _run(config, workdir, strategy=None, **kwargs):
    return training.run(config, str(workdir), "train", strategy, verbose=0, **kwargs)


def _state(result):
    model = result["model"]
    return (
        [w.copy() for w in model.get_weights()],
        [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables],
    )


def _assert_same(state_a, state_b, rtol=1e-5, atol=1e-6):
    for part_a, part_b in zip(state_a, state_b):
        assert len(part_a) == len(part_b)
        for a, b in zip(part_a, part_b):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 uninterrupted steps: the reference of the resume tests."""
    workdir = tmp_path_factory.mktemp("straight")
    result = _run(tiny_config(total_steps=4), workdir)
    assert result["step"] == 4
    return workdir, _state(result)


def test_one_device_and_two_replicas_give_the_same_weights(tmp_path, two_replicas):
    single = _run(tiny_config(total_steps=3), tmp_path / "one")
    mirrored = _run(tiny_config(total_steps=3), tmp_path / "two", two_replicas)
    assert mirrored["model"].distribute_strategy.num_replicas_in_sync == 2
    assert single["step"] == mirrored["step"] == 3
    initial = _run(tiny_config(total_steps=0), tmp_path / "init")  # same seed, no step
    single_state, mirrored_state = _state(single), _state(mirrored)
    moved = [not np.allclose(a, b) for a, b in zip(single_state[0], _state(initial)[0])]
    assert sum(moved) > len(moved) // 2  # training changed the weights ...
    _assert_same(single_state, mirrored_state, rtol=1e-4, atol=1e-5)  # ... identically


def test_mirrored_strategies_in_one_process_train_different_models(tmp_path):
    # Every MirroredStrategy numbers its all-reduces from the same key unless told otherwise,
    # and the runtime keeps each key's shape: a second strategy over the same devices,
    # running another model, failed with "Shape mismatch in the collective instance".
    for channels in (16, 8):  # other gradient shapes, a new strategy each time
        strategy = distribution.select_strategy("mirrored", ("/CPU:0", "/CPU:1"))
        config = tiny_config(total_steps=1)
        config.model.fpn_channels = channels
        result = _run(config, tmp_path / str(channels), strategy)
        assert result["step"] == 1
        assert result["model"].distribute_strategy is strategy
        assert strategy.num_replicas_in_sync == 2


def test_two_steps_resume_two_steps_equals_four_steps(straight_run, tmp_path):
    _, reference = straight_run
    config = tiny_config(total_steps=4)
    config.train.total_steps = 2
    first = _run(config, tmp_path)
    assert first["step"] == 2
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
    config.train.total_steps = 4
    second = _run(config, tmp_path)
    assert second["step"] == 4
    _assert_same(reference, _state(second))


class _SignalAtStep(keras.callbacks.Callback):
    """Sends a real signal to this process after a given step."""

    def __init__(self, step, signum=signal.SIGTERM):
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigterm_saves_and_the_run_resumes_exactly(straight_run, tmp_path):
    _, reference = straight_run
    config = tiny_config(total_steps=4, checkpoint_every=100)  # only the signal saves
    # Handlers of the caller's own, which the run must put back when it ends. Were the run's
    # handlers not installed, the SIGTERM would land here and the run would not stop.
    caught = []

    def caller_handler(signum, frame):
        caught.append(signum)

    saved = {
        signum: signal.signal(signum, caller_handler) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        # The callback runs after TrainingControl: the signal is seen at the end of step 2.
        interrupted = _run(config, tmp_path, callbacks=[_SignalAtStep(1)])
        restored = {signum: signal.getsignal(signum) for signum in saved}
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert interrupted["interrupted"] == signal.SIGTERM
    assert interrupted["step"] == 2
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
    assert caught == []  # the run's handler, not the caller's, received the signal
    assert restored == {signal.SIGTERM: caller_handler, signal.SIGINT: caller_handler}
    resumed = _run(config, tmp_path)
    assert resumed["interrupted"] is None and resumed["step"] == 4
    _assert_same(reference, _state(resumed))


class _PoisonAtStep(keras.callbacks.Callback):
    """Writes NaN into one head weight before a given step."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step - 1:
            weight = self.model.head.trainable_weights[0]
            weight.assign(tf.fill(weight.shape, float("nan")))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(total_steps=6, checkpoint_every=2)
    with pytest.raises(training.NonFiniteLossError, match="not finite at step 3.*after step 2"):
        _run(config, tmp_path, callbacks=[_PoisonAtStep(3)])
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("ckpt-2")
    reader = tf.train.load_checkpoint(latest)
    for name, _ in tf.train.list_variables(latest):
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name


def test_train_and_eval_writes_metrics_config_and_label_map(tmp_path):
    config = tiny_config(total_steps=2)
    config.eval.num_visualize = 2
    result = training.run(config, str(tmp_path), "train_and_eval", verbose=0)
    metrics = json.load(open(tmp_path / "metrics.json"))
    for name in (
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ):
        assert metrics[name] is None or 0.0 <= metrics[name] <= 1.0
    assert metrics["step"] == 2 and result["metrics"]["AP"] == metrics["AP"]
    assert json.load(open(tmp_path / "config.json"))["train"]["total_steps"] == 2
    assert [c["name"] for c in json.load(open(tmp_path / "label_map.json"))][:2] == [
        "rectangle",
        "ellipse",
    ]
    tags = set()
    for path in glob.glob(str(tmp_path / "tensorboard" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {
        "train/loss",
        "train/cls_loss",
        "train/box_loss",
        "train/ctr_loss",
        "train/num_pos",
        "train/learning_rate",
        "eval/AP",
        "eval/AP50",
        "eval/detections",
    } <= tags
    picture = tf.io.decode_png(tf.io.read_file(str(tmp_path / "detections.png")))
    assert picture.shape[0] >= 64 and picture.shape[1] >= 2 * 64 and picture.shape[2] == 3
    # Evaluating again from the checkpoint gives the same numbers.
    again = training.run(config, str(tmp_path), "eval", verbose=0)
    assert again["step"] == 2 and again["metrics"]["AP"] == pytest.approx(metrics["AP"])


# -------------------------------------------------------------------------- multi-worker


def _run_workers(workdir, *extra_flags):
    """Runs train.py as two local workers (TF_CONFIG on loopback); returns their outputs."""
    flags = [
        *helpers.tiny_train_flags(workdir, lr_steps="(2,)", steps_per_epoch=3, checkpoint_every=3),
        *extra_flags,
    ]
    return helpers.run_local_workers(
        [sys.executable, os.path.join(REPO, "train.py"), *flags], cwd=REPO
    )


@pytest.mark.slow
def test_two_local_workers_train_a_few_steps_and_resume(tmp_path):
    outputs = _run_workers(tmp_path, "--config.train.total_steps=3")
    assert "on 2 replica(s)" in outputs[0] and "Done at step 3" in outputs[1]
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
    assert not os.path.exists(tmp_path / "tmp_worker_1")  # the non-chief's scratch is gone
    # Both workers resume from the chief's checkpoint.
    outputs = _run_workers(tmp_path, "--config.train.total_steps=5")
    assert all("Done at step 5" in output for output in outputs)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-5")


@pytest.mark.slow
def test_multi_worker_strategy_keeps_the_longer_heartbeat_timeout():
    # Each worker sets up the coordination service itself before the strategy is made; the
    # strategy must keep it (its own set-up would use TensorFlow's 10 s default).
    script = (
        "import tensorflow as tf\n"
        "from tensorflow.python.eager import context\n"
        "from fcos_tf.training import distribution\n"
        "strategy = distribution.select_strategy('auto')\n"
        "config = context.context().coordination_service\n"
        "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),\n"
        "      strategy.num_replicas_in_sync,\n"
        "      config.heartbeat_timeout_in_ms, config.service_leader,\n"
        "      sorted((job.name, job.num_tasks) for job in config.coordinated_job_list))\n"
    )
    outputs = helpers.run_local_workers([sys.executable, "-c", script], cwd=REPO, timeout=120)
    expected = (
        f"True 2 {1000 * distribution.HEARTBEAT_TIMEOUT_S} "
        "/job:worker/replica:0/task:0 [('worker', 2)]"
    )
    assert distribution.HEARTBEAT_TIMEOUT_S > 10  # longer than TensorFlow's default
    for output in outputs:
        assert expected in output, output[-2000:]


@pytest.mark.slow
def test_sigterm_to_train_py_saves_and_the_same_command_resumes(tmp_path):
    flags = helpers.tiny_train_flags(
        tmp_path, lr_steps="(3,)", steps_per_epoch=10, checkpoint_every=100000
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-u", os.path.join(REPO, "train.py"), *flags]
    process = subprocess.Popen(
        command + ["--config.train.total_steps=10000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        while "Epoch 2/" not in output:  # a few steps have run
            line = process.stdout.readline()
            assert line, output[-3000:]
            output += line
        process.send_signal(signal.SIGTERM)
        output += process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "checkpoint saved" in output
    step = int(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).rsplit("-", 1)[1])
    assert 10 <= step < 10000
    resumed = subprocess.run(
        command + [f"--config.train.total_steps={step + 2}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Done at step {step + 2}" in resumed.stdout


# ------------------------------------------------------------------------ data and options


def test_replayed_stream_continues_where_a_straight_stream_is():
    config = tiny_config()
    examples = builders.read_split(config, "train").dataset
    dataset_fn = builders.build_train_dataset(config, examples)
    straight = [images.numpy() for images, _ in dataset_fn(0).take(3)]
    resumed = [images.numpy() for images, _ in dataset_fn(2).take(1)]
    np.testing.assert_array_equal(resumed[0], straight[2])
    assert not np.array_equal(straight[0], straight[1])
    # The same dataset object iterated twice gives the same batches (Keras may do that).
    dataset = dataset_fn(0)
    first, again = (next(iter(dataset))[0].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, again)
    # "reshuffle" resumes on a fresh stream of the same structure, without replaying.
    config.train.resume = "reshuffle"
    images, labels = next(iter(builders.build_train_dataset(config, examples)(2)))
    assert images.shape == straight[0].shape
    assert set(labels) == set(builders.TRAIN_LABEL_KEYS)


def test_mixed_float16_trains_and_resumes(tmp_path):
    config = tiny_config(total_steps=2, precision="mixed_float16")
    try:
        result = _run(config, tmp_path)
        assert isinstance(result["model"].optimizer, keras.optimizers.LossScaleOptimizer)
        assert result["step"] == 2
        assert all(np.isfinite(w).all() for w in result["model"].get_weights())
        config.train.total_steps = 3
        assert _run(config, tmp_path)["step"] == 3
    finally:
        keras.mixed_precision.set_global_policy("float32")
