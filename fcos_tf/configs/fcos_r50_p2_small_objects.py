r"""FCOS R-50-FPN with a P2 level (P2-P6), for datasets of small objects.

The improved R-50 1x recipe (``fcos_r50_1x_improved``) with the pyramid moved down one level:
P2 (stride 4, from ResNet's C2 = ``layer1`` through the FPN's top-down path) takes the
objects whose regression distance is up to 32 pixels, P3 32-64, P4 64-128, P5 128-256 and
P6 everything larger; there is no P7. Changing the strides alone is not enough (the
backbone must hand C2 to the FPN and the size ranges must follow the strides): this recipe
does all three. At 800x1344 the head runs on 89.5k locations instead of P3-P7's 22.4k
(P2 alone is 200 x 336), so the head's convolutions cost 4x theirs; the backbone is
unchanged.

Use it when ``fcos-analyze`` on the default recipe reports small boxes without positive
locations ("smaller than the level spacing") or a low BPR for the "small" bucket: boxes
of a few pixels (aerial images, text, cells, distant pedestrians) fall between the P3
locations 8 pixels apart, while P2's are 4 apart. Check the recipe against the data first::

    fcos-analyze --config=fcos_r50_p2_small_objects --config.data.coco.root=/data/mine \
        --output=/tmp/p2_analysis

Command (8 GPUs on one machine; MirroredStrategy is picked automatically)::

    fcos-train --config=fcos_r50_p2_small_objects --workdir=/tmp/fcos_r50_p2 \
        --config.data.coco.root=/data/mine \
        --config.backbone.weights=/weights/resnet50_caffe.weights.h5

Expected: there is no published figure for this layout and the training time was not
measured here; it is longer than ``fcos_r50_1x_improved``'s by the head's 4x locations.
The ImageNet weights load unchanged (C2 is a layer the ResNet already has).
"""

import math

from fcos_tf.core.config import base_config


def get_config():
    """Returns the R-50 P2-P6 recipe for small objects."""
    config = base_config()
    config.locations.strides = (4, 8, 16, 32, 64)
    config.locations.size_ranges = (
        (-1.0, 32.0),
        (32.0, 64.0),
        (64.0, 128.0),
        (128.0, 256.0),
        (256.0, math.inf),
    )
    return config
