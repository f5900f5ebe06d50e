r"""The edge recipe on the synthetic shapes: MobileNetV2 FCOS that trains on a CPU in minutes.

The synthetic data of ``fcos_tf/configs/synthetic_small.py`` (six shape classes on 128x128 images,
1024 training and 64 validation images) with the edge profile's model: MobileNetV2 at width
0.35 from random weights (no download), SyncBN in the backbone and in a 64-channel, 2-conv
head on P3-P4, ``pixel_norm="inception"`` ([-1, 1], what MobileNet weights expect). 2000 steps
of batch 16, SGD as the small recipe (lr 0.08, constant warm-up 100 steps, decays at 1600 and
1850), the small recipe's thread pools.
The BatchNorms fold into the convolutions at export, so the int8 model is convolutions only.

Commands (training, a MediaPipe-ready int8 ``.tflite``, MediaPipe's ObjectDetector on an
image: README "Edge")::

    fcos-train --config=synthetic_edge --workdir=/tmp/fcos_edge
    python fcos-export-edge --workdir=/tmp/fcos_edge --output=/tmp/fcos_edge/fcos_int8.tflite

Expected: COCO AP about 0.37 (AP50 0.67) on the validation images in 5-7 minutes on an
idle 2-core AVX-512 CPU, training, drawing the data and the evaluation included. The folded
int8 export keeps the AP (BENCHMARKS.md, "Edge profile").
"""

from fcos_tf.core.config import load_recipe


def get_config():
    """Returns the synthetic edge recipe."""
    config = load_recipe("synthetic_small")
    backbone = config.backbone
    backbone.name = "mobilenet_v2"
    backbone.alpha = 0.35  # keras.applications width multiplier
    backbone.norm = "sync_bn"  # "sync_bn" | "bn" | "frozen_bn"
    model = config.model
    model.fpn_channels = 64
    model.head_num_convs = 2
    model.head_norm = "sync_bn"
    config.pipeline.pixel_norm = "inception"
    # The small recipe's 1600-step schedule is for its small backbone; MobileNet keeps 2000.
    train = config.train
    train.total_steps = 2000
    train.lr_steps = (1600, 1850)
    train.steps_per_epoch = 250
    train.checkpoint_every = 500
    return config
