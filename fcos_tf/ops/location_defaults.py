"""The pyramid's default strides, size ranges and location grid (paper Sec. 3.1, 3.2).

Plain Python values, defined once: :mod:`fcos_tf.ops.locations` and everything that assigns
or decodes locations take them from there, and ``base_config()`` writes them into every
recipe. This module imports nothing, so that a recipe loads (and a command line with a
misspelt key fails) before TensorFlow does.
"""

import math

STRIDES = (8, 16, 32, 64, 128)
# Sec. 3.2: m_2..m_7 = 0, 64, 128, 256, 512, inf. The lower bound of P3 is -1 so that a
# location with max(l, t, r, b) == 0 could never be excluded by the range test alone.
SIZE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))
# Fraction of the stride added to j * s: 0.5 gives the paper's s // 2 for the even strides
# above; torchvision's FCOS uses 0.
DEFAULT_LOCATION_OFFSET = 0.5
LOCATION_GRIDS = ("paper", "torchvision")
DEFAULT_LOCATION_GRID = "paper"
