"""Bad data: skipped with a count, or one clear error; never a hang, never training on nothing.

The reader and pipeline are tested directly; what a user sees (exit status, one line, no
traceback, no hang) through ``train.py`` in a subprocess with a timeout, on tiny COCO folders.
"""

import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcos_tf.data import DatasetError, coco, pipeline, transforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A regression that loops in the input pipeline fails after this many seconds.
TIMEOUT_S = 300


# ---------------------------------------------------------------------------- bad files


def _jpeg(seed=0, size=(24, 32)):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _zeroed_middle(jpeg):
    """Header segments zeroed, end marker kept: passes a header/end-marker check."""
    return jpeg[:4] + b"\x00" * (len(jpeg) - 6) + b"\xff\xd9"


def _undefined_quantization_table(jpeg):
    """Well-formed marker segments, but the frame names quantization table 3, never defined.

    Passes every check short of decoding; TensorFlow's decoder refuses it.
    """
    data = bytearray(jpeg)
    frame = data.find(b"\xff\xc0")
    data[frame + 2 + 8 + 2] = 3  # first component's quantization table
    return bytes(data)


def _with_large_app_segment(jpeg, length=10_000):
    """A valid JPEG whose header (an APP15 segment) is longer than the first read."""
    return jpeg[:2] + b"\xff\xef" + length.to_bytes(2, "big") + b"\x01" * (length - 2) + jpeg[2:]


def test_check_image_file_walks_jpeg_headers(tmp_path):
    jpeg = _jpeg()
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, "PNG")
    png = png.getvalue()
    cases = {
        "ok.jpg": (jpeg, None),
        "long_header.jpg": (_with_large_app_segment(jpeg), None),
        "zeroed.jpg": (_zeroed_middle(jpeg), "corrupt"),
        "cut_in_header.jpg": (jpeg[:100], "truncated"),
        "no_frame.jpg": (jpeg[:2] + jpeg[jpeg.find(b"\xff\xda") :], "corrupt"),
        "bad_table.jpg": (_undefined_quantization_table(jpeg), None),
        "ok.png": (png, None),
        "bad_ihdr.png": (png[:12] + b"XXXX" + png[16:], "corrupt"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    reasons = {name: coco.check_image_file(str(tmp_path / name)) for name in cases}
    assert reasons == {name: reason for name, (_, reason) in cases.items()}
    # The cheap check cannot see everything: TensorFlow decodes the long header and refuses
    # the undefined table.
    assert transforms.decode_image(cases["long_header.jpg"][0]).shape == (24, 32, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        transforms.decode_image(cases["bad_table.jpg"][0])


# ------------------------------------------------------------------------ tiny COCO sets


def _write_split(root, split, files, annotations=None, categories=None, images=None):
    """Writes ``root/<split>/`` and ``root/annotations/instances_<split>.json``.

    Args:
        files: list of bytes (None: the file is missing), one image entry each, ids 1..N.
        annotations, categories, images: replace the generated lists.
    """
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    generated = []
    for index, data in enumerate(files, start=1):
        if data is not None:
            (image_dir / f"{index}.jpg").write_bytes(data)
        generated.append({"id": index, "file_name": f"{index}.jpg", "height": 24, "width": 32})
    if annotations is None:
        annotations = [
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [4, 4, 12, 10],
                "area": 120,
                "iscrowd": 0,
            }
            for i in range(1, len(files) + 1)
        ]
    annotation_file = root / "annotations" / f"instances_{split}.json"
    annotation_file.write_text(
        json.dumps(
            {
                "images": generated if images is None else images,
                "annotations": annotations,
                "categories": categories or [{"id": 1, "name": "thing"}],
            }
        )
    )
    return str(annotation_file), str(image_dir)


def test_reader_skips_files_up_to_the_first_decodable_one(tmp_path, caplog):
    good, bad = _jpeg(1), _undefined_quantization_table(_jpeg(2))
    annotation_file, image_dir = _write_split(tmp_path, "train2017", [bad, bad, good, bad])
    read = coco.read_coco(annotation_file, image_dir)
    assert read.skipped == [
        (os.path.join(image_dir, "1.jpg"), "undecodable"),
        (os.path.join(image_dir, "2.jpg"), "undecodable"),
    ]
    assert "Skipped 2 of 4 images" in caplog.text and "2 undecodable" in caplog.text
    # Image 4 comes after a decodable one: the cheap check keeps it and decoding skips it.
    assert read.num_examples == 2
    assert [int(example["image_id"]) for example in read.dataset] == [3]

    full = coco.read_coco(annotation_file, image_dir, check_images="decode")
    assert [reason for _, reason in full.skipped] == ["undecodable"] * 3
    assert full.num_examples == 1
    assert [int(example["image_id"]) for example in full.dataset] == [3]
    with pytest.raises(ValueError, match="check_images"):
        coco.read_coco(annotation_file, image_dir, check_images="full")


@pytest.mark.parametrize(
    "kind, reasons",
    [("missing", "3 missing"), ("zeroed", "3 corrupt"), ("undecodable", "3 undecodable")],
)
def test_split_without_a_usable_image_is_an_error(tmp_path, kind, reasons):
    data = {
        "missing": None,
        "zeroed": _zeroed_middle(_jpeg()),
        "undecodable": _undefined_quantization_table(_jpeg()),
    }[kind]
    annotation_file, image_dir = _write_split(tmp_path, "val2017", [data] * 3)
    with pytest.raises(DatasetError) as error:
        coco.read_coco(annotation_file, image_dir, decode=False)
    message = str(error.value)
    assert image_dir in message and annotation_file in message
    assert f"all 3 skipped ({reasons})" in message
    # With a full decode check too.
    with pytest.raises(DatasetError, match=f"all 3 skipped \\({reasons}\\)"):
        coco.read_coco(annotation_file, image_dir, check_images="decode")


def test_annotation_file_without_images_is_an_error(tmp_path):
    annotation_file, image_dir = _write_split(tmp_path, "train2017", [], images=[])
    with pytest.raises(DatasetError, match="No usable image .* it lists 0 images"):
        coco.read_coco(annotation_file, image_dir)


def test_duplicate_image_ids_are_refused_with_both_file_names(tmp_path):
    images = [
        {"id": 1, "file_name": "a.jpg"},
        {"id": 2, "file_name": "b.jpg"},
        {"id": 1, "file_name": "c.jpg"},
    ]
    annotation_file, image_dir = _write_split(
        tmp_path, "train2017", [], annotations=[], images=images
    )
    with pytest.raises(DatasetError, match="Image id 1 appears twice .*'a.jpg' and 'c.jpg'"):
        coco.read_coco(annotation_file, image_dir)


def test_unknown_ids_and_cut_json_are_dataset_errors(tmp_path):
    unknown_image = [{"id": 11, "image_id": 5, "category_id": 1, "bbox": [0, 0, 4, 4]}]
    annotation_file, image_dir = _write_split(
        tmp_path, "train2017", [_jpeg()], annotations=unknown_image
    )
    with pytest.raises(DatasetError, match="Annotation 11 .* unknown image id 5"):
        coco.read_coco(annotation_file, image_dir)
    unknown_category = [{"id": 12, "image_id": 1, "category_id": 9, "bbox": [0, 0, 4, 4]}]
    _write_split(tmp_path, "train2017", [_jpeg()], annotations=unknown_category)
    with pytest.raises(DatasetError, match="Annotation 12 .* unknown category id 9"):
        coco.read_coco(annotation_file, image_dir)
    text = (tmp_path / "annotations" / "instances_train2017.json").read_text()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError) as error:
        coco.read_coco(annotation_file, image_dir)
    assert annotation_file in str(error.value)
    assert (
        f"(line 1 column {len(text) // 2 + 1}, character {len(text) // 2} of "
        f"{len(text) // 2})" in str(error.value)
    )


# ------------------------------------------------------------------------------ pipeline


def _bytes_examples(files):
    count = len(files)
    return tf.data.Dataset.from_tensor_slices(
        {
            "image_bytes": tf.constant(files),
            "boxes": tf.tile(tf.constant([[[2.0, 2.0, 12.0, 10.0]]]), [count, 1, 1]),
            "classes": tf.zeros([count, 1], tf.int32),
            "is_crowd": tf.zeros([count, 1], tf.bool),
            "image_id": tf.range(1, count + 1, dtype=tf.int64),
        }
    )


def _first_batches(dataset, count):
    """The first ``count`` batches, or the error; fails if the iteration does not end."""
    result = {}

    def consume():
        try:
            result["batches"] = list(dataset.take(count))
        except tf.errors.OpError as error:
            result["error"] = error

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the input pipeline did not end"
    return result


def test_training_stream_with_nothing_decodable_fails_instead_of_looping():
    bad = _undefined_quantization_table(_jpeg())
    dataset = pipeline.make_pipeline(
        _bytes_examples([bad, b"not an image"]),
        training=True,
        batch_size=1,
        train_short_side=(32, 32),
        max_size=32,
    )
    result = _first_batches(dataset, 1)
    assert isinstance(result.get("error"), tf.errors.InvalidArgumentError), result
    assert "No example of the dataset could be read in a whole epoch" in str(result["error"])


def test_training_stream_skips_undecodable_files_in_every_epoch():
    bad = _undefined_quantization_table(_jpeg())
    files = [_jpeg(1), bad, _jpeg(2), b"not an image", _jpeg(3)]
    dataset = pipeline.make_pipeline(
        _bytes_examples(files),
        training=True,
        batch_size=1,
        train_short_side=(32, 32),
        max_size=32,
        seed=3,
        deterministic=True,
    )
    result = _first_batches(dataset, 9)  # three epochs of the three good images
    ids = [int(labels["image_id"][0]) for _, labels in result["batches"]]
    for epoch in range(3):
        assert sorted(ids[3 * epoch : 3 * epoch + 3]) == [1, 3, 5]


# ------------------------------------------------------------------------------ train.py


def _train_flags(workdir, coco_root, total_steps=2):
    """Command-line overrides of a seconds-long COCO run (the one place naming config keys)."""
    return [
        f"--workdir={workdir}",
        "--mode=train",
        "--config.data.dataset=coco",
        f"--config.data.coco.root={coco_root}",
        "--config.pipeline.train_short_side=(32, 32)",
        "--config.pipeline.max_size=32",
        "--config.pipeline.eval_short_side=32",
        "--config.pipeline.shuffle_buffer=8",
        "--config.model.fpn_channels=16",
        "--config.model.head_num_convs=1",
        "--config.model.head_num_groups=8",
        "--config.train.batch_size=2",
        "--config.train.warmup_steps=1",
        "--config.train.lr_steps=(1,)",
        f"--config.train.total_steps={total_steps}",
        "--config.train.steps_per_epoch=2",
        "--config.train.checkpoint_every=2",
    ]


def _run_train(flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def _bad_split(root, case):
    """A train split made bad in one way; returns the words the error line must contain."""
    good = [_jpeg(seed) for seed in range(3)]
    if case == "undecodable":
        annotation_file, image_dir = _write_split(
            root, "train2017", [_undefined_quantization_table(data) for data in good]
        )
        return [image_dir, annotation_file, "all 3 skipped (3 undecodable)"]
    if case == "missing":
        annotation_file, image_dir = _write_split(root, "train2017", [None] * 3)
        return [image_dir, annotation_file, "all 3 skipped (3 missing)"]
    if case == "duplicate_id":
        images = [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2, "file_name": "2.jpg"},
            {"id": 2, "file_name": "3.jpg"},
        ]
        annotation_file, _ = _write_split(root, "train2017", good, images=images)
        return [annotation_file, "Image id 2 appears twice", "'2.jpg' and '3.jpg'"]
    if case == "unknown_category":
        annotations = [{"id": 7, "image_id": 1, "category_id": 5, "bbox": [1, 1, 4, 4]}]
        annotation_file, _ = _write_split(root, "train2017", good, annotations=annotations)
        return [annotation_file, "Annotation 7", "unknown category id 5"]
    assert case == "cut_json"
    annotation_file, _ = _write_split(root, "train2017", good)
    with open(annotation_file, "r+", encoding="utf-8") as f:
        f.truncate(len(f.read()) // 2)
    return [annotation_file, "is not valid JSON", "(line 1 column"]


@pytest.mark.parametrize(
    "case", ["undecodable", "missing", "duplicate_id", "unknown_category", "cut_json"]
)
def test_train_py_stops_on_bad_data_with_one_line(tmp_path, case):
    words = _bad_split(tmp_path / "coco", case)
    result = _run_train(_train_flags(tmp_path / "run", tmp_path / "coco"))
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Bad data: "), result.stderr[-3000:]
    for word in words:
        assert word in last, last
    assert "Done at step" not in result.stdout
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    # Bounded output: one decoder message per bad file at most, no flood.
    assert len(result.stderr) < 20_000, result.stderr[-3000:]


@pytest.mark.slow
def test_train_py_trains_on_the_usable_images_and_counts_the_others(tmp_path):
    files = [None, _zeroed_middle(_jpeg(9))] + [_jpeg(seed) for seed in range(4)]
    # After a decodable file: kept by the reader, skipped by the pipeline in every epoch.
    files.insert(3, _undefined_quantization_table(_jpeg(8)))
    _write_split(tmp_path / "coco", "train2017", files)
    result = _run_train(_train_flags(tmp_path / "run", tmp_path / "coco", total_steps=4))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Skipped 2 of 7 images" in result.stderr and "1 corrupt, 1 missing" in result.stderr
    assert "Done at step 4" in result.stdout
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-4")
