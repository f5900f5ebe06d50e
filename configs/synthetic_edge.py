r"""The edge recipe on the synthetic shapes: MobileNetV2 FCOS that trains on a CPU in minutes.

The synthetic data of ``configs/synthetic_small.py`` (six shape classes on 128x128 images,
1024 training and 64 validation images) with the edge profile's model: MobileNetV2 at width
0.35 from random weights (no download), SyncBN in the backbone and in a 64-channel, 2-conv
head, ``pixel_norm="inception"`` ([-1, 1], what MobileNet weights expect). 2000 steps of batch
16, SGD as the small recipe (lr 0.08, constant warm-up 100 steps, decays at 1600 and 1850).
The BatchNorms fold into the convolutions at export, so the int8 model is convolutions only.

Commands (training, a MediaPipe-ready int8 ``.tflite``, MediaPipe's ObjectDetector on an
image: README "Edge")::

    python train.py --config=configs/synthetic_edge.py --workdir=/tmp/fcos_edge
    python export_edge.py --workdir=/tmp/fcos_edge --output=/tmp/fcos_edge/fcos_int8.tflite

Expected: COCO AP about 0.34 (AP50 0.63) on the validation images; measured 19 minutes on
a 2-core CPU shared with other jobs (load average about 5), training, drawing the data and
the evaluation included; less on an idle machine. The folded int8 export keeps the AP
(BENCHMARKS.md, "Edge profile").
"""

from fcos_tf.config import load_recipe


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
    return config
