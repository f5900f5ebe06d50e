"""Pyramid levels, strides, size ranges and per-level location grids (paper Sec. 3.1, 3.2).

The default values (strides, size ranges, offset, grid) are those of
:mod:`fcos_tf.ops.location_defaults`, re-exported here. Two grid rules exist:

* ``"paper"``: the cell ``(i, j)`` of the level with stride ``s`` sits at
  ``floor(s * offset) + (j * s, i * s)``, whatever the input size (Sec. 3.1).
* ``"torchvision"``: each level spaces its cells by ``padded_size // feature_size``, per axis,
  as torchvision's ``AnchorGenerator`` does (its FCOS then uses offset 0). The two rules agree
  where the padded sides are multiples of the largest stride; at 800 x 1216, P6 (13 x 19
  cells) is spaced by 61 rows and 64 columns and P7 (7 x 10 cells) by 114 and 121.
"""

import math
from collections.abc import Sequence

import tensorflow as tf

from fcos_tf.ops.location_defaults import (
    DEFAULT_LOCATION_GRID,
    DEFAULT_LOCATION_OFFSET,
    LOCATION_GRIDS,
    SIZE_RANGES,
    STRIDES,
)

__all__ = [
    "DEFAULT_LOCATION_GRID",
    "DEFAULT_LOCATION_OFFSET",
    "LOCATION_GRIDS",
    "SIZE_RANGES",
    "STRIDES",
    "check_location_grid",
    "check_location_settings",
    "compute_locations",
    "feature_map_sizes",
    "level_spacings",
    "num_locations",
    "split_per_level",
]


def _ceil_div(size, stride):
    if isinstance(size, int):
        return -(-size // stride)
    size = tf.convert_to_tensor(size, tf.int32)
    return (size + stride - 1) // stride


def feature_map_sizes(image_size, strides=STRIDES):
    """Feature-map size of every level for an input of ``image_size``.

    Args:
        image_size: ``(H, W)`` of the network input: python ints, or an int32 tensor ``[2]``.
        strides: stride of each level.

    Returns:
        A list over levels of ``(ceil(H / s), ceil(W / s))``: python ints when ``image_size``
        holds python ints, scalar int32 tensors otherwise.
    """
    if isinstance(image_size, (tuple, list)) and all(isinstance(v, int) for v in image_size):
        height, width = image_size
    else:
        image_size = tf.convert_to_tensor(image_size, tf.int32)
        height, width = image_size[0], image_size[1]
    return [(_ceil_div(height, s), _ceil_div(width, s)) for s in strides]


def num_locations(image_size, strides=STRIDES):
    """Total number of locations P over all levels (python int or scalar int32 tensor)."""
    return sum(h * w for h, w in feature_map_sizes(image_size, strides))


def check_location_settings(
    *,
    strides,
    location_offset,
    location_grid,
    size_ranges=None,
    center_sampling_radius=None,
) -> None:
    """Checks the settings that target assignment and decoding share (one place for both).

    Raises:
        ValueError: naming the argument: ```strides` must be ...``.
    """
    strides = tuple(strides)
    with_p2 = (4,) + STRIDES[: len(strides) - 1]  # a P2 level (stride 4) for small objects
    if len(strides) < 2 or strides not in (STRIDES[: len(strides)], with_p2):
        raise ValueError(
            f"`strides` must be the first 2 to 5 of {STRIDES} (P3, P4 at least), or 4 (a P2 "
            f"level) followed by 1 to 4 of them, got {strides!r}"
        )
    if size_ranges is not None:
        ranges = tuple(tuple(r) for r in size_ranges)
        if len(ranges) != len(strides) or any(len(r) != 2 or r[0] >= r[1] for r in ranges):
            raise ValueError(
                f"`size_ranges` must be one (low, high) pair per stride ({len(strides)}), "
                f"each low < high, got {ranges!r}"
            )
    if center_sampling_radius is not None and not center_sampling_radius >= 0:
        raise ValueError(
            f"`center_sampling_radius` must be >= 0 (0 = off), got {center_sampling_radius!r}"
        )
    if not 0.0 <= location_offset < 1.0:
        raise ValueError(
            f"`location_offset` must be in [0, 1) (a fraction of the stride), "
            f"got {location_offset!r}"
        )
    check_location_grid(location_grid)


def check_location_grid(location_grid):
    """Raises ValueError unless ``location_grid`` is one of :data:`LOCATION_GRIDS`."""
    if location_grid not in LOCATION_GRIDS:
        raise ValueError(f"`location_grid` must be one of {LOCATION_GRIDS}, got {location_grid!r}.")


def level_spacings(image_size, strides=STRIDES, location_grid=DEFAULT_LOCATION_GRID):
    """Distance in input pixels between neighbouring cells of every level, per axis.

    Args:
        image_size: ``(H, W)`` of the (padded) network input: python ints or an int32 tensor
            ``[2]``.
        strides: stride of each level.
        location_grid: ``"paper"`` (the stride itself) or ``"torchvision"``
            (``H // ceil(H / s)`` rows and ``W // ceil(W / s)`` columns).

    Returns:
        A list over levels of ``(spacing_y, spacing_x)``: python ints when ``image_size``
        holds python ints (or with the ``"paper"`` grid), scalar int32 tensors otherwise.
    """
    check_location_grid(location_grid)
    if location_grid == "paper":
        return [(int(s), int(s)) for s in strides]
    if isinstance(image_size, (tuple, list)) and all(isinstance(v, int) for v in image_size):
        height, width = image_size
    else:
        image_size = tf.convert_to_tensor(image_size, tf.int32)
        height, width = image_size[0], image_size[1]
    # max(., 1): an empty input (H or W = 0) has no cells; keeps the spacing positive.
    return [
        (height // _at_least_one(h), width // _at_least_one(w))
        for h, w in feature_map_sizes(image_size, strides)
    ]


def _at_least_one(value):
    """``max(value, 1)`` for a python int or an int32 tensor."""
    return max(value, 1) if isinstance(value, int) else tf.maximum(value, 1)


def compute_locations(
    image_size: Sequence[int] | tf.Tensor,
    strides: Sequence[int] = STRIDES,
    location_offset: float = DEFAULT_LOCATION_OFFSET,
    location_grid: str = DEFAULT_LOCATION_GRID,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Centres of the receptive fields of every feature cell, flattened over levels.

    The cell ``(i, j)`` of a level sits at
    ``(x, y) = (floor(d_x * location_offset) + j * d_x, floor(d_y * location_offset) + i * d_y)``
    in input pixels, with ``(d_y, d_x)`` the level's :func:`level_spacings`: the stride ``s``
    on the ``"paper"`` grid (Sec. 3.1 with the default offset 0.5, i.e. ``s // 2``), padded size
    // feature size per axis on the ``"torchvision"`` grid.

    Args:
        image_size: ``(H, W)`` of the network input: python ints or an int32 tensor ``[2]``.
        strides: stride of each level.
        location_offset: fraction of the spacing added to ``j * d`` (0.5 paper, 0 torchvision).
        location_grid: ``"paper"`` or ``"torchvision"`` (see the module docstring).

    Returns:
        locations: float32 ``[P, 2]``, ``(x, y)`` in input pixels, P3 first, row-major.
        location_strides: float32 ``[P]``, the stride of the level of each location (the
            nominal stride on both grids: box sizes and center regions scale with it).
    """
    all_locations, all_strides = [], []
    spacings = level_spacings(image_size, strides, location_grid)
    for stride, (height, width), (spacing_y, spacing_x) in zip(
        strides, feature_map_sizes(image_size, strides), spacings
    ):
        xs = _axis_locations(width, spacing_x, location_offset)
        ys = _axis_locations(height, spacing_y, location_offset)
        grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")  # [h, w] each
        level_locations = tf.stack([tf.reshape(grid_x, [-1]), tf.reshape(grid_y, [-1])], axis=-1)
        all_locations.append(level_locations)
        all_strides.append(tf.fill([tf.shape(level_locations)[0]], float(stride)))
    return tf.concat(all_locations, axis=0), tf.concat(all_strides, axis=0)


def _axis_locations(count, spacing, location_offset):
    """float32 ``[count]``: ``floor(spacing * location_offset) + j * spacing``."""
    if isinstance(spacing, int):
        offset = float(math.floor(spacing * location_offset))
        return tf.range(count, dtype=tf.float32) * float(spacing) + offset
    spacing = tf.cast(spacing, tf.float32)
    offset = tf.floor(spacing * location_offset)
    return tf.range(count, dtype=tf.float32) * spacing + offset


def split_per_level(tensor, image_size, strides=STRIDES, axis=0):
    """Splits a tensor whose ``axis`` runs over the P locations into a list over levels."""
    sizes = [h * w for h, w in feature_map_sizes(image_size, strides)]
    return tf.split(tensor, sizes, axis=axis)
