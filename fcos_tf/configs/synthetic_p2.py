r"""The small CPU recipe on small objects, with a P2 level: what ``fcos-analyze`` shows.

The synthetic shapes of ``synthetic_small`` drawn 4 to 32 pixels large (1 to 8 per 128x128
image) and a pyramid of P2 (stride 4, distances up to 32 pixels) and P3 (beyond), from the
small backbone's stem (C2) and C3. Objects this small fall between the P3 locations 8
pixels apart: ``fcos-analyze`` on this data with ``synthetic_small``'s P3-P4 pyramid lists
them as "smaller than the level spacing"; with this recipe's P2 they get positives.

Command::

    fcos-analyze --config=synthetic_p2 --output=/tmp/p2_analysis
    fcos-analyze --config=synthetic_p2 --output=/tmp/p3_analysis \
        --config.locations.strides='(8, 16)' --config.locations.size_ranges='((-1, 64), (64, 1e8))'
    fcos-train --config=synthetic_p2 --workdir=/tmp/fcos_synthetic_p2

Expected: the analysis runs in seconds; training takes longer than ``synthetic_small`` (P2 has
4x P3's locations) and its AP has not been measured.
"""

import math

from fcos_tf.configs import synthetic_small


def get_config():
    """Returns the synthetic small-object recipe with P2 and P3."""
    config = synthetic_small.get_config()
    config.locations.strides = (4, 8)
    config.locations.size_ranges = ((-1.0, 32.0), (32.0, math.inf))
    synthetic = config.data.synthetic
    synthetic.num_objects = (1, 8)
    synthetic.min_object_size = 4
    synthetic.max_object_fraction = 0.25
    return config
