"""SavedModel export: reload in a fresh process, signatures, parity with predict_step, errors."""

import dataclasses
import json
import os
import subprocess
import sys

import export_helpers as helpers
import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.core import builders, rundir
from fcos_tf.data import pipeline
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import saved_model as export_saved_model

pytestmark = [pytest.mark.slow, helpers.SAME_WORKER]

# Runs in a fresh interpreter: loads the SavedModel the way TF Serving's Python clients and
# tools do, records the signatures, runs both endpoints, bad requests and the warm-up file.
_CHILD = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

model_dir, inputs_dir, out_dir = sys.argv[1:4]
loaded = tf.saved_model.load(model_dir)
info = {"signatures": {}}
for name, fn in loaded.signatures.items():
    inputs = fn.structured_input_signature[1]
    info["signatures"][name] = {
        "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in inputs.items()},
        "outputs": {k: [v.dtype.name, v.shape.as_list()]
                    for k, v in fn.structured_outputs.items()}}
info["label_map"] = json.loads(tf.io.read_file(loaded.label_map.asset_path).numpy())

data = np.load(os.path.join(inputs_dir, "images.npy"))
out = loaded.signatures["serving_default"](images=tf.constant(data))
np.savez(os.path.join(out_dir, "images.npz"), **{k: v.numpy() for k, v in out.items()})
files = sorted(f for f in os.listdir(inputs_dir) if f.endswith(".png"))
encoded = [open(os.path.join(inputs_dir, f), "rb").read() for f in files]
out = loaded.signatures["serving_image_bytes"](image_bytes=tf.constant(encoded))
np.savez(os.path.join(out_dir, "bytes.npz"), **{k: v.numpy() for k, v in out.items()})

bad = {
    "not_an_image": ("serving_image_bytes", {"image_bytes": tf.constant([encoded[0], b"hello"])}),
    "empty_bytes_batch": ("serving_image_bytes", {"image_bytes": tf.constant([], tf.string)}),
    "empty_images_batch": ("serving_default", {"images": tf.zeros([0, 8, 8, 3], tf.uint8)}),
    "wrong_dtype": ("serving_default", {"images": tf.zeros([1, 8, 8, 3], tf.float32)}),
    "wrong_rank": ("serving_default", {"images": tf.zeros([8, 8, 3], tf.uint8)}),
    "wrong_channels": ("serving_default", {"images": tf.zeros([1, 8, 8, 4], tf.uint8)}),
}
info["errors"] = {}
for key, (signature, kwargs) in bad.items():
    try:
        result = loaded.signatures[signature](**kwargs)
        info["errors"][key] = ["none", str({k: v.shape.as_list() for k, v in result.items()})]
    except Exception as error:  # recorded and checked by the test
        info["errors"][key] = [type(error).__name__, str(error)[:2000]]

info["warmup"] = []
path = os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests")
for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    signature = request.model_spec.signature_name
    # Replays the request as TF Serving does at load time.
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    result = loaded.signatures[signature](**inputs)
    info["warmup"].append({"signature": signature, "inputs": sorted(inputs),
                           "num_detections": result["num_detections"].numpy().tolist()})
print(json.dumps(info))
"""


def _reference(model, images, serving):
    """predict_step on the validation pipeline's preprocessing of ``images``.

    Returns the detections mapped like the export: normalised yxyx of each original image,
    classes as contiguous ids.
    """
    config = pipeline.PipelineConfig(**dataclasses.asdict(serving))
    examples = []
    for image in images:
        example = {
            "image": tf.constant(image),
            "boxes": tf.zeros([0, 4]),
            "classes": tf.zeros([0], tf.int32),
            "is_crowd": tf.zeros([0], tf.bool),
            "image_id": tf.constant(0, tf.int64),
        }
        examples.append(
            pipeline.preprocess_example(
                example, tf.constant([0, 0], tf.int64), training=False, config=config
            )
        )
    height = max(int(e["image"].shape[0]) for e in examples)
    width = max(int(e["image"].shape[1]) for e in examples)
    batch = np.stack(
        [
            np.pad(
                e["image"].numpy(),
                [[0, height - e["image"].shape[0]], [0, width - e["image"].shape[1]], [0, 0]],
            )
            for e in examples
        ]
    )
    labels = {"image_size": tf.stack([e["image_size"] for e in examples])}
    detections = {k: v.numpy() for k, v in model.predict_step((tf.constant(batch), labels)).items()}
    boxes = []
    for b, example in enumerate(examples):
        # Network pixels of the resized image -> normalised: one ratio per axis.
        h, w = (float(v) for v in example["image_size"].numpy())
        x1, y1, x2, y2 = np.moveaxis(detections["boxes"][b], -1, 0)
        boxes.append(np.stack([y1 / h, x1 / w, y2 / h, x2 / w], -1))
    detections["boxes"] = np.clip(np.stack(boxes), 0.0, 1.0)
    return detections


@pytest.fixture(scope="module")
def child_run(tmp_path_factory):
    """Exports, then reloads the SavedModel in a fresh process; returns what it saw."""
    model_dir = helpers.saved_model_dir()
    inputs_dir = tmp_path_factory.mktemp("inputs")
    out_dir = tmp_path_factory.mktemp("outputs")
    images = helpers.test_images()
    np.save(inputs_dir / "images.npy", np.stack(images[:2]))
    # Different original sizes in one image_bytes request (PNG: decoded pixels are exact).
    for i, image in enumerate((images[0], images[2])):
        (inputs_dir / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    stdout = helpers.run_python(_CHILD, model_dir, inputs_dir, out_dir)
    info = json.loads(stdout.strip().splitlines()[-1])
    info["images"] = dict(np.load(out_dir / "images.npz"))
    info["bytes"] = dict(np.load(out_dir / "bytes.npz"))
    info["model_dir"] = model_dir
    return info


def test_layout_is_tf_serving_versioned(child_run):
    model_dir = child_run["model_dir"]
    assert os.path.basename(model_dir) == "1"
    assert os.path.exists(os.path.join(model_dir, "saved_model.pb"))
    assert os.path.exists(os.path.join(model_dir, "assets", "label_map.json"))
    assert os.path.exists(os.path.join(model_dir, export_saved_model.WARMUP_FILE))
    # No temporary folder left next to the version.
    assert os.listdir(os.path.dirname(model_dir)) == ["1"]
    assert export_saved_model.next_version(os.path.dirname(model_dir)) == 2


def test_signatures_names_dtypes_shapes(child_run):
    signatures = child_run["signatures"]
    assert set(signatures) == {"serving_default", "serving_image_bytes"}
    assert signatures["serving_default"]["inputs"] == {"images": ["uint8", [None, None, None, 3]]}
    assert signatures["serving_image_bytes"]["inputs"] == {"image_bytes": ["string", [None]]}
    expected = {
        "detection_boxes": ["float32", [None, 100, 4]],
        "detection_scores": ["float32", [None, 100]],
        "detection_classes": ["float32", [None, 100]],
        "num_detections": ["int32", [None]],
    }
    for signature in signatures.values():
        assert signature["outputs"] == expected


def test_label_map_asset(child_run):
    _, _, label_map = helpers.loaded_model()
    assert child_run["label_map"] == label_map.to_list()


def _check_same(exported, reference, label_map):
    num = exported["num_detections"]
    np.testing.assert_array_equal(num, reference["num_detections"])
    assert num.min() > 0  # something to compare
    for b, n in enumerate(num):
        np.testing.assert_allclose(
            exported["detection_boxes"][b, :n], reference["boxes"][b, :n], atol=1e-3
        )
        ids = np.asarray(label_map.category_ids)[reference["classes"][b, :n]]
        np.testing.assert_array_equal(exported["detection_classes"][b, :n], ids)
        np.testing.assert_allclose(
            exported["detection_scores"][b, :n], reference["scores"][b, :n], atol=1e-4
        )
        # Padding rows.
        assert np.all(exported["detection_classes"][b, n:] == -1)
        assert np.all(exported["detection_scores"][b, n:] == 0)


def test_images_endpoint_matches_predict_step(child_run):
    model, config, label_map = helpers.loaded_model()
    serving = builders.build_serving_config(config)
    images = helpers.test_images()[:2]
    _check_same(child_run["images"], _reference(model, images, serving), label_map)


def test_image_bytes_endpoint_different_sizes_matches_predict_step(child_run):
    model, config, label_map = helpers.loaded_model()
    serving = builders.build_serving_config(config)
    images = [helpers.test_images()[0], helpers.test_images()[2]]
    assert images[0].shape != images[1].shape
    reference = _reference(model, images, serving)
    _check_same(child_run["bytes"], reference, label_map)
    boxes = child_run["bytes"]["detection_boxes"]
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0


def test_bad_requests_give_invalid_argument(child_run):
    errors = child_run["errors"]
    for key in errors:
        assert errors[key][0] == "InvalidArgumentError", (key, errors[key])
    assert "not JPEG, PNG, GIF or BMP" in errors["not_an_image"][1]
    assert "empty batch" in errors["empty_bytes_batch"][1]
    assert "empty batch" in errors["empty_images_batch"][1]
    assert "uint8" in errors["wrong_dtype"][1]
    assert "images" in errors["wrong_rank"][1] and "[8,8,3]" in errors["wrong_rank"][1]
    assert "[1,8,8,4]" in errors["wrong_channels"][1]


def test_warmup_records_name_existing_signatures(child_run):
    warmup = child_run["warmup"]
    assert {w["signature"] for w in warmup} == set(child_run["signatures"])
    inputs = {w["signature"]: w["inputs"] for w in warmup}
    assert inputs == {"serving_default": ["images"], "serving_image_bytes": ["image_bytes"]}
    for record in warmup:
        assert len(record["num_detections"]) == 1


def test_export_refuses_existing_version_and_label_map_mismatch(tmp_path):
    model, config, label_map = helpers.loaded_model()
    (tmp_path / "3").mkdir()
    with pytest.raises(FileExistsError, match="version"):
        export_saved_model.export_saved_model(model, label_map, str(tmp_path), version=3)
    from fcos_tf.data.label_map import LabelMap

    with pytest.raises(ValueError, match="label_map"):
        serving_lib.serving_functions(
            model, LabelMap.from_names(["a", "b"]), builders.build_serving_config(config)
        )


def test_latest_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        rundir.latest_checkpoint(str(tmp_path))
    workdir = helpers.trained_workdir()
    assert rundir.latest_checkpoint(workdir).endswith("ckpt-3")
    prefix = rundir.latest_checkpoint(workdir)
    assert rundir.latest_checkpoint(prefix) == prefix


def test_serving_config_validates():
    with pytest.raises(ValueError, match="pixel_norm"):
        serving_lib.ServingConfig(pixel_norm="bgr")
    with pytest.raises(ValueError, match="eval_short_side"):
        serving_lib.ServingConfig(eval_short_side=0)


def _matched(reference, other, b, *, first=None, iou=0.9, score_tolerance=0.02):
    """``(matched, total)``: how many of the ``first`` detections of image ``b`` of
    ``reference`` (default all) ``other`` reproduces one to one."""
    n, m = int(reference["num_detections"][b]), int(other["num_detections"][b])
    n = min(n, first or n)
    a, o = reference["detection_boxes"][b, :n], other["detection_boxes"][b, :m]
    lo, hi = np.maximum(a[:, None, :2], o[None, :, :2]), np.minimum(a[:, None, 2:], o[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    areas = np.prod(a[:, 2:] - a[:, :2], -1)[:, None] + np.prod(o[:, 2:] - o[:, :2], -1)[None]
    overlap = inter / np.maximum(areas - inter, 1e-12)
    ok = (
        (reference["detection_classes"][b, :n, None] == other["detection_classes"][b, None, :m])
        & (
            np.abs(reference["detection_scores"][b, :n, None] - other["detection_scores"][b, :m])
            <= score_tolerance
        )
        & (overlap >= iou)
    )
    used, count = np.zeros([m], bool), 0
    for i in range(n):  # in descending score order
        free = np.flatnonzero(ok[i] & ~used)
        if free.size:
            used[free[np.argmax(overlap[i, free])]] = True
            count += 1
    return count, n


def test_bfloat16_export_keeps_the_signatures_and_the_detections(tmp_path):
    model, config, label_map = helpers.loaded_model()
    serving = builders.build_serving_config(config)
    path = export_saved_model.export_saved_model(
        model, label_map, str(tmp_path), serving, warmup=False, precision="bfloat16"
    )
    bf16 = tf.saved_model.load(path)
    fp32 = tf.saved_model.load(helpers.saved_model_dir())
    assert set(bf16.signatures) == set(fp32.signatures)
    for name, fn in bf16.signatures.items():
        assert fn.structured_input_signature == fp32.signatures[name].structured_input_signature
        assert fn.structured_outputs == fp32.signatures[name].structured_outputs
    # The network really runs in bfloat16: every convolution of the float32 export but the
    # pre-processing's pixel normalisation (a float32 1x1 conv) is bfloat16 here. The weights
    # are constants of the graph, so neither export holds variables.
    for name in bf16.signatures:
        ours = helpers.convolution_dtypes(bf16.signatures[name])
        theirs = helpers.convolution_dtypes(fp32.signatures[name])
        assert set(theirs) == {tf.float32} and theirs[tf.float32] > 50
        assert ours == {tf.float32: 1, tf.bfloat16: theirs[tf.float32] - 1}
    assert not bf16.variables and not fp32.variables
    images = tf.constant(np.stack(helpers.test_images()[:2]))
    outputs = [
        {k: v.numpy() for k, v in m.signatures["serving_default"](images=images).items()}
        for m in (fp32, bf16)
    ]
    for b in range(2):
        # The ten most confident float32 detections are all found again (neighbours with
        # nearly equal scores may swap places)...
        assert _matched(outputs[0], outputs[1], b, first=10) == (10, 10)
        # ...and of all 100 (scores down to 0.001, so some swap places at the cut) at least
        # 90% are found again: same class, IoU >= 0.9, score within 0.02 (95 and 97 seen).
        hits, total = _matched(outputs[0], outputs[1], b)
        assert total == 100 and hits >= 90, (b, hits)


# Makes ``import tensorflow_serving`` fail, as where tensorflow-serving-api is not installed.
_WITHOUT_SERVING_API = r"""
import sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow_serving" or name.startswith("tensorflow_serving."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Blocker())
"""


def _export_command(*flags, patch="", tf_log_level="3"):
    """``python export_savedmodel.py flags`` after ``patch``; ``tf_log_level=None`` leaves
    TensorFlow's C++ log level to the command, as a user runs it."""
    script = os.path.join(helpers.ROOT, "export_savedmodel.py")
    code = (
        f"{patch}\nimport runpy, sys\nsys.argv = [{script!r}] + sys.argv[1:]\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=tf_log_level or "", PYTHONPATH=helpers.ROOT)
    if tf_log_level is None:
        env.pop("TF_CPP_MIN_LOG_LEVEL")
    env.pop("FCOS_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", code, *flags],
        cwd=helpers.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_export_without_serving_api_writes_no_warmup_and_says_how(tmp_path):
    output = tmp_path / "serving"
    result = _export_command(
        f"--workdir={helpers.trained_workdir()}", f"--output={output}", patch=_WITHOUT_SERVING_API
    )
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stdout.splitlines() if "warm-up" in line]
    assert notes == [
        (
            f"No TF Serving warm-up records: tensorflow-serving-api is not "
            f"installed; to add them, `{export_saved_model.WARMUP_INSTALL}` and "
            f"export again."
        )
    ]
    assert "Traceback" not in result.stderr
    assert os.listdir(output) == ["1"]
    assert os.path.exists(output / "1" / "saved_model.pb")
    assert not os.path.exists(output / "1" / "assets.extra")
    # The library function refuses an explicit request before writing anything.
    code = (
        _WITHOUT_SERVING_API + "\nfrom fcos_tf.serving import saved_model as export_saved_model\n"
        "assert not export_saved_model.warmup_available()\nprint('blocked')\n"
    )
    assert helpers.run_python(code).strip() == "blocked"


def test_export_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    flags = (f"--workdir={helpers.trained_workdir()}", f"--output={tmp_path}", "--version=1")
    (tmp_path / "1").mkdir()
    for extra in ((), ("--debug",)):
        result = _export_command(*flags, *extra)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Export failed: --version 1 already exists"), last
        assert ("Traceback" in result.stderr) == bool(extra)
    assert os.listdir(tmp_path) == ["1"]


def test_failed_export_says_nothing_about_warmup_records(tmp_path):
    """The note on the missing warm-up records comes only with an export that was written."""
    (tmp_path / "1").mkdir()
    cases = {
        "Export failed: No checkpoint at": (
            f"--checkpoint={tmp_path / 'missing'}",
            "--config=synthetic_small",
            f"--output={tmp_path}",
        ),
        "Export failed: --version 1 already exists": (
            f"--workdir={helpers.trained_workdir()}",
            f"--output={tmp_path}",
            "--version=1",
        ),
    }
    for error, flags in cases.items():
        result = _export_command(*flags, patch=_WITHOUT_SERVING_API)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith(error), result.stderr[-2000:]
        assert "warm-up" not in result.stdout + result.stderr, result.stdout
    assert os.listdir(tmp_path) == ["1"]


def test_checkpoint_of_another_recipe_fails_with_one_line(tmp_path):
    """A checkpoint that does not fit ``--config``: one line on stderr, not one more per
    checkpoint value left unrestored (TensorFlow warns about them when they are deleted)."""
    result = _export_command(
        f"--workdir={helpers.trained_workdir()}",
        f"--output={tmp_path / 'serving'}",
        "--config=fcos_r50_1x_improved",
        tf_log_level=None,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    checkpoints = os.path.join(helpers.trained_workdir(), "checkpoints", "ckpt-")
    assert lines[0].startswith(f"Export failed: {checkpoints}"), lines
    assert "does not fit the model built from the config (another recipe" in lines[0], lines
    assert "Received incompatible tensor with shape" in lines[0] and "conv1/kernel:0" in lines[0]
    assert not os.path.exists(tmp_path / "serving")


@pytest.mark.parametrize("stage", ["write_out", "warmup", "rename"])
def test_failure_while_writing_leaves_no_temporary_folder(tmp_path, monkeypatch, stage):
    model, config, label_map = helpers.loaded_model()
    written = []

    def fail_after(original):
        def wrapper(*args, **kwargs):
            original(*args, **kwargs)
            written.append(sorted(os.listdir(tmp_path)))
            raise OSError(f"disk full during {stage}")

        return wrapper

    if stage == "write_out":
        archive_class = type(keras.export.ExportArchive())  # the backend's subclass
        monkeypatch.setattr(archive_class, "write_out", fail_after(archive_class.write_out))
    elif stage == "warmup":
        monkeypatch.setattr(
            export_saved_model,
            "write_warmup_requests",
            fail_after(export_saved_model.write_warmup_requests),
        )
    else:

        def rename(*args, **kwargs):
            written.append(sorted(os.listdir(tmp_path)))
            raise OSError(f"disk full during {stage}")

        monkeypatch.setattr(tf.io.gfile, "rename", rename)
    with pytest.raises(OSError, match=f"during {stage}"):
        export_saved_model.export_saved_model(
            model, label_map, str(tmp_path), builders.build_serving_config(config)
        )
    assert written == [[".tmp-1"]]  # the failure came while the folder was there ...
    assert os.listdir(tmp_path) == []  # ... and it is gone


def test_precision_flag_exports_bfloat16_and_refuses_other_values(tmp_path):
    flags = (f"--workdir={helpers.trained_workdir()}", f"--output={tmp_path}")
    result = _export_command(*flags, "--precision=float16")
    assert result.returncode != 0 and "--precision" in result.stderr
    assert not os.listdir(tmp_path)
    result = _export_command(*flags, "--precision=bfloat16")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "network in bfloat16" in result.stdout
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    convolutions = helpers.convolution_dtypes(loaded.signatures[serving_lib.IMAGES_SIGNATURE])
    assert convolutions[tf.float32] == 1 and convolutions[tf.bfloat16] > 50


def test_p2_saved_model_matches_keras():
    """A model with a P2 level (strides 4-32): the SavedModel's detections are Keras'."""
    model, config, label_map = helpers.loaded_p2_model()
    assert model.strides == (4, 8, 16, 32) and model.backbone.strides[0] == 4
    serving = builders.build_serving_config(config)
    loaded = tf.saved_model.load(helpers.p2_saved_model_dir())
    images = helpers.test_images()[:2]
    exported = {
        k: v.numpy()
        for k, v in loaded.signatures["serving_default"](
            images=tf.constant(np.stack(images))
        ).items()
    }
    _check_same(exported, _reference(model, images, serving), label_map)
