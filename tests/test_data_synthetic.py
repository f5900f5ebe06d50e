"""Synthetic dataset: determinism by seed, valid tight boxes, size spread, COCO round trip."""

import numpy as np
import pytest

from fcos_tf.data import coco, synthetic


def test_same_seed_same_images_other_seed_different():
    a = synthetic.generate_example(5, image_size=(64, 96), seed=3)
    b = synthetic.generate_example(5, image_size=(64, 96), seed=3)
    for key in ("image", "boxes", "classes", "is_crowd"):
        np.testing.assert_array_equal(a[key], b[key])
    c = synthetic.generate_example(5, image_size=(64, 96), seed=4)
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == (64, 96, 3) and a["image"].dtype == np.uint8


def test_dataset_matches_generator_in_any_order():
    read = synthetic.synthetic_dataset(4, image_size=48, seed=1)
    assert read.num_examples == 4 and read.label_map.names == synthetic.CLASS_NAMES
    assert read.label_map.category_ids == (1, 2, 3, 4, 5, 6)
    for example in read.dataset:
        index = int(example["image_id"])
        expected = synthetic.generate_example(index, image_size=48, seed=1)
        np.testing.assert_array_equal(example["image"].numpy(), expected["image"])
        np.testing.assert_array_equal(example["boxes"].numpy(), expected["boxes"])
        np.testing.assert_array_equal(example["classes"].numpy(), expected["classes"])


def test_boxes_valid_tight_and_sizes_span_the_levels():
    sides, classes_seen = [], set()
    for index in range(40):
        ex = synthetic.generate_example(index, image_size=128, seed=0, noise_std=(0.0, 0.0))
        boxes = ex["boxes"]
        assert boxes.shape[0] >= 1
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 128)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        assert np.all((ex["classes"] >= 0) & (ex["classes"] < synthetic.NUM_CLASSES))
        assert not ex["is_crowd"].any()
        sides.extend(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).tolist())
        classes_seen.update(ex["classes"].tolist())
    assert classes_seen == set(range(synthetic.NUM_CLASSES))
    assert min(sides) <= 12 and max(sides) >= 100  # tiny to nearly the whole image


def test_single_rectangle_box_is_exact():
    # One object, no noise: a rectangle fills its box exactly, so the pixels inside differ
    # from the gradient background along the whole box border.
    for index in range(30):
        ex = synthetic.generate_example(
            index, image_size=64, seed=7, num_objects=(1, 1), noise_std=(0.0, 0.0)
        )
        if ex["classes"][0] == synthetic.CLASS_NAMES.index("rectangle"):
            break
    else:
        pytest.fail("no rectangle drawn in 30 images")
    x1, y1, x2, y2 = ex["boxes"][0].astype(int)
    inside = ex["image"][y1:y2, x1:x2].reshape(-1, 3)
    # Filled with one colour (the clutter drawn before it is hidden).
    assert len(np.unique(inside, axis=0)) == 1


def test_write_coco_round_trip(tmp_path):
    annotation_file, image_dir = synthetic.write_coco(
        str(tmp_path), 3, image_size=(40, 56), seed=2, noise_std=(0.0, 0.0)
    )
    read = coco.read_coco(annotation_file, image_dir)
    assert read.label_map == synthetic.label_map()
    examples = {int(ex["image_id"]): ex for ex in read.dataset}
    assert sorted(examples) == [0, 1, 2]
    for index, ex in examples.items():
        expected = synthetic.generate_example(
            index, image_size=(40, 56), seed=2, noise_std=(0.0, 0.0)
        )
        np.testing.assert_allclose(ex["boxes"].numpy(), expected["boxes"])
        np.testing.assert_array_equal(ex["classes"].numpy(), expected["classes"])
        other = synthetic.generate_example(
            (index + 1) % 3, image_size=(40, 56), seed=2, noise_std=(0.0, 0.0)
        )
        decoded = ex["image"].numpy().astype(float)
        # JPEG loss is large on tiny saturated shapes, but far smaller than another image's.
        assert (
            np.abs(decoded - expected["image"]).mean()
            < 0.5 * np.abs(decoded - other["image"]).mean()
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate_example(0, image_size=8)
    with pytest.raises(ValueError, match="num_images"):
        synthetic.synthetic_dataset(0)
