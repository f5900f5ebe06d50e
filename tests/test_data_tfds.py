"""TFDS reader on mocked data (no download): yxyx conversion, label map, offline error."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fcos_tf.data import pipeline
from fcos_tf.data import tfds as tfds_reader


def _known_examples(self, *args, **kwargs):
    """Two hand-written coco/2017 examples in TFDS's format (normalised yxyx boxes)."""
    del args, kwargs
    image = np.zeros((40, 80, 3), np.uint8)
    examples = [
        {
            "image": image,
            "image/filename": "a.jpg",
            "image/id": 42,
            "objects": {
                "area": np.array([1, 2], np.int64),
                # [ymin, xmin, ymax, xmax] / (H, W): pixels [x1, y1, x2, y2] = [8, 4, 40, 20] and
                # [0, 20, 80, 40].
                "bbox": np.array([[0.1, 0.1, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0]], np.float32),
                "id": np.array([1, 2], np.int64),
                "is_crowd": np.array([False, True]),
                "label": np.array([0, 79], np.int64),
            },
        },
        {
            "image": np.zeros((10, 10, 3), np.uint8),
            "image/filename": "b.jpg",
            "image/id": 7,
            "objects": {
                "area": np.zeros([0], np.int64),
                "bbox": np.zeros([0, 4], np.float32),
                "id": np.zeros([0], np.int64),
                "is_crowd": np.zeros([0], bool),
                "label": np.zeros([0], np.int64),
            },
        },
    ]
    signature = tfds.features.FeaturesDict(self.info.features).get_tensor_spec()
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def test_tfds_known_examples_to_xyxy_pixels():
    with tfds.testing.mock_data(as_dataset_fn=_known_examples):
        read = tfds_reader.read_tfds("coco/2017", split="train")
    assert read.label_map.num_classes == 80
    assert read.label_map.category_id(0) == 1 and read.label_map.category_id(79) == 90
    examples = list(read.dataset)
    assert len(examples) == 2
    first = examples[0]
    assert int(first["image_id"]) == 42
    assert first["image"].dtype == tf.uint8 and first["image"].shape == (40, 80, 3)
    np.testing.assert_allclose(first["boxes"].numpy(), [[8, 4, 40, 20], [0, 20, 80, 40]], atol=1e-4)
    np.testing.assert_array_equal(first["classes"].numpy(), [0, 79])
    np.testing.assert_array_equal(first["is_crowd"].numpy(), [False, True])
    assert examples[1]["boxes"].shape == (0, 4)

    dataset = pipeline.make_pipeline(
        read.dataset,
        training=False,
        batch_size=2,
        eval_short_side=20,
        max_boxes=3,
        deterministic=True,
    )
    images, labels = next(iter(dataset))
    # 40x80 -> scale 0.5 -> 20x40 (padded to 32x64); 10x10 -> scale 2 -> 20x20.
    assert images.shape == (2, 32, 64, 3)
    np.testing.assert_allclose(
        labels["boxes"][0, :2].numpy(), [[4, 2, 20, 10], [0, 10, 40, 20]], atol=1e-4
    )
    np.testing.assert_array_equal(labels["classes"].numpy(), [[0, 79, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(labels["image_id"].numpy(), [42, 7])


def test_tfds_random_mock_through_training_pipeline():
    # TFDS's random mock gives objects features of unequal lengths and arbitrary boxes: the
    # reader keeps the common length and the pipeline drops the invalid boxes.
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        read = tfds_reader.read_tfds("coco/2017", split="train")
    dataset = pipeline.make_pipeline(
        read.dataset,
        training=True,
        batch_size=3,
        train_short_side=(32, 48),
        max_size=64,
        repeat=False,
        deterministic=True,
        seed=0,
    )
    images, labels = next(iter(dataset))
    assert images.shape[0] == 3 and images.shape[1] % 32 == 0 and images.shape[2] % 32 == 0
    boxes, classes = labels["boxes"].numpy(), labels["classes"].numpy()
    valid = classes >= 0
    assert np.all(boxes[valid][:, 2] > boxes[valid][:, 0])
    assert np.all(boxes[valid][:, 3] > boxes[valid][:, 1])
    sizes = labels["image_size"].numpy()
    for i in range(3):
        assert np.all(boxes[i][valid[i]][:, 2] <= sizes[i, 1])
        assert np.all(boxes[i][valid[i]][:, 3] <= sizes[i, 0])


def test_missing_tfds_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir") as error:
        tfds_reader.read_tfds("coco/2017", split="validation", data_dir=str(tmp_path))
    assert "tfds build coco/2017" in str(error.value)


def test_other_tfds_detection_dataset_without_image_ids():
    # VOC has objects/bbox and objects/label but no image/id and no is_crowd: the examples
    # are numbered in reading order and nothing is crowd.
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        read = tfds_reader.read_tfds("voc/2007", split="train")
    assert read.label_map.num_classes == 20 and read.label_map.name(0) == "aeroplane"
    assert read.label_map.category_ids == tuple(range(20))
    examples = list(read.dataset)
    assert [int(ex["image_id"]) for ex in examples] == [0, 1, 2]
    assert not any(ex["is_crowd"].numpy().any() for ex in examples)
