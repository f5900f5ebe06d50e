"""FCOS training targets for one image (paper Sec. 3.1-3.3, docs/design.md §3 items 7-12).

Targets are computed in the input pipeline, never in the model: :func:`compute_targets` is
pure TensorFlow, vectorised over locations x boxes (no loop over boxes; per level the tests
are split into an x part ``[w, M]`` and a y part ``[h, M]``, so only a few ops touch ``[P, M]``),
and runs eagerly, inside ``tf.function`` and inside ``tf.data.Dataset.map`` with a dynamic
image size and a dynamic number of boxes (including none).
"""

import numbers
from collections.abc import Sequence

import tensorflow as tf

from fcos_tf.ops import boxes as box_lib
from fcos_tf.ops import locations as loc_lib
from fcos_tf.ops.locations import (
    DEFAULT_LOCATION_GRID,
    DEFAULT_LOCATION_OFFSET,
    SIZE_RANGES,
    STRIDES,
)


def _static_image_size(image_size):
    """``(H, W)`` as python ints when known statically, else None."""
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in image_size)
    ):
        return int(image_size[0]), int(image_size[1])
    return None


def _separable_tests(boxes, locations, image_size, strides, size_ranges, center_sampling_radius):
    """The x and y halves of the candidate and size tests at ``locations`` (float32 ``[P, 2]``),
    for the columns and rows of all levels at once.

    Every test is separable into an x part and a y part, so it runs on ``[sum w, M]`` and
    ``[sum h, M]``; only the combination per level touches ``[h * w, M]``.

    Returns:
        ``(ok_x, reach_x, ok_y, reach_y)``: bool ``[sum w, M]`` (inside the box, or its center
        region, along x and below the level's upper size bound), float32 ``[sum w, M]``
        ``max(l, r)``, and the same along y ``[sum h, M]``; boxes in the order of ``boxes``.
    """
    sizes = loc_lib.feature_map_sizes(image_size, strides)
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    grids = loc_lib.split_per_level(locations, image_size, strides)
    xs = tf.concat([grid[:w, 0] for grid, w in zip(grids, widths)], axis=0)  # [sum w]
    ys = tf.concat([grid[::w, 1] for grid, w in zip(grids, widths)], axis=0)  # [sum h]
    radii = [center_sampling_radius * s for s in strides]
    upper_bounds = [hi for _, hi in size_ranges]
    x0, y0, x1, y1 = tf.unstack(boxes, axis=1)  # [M] each
    ok_x, reach_x = _axis_tests(
        xs,
        _per_coordinate(radii, widths) if center_sampling_radius > 0 else None,
        _per_coordinate(upper_bounds, widths),
        x0,
        x1,
    )  # [sum w, M]
    ok_y, reach_y = _axis_tests(
        ys,
        _per_coordinate(radii, heights) if center_sampling_radius > 0 else None,
        _per_coordinate(upper_bounds, heights),
        y0,
        y1,
    )  # [sum h, M]
    return ok_x, reach_x, ok_y, reach_y


def _check_settings(strides, size_ranges, center_sampling_radius, location_grid):
    """The assignment settings as python tuples, checked; raises ValueError naming one."""
    strides = tuple(int(s) for s in strides)
    size_ranges = tuple((float(lo), float(hi)) for lo, hi in size_ranges)
    if len(strides) != len(size_ranges):
        raise ValueError(
            f"`size_ranges` needs one (lo, hi) per level: {len(strides)} strides, "
            f"{len(size_ranges)} ranges."
        )
    if not center_sampling_radius >= 0:
        raise ValueError(f"`center_sampling_radius` must be >= 0, got {center_sampling_radius}.")
    loc_lib.check_location_grid(location_grid)
    return strides, size_ranges


def _check_inputs(boxes, classes, image_size):
    """Validates and converts the inputs; returns them with run-time assertions attached."""
    boxes = tf.convert_to_tensor(boxes)
    classes = tf.convert_to_tensor(classes)
    if not boxes.dtype.is_floating:
        raise TypeError(f"`boxes` must be a float32 tensor [M, 4], got dtype {boxes.dtype.name}.")
    if not classes.dtype.is_integer:
        raise TypeError(f"`classes` must be an int32 tensor [M], got dtype {classes.dtype.name}.")
    if boxes.shape.rank is not None and (boxes.shape.rank != 2 or boxes.shape[1] not in (None, 4)):
        raise ValueError(f"`boxes` must have shape [M, 4], got {boxes.shape}.")
    if classes.shape.rank is not None and classes.shape.rank != 1:
        raise ValueError(f"`classes` must have shape [M], got {classes.shape}.")
    if (
        boxes.shape.rank is not None
        and classes.shape.rank is not None
        and boxes.shape[0] is not None
        and classes.shape[0] is not None
        and boxes.shape[0] != classes.shape[0]
    ):
        raise ValueError(
            f"`boxes` {boxes.shape} and `classes` {classes.shape} must have the "
            "same number of rows M."
        )

    static_size = _static_image_size(image_size)
    if static_size is not None:
        if min(static_size) < 0:
            raise ValueError(f"`image_size` must be non-negative (H, W), got {image_size}.")
        image_size = static_size
    else:
        image_size = tf.convert_to_tensor(image_size)
        if not image_size.dtype.is_integer:
            raise TypeError(
                "`image_size` must be python ints or an int32 tensor [2], got dtype "
                f"{image_size.dtype.name}."
            )
        if image_size.shape.rank is not None and (
            image_size.shape.rank != 1 or image_size.shape[0] not in (None, 2)
        ):
            raise ValueError(f"`image_size` must have shape [2] (H, W), got {image_size.shape}.")
        image_size = tf.cast(image_size, tf.int32)

    # What the static shapes leave open is asserted at run time (tf.data elements or
    # tf.function signatures with unknown dimensions); eagerly nothing is left open.
    asserts = []
    if boxes.shape.rank is None:
        asserts.append(tf.debugging.assert_rank(boxes, 2, message="`boxes` must have shape [M, 4]"))
    if classes.shape.rank is None:
        asserts.append(
            tf.debugging.assert_rank(classes, 1, message="`classes` must have shape [M]")
        )
    with tf.control_dependencies(asserts):
        if boxes.shape.rank is None or boxes.shape[-1] is None:
            asserts.append(
                tf.debugging.assert_equal(
                    tf.shape(boxes)[-1], 4, message="`boxes` must have shape [M, 4]"
                )
            )
        if not (boxes.shape[:1] + classes.shape[:1]).is_fully_defined():
            asserts.append(
                tf.debugging.assert_equal(
                    tf.shape(boxes)[0],
                    tf.shape(classes)[0],
                    message="`boxes` and `classes` must have the same M",
                )
            )
    if static_size is None and (image_size.shape.rank is None or image_size.shape[0] is None):
        asserts += [
            tf.debugging.assert_rank(image_size, 1, message="`image_size` must have shape [2]"),
            tf.debugging.assert_equal(
                tf.size(image_size), 2, message="`image_size` must have shape [2] (H, W)"
            ),
        ]
    with tf.control_dependencies(asserts):
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])  # [M, 4]
        classes = tf.reshape(tf.cast(classes, tf.int32), [-1])  # [M]
        if static_size is None:
            image_size = tf.reshape(image_size, [2])  # static shape for the per-level split
    return boxes, classes, image_size


def _axis_tests(coords, half_widths, size_hi, box_lo, box_hi):
    """Candidate test and upper size test along one axis, for the coordinates of all levels.

    Args:
        coords: float32 ``[n]`` location coordinates along the axis: the x of every level's
            columns (or the y of every level's rows), levels concatenated.
        half_widths: float32 ``[n]`` center region half-width in pixels (radius x stride of
            the coordinate's level), or None without center sampling.
        size_hi: float32 ``[n]`` inclusive upper bound of ``max(l, t, r, b)`` of the level.
        box_lo, box_hi: float32 ``[M]`` box sides along the axis (x0, x1 or y0, y1).

    Returns:
        ok: bool ``[n, M]``: strictly inside the box (or its clipped center region) along
            this axis, and ``max(near, far) <= size_hi``.
        reach: float32 ``[n, M]``: ``max(near, far)``, i.e. ``max(l, r)`` or ``max(t, b)``.
    """
    coords = coords[:, None]  # [n, 1]
    box_lo, box_hi = box_lo[None, :], box_hi[None, :]  # [1, M]
    near = coords - box_lo  # l or t, [n, M]
    far = box_hi - coords  # r or b
    if half_widths is not None:
        center = (box_lo + box_hi) * 0.5
        half_widths = half_widths[:, None]
        inside = (coords > tf.maximum(center - half_widths, box_lo)) & (
            coords < tf.minimum(center + half_widths, box_hi)
        )
    else:
        inside = tf.minimum(near, far) > 0
    reach = tf.maximum(near, far)
    return inside & (reach <= size_hi[:, None]), reach


def _per_coordinate(values, counts):
    """One python float per level repeated over that level's ``counts`` -> float32 ``[n]``."""
    if all(isinstance(n, int) for n in counts):
        return tf.constant(
            [v for v, n in zip(values, counts) for _ in range(n)], tf.float32, shape=[sum(counts)]
        )
    return tf.concat([tf.fill([n], v) for v, n in zip(values, counts)], axis=0)


def compute_targets(
    boxes: tf.Tensor,
    classes: tf.Tensor,
    image_size: Sequence[int] | tf.Tensor,
    *,
    strides: Sequence[int] = STRIDES,
    size_ranges: Sequence[Sequence[float]] = SIZE_RANGES,
    center_sampling_radius: float = 1.5,
    location_offset: float = DEFAULT_LOCATION_OFFSET,
    location_grid: str = DEFAULT_LOCATION_GRID,
) -> dict[str, tf.Tensor]:
    """Assigns every location of every pyramid level to one ground-truth box or background.

    A location ``(x, y)`` of the level with stride ``s`` is a positive for box ``(x0, y0, x1,
    y1)`` when all of the following hold (docs/design.md §3 items 7-10):

    * candidate: strictly inside the box, ``min(l, t, r, b) > 0`` with
      ``(l, t, r, b) = (x - x0, y - y0, x1 - x, y1 - y)``; with center sampling
      (``center_sampling_radius > 0``, the default 1.5), strictly inside the box's center
      region instead: the square of half-width ``center_sampling_radius * s`` around the box
      centre, clipped to the box (so a subset of the box);
    * size of interest: ``lo <= max(l, t, r, b) <= hi`` for the level's ``(lo, hi)``, both
      bounds inclusive (a location with maximum distance 64 is a candidate on P3 and on P4);
    * ambiguity: among the boxes passing both tests the one of minimal area
      ``(x1 - x0) * (y1 - y0)`` wins; on equal areas the first row of ``boxes``.

    Rows whose class is negative (padding) and degenerate rows (``x1 <= x0`` or ``y1 <= y0``)
    are never assigned. An image without boxes (``M = 0``) is all background.

    Args:
        boxes: float32 ``[M, 4]`` ``xyxy`` pixels of the network input. Other float dtypes are
            cast to float32.
        classes: int32 ``[M]`` contiguous class ids ``0..K-1``; ``-1`` marks a padding row.
        image_size: ``(H, W)`` of the network input (after padding, i.e. the size the
            locations are laid on): python ints, or an int32 tensor ``[2]``. With python ints
            every output has a static first dimension ``P``.
        strides: stride of each level, P3 first.
        size_ranges: ``(lo, hi)`` per level, both inclusive, in pixels.
        center_sampling_radius: radius of the center region in units of the level's stride;
            0 turns center sampling off (paper Sec. 3.1: every location inside the box).
        location_offset: fraction of the stride where the first location of a level sits
            (see :func:`fcos_tf.ops.locations.compute_locations`).
        location_grid: ``"paper"`` or ``"torchvision"`` spacing of the locations (see
            :mod:`fcos_tf.ops.locations`); the center region still scales with the level's stride.

    Returns:
        dict, with ``P`` the number of locations of :func:`fcos_tf.ops.locations.compute_locations`
        in the same order (levels P3 first, each row-major):

        * ``"class_targets"``: int32 ``[P]``, class of the assigned box, -1 for background.
        * ``"box_targets"``: float32 ``[P, 4]`` ``(l, t, r, b)`` pixels to the sides of the
          assigned box, not divided by the stride; all zeros for background locations (they
          have no assigned box; the box loss only reads positives).
        * ``"centerness_targets"``: float32 ``[P]``,
          ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` on positives, 0 elsewhere.
        * ``"matched_box_index"``: int32 ``[P]``, row of ``boxes`` assigned, -1 for background.

    Raises:
        TypeError: ``boxes`` not floating point, ``classes`` not integer, ``image_size`` not
            integer.
        ValueError: wrong static shapes or mismatched ``M``, or inconsistent ``strides`` and
            ``size_ranges``, or a negative ``center_sampling_radius``, or an unknown
            ``location_grid``. Shapes only known at
            run time are checked by ``tf.debugging`` assertions that name the argument.
    """
    strides, size_ranges = _check_settings(
        strides, size_ranges, center_sampling_radius, location_grid
    )
    boxes, classes, image_size = _check_inputs(boxes, classes, image_size)

    # Priority order of the boxes: smaller area first, equal areas in input order (a stable
    # sort), rows that can never be assigned last. A location then takes the first eligible
    # box in this order, which is the minimum-area rule of Sec. 3.1/3.2 with its tie-break.
    x0, y0, x1, y1 = tf.unstack(boxes, axis=1)  # [M] each
    box_valid = (classes >= 0) & (x1 > x0) & (y1 > y0)  # [M]
    box_area = tf.where(box_valid, (x1 - x0) * (y1 - y0), float("inf"))
    order = tf.argsort(box_area, stable=True)  # [M]
    sorted_boxes = tf.gather(boxes, order)
    sorted_valid = tf.gather(box_valid, order)
    num_boxes = tf.shape(boxes)[0]
    columns = tf.range(num_boxes, dtype=tf.int32)  # [M], position in priority order

    sizes = loc_lib.feature_map_sizes(image_size, strides)
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    locations, _ = loc_lib.compute_locations(image_size, strides, location_offset, location_grid)
    ok_x, reach_x, ok_y, reach_y = _separable_tests(
        sorted_boxes, locations, image_size, strides, size_ranges, center_sampling_radius
    )
    # Position in priority order where the box passes, M where it does not.
    rank_x = tf.where(ok_x & sorted_valid[None, :], columns[None, :], num_boxes)
    rank_y = tf.where(ok_y, columns[None, :], num_boxes)
    lower_bounds = [lo for lo, _ in size_ranges]
    # lo <= max(l, t, r, b) <=> lo <= max(l, r) or lo <= max(t, b).
    reach_x = reach_x >= _per_coordinate(lower_bounds, widths)[:, None]
    reach_y = reach_y >= _per_coordinate(lower_bounds, heights)[:, None]

    rank_x, rank_y = tf.split(rank_x, widths), tf.split(rank_y, heights)  # per level
    reach_x, reach_y = tf.split(reach_x, widths), tf.split(reach_y, heights)

    best_per_level = []
    for level, lo in enumerate(lower_bounds):
        rank = tf.maximum(rank_y[level][:, None, :], rank_x[level][None, :, :])  # [h, w, M]
        if lo > 0:  # Candidates have max(l, t, r, b) > 0: no lower test on P3.
            reach = reach_y[level][:, None, :] | reach_x[level][None, :, :]
            rank = tf.where(reach, rank, num_boxes)
        # reduce_min over an empty axis (M = 0) gives the int32 maximum: clip to M.
        best = tf.minimum(tf.reduce_min(rank, axis=2), num_boxes)  # [h, w]
        best_per_level.append(tf.reshape(best, [heights[level] * widths[level]]))
    best = tf.concat(best_per_level, axis=0)  # [P], M = background
    positive = best < num_boxes
    matched = tf.gather(tf.concat([order, [num_boxes]], axis=0), best)  # [P] row of `boxes`

    # One extra row makes gathering the background index M valid (also when M = 0).
    padded_boxes = tf.concat([boxes, tf.zeros([1, 4], tf.float32)], axis=0)  # [M + 1, 4]
    padded_classes = tf.concat([classes, tf.constant([-1], tf.int32)], axis=0)
    matched_ltrb = box_lib.xyxy_to_ltrb(locations, tf.gather(padded_boxes, matched))  # [P, 4]
    box_targets = tf.where(positive[:, None], matched_ltrb, 0.0)

    # Sec. 3.3. Background rows are all zeros and divide_no_nan turns their 0 / 0 into 0;
    # on positives every distance is > 0, so the ratios are plain divisions.
    left, top, right, bottom = tf.unstack(box_targets, axis=1)  # [P] each
    centerness_targets = tf.sqrt(
        tf.math.divide_no_nan(tf.minimum(left, right), tf.maximum(left, right))
        * tf.math.divide_no_nan(tf.minimum(top, bottom), tf.maximum(top, bottom))
    )

    return {
        "class_targets": tf.gather(padded_classes, matched),  # the extra row: -1
        "box_targets": box_targets,
        "centerness_targets": centerness_targets,
        "matched_box_index": tf.where(positive, matched, -1),
    }


def candidate_masks(
    boxes: tf.Tensor,
    classes: tf.Tensor,
    image_size: Sequence[int] | tf.Tensor,
    *,
    strides: Sequence[int] = STRIDES,
    size_ranges: Sequence[Sequence[float]] = SIZE_RANGES,
    center_sampling_radius: float = 1.5,
    location_offset: float = DEFAULT_LOCATION_OFFSET,
    location_grid: str = DEFAULT_LOCATION_GRID,
) -> list[tf.Tensor]:
    """Which boxes every location is a candidate for, before the minimum-area rule.

    The same candidate and size-of-interest tests as :func:`compute_targets` (same code), per
    box instead of resolved to one box per location: :func:`compute_targets` assigns each
    location the smallest box whose column is True here. Used to count ambiguous locations
    (paper Sec. 3.1, Table 2) and to find out which rule leaves a box without positives.

    Args:
        boxes, classes, image_size, strides, size_ranges, center_sampling_radius,
        location_offset, location_grid: as in :func:`compute_targets`.

    Returns:
        A list over levels of bool ``[h_l * w_l, M]`` (row-major locations, boxes in input
        order); columns of padding (class < 0) and degenerate boxes are all False.
    """
    strides, size_ranges = _check_settings(
        strides, size_ranges, center_sampling_radius, location_grid
    )
    boxes, classes, image_size = _check_inputs(boxes, classes, image_size)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=1)  # [M] each
    box_valid = (classes >= 0) & (x1 > x0) & (y1 > y0)  # [M]

    sizes = loc_lib.feature_map_sizes(image_size, strides)
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    lower_bounds = [lo for lo, _ in size_ranges]
    locations, _ = loc_lib.compute_locations(image_size, strides, location_offset, location_grid)
    ok_x, reach_x, ok_y, reach_y = _separable_tests(
        boxes, locations, image_size, strides, size_ranges, center_sampling_radius
    )
    ok_x = ok_x & box_valid[None, :]
    reach_x = reach_x >= _per_coordinate(lower_bounds, widths)[:, None]
    reach_y = reach_y >= _per_coordinate(lower_bounds, heights)[:, None]
    ok_x, ok_y = tf.split(ok_x, widths), tf.split(ok_y, heights)
    reach_x, reach_y = tf.split(reach_x, widths), tf.split(reach_y, heights)
    masks = []
    for level, lo in enumerate(lower_bounds):
        mask = ok_y[level][:, None, :] & ok_x[level][None, :, :]  # [h, w, M]
        if lo > 0:
            mask &= reach_y[level][:, None, :] | reach_x[level][None, :, :]
        masks.append(tf.reshape(mask, [heights[level] * widths[level], -1]))
    return masks
