"""FCOS target assignment: hand-worked goldens, a plain-Python reference, properties, errors.

Location grids used by the goldens (``compute_locations``, default offset 0.5): the level of
stride 8 has its locations at x, y = 4, 12, 20, 28, ...; stride 16 at 8, 24, 40, 56, 72, ...
Flat index of cell (i, j) on a level of width w: ``i * w + j`` (row-major), plus the number of
locations of the levels before it.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from reference_targets import reference_targets

from fcos_tf.ops import boxes as box_lib
from fcos_tf.ops import locations as loc_lib
from fcos_tf.ops.locations import SIZE_RANGES, STRIDES
from fcos_tf.ops.targets import compute_targets

INF = math.inf
# One level of stride 8 that accepts every size: isolates the candidate and ambiguity rules.
ONE_LEVEL = {"strides": (8,), "size_ranges": ((-1.0, INF),)}


def _targets(boxes, classes, image_size, **kwargs):
    out = compute_targets(
        tf.constant(np.reshape(boxes, [-1, 4]), tf.float32),
        tf.constant(classes, tf.int32),
        image_size,
        **kwargs,
    )
    return {k: v.numpy() for k, v in out.items()}


def _positives(out):
    return np.flatnonzero(out["class_targets"] >= 0).tolist()


# --------------------------------------------------------------------------------------------
# Goldens worked out by hand.


def test_nested_boxes_smaller_area_wins():
    # Image 32x32, one level of stride 8: 4x4 locations at x, y in {4, 12, 20, 28}.
    # A = [0, 0, 32, 32] (area 1024) contains all 16 locations.
    # B = [8, 8, 24, 24] (area 256) strictly contains x, y in {12, 20}: cells (1,1), (1,2),
    # (2,1), (2,2) -> flat 5, 6, 9, 10. They are ambiguous and go to B (smaller area).
    out = _targets(
        [[0, 0, 32, 32], [8, 8, 24, 24]], [3, 7], (32, 32), center_sampling_radius=0, **ONE_LEVEL
    )
    inner = [5, 6, 9, 10]
    expected_index = np.zeros(16, np.int32)
    expected_index[inner] = 1
    np.testing.assert_array_equal(out["matched_box_index"], expected_index)
    np.testing.assert_array_equal(out["class_targets"], np.where(expected_index == 1, 7, 3))
    # (12, 12) for B: l = 12-8 = 4, t = 4, r = 24-12 = 12, b = 12;
    # centerness sqrt(4/12 * 4/12) = 1/3.
    np.testing.assert_allclose(out["box_targets"][5], [4, 4, 12, 12])
    np.testing.assert_allclose(out["centerness_targets"][5], 1 / 3, rtol=1e-6)
    # (4, 4) for A: l = t = 4, r = b = 28; centerness sqrt(4/28 * 4/28) = 1/7.
    np.testing.assert_allclose(out["box_targets"][0], [4, 4, 28, 28])
    np.testing.assert_allclose(out["centerness_targets"][0], 1 / 7, rtol=1e-6)
    # (20, 4) for A: l = 20, t = 4, r = 12, b = 28; sqrt(12/20 * 4/28) = sqrt(3/35).
    np.testing.assert_allclose(out["box_targets"][2], [20, 4, 12, 28])
    np.testing.assert_allclose(out["centerness_targets"][2], math.sqrt(3 / 35), rtol=1e-6)


def test_max_distance_64_is_in_p3_and_p4():
    # Levels P3 (stride 8, range [-1, 64]) and P4 (stride 16, range [64, 128]), both bounds
    # inclusive. Image 16x80: P3 is 2x10 (x = 4..76, y = 4, 12), P4 is 1x5 (x = 8..72, y = 8);
    # P = 20 + 5. Box [4, 0, 72, 16], no center sampling.
    # P3: strictly inside for x in {12, ..., 68} (x = 4 has l = 0, x = 76 is outside) and both
    # rows; max(l, r) = max(x - 4, 72 - x) <= 64 there, and t, b <= 12, so all 16 are in range.
    # The edge case is (68, 4): l = 64, t = 4, r = 4, b = 12 -> max 64 <= 64: positive.
    # P4: inside for x in {8, 24, 40, 56} (x = 72 has r = 0), y = 8 (t = b = 8).
    # max(l, r): x = 8 -> max(4, 64) = 64 >= 64 positive; x = 24 -> 48, 40 -> 36, 56 -> 52,
    # all < 64: negative.
    out = _targets(
        [[4, 0, 72, 16]],
        [2],
        (16, 80),
        strides=STRIDES[:2],
        size_ranges=SIZE_RANGES[:2],
        center_sampling_radius=0,
    )
    p3_positive = list(range(1, 9)) + list(range(11, 19))
    assert _positives(out) == p3_positive + [20]
    np.testing.assert_allclose(out["box_targets"][8], [64, 4, 4, 12])  # (68, 4) on P3
    np.testing.assert_allclose(out["box_targets"][18], [64, 12, 4, 4])  # (68, 12) on P3
    np.testing.assert_allclose(out["box_targets"][20], [4, 8, 64, 8])  # (8, 8) on P4
    # centerness at (8, 8): sqrt(4/64 * 8/8) = 1/4.
    np.testing.assert_allclose(out["centerness_targets"][20], 0.25, rtol=1e-6)

    # Moving the right side by half a pixel makes the P4 location's max 64.5 and keeps it.
    # (4..72.5: x = 8 has r = 64.5 in [64, 128]); the P3 location (68, y) keeps l = 64.
    out = _targets(
        [[4, 0, 72.5, 16]],
        [2],
        (16, 80),
        strides=STRIDES[:2],
        size_ranges=SIZE_RANGES[:2],
        center_sampling_radius=0,
    )
    assert out["class_targets"][8] == 2 and out["class_targets"][20] == 2
    # ...while moving the left side to 3.5 gives (68, y) l = 64.5 > 64: out of P3.
    out = _targets(
        [[3.5, 0, 72, 16]],
        [2],
        (16, 80),
        strides=STRIDES[:2],
        size_ranges=SIZE_RANGES[:2],
        center_sampling_radius=0,
    )
    assert out["class_targets"][8] == -1 and out["class_targets"][18] == -1
    assert out["class_targets"][7] == 2  # (60, 4): l = 56.5, r = 12


def test_center_region_is_clipped_by_a_thin_box():
    # Image 64x32, one level of stride 8: 8 rows (y = 4..60) x 4 columns (x = 4, 12, 20, 28).
    # Thin box [10, 0, 14, 64], centre (12, 32). Radius 1.5 -> half-width 12:
    # unclipped region x in (0, 24), y in (20, 44); clipped to the box: x in (10, 14).
    # Strictly inside: x = 12 only (x = 4 and 20 would be inside the unclipped square),
    # y in {28, 36} (20 and 44 lie on the border) -> cells (3, 1), (4, 1) -> flat 13, 17.
    out = _targets([[10, 0, 14, 64]], [1], (64, 32), center_sampling_radius=1.5, **ONE_LEVEL)
    assert _positives(out) == [13, 17]
    # (12, 28): l = 2, t = 28, r = 2, b = 36; centerness sqrt(2/2 * 28/36) = sqrt(7/9).
    np.testing.assert_allclose(out["box_targets"][13], [2, 28, 2, 36])
    np.testing.assert_allclose(out["centerness_targets"][13], math.sqrt(7 / 9), rtol=1e-6)
    np.testing.assert_allclose(out["box_targets"][17], [2, 36, 2, 28])
    # Without center sampling the whole column x = 12 (y = 4..60, all inside 0 < y < 64).
    out = _targets([[10, 0, 14, 64]], [1], (64, 32), center_sampling_radius=0, **ONE_LEVEL)
    assert _positives(out) == [1, 5, 9, 13, 17, 21, 25, 29]


def test_center_radius_uses_the_stride_of_each_level():
    # Image 64x64, strides 8 and 16 with ranges accepting every size, box [0, 0, 64, 64]
    # with centre (32, 32) and radius 1.0.
    # Stride 8 (8x8 grid, x = 4..60): half-width 8 -> x, y in (24, 40) -> {28, 36}:
    #   cells (3,3), (3,4), (4,3), (4,4) -> flat 27, 28, 35, 36.
    # Stride 16 (4x4 grid at 8, 24, 40, 56, offset 64): half-width 16 -> (16, 48) -> {24, 40}:
    #   cells (1,1), (1,2), (2,1), (2,2) -> 64 + 5, 6, 9, 10. (With the P3 half-width 8 the
    #   interval (24, 40) would hold no stride-16 location.)
    out = _targets(
        [[0, 0, 64, 64]],
        [0],
        (64, 64),
        strides=(8, 16),
        size_ranges=((-1.0, INF), (-1.0, INF)),
        center_sampling_radius=1.0,
    )
    assert _positives(out) == [27, 28, 35, 36, 69, 70, 73, 74]


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_empty_ground_truth_is_all_background(radius):
    # 200x249: 25x32 + 13x16 + 7x8 + 4x4 + 2x2 = 800 + 208 + 56 + 16 + 4 = 1084 locations.
    out = _targets(
        np.zeros([0, 4]), np.zeros([0], np.int32), (200, 249), center_sampling_radius=radius
    )
    assert out["class_targets"].shape == (1084,)
    assert out["box_targets"].shape == (1084, 4)
    np.testing.assert_array_equal(out["class_targets"], -1)
    np.testing.assert_array_equal(out["matched_box_index"], -1)
    np.testing.assert_array_equal(out["box_targets"], 0.0)
    np.testing.assert_array_equal(out["centerness_targets"], 0.0)


def test_padding_rows_are_never_assigned():
    # Image 32x32, stride 8. Row 0 is padding (class -1) although it would be the smaller
    # box at (12, 12) ... (20, 20); row 2 is all-zero padding as the pipeline pads.
    # Every location lies inside row 1 = [0, 0, 32, 32] and takes it.
    out = _targets(
        [[8, 8, 24, 24], [0, 0, 32, 32], [0, 0, 0, 0]],
        [-1, 4, -1],
        (32, 32),
        center_sampling_radius=0,
        **ONE_LEVEL,
    )
    np.testing.assert_array_equal(out["matched_box_index"], 1)
    np.testing.assert_array_equal(out["class_targets"], 4)
    # Only padding rows: all background.
    out = _targets(
        [[8, 8, 24, 24], [0, 0, 32, 32]], [-1, -1], (32, 32), center_sampling_radius=0, **ONE_LEVEL
    )
    np.testing.assert_array_equal(out["class_targets"], -1)
    np.testing.assert_array_equal(out["matched_box_index"], -1)


def test_equal_areas_go_to_the_first_box():
    # Image 32x32, stride 8. A = [0, 0, 32, 16] and B = [0, 0, 16, 32], both area 512.
    # Inside both: x, y in {4, 12} -> flat 0, 1, 4, 5. A alone: y = 4, 12 with x = 20, 28 ->
    # 2, 3, 6, 7. B alone: x = 4, 12 with y = 20, 28 -> 8, 9, 12, 13.
    a, b = [0, 0, 32, 16], [0, 0, 16, 32]
    out = _targets([a, b], [5, 6], (32, 32), center_sampling_radius=0, **ONE_LEVEL)
    expected = np.full(16, -1)
    expected[[0, 1, 4, 5, 2, 3, 6, 7]] = 0
    expected[[8, 9, 12, 13]] = 1
    np.testing.assert_array_equal(out["matched_box_index"], expected)
    # The same boxes in the other order: the overlap follows the order, not the shape.
    out = _targets([b, a], [6, 5], (32, 32), center_sampling_radius=0, **ONE_LEVEL)
    expected = np.full(16, -1)
    expected[[0, 1, 4, 5, 8, 9, 12, 13]] = 0
    expected[[2, 3, 6, 7]] = 1
    np.testing.assert_array_equal(out["matched_box_index"], expected)
    np.testing.assert_array_equal(out["class_targets"][[0, 1, 4, 5]], 6)
    # Identical duplicates: the first copy takes everything.
    out = _targets([a, a], [5, 6], (32, 32), center_sampling_radius=0, **ONE_LEVEL)
    assert set(out["matched_box_index"][_positives(out)]) == {0}


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_degenerate_boxes_are_never_assigned(radius):
    # Image 32x32, stride 8. Rows 0-3 have zero or negative width/height; their "area"
    # (0 or negative) would beat any real box under a plain minimum. Row 4 = [0, 0, 32, 32].
    degenerate = [
        [12, 0, 12, 32],  # zero width through the locations x = 12
        [20, 0, 4, 32],  # x1 < x0 around x = 12
        [0, 12, 32, 12],  # zero height
        [0, 28, 32, 4],
    ]  # y1 < y0
    out = _targets(
        degenerate + [[0, 0, 32, 32]],
        [0, 1, 2, 3, 4],
        (32, 32),
        center_sampling_radius=radius,
        **ONE_LEVEL,
    )
    assert set(out["matched_box_index"][_positives(out)]) == {4}
    # Radius 1.5 on [0, 0, 32, 32]: centre 16, half-width 12 -> (4, 28): x, y in {12, 20}.
    assert len(_positives(out)) == (16 if radius == 0 else 4)
    out = _targets(degenerate, [0, 1, 2, 3], (32, 32), center_sampling_radius=radius, **ONE_LEVEL)
    np.testing.assert_array_equal(out["class_targets"], -1)


def test_location_offset():
    # Image 16x16, stride 8, box [0, 0, 16, 16], no center sampling.
    # Offset 0.5: locations (4, 4), (12, 4), (4, 12), (12, 12), all strictly inside.
    # (4, 4): l = t = 4, r = b = 12 -> centerness sqrt(4/12 * 4/12) = 1/3.
    out = _targets(
        [[0, 0, 16, 16]], [9], (16, 16), center_sampling_radius=0, location_offset=0.5, **ONE_LEVEL
    )
    assert _positives(out) == [0, 1, 2, 3]
    np.testing.assert_allclose(out["box_targets"][0], [4, 4, 12, 12])
    np.testing.assert_allclose(out["centerness_targets"][0], 1 / 3, rtol=1e-6)
    # Offset 0 (torchvision): (0, 0), (8, 0), (0, 8), (8, 8); only (8, 8) is strictly
    # inside (the others have l = 0 or t = 0): l = t = r = b = 8, centerness 1.
    out = _targets(
        [[0, 0, 16, 16]], [9], (16, 16), center_sampling_radius=0, location_offset=0.0, **ONE_LEVEL
    )
    assert _positives(out) == [3]
    np.testing.assert_allclose(out["box_targets"][3], [8, 8, 8, 8])
    np.testing.assert_allclose(out["centerness_targets"][3], 1.0, rtol=1e-6)


def test_torchvision_location_grid():
    # Image 24 x 16 (H x W), one level of stride 16: 2 x 1 cells at x = 0. The paper grid
    # with offset 0 puts the rows at y = 0, 16; torchvision's spaces them by 24 // 2 = 12:
    # y = 0, 12. Box [-4, 2, 16, 20], no center sampling: only the second cell is inside
    # (y = 0 is above the box); its targets follow the grid it lies on.
    kwargs = {
        "strides": (16,),
        "size_ranges": ((-1.0, INF),),
        "center_sampling_radius": 0,
        "location_offset": 0.0,
    }
    boxes = [[-4, 2, 16, 20]]
    out = _targets(boxes, [3], (24, 16), **kwargs)
    assert _positives(out) == [1]
    np.testing.assert_allclose(out["box_targets"][1], [4, 14, 16, 4])  # at (0, 16)
    for image_size in ((24, 16), tf.constant([24, 16])):
        out = _targets(boxes, [3], image_size, location_grid="torchvision", **kwargs)
        assert _positives(out) == [1]
        np.testing.assert_allclose(out["box_targets"][1], [4, 10, 16, 8])  # at (0, 12)
    with pytest.raises(ValueError, match="location_grid"):
        _targets(boxes, [3], (24, 16), location_grid="mmdet", **kwargs)


# --------------------------------------------------------------------------------------------
# Comparison with the plain-Python reference on random images.

# Size ranges scaled by 1/4 so that small test images reach every level.
QUARTER_RANGES = tuple((lo if lo < 0 else lo / 4, hi / 4) for lo, hi in SIZE_RANGES)
CONFIGS = [
    {"center_sampling_radius": radius, "location_offset": offset, "size_ranges": ranges}
    for radius in (0.0, 1.5)
    for offset in (0.5, 0.0)
    for ranges in (SIZE_RANGES, QUARTER_RANGES)
]
CASES_PER_CONFIG = 30  # 8 configs x 30 = 240 random images


def _random_case(rng, big=False):
    """Random image size and boxes, with padding, degenerate rows, ties and duplicates."""
    if big:
        height, width = (int(v) for v in rng.integers(200, 480, size=2))
    else:
        height, width = (int(v) for v in rng.integers(16, 200, size=2))
    num = int(rng.choice([0, 0, 1, 2, 3, 5, 8, 12]))
    # Integer or half-pixel coordinates make borders and range limits hit locations exactly;
    # a quarter of the images use arbitrary float32 coordinates.
    on_grid = rng.random() < 0.75
    boxes = []
    for _ in range(num):
        size = np.exp(rng.uniform(np.log(4), np.log(1.2 * max(height, width)), size=2))
        center = rng.uniform(0, 1, size=2) * (width, height)
        box = np.concatenate([center - size / 2, center + size / 2])
        box = np.clip(box, 0, (width, height, width, height))
        if on_grid and boxes and rng.random() < 0.15:
            # Same area as an earlier box (duplicate or transpose); only on the grid, where
            # areas are exact in float32 as well as in the reference's float64.
            x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
            box = (
                np.array([x0, y0, x1, y1])
                if rng.random() < 0.5
                else np.array([x0, y0, x0 + (y1 - y0), y0 + (x1 - x0)])
            )
        if rng.random() < 0.1:  # degenerate: zero or negative extent
            k = int(rng.integers(2))
            box[k + 2] = box[k] - rng.choice([0.0, 3.0])
        boxes.append(np.round(box * 2) / 2 if on_grid else box)
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    classes = rng.integers(0, 6, size=num).astype(np.int32)
    classes[rng.random(num) < 0.15] = -1  # padding rows
    return boxes, classes, (height, width)


def _cases(config_index):
    rng = np.random.default_rng(1000 + config_index)
    cases = [_random_case(rng, big=(k < 2)) for k in range(CASES_PER_CONFIG)]
    return cases


def _assert_matches(actual, expected, context):
    np.testing.assert_array_equal(
        actual["matched_box_index"], expected["matched_box_index"], err_msg=context
    )
    np.testing.assert_array_equal(
        actual["class_targets"], expected["class_targets"], err_msg=context
    )
    np.testing.assert_allclose(
        actual["box_targets"], expected["box_targets"], rtol=1e-6, atol=1e-4, err_msg=context
    )
    np.testing.assert_allclose(
        actual["centerness_targets"],
        expected["centerness_targets"],
        rtol=1e-5,
        atol=1e-6,
        err_msg=context,
    )


@pytest.mark.parametrize("config_index", range(len(CONFIGS)))
def test_matches_reference_eagerly_and_in_tf_data(config_index):
    config = CONFIGS[config_index]
    cases = _cases(config_index)
    expected = [
        reference_targets(
            b,
            c,
            size,
            STRIDES,
            config["size_ranges"],
            config["center_sampling_radius"],
            config["location_offset"],
        )
        for b, c, size in cases
    ]
    assert sum(int((e["class_targets"] >= 0).sum()) for e in expected) > 50  # not vacuous

    for k, ((boxes, classes, size), exp) in enumerate(zip(cases, expected)):
        out = compute_targets(tf.constant(boxes), tf.constant(classes), size, **config)
        _assert_matches(
            {n: v.numpy() for n, v in out.items()},
            exp,
            f"eager case {k} size={size} boxes={boxes.tolist()} classes={classes}",
        )

    # The same cases through tf.data: dynamic image size and dynamic M (including 0).
    dataset = tf.data.Dataset.from_generator(
        lambda: ((b, c, np.array(s, np.int32)) for b, c, s in cases),
        output_signature=(
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    dataset = dataset.map(lambda b, c, s: compute_targets(b, c, s, **config))
    results = list(dataset.as_numpy_iterator())
    assert len(results) == len(cases)
    for k, (out, exp) in enumerate(zip(results, expected)):
        _assert_matches(out, exp, f"tf.data case {k} size={cases[k][2]}")


def test_matches_reference_at_full_resolution():
    # One image of the training resolution with 20 boxes of all sizes.
    rng = np.random.default_rng(7)
    height, width = 800, 1344
    size = np.exp(rng.uniform(np.log(8), np.log(800), size=(20, 2)))
    center = rng.uniform(0, 1, size=(20, 2)) * (width, height)
    boxes = np.clip(
        np.concatenate([center - size / 2, center + size / 2], 1), 0, (width, height, width, height)
    )
    boxes[0] = [100, 50, 1300, 780]  # max(l, t, r, b) > 512 near its centre: P7
    boxes = np.round(boxes).astype(np.float32)
    classes = rng.integers(0, 80, size=20).astype(np.int32)
    expected = reference_targets(boxes, classes, (height, width), STRIDES, SIZE_RANGES, 1.5, 0.5)
    out = _targets(boxes, classes, (height, width))
    _assert_matches(out, expected, "800x1344")
    # Every level receives positives for this spread of sizes.
    per_level = loc_lib.split_per_level(tf.constant(out["class_targets"]), (height, width))
    assert all(int(tf.reduce_sum(tf.cast(t >= 0, tf.int32))) > 0 for t in per_level)


# --------------------------------------------------------------------------------------------
# Properties.


def _distinct_area_case(rng):
    while True:
        boxes, classes, size = _random_case(rng)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[valid]
        if len(boxes) >= 2 and len(np.unique(areas)) == len(areas):
            return boxes, classes, size


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_invariant_to_box_order_without_ties(radius):
    rng = np.random.default_rng(11)
    checked_positives = 0
    for _ in range(15):
        boxes, classes, size = _distinct_area_case(rng)
        perm = rng.permutation(len(boxes))
        base = _targets(
            boxes, classes, size, center_sampling_radius=radius, size_ranges=QUARTER_RANGES
        )
        permuted = _targets(
            boxes[perm],
            classes[perm],
            size,
            center_sampling_radius=radius,
            size_ranges=QUARTER_RANGES,
        )
        for key in ("class_targets", "box_targets", "centerness_targets"):
            np.testing.assert_array_equal(permuted[key], base[key])
        # Row k of the permuted input is row perm[k] of the original.
        pos = permuted["matched_box_index"] >= 0
        np.testing.assert_array_equal(
            perm[permuted["matched_box_index"][pos]], base["matched_box_index"][pos]
        )
        np.testing.assert_array_equal(pos, base["matched_box_index"] >= 0)
        checked_positives += int(pos.sum())
    assert checked_positives > 60


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_decoded_targets_are_the_assigned_boxes(radius):
    rng = np.random.default_rng(12)
    checked = 0
    for _ in range(15):
        boxes, classes, size = _random_case(rng)
        out = _targets(boxes, classes, size, center_sampling_radius=radius)
        locations, _ = loc_lib.compute_locations(size)
        decoded = box_lib.ltrb_to_xyxy(locations, out["box_targets"]).numpy()
        pos = out["matched_box_index"] >= 0
        index = out["matched_box_index"][pos]
        np.testing.assert_allclose(decoded[pos], boxes[index], atol=1e-4)
        np.testing.assert_array_equal(out["class_targets"][pos], classes[index])
        assert np.all(classes[index] >= 0)
        assert np.all(out["box_targets"][pos] > 0)  # strictly inside the assigned box
        assert np.all((out["centerness_targets"][pos] > 0) & (out["centerness_targets"][pos] <= 1))
        # Background: no box, zero distances, zero centerness.
        assert np.all(out["class_targets"][~pos] == -1)
        assert np.all(out["box_targets"][~pos] == 0) and np.all(
            out["centerness_targets"][~pos] == 0
        )
        checked += int(pos.sum())
    assert checked > 60


def test_center_sampling_positives_are_a_subset():
    # The center region is clipped to the box, so turning center sampling on can only remove
    # candidates of a box; with one box nothing else can take their place.
    rng = np.random.default_rng(13)
    checked_positives = removed = 0
    for _ in range(30):
        boxes, classes, size = _random_case(rng)
        boxes, classes = boxes[:1], np.maximum(classes[:1], 0)
        on = _targets(boxes, classes, size, center_sampling_radius=1.5)
        off = _targets(boxes, classes, size, center_sampling_radius=0)
        on_pos, off_pos = on["class_targets"] >= 0, off["class_targets"] >= 0
        assert np.all(off_pos[on_pos])
        np.testing.assert_array_equal(on["class_targets"][on_pos], off["class_targets"][on_pos])
        checked_positives += int(on_pos.sum())
        removed += int(off_pos.sum() - on_pos.sum())
    # Not vacuous: the cases hold positives, and center sampling did remove candidates.
    assert checked_positives > 40
    assert removed > 10


# --------------------------------------------------------------------------------------------
# Shapes, graph modes and argument checks.


def test_static_shapes_with_python_image_size():
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))

    @tf.function(input_signature=spec)
    def fn(boxes, classes):
        out = compute_targets(boxes, classes, (200, 249))
        assert out["class_targets"].shape == (1084,)  # known while tracing
        assert out["box_targets"].shape == (1084, 4)
        return out

    out = fn(tf.constant([[10.0, 20.0, 90.0, 120.0]]), tf.constant([1]))
    assert out["class_targets"].dtype == tf.int32 and out["matched_box_index"].dtype == tf.int32
    assert out["box_targets"].dtype == tf.float32
    assert out["centerness_targets"].dtype == tf.float32
    assert int(tf.reduce_sum(tf.cast(out["class_targets"] == 1, tf.int32))) > 0


def test_tf_function_with_dynamic_image_size_matches_eager():
    boxes = tf.constant([[10.0, 20.0, 90.0, 120.0], [30.0, 30.0, 60.0, 70.0]])
    classes = tf.constant([1, 2])
    fn = tf.function(compute_targets)
    for size in [(200, 249), (128, 96)]:
        graph_out = fn(boxes, classes, tf.constant(size, tf.int32))
        eager_out = compute_targets(boxes, classes, size)
        for key, value in eager_out.items():
            np.testing.assert_array_equal(graph_out[key].numpy(), value.numpy())


def test_int64_classes_and_float64_boxes_are_converted():
    out = compute_targets(
        tf.constant([[0.0, 0.0, 32.0, 32.0]], tf.float64),
        tf.constant([3], tf.int64),
        (32, 32),
        **ONE_LEVEL,
    )
    assert out["box_targets"].dtype == tf.float32 and out["class_targets"].dtype == tf.int32
    np.testing.assert_array_equal(out["class_targets"].numpy()[[5, 6, 9, 10]], 3)


@pytest.mark.parametrize(
    "boxes, classes, image_size, error, name",
    [
        (
            np.zeros([2, 4], np.float32)[None],
            np.zeros([2], np.int32),
            (32, 32),
            ValueError,
            "boxes",
        ),
        (np.zeros([2, 5], np.float32), np.zeros([2], np.int32), (32, 32), ValueError, "boxes"),
        (np.zeros([2, 4], np.int32), np.zeros([2], np.int32), (32, 32), TypeError, "boxes"),
        (np.zeros([2, 4], np.float32), np.zeros([2], np.float32), (32, 32), TypeError, "classes"),
        (np.zeros([2, 4], np.float32), np.zeros([2, 1], np.int32), (32, 32), ValueError, "classes"),
        (
            np.zeros([2, 4], np.float32),
            np.zeros([3], np.int32),
            (32, 32),
            ValueError,
            "same number",
        ),
        (
            np.zeros([2, 4], np.float32),
            np.zeros([2], np.int32),
            (32.0, 32.0),
            TypeError,
            "image_size",
        ),
        (
            np.zeros([2, 4], np.float32),
            np.zeros([2], np.int32),
            np.array([32, 32, 3], np.int32),
            ValueError,
            "image_size",
        ),
    ],
)
def test_bad_arguments_raise_naming_them(boxes, classes, image_size, error, name):
    with pytest.raises(error, match=name):
        compute_targets(tf.constant(boxes), tf.constant(classes), image_size)


def test_bad_options_raise():
    boxes, classes = tf.zeros([1, 4]), tf.zeros([1], tf.int32)
    with pytest.raises(ValueError, match="size_ranges"):
        compute_targets(boxes, classes, (32, 32), strides=(8, 16), size_ranges=((-1, 64),))
    with pytest.raises(ValueError, match="center_sampling_radius"):
        compute_targets(boxes, classes, (32, 32), center_sampling_radius=-1.0)


def test_shapes_known_only_at_run_time_are_checked_in_graph():
    fn = tf.function(
        compute_targets,
        input_signature=[
            tf.TensorSpec(None, tf.float32),
            tf.TensorSpec(None, tf.int32),
            tf.TensorSpec(None, tf.int32),
        ],
    )
    good = fn(tf.constant([[0.0, 0.0, 32.0, 32.0]]), tf.constant([1]), tf.constant([32, 32]))
    assert int(tf.reduce_sum(tf.cast(good["class_targets"] == 1, tf.int32))) > 0
    with pytest.raises(tf.errors.InvalidArgumentError, match="boxes"):
        fn(tf.zeros([1, 1, 4]), tf.constant([1]), tf.constant([32, 32]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="boxes"):
        fn(tf.zeros([1, 3]), tf.constant([1]), tf.constant([32, 32]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same M"):
        fn(tf.zeros([2, 4]), tf.constant([1]), tf.constant([32, 32]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_size"):
        fn(tf.zeros([1, 4]), tf.constant([1]), tf.constant([32, 32, 3]))


# --------------------------------------------------------------------------------------------
# A P2 level (stride 4): same rules, locations at 2, 6, 10, ...

P2_STRIDES = (4, 8, 16, 32, 64)
P2_SIZE_RANGES = ((-1.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, INF))


def test_p2_hand_worked():
    # A 6 x 6 box (13, 13, 19, 19): no P3 location (4, 12, 20, ...) lies strictly inside, but
    # the P2 locations x, y in {14, 18} (2 + 4k) do, with max(l, t, r, b) = 5 <= 32: four
    # positives on P2. Along each axis (l, r) is (1, 5) or (5, 1): centerness
    # sqrt(1/5 * 1/5) = 0.2 at all four.
    out = _targets(
        [[13, 13, 19, 19]], [3], (32, 32), strides=P2_STRIDES, size_ranges=P2_SIZE_RANGES
    )
    # P2 is 8 x 8: x = 14 is column 3, x = 18 column 4; rows the same.
    assert _positives(out) == [3 * 8 + 3, 3 * 8 + 4, 4 * 8 + 3, 4 * 8 + 4]
    np.testing.assert_allclose(out["centerness_targets"][_positives(out)], 0.2, rtol=1e-6)
    np.testing.assert_array_equal(out["box_targets"][3 * 8 + 3], [1, 1, 5, 5])
    # Without P2 the box gets nothing: the reason a P2 level recalls small objects.
    assert _positives(_targets([[13, 13, 19, 19]], [3], (32, 32))) == []


def test_p2_matches_reference():
    rng = np.random.default_rng(42)
    total = 0
    for k in range(6):
        boxes, classes, size = _random_case(rng, big=(k < 2))
        expected = reference_targets(boxes, classes, size, P2_STRIDES, P2_SIZE_RANGES, 1.5, 0.5)
        out = _targets(boxes, classes, size, strides=P2_STRIDES, size_ranges=P2_SIZE_RANGES)
        _assert_matches(out, expected, f"P2 case {k} size={size}")
        p2 = loc_lib.split_per_level(tf.constant(out["class_targets"]), size, P2_STRIDES)[0]
        total += int(tf.reduce_sum(tf.cast(p2 >= 0, tf.int32)))
    assert total > 10  # the P2 level is exercised
