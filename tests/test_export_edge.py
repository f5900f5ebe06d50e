"""fcos-export-edge without MediaPipe: one line with the pip hint, before any model work.

(The export itself, run in MediaPipe, is tested by tests/test_tflite_metadata.py and
tests/test_import_edge.py.)"""

import os
import subprocess
import sys

import pytest

from fcos_tf.core import config as config_lib
from fcos_tf.core import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `import mediapipe` raises ImportError, as where it is not installed; the model loading is
# reported, so that a check made after it shows.
_WITHOUT_MEDIAPIPE = """
import sys
sys.modules["mediapipe"] = None
from fcos_tf import cli
cli.import_tensorflow()  # quietly, as the command does
from fcos_tf.core import rundir
load_trained_model = rundir.load_trained_model

def reported(*args, **kwargs):
    print("loading the model", flush=True)
    return load_trained_model(*args, **kwargs)

rundir.load_trained_model = reported
from fcos_tf import export_edge
sys.exit(export_edge.main(sys.argv[1:]))
"""


@pytest.fixture(name="workdir")
def fixture_workdir(tmp_path):
    """A workdir with the edge recipe's config.json and nothing else (no checkpoint)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    rundir.write_config(config_lib.load_recipe("synthetic_edge"), str(workdir))
    return workdir


@pytest.mark.parametrize("debug", [False, True])
def test_without_mediapipe_fails_in_one_line_before_loading_the_model(workdir, tmp_path, debug):
    output = tmp_path / "edge" / "fcos_int8.tflite"
    argv = [f"--workdir={workdir}", f"--output={output}"] + (["--debug"] if debug else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    env.pop("FCOS_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_MEDIAPIPE, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "Export failed: Writing MediaPipe metadata needs mediapipe: pip install "
        "'fcos_tf[edge]' (or `pip install mediapipe`)."
    ), result.stderr[-3000:]
    if debug:
        assert "Traceback" in result.stderr
    else:
        assert len(lines) == 1, result.stderr
    # Failed before the model was loaded (the workdir has no checkpoint: loading it would
    # have failed with another message) and before anything was written.
    assert "loading the model" not in result.stdout
    assert not (tmp_path / "edge").exists()
