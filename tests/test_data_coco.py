"""COCO JSON reader and the pipeline on it: hand-computed boxes after every transform."""

import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcos_tf.data import coco, pipeline, transforms
from fcos_tf.data.label_map import LabelMap

CATEGORIES = [{"id": 7, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}]


def _jpeg_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _write(tmp_path, annotations=None, extra_images=()):
    """A 40x60 PNG with five annotations, an empty grayscale PNG and bad files.

    Image ids: 1 = annotated PNG, 2 = empty grayscale PNG, 3 = random bytes, 4 = missing file,
    5 = truncated JPEG, 6 = JPEG with a zeroed middle (its header segments are zeros).
    """
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(image_dir / "one.png")
    Image.fromarray(np.full((30, 20), 50, np.uint8), "L").save(image_dir / "empty.png")
    (image_dir / "garbage.jpg").write_bytes(b"this is not an image at all")
    jpeg = _jpeg_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (image_dir / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    corrupt = jpeg[:4] + b"\x00" * (len(jpeg) - 6) + b"\xff\xd9"
    (image_dir / "corrupt.jpg").write_bytes(corrupt)
    images = [
        {"id": 1, "file_name": "one.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "empty.png", "height": 30, "width": 20},
        {"id": 3, "file_name": "garbage.jpg", "height": 32, "width": 32},
        {"id": 4, "file_name": "missing.jpg", "height": 32, "width": 32},
        {"id": 5, "file_name": "truncated.jpg", "height": 32, "width": 32},
        {"id": 6, "file_name": "corrupt.jpg", "height": 32, "width": 32},
    ] + list(extra_images)
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 40], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [50, 30, 20, 20], "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [20, 20, -5, 5], "iscrowd": 0},
            {"id": 6, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        ]
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return str(annotation_file), str(image_dir)


def _examples(dataset):
    return {int(ex["image_id"]): ex for ex in dataset}


def test_reader_examples_label_map_and_skipped_files(tmp_path, caplog):
    annotation_file, image_dir = _write(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fcos_tf.data.coco"):
        read = coco.read_coco(annotation_file, image_dir)
    # Category ids sorted: 1 -> 0, 3 -> 1, 7 -> 2.
    assert read.label_map == LabelMap([(1, "a"), (3, "b"), (7, "c")])
    reasons = sorted(reason for _, reason in read.skipped)
    assert reasons == ["corrupt", "missing", "truncated", "unknown format"]
    assert "Skipped 4 of 6 images" in caplog.text
    assert "(1 corrupt, 1 missing, 1 truncated, 1 unknown format)" in caplog.text
    assert read.num_examples == 2

    examples = _examples(read.dataset)
    assert sorted(examples) == [1, 2]
    one = examples[1]
    assert one["image"].dtype == tf.uint8 and one["image"].shape == (40, 60, 3)
    # The reader keeps every annotation (xyxy, original pixels); the pipeline filters them.
    np.testing.assert_allclose(
        one["boxes"].numpy(),
        [[10, 5, 30, 15], [0, 0, 60, 40], [50, 30, 70, 50], [5, 5, 5, 15], [20, 20, 15, 25]],
    )
    np.testing.assert_array_equal(one["classes"].numpy(), [1, 0, 2, 1, 0])
    np.testing.assert_array_equal(one["is_crowd"].numpy(), [False, True, False, False, False])
    empty = examples[2]
    assert empty["image"].shape == (30, 20, 3)  # grayscale -> RGB
    assert empty["boxes"].shape == (0, 4) and empty["classes"].shape == (0,)


def test_reader_lists_the_image_sizes_of_the_file(tmp_path):
    annotation_file, image_dir = _write(tmp_path)
    read = coco.read_coco(annotation_file, image_dir)
    # Every image of the file, the skipped ones too: their sizes come from the JSON.
    assert read.image_sizes == {
        1: (40, 60),
        2: (30, 20),
        3: (32, 32),
        4: (32, 32),
        5: (32, 32),
        6: (32, 32),
    }
    # A file that does not give every image's size lists none.
    unsized = tmp_path / "unsized"
    unsized.mkdir()
    annotation_file, image_dir = _write(unsized, extra_images=[{"id": 7, "file_name": "x.png"}])
    assert coco.read_coco(annotation_file, image_dir).image_sizes is None


def test_unknown_image_id_or_category_is_an_error(tmp_path):
    bad_image = [{"id": 1, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0}]
    annotation_file, image_dir = _write(tmp_path, bad_image)
    with pytest.raises(ValueError, match="unknown image id 99"):
        coco.read_coco(annotation_file, image_dir)
    bad_category = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 0}]
    (tmp_path / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "one.png", "height": 40, "width": 60}],
                "annotations": bad_category,
                "categories": CATEGORIES,
            }
        )
    )
    with pytest.raises(ValueError, match="unknown category id 2"):
        coco.read_coco(annotation_file, image_dir)
    with pytest.raises(FileNotFoundError, match="annotation_file"):
        coco.read_coco(str(tmp_path / "nope.json"), image_dir)


def test_eval_pipeline_resize_clip_filter_keeps_crowd(tmp_path):
    annotation_file, image_dir = _write(tmp_path)
    read = coco.read_coco(annotation_file, image_dir, decode=False)
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=False,
        batch_size=4,
        eval_short_side=20,
        max_size=1333,
        max_boxes=6,
        deterministic=True,
    )
    batches = list(dataset)
    assert len(batches) == 1  # images 1 and 2; image 6 fails to decode and is skipped
    images, labels = batches[0]
    # Image 1: 40x60, short side 40 -> 20: scale 0.5 -> 20x30; image 2: 30x20, short side
    # already 20: scale 1 -> 30x20. Both padded to 32x32.
    assert images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(labels["image_id"].numpy(), [1, 2])
    np.testing.assert_array_equal(labels["original_size"].numpy(), [[40, 60], [30, 20]])
    np.testing.assert_array_equal(labels["image_size"].numpy(), [[20, 30], [30, 20]])
    # Boxes * 0.5: [5, 2.5, 15, 7.5]; crowd [0, 0, 30, 20] kept; [25, 15, 35, 25] clipped to
    # [25, 15, 30, 20]; the zero-area and the inverted box dropped.
    np.testing.assert_allclose(
        labels["boxes"][0, :4].numpy(),
        [[5, 2.5, 15, 7.5], [0, 0, 30, 20], [25, 15, 30, 20], [0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(labels["classes"].numpy(), [[1, 0, 2, -1, -1, -1], [-1] * 6])
    np.testing.assert_array_equal(labels["is_crowd"][0, :3].numpy(), [False, True, False])
    # The crowd box produces no targets: matched rows are only 0 and 2.
    matched = set(np.unique(labels["matched_box_index"][0].numpy()).tolist())
    assert matched <= {-1, 0, 2} and 0 in matched
    assert np.all(labels["class_targets"][1].numpy() == -1)  # empty image: background only
    # Padding is zero after normalisation, the image is 90-grey: caffe mean subtracted.
    np.testing.assert_allclose(
        images[0, 0, 0].numpy(), [90 - 102.98, 90 - 115.95, 90 - 122.77], atol=1e-3
    )
    assert float(tf.reduce_max(tf.abs(images[0, 20:]))) == 0.0
    assert float(tf.reduce_max(tf.abs(images[0, :, 30:]))) == 0.0


def test_train_pipeline_flip_resize_cap_drops_crowd(tmp_path):
    annotation_file, image_dir = _write(tmp_path)
    read = coco.read_coco(annotation_file, image_dir, skip_empty=True)
    assert read.num_examples == 1  # only images 1 and 3 are annotated; 3 is garbage
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=True,
        batch_size=1,
        train_short_side=(80, 80),
        max_size=None,
        hflip_prob=1.0,
        max_boxes=4,
        repeat=False,
        seed=3,
        deterministic=True,
    )
    ((images, labels),) = list(dataset)
    # Flip in the original 60-wide image, then scale 2: [10, 5, 30, 15] -> [30, 5, 50, 15] ->
    # [60, 10, 100, 30]; [50, 30, 70, 50] -> [-10, 30, 10, 50] -> [-20, 60, 20, 100] -> clipped
    # to 80x120: [0, 60, 20, 80]. The crowd box is dropped when training.
    assert images.shape == (1, 96, 128, 3)
    np.testing.assert_array_equal(labels["image_size"].numpy(), [[80, 120]])
    np.testing.assert_allclose(labels["boxes"][0, :2].numpy(), [[60, 10, 100, 30], [0, 60, 20, 80]])
    np.testing.assert_array_equal(labels["classes"].numpy(), [[1, 2, -1, -1]])
    assert not labels["is_crowd"].numpy().any()

    # Long-side cap: short side 80 would make the long side 120 > 100, so scale = 100 / 60:
    # 40x60 -> 66.7 rounded to 67 x 100. Boxes follow the pixels, one ratio per axis: x by
    # 100 / 60, y by 67 / 40.
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=True,
        batch_size=1,
        train_short_side=(80, 80),
        max_size=100,
        hflip_prob=0.0,
        max_boxes=4,
        repeat=False,
        deterministic=True,
    )
    ((images, labels),) = list(dataset)
    np.testing.assert_array_equal(labels["image_size"].numpy(), [[67, 100]])
    np.testing.assert_allclose(
        labels["boxes"][0, 0].numpy(),
        np.array([10, 5, 30, 15]) * np.array([100 / 60, 67 / 40] * 2),
        rtol=1e-5,
    )
    assert images.shape == (1, 96, 128, 3)


def test_given_label_map_is_used(tmp_path):
    annotation_file, image_dir = _write(tmp_path)
    label_map = LabelMap([(7, "c"), (3, "b"), (1, "a"), (9, "z")])
    read = coco.read_coco(annotation_file, image_dir, label_map=label_map, check_images=False)
    assert read.label_map is label_map
    assert read.num_examples == 6 and read.skipped == []
    examples = _examples(read.dataset)  # undecodable files are dropped by the reader
    assert sorted(examples) == [1, 2]
    np.testing.assert_array_equal(examples[1]["classes"].numpy(), [1, 2, 0, 1, 2])


def test_label_map_round_trip(tmp_path):
    label_map = LabelMap([{"id": 1, "name": "person"}, {"id": 3, "name": "car"}])
    path = label_map.save(str(tmp_path))
    assert os.path.basename(path) == "label_map.json"
    assert json.loads(open(path).read()) == [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    assert LabelMap.load(str(tmp_path)) == label_map
    assert label_map.index_of(3) == 1 and label_map.category_id(1) == 3
    assert label_map.name(0) == "person" and label_map.num_classes == 2
    np.testing.assert_array_equal(
        label_map.classes_to_category_ids(tf.constant([1, -1, 0])).numpy(), [3, -1, 1]
    )
    with pytest.raises(KeyError, match="Unknown category id 2"):
        label_map.index_of(2)
    with pytest.raises(ValueError, match="duplicate ids"):
        LabelMap([(1, "a"), (1, "b")])
    assert LabelMap.coco_2017().num_classes == 80
    assert LabelMap.coco_2017().category_id(79) == 90


def test_check_image_file(tmp_path):
    jpeg = _jpeg_bytes(np.zeros((16, 16, 3), np.uint8))
    cases = {
        "ok.jpg": jpeg,
        "trailing.jpg": jpeg + b"\0" * 200,
        "half.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
        "text.jpg": b"hello",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    reasons = {name: coco.check_image_file(str(tmp_path / name)) for name in cases}
    assert reasons == {
        "ok.jpg": None,
        "trailing.jpg": None,
        "half.jpg": "truncated",
        "empty.jpg": "empty",
        "text.jpg": "unknown format",
    }
    assert coco.check_image_file(str(tmp_path / "none.jpg")) == "missing"
    # Bytes after the end marker do not stop TensorFlow's decoder either.
    assert transforms.decode_image(tf.constant(cases["trailing.jpg"])).shape == (16, 16, 3)
