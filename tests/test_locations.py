"""Pyramid constants, feature-map sizes, location grids and per-level splitting."""

import math

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.ops import locations as loc_lib


def test_constants():
    assert loc_lib.STRIDES == (8, 16, 32, 64, 128)
    # Sec. 3.2: m = 0, 64, 128, 256, 512, inf, with -1 as the lower bound of P3.
    assert loc_lib.SIZE_RANGES == ((-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf))
    assert loc_lib.DEFAULT_LOCATION_OFFSET == 0.5


@pytest.mark.parametrize(
    "image_size, expected, total",
    [
        # ceil(200/8)=25, ceil(249/8)=32; /16: 13, 16; /32: 7, 8; /64: 4, 4; /128: 2, 2.
        ((200, 249), [(25, 32), (13, 16), (7, 8), (4, 4), (2, 2)], 800 + 208 + 56 + 16 + 4),
        ((512, 512), [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)], 4096 + 1024 + 256 + 64 + 16),
        # 800/64 = 12.5 -> 13, 800/128 = 6.25 -> 7, 1344/128 = 10.5 -> 11.
        (
            (800, 1344),
            [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)],
            16800 + 4200 + 1050 + 273 + 77,
        ),
    ],
)
def test_feature_map_sizes(image_size, expected, total):
    assert loc_lib.feature_map_sizes(image_size) == expected
    assert loc_lib.num_locations(image_size) == total
    # The same sizes from an int32 tensor.
    dynamic = loc_lib.feature_map_sizes(tf.constant(image_size, tf.int32))
    assert [(int(h), int(w)) for h, w in dynamic] == expected
    assert int(loc_lib.num_locations(tf.constant(image_size))) == total
    locations, strides = loc_lib.compute_locations(image_size)
    assert locations.shape == (total, 2) and strides.shape == (total,)


def test_location_values_by_hand():
    # Image 16 x 24 (H x W), strides 8 and 16, offset 0.5 (s // 2):
    # stride 8: 2 x 3 cells at x = 4, 12, 20 and y = 4, 12, row-major;
    # stride 16: 1 x 2 cells at x = 8, 24 and y = 8.
    locations, strides = loc_lib.compute_locations((16, 24), strides=(8, 16))
    np.testing.assert_array_equal(
        locations, [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8], [24, 8]]
    )
    np.testing.assert_array_equal(strides, [8, 8, 8, 8, 8, 8, 16, 16])
    assert locations.dtype == tf.float32 and strides.dtype == tf.float32
    # Offset 0 (torchvision): (j * s, i * s).
    locations, _ = loc_lib.compute_locations((16, 24), strides=(8, 16), location_offset=0.0)
    np.testing.assert_array_equal(
        locations, [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8], [0, 0], [16, 0]]
    )


def test_default_levels_first_and_last_locations():
    # 200 x 249: P3 starts at (4, 4) and ends at cell (24, 31) = (4 + 31*8, 4 + 24*8);
    # P7 has 2 x 2 cells at 64 and 192.
    locations, strides = loc_lib.compute_locations((200, 249))
    per_level = loc_lib.split_per_level(locations, (200, 249))
    np.testing.assert_array_equal(per_level[0][0], [4, 4])
    np.testing.assert_array_equal(per_level[0][-1], [252, 196])
    np.testing.assert_array_equal(per_level[4], [[64, 64], [192, 64], [64, 192], [192, 192]])
    assert [float(s[0]) for s in loc_lib.split_per_level(strides, (200, 249))] == [
        8,
        16,
        32,
        64,
        128,
    ]
    # Dynamic image size gives identical values.
    dynamic, _ = loc_lib.compute_locations(tf.constant([200, 249]))
    np.testing.assert_array_equal(dynamic, locations)


def test_split_per_level():
    # 16 x 24 with strides 8, 16: 6 + 2 locations.
    values = tf.range(8)
    parts = loc_lib.split_per_level(values, (16, 24), strides=(8, 16))
    assert [p.numpy().tolist() for p in parts] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    # Along axis 1 of a batched tensor [B, P, K].
    batched = tf.reshape(tf.range(2 * 8 * 3), [2, 8, 3])
    parts = loc_lib.split_per_level(batched, (16, 24), strides=(8, 16), axis=1)
    assert [p.shape for p in parts] == [(2, 6, 3), (2, 2, 3)]
    np.testing.assert_array_equal(tf.concat(parts, axis=1), batched)
    # Default levels of 200 x 249: 800, 208, 56, 16, 4.
    parts = loc_lib.split_per_level(tf.zeros([1084]), (200, 249))
    assert [int(p.shape[0]) for p in parts] == [800, 208, 56, 16, 4]


def test_torchvision_grid_spacings_at_padded_sizes():
    # 800 x 1216 (a 800 x 1216 image padded to 32): P6 has ceil(800/64) = 13 rows and
    # ceil(1216/64) = 19 columns, spaced 800 // 13 = 61 and 1216 // 19 = 64; P7 has 7 x 10
    # cells spaced 800 // 7 = 114 and 1216 // 10 = 121.
    spacings = loc_lib.level_spacings((800, 1216), location_grid="torchvision")
    assert spacings == [(8, 8), (16, 16), (32, 32), (61, 64), (114, 121)]
    assert loc_lib.level_spacings((800, 1216)) == [(s, s) for s in loc_lib.STRIDES]
    dynamic = loc_lib.level_spacings(tf.constant([800, 1216]), location_grid="torchvision")
    assert [(int(a), int(b)) for a, b in dynamic] == spacings
    locations, strides = loc_lib.compute_locations(
        (800, 1216), location_offset=0.0, location_grid="torchvision"
    )
    p6 = loc_lib.split_per_level(locations, (800, 1216))[3].numpy().reshape(13, 19, 2)
    p7 = loc_lib.split_per_level(locations, (800, 1216))[4].numpy().reshape(7, 10, 2)
    np.testing.assert_array_equal(p6[:, 0, 1], 61 * np.arange(13))
    np.testing.assert_array_equal(p6[0, :, 0], 64 * np.arange(19))
    np.testing.assert_array_equal(p7[-1, -1], [9 * 121, 6 * 114])
    # Strides stay the nominal ones (box distances and center regions scale with them).
    assert [float(s[0]) for s in loc_lib.split_per_level(strides, (800, 1216))] == [
        8,
        16,
        32,
        64,
        128,
    ]
    dynamic, _ = loc_lib.compute_locations(
        tf.constant([800, 1216]), location_offset=0.0, location_grid="torchvision"
    )
    np.testing.assert_array_equal(dynamic, locations)


@pytest.mark.parametrize("image_size", [(256, 384), (1024, 1280), (200, 249)])
def test_torchvision_grid_is_the_paper_grid_where_sides_divide(image_size):
    # Sides that are multiples of 128 give spacing = stride on every level; so do sides
    # whose quotient happens to divide (200 x 249 is checked level by level).
    paper, _ = loc_lib.compute_locations(image_size, location_offset=0.5)
    torchvision, _ = loc_lib.compute_locations(
        image_size, location_offset=0.5, location_grid="torchvision"
    )
    spacings = loc_lib.level_spacings(image_size, location_grid="torchvision")
    same = all(a == b == s for (a, b), s in zip(spacings, loc_lib.STRIDES))
    assert np.array_equal(paper, torchvision) == same
    assert same == (image_size != (200, 249))


def test_unknown_location_grid_is_an_error():
    with pytest.raises(ValueError, match="location_grid"):
        loc_lib.compute_locations((64, 64), location_grid="detectron")
