"""YOLO reader: the synthetic set round-trips; data.yaml forms; bad label lines; bad images."""

import logging
import os
import shutil

import format_helpers
import numpy as np
import pytest

from fcos_tf.data import DatasetError, coco, synthetic, yolo


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    # 80 px wide: the normalised values are not exact binary fractions.
    return format_helpers.write_all_formats(tmp_path_factory.mktemp("formats"), num_images=5)


def _examples(read):
    return list(read.dataset.as_numpy_iterator())


def test_reads_back_the_synthetic_set(written):
    expected = _examples(coco.read_coco(*written["coco"]))
    read = yolo.read_yolo(written["yolo"], "train")
    got = _examples(read)
    assert read.num_examples == 5 and read.skipped == []
    assert read.label_map.names == synthetic.CLASS_NAMES  # from data.yaml
    assert read.label_map.category_ids == tuple(range(6))
    for a, b in zip(expected, got):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)  # 8 decimals written
        np.testing.assert_array_equal(a["classes"], b["classes"])
        assert not b["is_crowd"].any()
        np.testing.assert_array_equal(a["image"], b["image"])


@pytest.mark.parametrize(
    "text",
    [
        "nc: 3\nnames: ['a b', \"c\", d]  # comment\ntrain: images/train\n",
        "path: .\nnames:\n  - a b\n  - 'c'\n\n  - d\nval: images/val\n",
        'names:\n  0: a b\n  2: d\n  1: "c"\n',
        "names: {0: 'a b', 1: c, 2: d}\n",
        "names:\n- a b\n- c\n- d\n",
    ],
)
def test_data_yaml_names_forms(tmp_path, text):
    (tmp_path / "data.yaml").write_text(text)
    assert yolo.class_names_of(str(tmp_path)) == ["a b", "c", "d"]


def test_classes_txt_and_no_names(tmp_path):
    with pytest.raises(DatasetError, match="No class names for"):
        yolo.class_names_of(str(tmp_path))
    (tmp_path / "classes.txt").write_text("cat\ndog\n\n")
    assert yolo.class_names_of(str(tmp_path)) == ["cat", "dog"]
    (tmp_path / "data.yaml").write_text("names:\n  1: a\n")
    with pytest.raises(DatasetError, match=r"must number the classes 0..K-1, got \[1\]"):
        yolo.class_names_of(str(tmp_path))


def test_pixel_boxes_from_normalised_centre_and_size(tmp_path):
    synthetic.write_coco(tmp_path / "src", 1, image_size=(40, 100))
    images = tmp_path / "y" / "images" / "train"
    labels = tmp_path / "y" / "labels" / "train"
    os.makedirs(images)
    os.makedirs(labels)
    shutil.copy(tmp_path / "src" / "images" / "000000.jpg", images / "img.jpg")
    shutil.copy(tmp_path / "src" / "images" / "000000.jpg", images / "empty.jpg")
    (labels / "img.txt").write_text("1 0.5 0.25 0.2 0.5\n\n0 0.1 0.9 0.2 0.2\n")
    read = yolo.read_yolo(str(tmp_path / "y"), "train", class_names=("x", "y"))
    empty, example = _examples(read)  # sorted by file name; no label file: background
    assert empty["boxes"].shape == (0, 4) and example["image_id"] == 1
    # 100 x 40 image: centre (50, 10), size 20 x 20; centre (10, 36), size 20 x 8.
    np.testing.assert_allclose(example["boxes"], [[40, 0, 60, 20], [0, 32, 20, 40]], atol=1e-5)
    np.testing.assert_array_equal(example["classes"], [1, 0])


def _copy(written, tmp_path):
    root = tmp_path / "yolo"
    shutil.copytree(written["yolo"], root)
    return root


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.2", r"000002\.txt' line 2 has 4 values; YOLO boxes are 5"),
        ("6 0.5 0.5 0.2 0.2", r"000002\.txt' line 2: class 6 is not one of the 6 classes 0..5"),
        ("1.5 0.5 0.5 0.2 0.2", r"line 2: class 1.5 is not one of"),
        ("0 0.5 0.5 two 0.2", r"line 2 is not 5 numbers"),
        ("0 0.95 0.5 0.2 0.2", r"line 2: box .* is not inside the image"),
    ],
)
def test_bad_label_lines_are_errors_naming_file_and_line(written, tmp_path, line, message):
    root = _copy(written, tmp_path)
    path = root / "labels" / "train" / "000002.txt"
    first = path.read_text().splitlines()[0]
    path.write_text(f"{first}\n{line}\n")
    with pytest.raises(DatasetError, match=message):
        yolo.read_yolo(str(root), "train")


def test_missing_and_broken_images_are_skipped_and_counted(written, tmp_path, caplog):
    root = _copy(written, tmp_path)
    image = root / "images" / "train" / "000003.jpg"
    image.write_bytes(image.read_bytes()[:200])  # truncated
    (root / "images" / "train" / "000001.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        read = yolo.read_yolo(str(root), "train")
    assert sorted(reason for _, reason in read.skipped) == ["truncated", "unknown format"]
    assert "Skipped 2 of 5 images" in caplog.text
    assert [int(e["image_id"]) for e in _examples(read)] == [0, 2, 4]
    with pytest.raises(DatasetError, match="Image folder not found"):
        yolo.read_yolo(str(root), "val")
