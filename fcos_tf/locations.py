"""Pyramid levels, strides, size ranges and per-level location grids (paper Sec. 3.1, 3.2).

The values here are defined once and imported everywhere else.
"""

import math

import tensorflow as tf

STRIDES = (8, 16, 32, 64, 128)
# Sec. 3.2: m_2..m_7 = 0, 64, 128, 256, 512, inf. The lower bound of P3 is -1 so that a
# location with max(l, t, r, b) == 0 could never be excluded by the range test alone.
SIZE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))
# Fraction of the stride added to j * s: 0.5 gives the paper's s // 2 for the even strides
# above; torchvision's FCOS uses 0.
DEFAULT_LOCATION_OFFSET = 0.5


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


def compute_locations(image_size, strides=STRIDES, location_offset=DEFAULT_LOCATION_OFFSET):
    """Centres of the receptive fields of every feature cell, flattened over levels.

    The cell ``(i, j)`` of the level with stride ``s`` sits at
    ``(x, y) = (floor(s * location_offset) + j * s, floor(s * location_offset) + i * s)``
    in input pixels (Sec. 3.1 with the default offset 0.5, i.e. ``s // 2``).

    Args:
        image_size: ``(H, W)`` of the network input: python ints or an int32 tensor ``[2]``.
        strides: stride of each level.
        location_offset: fraction of the stride added to ``j * s`` (0.5 paper, 0 torchvision).

    Returns:
        locations: float32 ``[P, 2]``, ``(x, y)`` in input pixels, P3 first, row-major.
        location_strides: float32 ``[P]``, the stride of the level of each location.
    """
    all_locations, all_strides = [], []
    for stride, (height, width) in zip(strides, feature_map_sizes(image_size, strides)):
        offset = float(math.floor(stride * location_offset))
        xs = tf.range(width, dtype=tf.float32) * stride + offset
        ys = tf.range(height, dtype=tf.float32) * stride + offset
        grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")  # [h, w] each
        level_locations = tf.stack([tf.reshape(grid_x, [-1]), tf.reshape(grid_y, [-1])], axis=-1)
        all_locations.append(level_locations)
        all_strides.append(tf.fill([tf.shape(level_locations)[0]], float(stride)))
    return tf.concat(all_locations, axis=0), tf.concat(all_strides, axis=0)


def split_per_level(tensor, image_size, strides=STRIDES, axis=0):
    """Splits a tensor whose ``axis`` runs over the P locations into a list over levels."""
    sizes = [h * w for h, w in feature_map_sizes(image_size, strides)]
    return tf.split(tensor, sizes, axis=axis)
