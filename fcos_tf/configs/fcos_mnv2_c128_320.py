r"""Edge FCOS on COCO: MobileNetV2 (ImageNet), 128-channel FPN and head, 320x320 input.

The FCOS authors' ``FCOS_syncbn_bs32_c128_MNV2_FPN_1x`` (30.9 AP at 800 px in their table,
19-26 ms per image on a GPU) adapted to a phone-sized input: MobileNetV2 (alpha 1,
``keras.applications`` ImageNet weights, ``pixel_norm="inception"``) with SyncBN, a
128-channel FPN and 4-conv towers of 128 channels; as the authors: SyncBN, batch 32, lr 0.02
(0.01 at batch 16, scaled linearly), 90k iterations with decays at 60k and 80k, 500 warm-up
iterations. Changed for the edge: the head towers use SyncBN instead of GroupNorm (folded
into the convolutions at export, so the int8 model holds no normalisation op), training
short sides 256..320 with the long side at most 320 (images padded to 320x320), evaluation
and export at 320x320.

Commands (8 GPUs; the ImageNet weights download on first use, or pass the local
``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`` path)::

    fcos-train --config=fcos_mnv2_c128_320 --workdir=/tmp/fcos_mnv2_c128_320 \
        --config.data.coco.root=/data/coco
    python fcos-export-edge --workdir=/tmp/fcos_mnv2_c128_320 --output=/tmp/fcos_mnv2_int8.tflite

Expected: not measured here (no COCO and no GPU on the development machines). The authors'
30.9 AP is at 800 px; at 320 px expect markedly less (small objects fall below the P3
stride), of the order of the 20-25 AP that 320 px mobile detectors report. About 10 hours
on 8 V100-class GPUs. On a 2-core CPU the int8 export runs in the tens of milliseconds per
image (BENCHMARKS.md, "Edge profile").
"""

from fcos_tf.core.config import base_config


def get_config():
    """Returns the MobileNetV2-c128 320x320 COCO recipe."""
    config = base_config()
    backbone = config.backbone
    backbone.name = "mobilenet_v2"
    backbone.alpha = 1.0  # keras.applications width multiplier
    backbone.norm = "sync_bn"  # "sync_bn" | "bn" | "frozen_bn"
    backbone.weights = "imagenet"  # or a local keras.applications .h5 file
    model = config.model
    model.fpn_channels = 128
    model.head_num_convs = 4
    model.head_norm = "sync_bn"

    pipeline = config.pipeline
    pipeline.pixel_norm = "inception"
    pipeline.train_short_side = (256, 320)
    pipeline.eval_short_side = 320
    pipeline.max_size = 320

    train = config.train
    train.batch_size = 32
    train.base_lr = 0.01  # at reference_batch_size 16: 0.02 at 32
    train.reference_batch_size = 16
    train.total_steps = 90_000
    train.lr_steps = (60_000, 80_000)
    train.warmup_steps = 500

    config.export.input_size = (320, 320)
    return config
