"""The batched pipeline: targets equal compute_targets called eagerly, determinism, static
shapes, and the pictures of visualize.py."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcos_tf.data import pipeline, synthetic, visualize
from fcos_tf.ops import locations as loc
from fcos_tf.ops.targets import compute_targets

TARGET_KEYS = ("class_targets", "box_targets", "centerness_targets", "matched_box_index")


@pytest.fixture(scope="module")
def examples():
    # 96x128 images, objects of 48 to ~90 px, resized to a short side of 96..256: up to
    # ~240 px, so that P3, P4 and P5 all get positives.
    return synthetic.synthetic_dataset(
        6, image_size=(96, 128), seed=0, min_object_size=48
    ).dataset.cache()


def _train(examples, **overrides):
    options = dict(
        training=True,
        batch_size=3,
        train_short_side=(96, 256),
        max_size=342,
        max_boxes=12,
        repeat=False,
        seed=5,
        deterministic=True,
        shuffle_buffer=6,
    )
    options.update(overrides)
    return pipeline.make_pipeline(examples, **options)


def test_targets_equal_eager_compute_targets(examples):
    # The augmentation stream follows `seed` and TensorFlow's global seed, which tests that
    # ran before in this process may have set: pin it, so that the draws (and the levels they
    # reach) are the same whatever ran before.
    tf.random.set_seed(0)
    levels_with_positives = set()
    for images, labels in _train(examples):
        padded = tuple(images.shape[1:3])
        assert padded[0] % 32 == 0 and padded[1] % 32 == 0
        num_locations = loc.num_locations(padded)
        assert labels["class_targets"].shape == (3, num_locations)
        assert labels["box_targets"].shape == (3, num_locations, 4)
        for i in range(3):
            # The same transformed example: its boxes and classes as the batch holds them.
            expected = compute_targets(labels["boxes"][i], labels["classes"][i], padded)
            for key in TARGET_KEYS:
                np.testing.assert_array_equal(
                    labels[key][i].numpy(), expected[key].numpy(), err_msg=key
                )
            positive = labels["class_targets"][i].numpy() >= 0
            assert positive.any()
            per_level = loc.split_per_level(tf.constant(positive), padded)
            levels_with_positives.update(
                level for level, p in enumerate(per_level) if bool(tf.reduce_any(p))
            )
            # Valid boxes lie inside the valid (unpadded) image.
            valid = labels["classes"][i].numpy() >= 0
            height, width = labels["image_size"][i].numpy()
            boxes = labels["boxes"][i].numpy()[valid]
            assert np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
    assert {0, 1, 2} <= levels_with_positives


def test_deterministic_option_repeats_exactly(examples):
    first = list(_train(examples))
    second = list(_train(examples))
    assert len(first) == len(second) == 2
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second):
        np.testing.assert_array_equal(images_a.numpy(), images_b.numpy())
        for key in labels_a:
            np.testing.assert_array_equal(labels_a[key].numpy(), labels_b[key].numpy())
    # The multi-scale range is used: several sizes over 6 images.
    sizes = {tuple(s) for _, labels in first for s in labels["image_size"].numpy().tolist()}
    assert len(sizes) >= 2


def test_pad_to_gives_static_shapes_and_eval_keeps_order(examples):
    dataset = pipeline.make_pipeline(
        examples,
        training=False,
        batch_size=2,
        eval_short_side=96,
        max_size=128,
        pad_to=(128, 128),
        max_boxes=8,
        drop_remainder=True,
        deterministic=True,
    )
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.shape == (2, 128, 128, 3)
    assert labels_spec["class_targets"].shape == (2, loc.num_locations((128, 128)))
    assert labels_spec["boxes"].shape == (2, 8, 4)
    ids = [labels["image_id"].numpy().tolist() for _, labels in dataset]
    assert ids == [[0, 1], [2, 3], [4, 5]]


def test_bad_options_are_clear_errors(examples):
    with pytest.raises(ValueError, match="pixel_norm"):
        pipeline.make_pipeline(examples, training=True, pixel_norm="rgb")
    with pytest.raises(ValueError, match="train_short_side"):
        pipeline.make_pipeline(examples, training=True, train_short_side=(900, 800))
    with pytest.raises(TypeError):
        pipeline.make_pipeline(examples, training=True, no_such_option=1)
    # An image larger than `pad_to` stops the run (it is not silently skipped).
    too_small = pipeline.make_pipeline(
        examples, training=False, batch_size=2, eval_short_side=96, max_size=None, pad_to=(96, 96)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="pad_to"):
        next(iter(too_small))


def test_visualize_batch_and_detections(examples, tmp_path):
    # The augmentation follows TensorFlow's global seed too: pinned, so that the first
    # image has P3 positives whatever ran before in the process.
    tf.random.set_seed(0)
    images, labels = next(iter(_train(examples)))
    paths = visualize.save_batch(images, labels, str(tmp_path), names=synthetic.CLASS_NAMES)
    assert len(paths) == 3 and all(os.path.exists(p) for p in paths)
    picture = np.asarray(Image.open(paths[0]))
    assert picture.shape == tuple(images.shape[1:])
    # Some P3 positive location carries the P3 colour at its centre.
    points, strides = loc.compute_locations(tuple(images.shape[1:3]))
    positive = (labels["class_targets"][0].numpy() >= 0) & (strides.numpy() == 8)
    centres = points.numpy()[positive].astype(int)
    colours = {tuple(picture[y, x]) for x, y in centres}
    assert visualize.LEVEL_COLOURS[0] in colours

    canvas = np.zeros((20, 30, 3), np.uint8)
    drawn = visualize.draw_detections(
        canvas, [[2, 12, 12, 19], [5, 5, 25, 15]], [1, -1], scores=[0.9, 0.8], names=["a", "b"]
    )
    assert canvas.max() == 0  # the input is not modified
    assert tuple(drawn[19 - 1, 5]) == visualize._class_colour(1)  # bottom edge of box 0
    assert drawn[15 - 1, 20].max() == 0  # padding row (class -1) not drawn
    with pytest.raises(TypeError, match="uint8"):
        visualize.draw_detections(canvas.astype(np.float32), [], [])


def test_detection_pictures_draw_each_object_once():
    # One object boxed as three classes (class-aware NMS keeps all three), one other object.
    boxes = np.array(
        [[10, 10, 50, 50], [11, 10, 50, 51], [10, 11, 49, 50], [60, 10, 90, 40]], np.float32
    )
    scores = np.array([0.4, 0.7, 0.5, 0.3], np.float32)
    kept = visualize.best_class_per_box(boxes, scores)
    assert kept.tolist() == [1, 3]  # the best class of the first object, then the other
    # Boxes that only touch are two objects.
    assert visualize.best_class_per_box(boxes[[0, 3]], scores[[0, 3]]).tolist() == [0, 1]

    canvas = np.zeros((64, 96, 3), np.uint8)
    drawn = visualize.draw_detections(canvas, boxes, [0, 1, 2, 3], scores=scores, width=1)
    assert tuple(int(v) for v in drawn[30, 11]) == visualize._class_colour(1)  # its left edge
    assert drawn[30, 10].max() == 0  # the left edge of the two others: not drawn
    assert tuple(int(v) for v in drawn[25, 60]) == visualize._class_colour(3)
