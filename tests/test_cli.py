"""What a user of train.py sees: exit statuses, signals, progress output, --debug, resume.

Every test runs the command in a subprocess with a timeout, so that a regression (a hang,
a process that ignores SIGTERM) fails instead of blocking the suite.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import export_helpers as helpers
import pytest
import tensorflow as tf

from fcos_tf import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "train.py")
TIMEOUT_S = 300


def _tiny_flags(workdir, total_steps=2, steps_per_epoch=2, checkpoint_every=2):
    """Overrides of a seconds-long synthetic run (64-pixel images, a thin head)."""
    return helpers.tiny_train_flags(
        workdir,
        lr_steps="(1,)",
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        checkpoint_every=checkpoint_every,
    )


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop(cli.DEBUG_ENV, None)
    env.update(extra)
    return env


def _train_command(flags, patch=None):
    """``python train.py flags``, or the same run with ``patch`` (Python code) applied first."""
    if patch is None:
        return [sys.executable, "-u", TRAIN_PY, *flags]
    code = (
        f"{patch}\nimport runpy, sys\nsys.argv = [{TRAIN_PY!r}] + sys.argv[1:]\n"
        f"runpy.run_path({TRAIN_PY!r}, run_name='__main__')\n"
    )
    return [sys.executable, "-u", "-c", code, *flags]


def _run(command, env=None, timeout=TIMEOUT_S):
    return subprocess.run(
        command,
        cwd=REPO,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _latest_step(workdir):
    latest = tf.train.latest_checkpoint(os.path.join(str(workdir), "checkpoints"))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


# ------------------------------------------------------------------------- unit helpers


def test_debug_requested_reads_the_flag_and_the_environment(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert not cli.debug_requested(["train.py", "--workdir=/tmp/x"])
    assert cli.debug_requested(["train.py", "--debug"])
    assert cli.debug_requested(["train.py", "--debug=true"])
    assert not cli.debug_requested(["train.py", "--debug=false"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.debug_requested(["train.py"])
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    assert not cli.debug_requested(["train.py"])


def test_progress_verbosity_follows_the_terminal(tmp_path):
    with open(tmp_path / "log", "w") as f:
        assert cli.progress_verbosity(f) == 2

    class _Terminal:
        def isatty(self):
            return True

    assert cli.progress_verbosity(_Terminal()) == 1


def test_help_marks_the_required_flags_and_names_no_module(capsys):
    from fcos_tf import predict

    with pytest.raises(SystemExit) as stop:
        predict.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fcos-predict [flags] IMAGE [IMAGE ...]\n"), out
    blocks = re.split(r"\n(?=  --)", out.split("\nflags:\n", 1)[1].strip("\n"))
    required = {block.split(":")[0].strip() for block in blocks if "(required)" in block}
    assert required == {"--model", "--output"}, blocks
    assert blocks[-1].startswith("  --[no]debug:"), blocks  # the command's own flags first
    assert "predict.py" not in out and "fcos_tf.cli" not in out, out

    from fcos_tf import train

    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    assert "default: synthetic_small." in out and "synthetic_small.py" not in out, out


def test_errors_name_the_commands_flags_not_the_librarys_arguments(capsys):
    from absl import flags

    def define(flag_values):
        flags.DEFINE_string("workdir", None, "Run.", flag_values=flag_values)
        flags.DEFINE_string("annotations", None, "COCO JSON.", flag_values=flag_values)
        flags.DEFINE_string("images", None, "Image folder.", flag_values=flag_values)

    cli.parse_flags(define, ["--workdir=w"], "fcos-x", terms={**cli.COCO_READER_TERMS, "path": ""})
    cases = {
        # A flag of the command, with and without a value; quoted values with spaces stay.
        "`workdir`='/no where' does not exist.": "--workdir='/no where' does not exist.",
        "No config.json in `workdir`=/runs/a; pass --config.": (
            "No config.json in --workdir=/runs/a; pass --config."
        ),
        "Pass `workdir`, or both `checkpoint` and `config`.": (
            "Pass --workdir, or both `checkpoint` and `config`."
        ),
        # Aliases: the reader's argument under the command's flag, a positional file alone.
        "`annotation_file` not found: 'a.json'.": "--annotations not found: 'a.json'.",
        "`image_dir`='/img' for `annotation_file`='a.json'": (
            "--images='/img' for --annotations='a.json'"
        ),
        "`path`='/w.pth' does not exist.": "'/w.pth' does not exist.",
        # Names the command does not know stay as they are.
        "`boxes` must have shape [M, 4].": "`boxes` must have shape [M, 4].",
    }
    for message, expected in cases.items():
        assert cli.in_command_terms(message) == expected, message
    with pytest.raises(SystemExit) as stop:
        cli.fail("`workdir`='x' does not exist.")
    assert stop.value.code == "--workdir='x' does not exist."
    # The next command's terms replace these.
    cli.parse_flags(lambda flag_values: None, [], "fcos-y")
    assert cli.in_command_terms("`workdir`='x'") == "`workdir`='x'"


def test_an_unknown_config_key_names_the_override_and_its_section():
    def message(*arguments):
        with pytest.raises(SystemExit) as stop:
            cli.parse_flags(
                lambda flag_values: None,
                list(arguments),
                "fcos-x",
                recipe_default="synthetic_small",
            )
        return stop.value.code

    assert message("--config.data.tfrecord.train=/x") == (
        "Invalid --config override --config.data.tfrecord.train: config.data.tfrecord has no "
        "key 'train'; it has check_records, class_names, label_map_file, train_file_pattern, "
        "val_file_pattern."
    )
    assert message("--config.train.bas_lr=1") == (
        "Invalid --config override --config.train.bas_lr: config.train has no key 'bas_lr'. "
        'Did you mean "base_lr" instead of "bas_lr"?'
    )
    assert message("--config.xyz=1").startswith(
        "Invalid --config override --config.xyz: the config has no key 'xyz'; it has backbone, "
    )


# ------------------------------------------------------------------------------ --debug


@pytest.mark.parametrize("way", ["none", "flag", "env"])
def test_one_line_error_and_traceback_with_debug(tmp_path, way):
    # A COCO root that does not exist: "Invalid config", one line naming the folder.
    flags = [
        f"--workdir={tmp_path / 'run'}",
        "--mode=train",
        "--config.data.dataset=coco",
        f"--config.data.coco.root={tmp_path / 'nowhere'}",
    ]
    env = _env()
    if way == "flag":
        flags.append("--debug")
    elif way == "env":
        env = _env(**{cli.DEBUG_ENV: "1"})
    result = _run(_train_command(flags), env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Invalid config: ") and str(tmp_path / "nowhere") in last, last
    assert ("Traceback (most recent call last)" in result.stderr) == (way != "none"), result.stderr[
        -3000:
    ]


def test_config_override_error_with_debug_shows_the_traceback(tmp_path):
    flags = [f"--workdir={tmp_path}", "--config.train.no_such_key=1"]
    plain = _run(_train_command(flags))
    debug = _run(_train_command(flags + ["--debug"]))
    for result in (plain, debug):
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Invalid --config override --config.train.no_such_key:"), last
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr


def test_eval_of_a_workdir_without_checkpoints_is_one_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / "no_run"
    result = _run(_train_command([f"--workdir={workdir}", "--mode=eval"]))
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"Input not found: no checkpoint in {workdir / 'checkpoints'} to evaluate (train there "
        "first, or give the --workdir of a trained run)"
    ], result.stderr[-3000:]
    assert not workdir.exists()


# ------------------------------------------------------------------- progress and resume


@pytest.mark.slow
def test_output_to_a_pipe_has_one_progress_line_per_epoch(tmp_path):
    result = _run(_train_command(_tiny_flags(tmp_path, total_steps=4, steps_per_epoch=2)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for stream in (result.stdout, result.stderr):
        assert "\x08" not in stream and "\r" not in stream and "\x1b[" not in stream
    # No error line from TensorFlow's oneDNN rewrite about the graph's dtypes.
    assert "oneDNN supports" not in result.stderr, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Epoch ")] == ["Epoch 1/2", "Epoch 2/2"]
    # Keras verbose=2: "2/2 - 1s - 500ms/step - loss: ..." once per epoch.
    progress = [line for line in lines if re.match(r"^2/2 - .*loss", line)]
    assert len(progress) == 2, result.stdout
    assert "Done at step 4" in result.stdout


@pytest.mark.slow
def test_a_resumed_run_shows_the_epochs_of_its_step(tmp_path):
    # 2-step epochs: the first run stops at step 3, inside epoch 2; the resumed run goes on
    # to step 6 with epoch 2's last step, then epoch 3.
    def progress(total_steps):
        flags = _tiny_flags(tmp_path, total_steps=total_steps, checkpoint_every=100)
        result = _run(_train_command(flags))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert f"Done at step {total_steps}" in result.stdout
        # Keras verbose=2 (a pipe): "Epoch e/E", then "done/2 - 1s - 500ms/step - loss: ...".
        return [
            line.split(" - ")[0]
            for line in result.stdout.splitlines()
            if line.startswith("Epoch ") or re.match(r"^\d+/2 - .*loss", line)
        ]

    assert progress(3) == ["Epoch 1/2", "2/2", "Epoch 2/2", "1/2"]
    assert progress(6) == ["Epoch 2/3", "2/2", "Epoch 3/3", "2/2"]


@pytest.mark.slow
def test_resuming_a_workdir_of_another_model_is_one_line(tmp_path):
    first = _run(_train_command(_tiny_flags(tmp_path, total_steps=2)))
    assert first.returncode == 0, first.stderr[-3000:]
    # The same workdir with a narrower FPN: its checkpoint does not fit.
    other = _tiny_flags(tmp_path, total_steps=4) + ["--config.model.fpn_channels=8"]
    result = _run(_train_command(other))
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    checkpoint = tmp_path / "checkpoints" / "ckpt-2"
    assert last.startswith(f"Cannot resume: {checkpoint} does not fit"), last
    assert "Traceback" not in result.stderr and "Value in checkpoint" not in result.stderr, (
        result.stderr[-3000:]
    )
    assert _latest_step(tmp_path) == 2
    # The run's record is the run that trained it: neither the refused resume nor an
    # evaluation with other values rewrites it.
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["model"]["fpn_channels"] == 16
    evaluated = _run(_train_command(_tiny_flags(tmp_path, total_steps=99) + ["--mode=eval"]))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(tmp_path / "config.json") as f:
        written = json.load(f)
    assert written["model"]["fpn_channels"] == 16 and written["train"]["total_steps"] == 2


# A checkpoint write cut by SIGKILL at one of two points (step 4; step 2 was saved whole):
# after the shard files are written but before they are merged into ckpt-4.*, or after the
# files of ckpt-4 are complete but before the "checkpoint" state file names them.
_KILL_DURING_CHECKPOINT_WRITE = r"""
import os, signal
from tensorflow.python.checkpoint import checkpoint_management, functional_saver

POINT = os.environ["KILL_POINT"]

def _kill_at_step_4(prefix):
    if prefix.endswith("ckpt-4"):
        os.kill(os.getpid(), signal.SIGKILL)

_merge = functional_saver.gen_io_ops.merge_v2_checkpoints

def merge(checkpoint_prefixes, destination_prefix, *args, **kwargs):
    if POINT == "merge":
        _kill_at_step_4(destination_prefix.numpy().decode())
    return _merge(checkpoint_prefixes, destination_prefix, *args, **kwargs)

_record = checkpoint_management.CheckpointManager._record_state

def record_state(self):
    if POINT == "state":
        _kill_at_step_4(self._latest_checkpoint)
    return _record(self)

functional_saver.gen_io_ops.merge_v2_checkpoints = merge
checkpoint_management.CheckpointManager._record_state = record_state
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    flags = _tiny_flags(tmp_path, total_steps=6, steps_per_epoch=2, checkpoint_every=2)
    for point in ("merge", "state"):
        killed = _run(
            _train_command(flags, _KILL_DURING_CHECKPOINT_WRITE), env=_env(KILL_POINT=point)
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert _latest_step(tmp_path) == 2, (point, os.listdir(tmp_path / "checkpoints"))
    # The same command, not killed this time: resumes at step 2 and finishes.
    resumed = _run(_train_command(flags))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "Done at step 6" in resumed.stdout
    assert re.search(r"Restored .*ckpt-2 \(step 2\)", resumed.stderr), resumed.stderr[-3000:]
    assert _latest_step(tmp_path) == 6
    reader = tf.train.load_checkpoint(os.path.join(tmp_path, "checkpoints", "ckpt-6"))
    assert reader.get_variable_to_shape_map()


# ------------------------------------------------------------------------------ signals

# The input stalls inside tf.data at the second batch: the main thread waits in a C++
# GetNext, where no Python signal handler can run.
_BLOCKING_INPUT = r"""
import sys, time
import tensorflow as tf
from fcos_tf.core import builders

_build = builders.build_train_dataset

def _stall(index):
    if int(index) >= 1:
        print("INPUT BLOCKED", file=sys.stderr, flush=True)
        time.sleep(3600)
    return index

def blocking_build(*args, **kwargs):
    dataset_fn = _build(*args, **kwargs)

    def stall(index, batch):
        with tf.control_dependencies([tf.py_function(_stall, [index], tf.int64)]):
            return tf.nest.map_structure(tf.identity, batch)

    return lambda start_step: dataset_fn(start_step).enumerate().map(stall)

builders.build_train_dataset = blocking_build
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_train_py_while_the_input_pipeline_is_blocked(tmp_path, signum):
    flags = _tiny_flags(tmp_path / "run", total_steps=100, steps_per_epoch=1, checkpoint_every=1)
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            _train_command(flags, _BLOCKING_INPUT),
            cwd=REPO,
            env=_env(),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        # Step 1 is done and step 2 waits for the stalled input.
        while not (
            "Epoch 2/" in stdout_path.read_text() and "INPUT BLOCKED" in stderr_path.read_text()
        ):
            assert process.poll() is None, stderr_path.read_text()[-3000:]
            assert time.monotonic() < deadline, stderr_path.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2.0)
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = stderr_path.read_text()
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert elapsed < 10.0, elapsed
    name = signal.Signals(signum).name
    assert f"{name} not handled at a batch boundary" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert _latest_step(tmp_path / "run") == 1  # the last complete checkpoint
