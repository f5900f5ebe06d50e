"""Transforms of fcos_tf.data.transforms against hand-computed values."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcos_tf.data import transforms as T


def _png(array, mode):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_grayscale_and_rgba_become_rgb():
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    out = T.decode_image(tf.constant(_png(gray, "L"))).numpy()
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)

    rgba = np.zeros((3, 1, 4), np.uint8)
    rgba[:, 0] = [[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255]]
    out = T.decode_image(tf.constant(_png(rgba, "RGBA"))).numpy()
    np.testing.assert_array_equal(out[:, 0], [[10, 20, 30], [40, 50, 60], [70, 80, 90]])


def test_decode_jpeg():
    image = np.full((8, 16, 3), 200, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    out = T.decode_image(tf.constant(buffer.getvalue())).numpy()
    assert out.shape == (8, 16, 3)
    assert np.abs(out.astype(int) - 200).max() <= 2


@pytest.mark.parametrize(
    "size, short, cap, scale, new",
    [
        ((480, 640), 800, 1333, 800 / 480, (800, 1067)),  # 640 * 5/3 = 1066.67 -> 1067
        ((400, 1000), 800, 1333, 1333 / 1000, (533, 1333)),  # capped: 400 * 1.333 = 533.2
        ((40, 60), 20, None, 0.5, (20, 30)),
        ((60, 40), 80, 100, 100 / 60, (100, 67)),  # portrait, capped; 66.67 -> 67
        ((3, 5), 2, None, 2 / 3, (2, 3)),  # 3.33 -> 3
        ((2, 3), 3, None, 1.5, (3, 5)),  # 4.5 rounds half up to 5 (tf.round would give 4)
    ],
)
def test_resize_size(size, short, cap, scale, new):
    got_scale, got_new = T.resize_size(tf.constant(size), short, cap)
    assert got_scale.numpy() == pytest.approx(scale, rel=1e-6)
    assert tuple(got_new.numpy()) == new


def test_random_short_side_inclusive_range_and_stateless():
    values = {int(T.random_short_side(3, 5, tf.constant([i, 7]))) for i in range(60)}
    assert values == {3, 4, 5}
    a = T.random_short_side(640, 800, tf.constant([1, 2]))
    b = T.random_short_side(640, 800, tf.constant([1, 2]))
    assert int(a) == int(b)
    with pytest.raises(ValueError, match="max_size"):
        T.random_short_side(5, 3, tf.constant([0, 0]))


def test_resize_image_values():
    image = tf.constant([[[0, 0, 0], [100, 100, 100]]], tf.uint8)  # [1, 2, 3]
    same = T.resize_image(image, [1, 2])
    assert same.dtype == tf.float32
    np.testing.assert_array_equal(same.numpy()[0, :, 0], [0, 100])
    # Half-pixel-centre bilinear 2 -> 4 columns: samples at x = -0.25, 0.25, 0.75, 1.25
    # (clamped): 0, 25, 75, 100.
    up = T.resize_image(image, [1, 4]).numpy()[0, :, 0]
    np.testing.assert_allclose(up, [0, 25, 75, 100], atol=1e-4)


def test_horizontal_flip_image_and_boxes():
    image = tf.reshape(tf.range(2 * 5 * 1), [2, 5, 1])
    boxes = tf.constant([[1.0, 0.0, 3.0, 2.0], [0.0, 1.0, 5.0, 2.0]])
    flipped, out = T.horizontal_flip(image, boxes)
    np.testing.assert_array_equal(flipped.numpy()[0, :, 0], [4, 3, 2, 1, 0])
    # [W - x2, y1, W - x1, y2] with W = 5
    np.testing.assert_allclose(out.numpy(), [[2, 0, 4, 2], [0, 1, 5, 2]])


def test_random_horizontal_flip_probability_extremes():
    image = tf.zeros([4, 10, 3])
    boxes = tf.constant([[1.0, 1.0, 2.0, 2.0]])
    _, out, flipped = T.random_horizontal_flip(image, boxes, 1.0, tf.constant([3, 4]))
    assert bool(flipped)
    np.testing.assert_allclose(out.numpy(), [[8, 1, 9, 2]])
    _, out, flipped = T.random_horizontal_flip(image, boxes, 0.0, tf.constant([3, 4]))
    assert not bool(flipped)
    np.testing.assert_allclose(out.numpy(), [[1, 1, 2, 2]])


def test_clip_and_filter_boxes():
    boxes = tf.constant(
        [
            [10.0, 5.0, 30.0, 15.0],  # inside: kept as is
            [-5.0, -5.0, 70.0, 50.0],  # out of bounds: clipped to the image
            [5.0, 5.0, 5.0, 15.0],  # zero width: dropped
            [20.0, 20.0, 15.0, 25.0],  # inverted: dropped
            [70.0, 10.0, 80.0, 20.0],  # entirely outside: zero width after clipping, dropped
            [0.0, 0.0, 4.0, 4.0],  # crowd
        ]
    )
    classes = tf.constant([0, 1, 2, 3, 4, 5])
    crowd = tf.constant([False, False, False, False, False, True])
    out_boxes, out_classes, out_crowd = T.clip_and_filter_boxes(
        boxes, classes, crowd, tf.constant([40, 60]), drop_crowd=False
    )
    np.testing.assert_allclose(out_boxes.numpy(), [[10, 5, 30, 15], [0, 0, 60, 40], [0, 0, 4, 4]])
    np.testing.assert_array_equal(out_classes.numpy(), [0, 1, 5])
    np.testing.assert_array_equal(out_crowd.numpy(), [False, False, True])
    _, out_classes, _ = T.clip_and_filter_boxes(
        boxes, classes, crowd, tf.constant([40, 60]), drop_crowd=True
    )
    np.testing.assert_array_equal(out_classes.numpy(), [0, 1])


def test_normalize_caffe_and_torchvision():
    pixel = tf.constant([[[10, 20, 30]]], tf.uint8)
    caffe = T.normalize_image(pixel, "caffe").numpy()[0, 0]
    # BGR: (30 - 102.98, 20 - 115.95, 10 - 122.77)
    np.testing.assert_allclose(caffe, [-72.98, -95.95, -112.77], atol=1e-4)
    torch = T.normalize_image(pixel, "torchvision").numpy()[0, 0]
    expected = [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(torch, expected, atol=1e-5)
    # The FCOS authors' exact means, BGR order, std 1.
    detectron2 = T.normalize_image(pixel, "detectron2").numpy()[0, 0]
    np.testing.assert_allclose(detectron2, [30 - 103.530, 20 - 116.280, 10 - 123.675], atol=1e-4)
    mrcn = T.normalize_image(pixel, "maskrcnn_benchmark").numpy()[0, 0]
    np.testing.assert_allclose(mrcn, [30 - 102.9801, 20 - 115.9465, 10 - 122.7717], atol=1e-4)
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3)), tf.uint8)
    for norm in T.PIXEL_NORMS:
        out = T.normalize_image(batch, norm)
        assert out.shape == (2, 3, 5, 3)
        np.testing.assert_array_equal(T.denormalize_image(out, norm).numpy(), batch.numpy())
    with pytest.raises(ValueError, match="pixel_norm"):
        T.normalize_image(pixel, "bgr")


def test_pad_image_to_multiple_and_fixed_size():
    image = tf.ones([33, 64, 3])
    out = T.pad_image(image, 32)
    assert out.shape == (64, 64, 3)
    assert float(tf.reduce_sum(out)) == 33 * 64 * 3  # zeros added at the bottom only
    assert float(tf.reduce_sum(out[33:])) == 0.0
    fixed = tf.function(
        lambda x: T.pad_image(x, 32, pad_to=(96, 128)),
        input_signature=[tf.TensorSpec([None, None, 3])],
    )
    assert fixed.get_concrete_function().structured_outputs.shape == (96, 128, 3)
    assert fixed(image).shape == (96, 128, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pad_to"):
        T.pad_image(tf.ones([100, 10, 3]), 32, pad_to=(96, 128))


def test_pad_boxes_pads_and_truncates():
    boxes = tf.constant([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out_boxes, out_classes, out_crowd = T.pad_boxes(
        boxes, tf.constant([3, 1]), tf.constant([False, True]), 4
    )
    np.testing.assert_allclose(out_boxes.numpy(), [[1, 2, 3, 4], [5, 6, 7, 8], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(out_classes.numpy(), [3, 1, -1, -1])
    np.testing.assert_array_equal(out_crowd.numpy(), [False, True, False, False])
    out_boxes, out_classes, _ = T.pad_boxes(
        boxes, tf.constant([3, 1]), tf.constant([False, True]), 1
    )
    np.testing.assert_array_equal(out_classes.numpy(), [3])
    assert out_boxes.shape == (1, 4)


@pytest.mark.parametrize(
    "size, new",
    [
        ((480, 640), (800, 1066)),  # 640 * 800 / 480 = 1066.67: floored, not rounded to 1067
        ((640, 480), (1066, 800)),
        ((960, 1280), (800, 1066)),  # scale 0.8333...: 1066.67 -> 1066
        ((800, 1216), (800, 1216)),  # scale 1: unchanged
        ((427, 640), (800, 1199)),  # 1199.06
        ((400, 1000), (533, 1333)),  # capped by the long side: 533.2 -> 533
        ((289, 480), (799, 1328)),  # torchvision's double arithmetic: 799.99999999999989
    ],
)
def test_resize_size_floor_rounding(size, new):
    _, got = T.resize_size(tf.constant(size), 800, 1333, rounding="floor")
    assert tuple(got.numpy()) == new


def test_resize_size_floor_is_torchvisions_python_arithmetic():
    # torchvision: scale = min(800 / short, 1333 / long) in Python floats, then
    # interpolate(recompute_scale_factor=True) gives int(size * scale) per axis. Even the
    # short side can end at 799: 289 * (800 / 289) = 799.99999999999989 in doubles, while
    # float32 arithmetic gives 800.
    rng = np.random.default_rng(0)
    sizes = rng.integers(16, 2000, size=(300, 2)).tolist() + [
        [289, 480],
        [305, 427],
        [480, 640],
        [375, 500],
    ]
    for short_side, max_size in ((800, 1333), (640, 1000)):
        for height, width in sizes:
            scale = min(short_side / min(height, width), max_size / max(height, width))
            expected = (int(height * scale), int(width * scale))
            _, got = T.resize_size(
                tf.constant([height, width]), short_side, max_size, rounding="floor"
            )
            assert tuple(got.numpy()) == expected, (height, width)


def test_resize_size_inside_tf_function_and_bad_rounding():
    fn = tf.function(lambda size: T.resize_size(size, 800, 1333, rounding="floor")[1])
    assert tuple(fn(tf.constant([480, 640])).numpy()) == (800, 1066)
    with pytest.raises(ValueError, match="rounding"):
        T.resize_size(tf.constant([4, 4]), 2, None, rounding="ceil")


def test_rescale_boxes_per_axis():
    boxes = tf.constant([[10.0, 20.0, 30.0, 40.0]])
    # 480 x 640 -> 800 x 1066: y by 800 / 480, x by 1066 / 640 (not the common 5/3).
    out = T.rescale_boxes(boxes, [480, 640], [800, 1066]).numpy()
    np.testing.assert_allclose(
        out, [[10 * 1066 / 640, 20 * 800 / 480, 30 * 1066 / 640, 40 * 800 / 480]], rtol=1e-6
    )
    # And back to the original frame.
    np.testing.assert_allclose(T.rescale_boxes(out, [800, 1066], [480, 640]), boxes, rtol=1e-6)
    # Batched: boxes [B, N, 4] with sizes [B, 2].
    batched = T.rescale_boxes(tf.ones([2, 3, 4]), [[10, 10], [10, 20]], [[20, 30], [5, 5]])
    np.testing.assert_allclose(batched[0], np.tile([3.0, 2.0, 3.0, 2.0], (3, 1)))
    np.testing.assert_allclose(batched[1], np.tile([0.25, 0.5, 0.25, 0.5], (3, 1)))
