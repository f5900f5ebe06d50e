"""Pascal VOC reader: the synthetic set round-trips; difficult boxes are ignored; bad data."""

import logging
import os

import format_helpers
import numpy as np
import pytest

from fcos_tf.data import DatasetError, LabelMap, coco, synthetic, voc


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return format_helpers.write_all_formats(tmp_path_factory.mktemp("formats"), num_images=5)


def _examples(read):
    return list(read.dataset.as_numpy_iterator())


def test_reads_back_the_synthetic_set_exactly(written):
    expected = _examples(coco.read_coco(*written["coco"]))
    read = voc.read_voc(written["voc"], "train", class_names=synthetic.CLASS_NAMES)
    got = _examples(read)
    assert read.num_examples == len(expected) == 5 and read.skipped == []
    assert read.label_map.names == synthetic.CLASS_NAMES
    assert sum(len(e["boxes"]) for e in got) > 5  # something to compare
    for a, b in zip(expected, got):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_array_equal(a["boxes"], b["boxes"])  # integer boxes: exact
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["is_crowd"], b["is_crowd"])
        np.testing.assert_array_equal(a["image"], b["image"])


def test_one_based_inclusive_pixels_and_difficult_as_crowd(tmp_path):
    root = tmp_path / "voc"
    image = tmp_path / "a.jpg"
    synthetic.write_coco(tmp_path / "src", 1, image_size=32)
    os.rename(tmp_path / "src" / "images" / "000000.jpg", image)
    item = {
        "path": str(image),
        "height": 32,
        "width": 32,
        "boxes": np.array([[0, 0, 10, 20], [5, 6, 7, 8]], np.float32),
        "classes": np.array([14, 0]),
        "is_crowd": np.array([False, True]),
    }
    voc.write_voc(str(root), "val", [item], LabelMap.from_names(voc.VOC_CLASSES, first_id=1))
    text = (root / "Annotations" / "a.xml").read_text()
    # VOC counts pixels from 1: the box (0, 0, 10, 20) covers pixels 1..10 and 1..20.
    assert "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax>" in text
    assert "<name>person</name>" in text and "<difficult>1</difficult>" in text
    read = voc.read_voc(str(root), "val")
    assert read.label_map.names == voc.VOC_CLASSES and read.label_map.category_ids[0] == 1
    (example,) = _examples(read)
    np.testing.assert_array_equal(example["boxes"], item["boxes"])
    np.testing.assert_array_equal(example["classes"], [14, 0])
    np.testing.assert_array_equal(example["is_crowd"], [False, True])
    assert example["image_id"] == 0  # "a" is not a number: the position in the list


def test_names_found_when_not_the_voc_classes(written):
    read = voc.read_voc(written["voc"], "train")
    assert read.label_map.names == tuple(sorted(synthetic.CLASS_NAMES))
    assert voc.split_label_map(written["voc"], "train") == read.label_map


def _copy(written, tmp_path):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(written["voc"], root)
    return root


def test_corrupt_xml_is_an_error_naming_the_file_and_line(written, tmp_path):
    root = _copy(written, tmp_path)
    path = root / "Annotations" / "000002.xml"
    path.write_text(path.read_text()[:60])
    with pytest.raises(DatasetError, match=r"000002\.xml' is not well-formed XML.*line \d+"):
        voc.read_voc(str(root), "train")


def test_object_without_box_or_with_unknown_class(written, tmp_path):
    root = _copy(written, tmp_path)
    path = root / "Annotations" / "000001.xml"
    text = path.read_text()
    path.write_text(text.replace("<ymax>", "<yMAX>", 1).replace("</ymax>", "</yMAX>", 1))
    with pytest.raises(DatasetError, match=r"Object 1 of .*000001\.xml' needs a <name> and"):
        voc.read_voc(str(root), "train")
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"000000\.xml' has an object of unknown class"):
        voc.read_voc(str(root), "train", class_names=("rectangle",))
    with pytest.raises(DatasetError, match="Split list not found"):
        voc.read_voc(str(root), "test")


def test_missing_and_broken_images_are_skipped_and_counted(written, tmp_path, caplog):
    root = _copy(written, tmp_path)
    os.remove(root / "JPEGImages" / "000001.jpg")
    (root / "JPEGImages" / "000003.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        read = voc.read_voc(str(root), "train")
    assert sorted(reason for _, reason in read.skipped) == ["empty", "missing"]
    assert "Skipped 2 of 5 images" in caplog.text
    assert [int(e["image_id"]) for e in _examples(read)] == [0, 2, 4]
    for name in ("000000", "000002", "000004"):
        os.remove(root / "JPEGImages" / f"{name}.jpg")
    with pytest.raises(
        DatasetError, match=r"No usable image .* all 5 skipped \(1 empty, 4 missing"
    ):
        voc.read_voc(str(root), "train")
