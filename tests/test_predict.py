"""python -m fcos_tf.predict on a SavedModel and on a workdir."""

import collections
import json
import os
import subprocess
import sys

import export_helpers as helpers
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf import predict
from fcos_tf.core import rundir

pytestmark = helpers.SAME_WORKER


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    (folder / "nested").mkdir()
    images = helpers.test_images()
    (folder / "000000000042.png").write_bytes(tf.io.encode_png(images[0]).numpy())
    (folder / "b.jpg").write_bytes(tf.io.encode_jpeg(images[1]).numpy())
    (folder / "nested" / "c.png").write_bytes(tf.io.encode_png(images[2]).numpy())
    (folder / "notes.txt").write_text("not an image")
    return folder


def _run(model, inputs, output):
    return helpers.run_python(
        "import runpy, sys; sys.argv = ['predict'] + sys.argv[1:]; "
        "runpy.run_module('fcos_tf.predict', run_name='__main__')",
        "--model",
        model,
        *inputs,
        "--output",
        output,
        "--score_threshold",
        "0.0",
    )


@pytest.mark.slow
def test_predict_saved_model_and_workdir_agree(image_dir, tmp_path):
    saved_model_base = os.path.dirname(helpers.saved_model_dir())  # newest version picked
    out_saved = tmp_path / "saved"
    out_workdir = tmp_path / "workdir"
    stdout = _run(saved_model_base, [str(image_dir)], out_saved)
    assert "detections ->" in stdout
    _run(
        helpers.trained_workdir(),
        [str(image_dir / "000000000042.png"), str(image_dir / "b.jpg"), str(image_dir / "nested")],
        out_workdir,
    )

    for out in (out_saved, out_workdir):
        assert sorted(os.listdir(out)) == [
            "000000000042.png",
            "b.png",
            "c.png",
            "detections.json",
            "images.json",
        ]
    images = json.loads((out_saved / "images.json").read_text())
    # Not every file is named by a number: every image is numbered by its position.
    assert [(i["id"], i["height"], i["width"]) for i in images] == [
        (1, 80, 100),
        (2, 80, 100),
        (3, 120, 70),
    ]
    results = json.loads((out_saved / "detections.json").read_text())
    assert results and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    _, _, label_map = helpers.loaded_model()
    assert {r["category_id"] for r in results} <= set(label_map.category_ids)
    assert {r["image_id"] for r in results} == {1, 2, 3}
    for r in results:
        x, y, w, h = r["bbox"]
        size = {i["id"]: (i["height"], i["width"]) for i in images}[r["image_id"]]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= size[1] + 0.01 and y + h <= size[0] + 0.01
    # The drawn picture keeps the original size and differs from the input (boxes drawn).
    picture = tf.io.decode_png((out_saved / "000000000042.png").read_bytes()).numpy()
    assert picture.shape == (80, 100, 3)
    assert np.any(picture != helpers.test_images()[0])
    # Same graph through both routes: same detections.
    other = json.loads((out_workdir / "detections.json").read_text())
    assert len(other) == len(results)
    for a, b in zip(results, other):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
    # COCO tools accept the file.
    from fcos_tf.training import evaluation

    ground_truth = evaluation.coco_from_dicts(
        [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in images], [], label_map
    )
    assert len(ground_truth.loadRes(str(out_saved / "detections.json")).anns) == len(results)


def test_find_images_and_ids(image_dir, tmp_path):
    files = predict.find_images([str(image_dir)])
    assert [os.path.basename(f) for f in files] == ["000000000042.png", "b.jpg", "c.png"]
    # One name is not a number: positions for all (42 is not kept, 2 would have collided).
    assert predict.image_ids(files) == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="missing"):
        predict.find_images([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="No image"):
        predict.find_images([str(tmp_path)])


@pytest.mark.parametrize(
    ("names", "ids"),
    [
        # COCO's file names: their numbers, whatever their order and gaps.
        (["000000397133.jpg", "000000000139.jpg", "7.png"], [397133, 139, 7]),
        (["a/5.jpg", "b/3.png"], [5, 3]),
        # A name that is not a number: the number 2 would be the position of a.png.
        (["2.jpg", "a.png"], [1, 2]),
        # The same number twice (two folders, or leading zeros): positions.
        (["a/1.jpg", "b/1.jpg"], [1, 2]),
        (["1.jpg", "01.png", "3.jpg"], [1, 2, 3]),
        # Digits that are not ASCII are not COCO numbers.
        (["\u00b2.jpg", "3.jpg"], [1, 2]),
    ],
)
def test_image_ids_are_distinct_and_keep_coco_numbers(names, ids):
    assert predict.image_ids(names) == ids


@pytest.mark.slow
def test_predict_gives_every_image_its_own_id(tmp_path):
    """What a folder of ``2.jpg`` and ``a.png``, or two folders with ``1.jpg`` each, gets in
    images.json and detections.json; numbered files keep their numbers."""
    image = helpers.test_images()[0]
    encoded = {".jpg": tf.io.encode_jpeg(image).numpy(), ".png": tf.io.encode_png(image).numpy()}
    model = helpers.saved_model_dir()
    cases = {
        "mixed": (["2.jpg", "a.png"], [1, 2]),
        "two_folders": (["a/1.jpg", "b/1.jpg"], [1, 2]),
        "numbers": (["a/7.jpg", "b/000000000042.jpg"], [7, 42]),
    }
    from fcos_tf.training import evaluation

    _, _, label_map = helpers.loaded_model()
    for case, (names, ids) in cases.items():
        for name in names:
            path = tmp_path / case / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encoded[path.suffix])
        output = tmp_path / f"out_{case}"
        results = predict.predict(model, [str(tmp_path / case)], str(output), score_threshold=0.0)
        images = json.loads((output / "images.json").read_text())
        assert [(i["id"], os.path.relpath(i["file_name"], tmp_path / case)) for i in images] == [
            (i, name) for i, name in zip(ids, names)
        ], case
        assert json.loads((output / "detections.json").read_text()) == results
        # Every image has its own detections (the model keeps scores down to 0.001: 100 each).
        counts = collections.Counter(r["image_id"] for r in results)
        assert sorted(counts) == sorted(ids) and set(counts.values()) == {100}, (case, counts)

        ground_truth = evaluation.coco_from_dicts(
            [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in images],
            [],
            label_map,
        )
        loaded = ground_truth.loadRes(str(output / "detections.json"))
        assert sorted({a["image_id"] for a in loaded.anns.values()}) == sorted(ids), case


def test_score_threshold_outside_0_1_is_refused_with_one_line(tmp_path):
    image = tmp_path / "1.png"
    image.write_bytes(tf.io.encode_png(helpers.test_images()[0]).numpy())
    for value in ("1.5", "-0.1", "nan"):
        result = _run_command(
            str(tmp_path / "model"),
            [str(image)],
            str(tmp_path / "out"),
            f"--score_threshold={value}",
        )
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"FATAL Flags parsing error: flag --score_threshold={value}: must be a score in "
            "[0, 1] (--help lists the flags)."
        ], result.stderr
        assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out")
    # From Python: refused before any model is read.
    with pytest.raises(ValueError, match=r"`score_threshold`=1.5 is not a score in \[0, 1\]"):
        predict.predict(
            str(tmp_path / "model"), [str(image)], str(tmp_path / "out"), score_threshold=1.5
        )


def test_load_detector_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a SavedModel.* nor a fcos-train workdir"):
        rundir.load_detector(str(tmp_path))


def _run_command(model, inputs, output, *extra, env_extra=None):
    """``python -m fcos_tf.predict`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=helpers.ROOT)
    env.pop("FCOS_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fcos_tf.predict",
            "--model",
            model,
            *inputs,
            "--output",
            output,
            *extra,
        ],
        cwd=helpers.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _undecodable_jpeg(jpeg):
    """Sound marker segments, but the frame names quantization table 3, never defined."""
    data = bytearray(jpeg)
    frame = data.find(b"\xff\xc0")
    data[frame + 2 + 8 + 2] = 3
    return bytes(data)


@pytest.mark.slow
def test_predict_skips_unreadable_files_with_the_reason_and_a_count(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    jpeg = tf.io.encode_jpeg(helpers.test_images()[0]).numpy()
    (folder / "a_good.jpg").write_bytes(jpeg)
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "d_text.jpg").write_text("not an image")
    (folder / "e_bad_table.jpg").write_bytes(_undecodable_jpeg(jpeg))
    workdir = helpers.trained_workdir()
    result = _run_command(workdir, [str(folder)], str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    skips = [line for line in lines if line.startswith("Skipping ")]
    assert skips == [
        f"Skipping {folder / 'b_empty.jpg'}: empty",
        f"Skipping {folder / 'c_cut.jpg'}: truncated",
        f"Skipping {folder / 'd_text.jpg'}: unknown format",
        (
            f"Skipping {folder / 'e_bad_table.jpg'}: undecodable (jpeg::Uncompress failed. "
            f"Invalid JPEG data or crop window.)"
        ),
    ], result.stderr[-3000:]
    assert lines[-1] == (
        "Skipped 4 of 5 files (1 empty, 1 truncated, 1 undecodable, 1 unknown format)."
    )
    assert "Graph execution error" not in result.stderr and "Traceback" not in result.stderr
    images = json.loads((tmp_path / "out" / "images.json").read_text())
    assert [os.path.basename(i["file_name"]) for i in images] == ["a_good.jpg"]

    # Nothing readable: status 1 and one line; with FCOS_DEBUG=1 the traceback too.
    (folder / "a_good.jpg").unlink()
    for env_extra in (None, {"FCOS_DEBUG": "1"}):
        result = _run_command(workdir, [str(folder)], str(tmp_path / "none"), env_extra=env_extra)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            "No image could be read: skipped all 4 of 4 files (1 empty, "
            "1 truncated, 1 undecodable, 1 unknown format)."
        ), last
        assert ("Traceback" in result.stderr) == (env_extra is not None)
        assert not os.path.exists(tmp_path / "none" / "detections.json")


@pytest.mark.slow
def test_detector_refuses_floats_and_matches_the_bytes_signature():
    detector = rundir.load_detector(helpers.trained_workdir())
    image = helpers.test_images()[0]
    with pytest.raises(TypeError, match="float32 in 0..1.*uint8 pixels 0..255"):
        detector(image[None].astype(np.float32) / 255.0)
    with pytest.raises(TypeError, match="must be uint8 RGB pixels 0..255, got float64"):
        detector(image[None].astype(np.float64))
    with pytest.raises(TypeError, match="got int32"):
        detector(tf.constant(image[None], tf.int32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\].*\[80, 100, 3\]"):
        detector(image)
    outputs = detector(image[None])
    from_bytes = detector.detect_image_bytes([tf.io.encode_png(image).numpy()])
    assert outputs["num_detections"][0] > 0
    np.testing.assert_array_equal(outputs["num_detections"], from_bytes["num_detections"])
    np.testing.assert_allclose(outputs["detection_boxes"], from_bytes["detection_boxes"], atol=1e-5)
    np.testing.assert_array_equal(outputs["detection_classes"], from_bytes["detection_classes"])
    assert set(outputs["detection_classes"][0, : outputs["num_detections"][0]]) <= set(
        detector.label_map.category_ids
    )
