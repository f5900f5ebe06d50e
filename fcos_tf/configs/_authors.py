"""Settings shared by the recipes of the FCOS authors' released checkpoints (``fcos-import``).

Each function returns the recipe of one family; the recipe files in this folder pick the
variant. The model and input sections are the checkpoint's inference settings; the training
section stays the base 1x schedule, for fine-tuning from the imported weights.
"""

import math

from fcos_tf.core.config import base_config


def adelaidet_config(depth=50, real_time=False, per_level_bn_head=False):
    """AdelaiDet (detectron2) FCOS: ``MODEL.FCOS`` defaults of ``adet/config/defaults.py``.

    Args:
        depth: ResNet depth, 50 or 101.
        real_time: FCOS_RT: levels P3-P5 only, test size 512 / 736.
        per_level_bn_head: the ``_bn_head`` model: one BatchNorm per level in the towers.
    """
    config = base_config()
    backbone = config.backbone
    backbone.name = f"resnet{depth}"
    backbone.layout = "caffe"  # STRIDE_IN_1X1: stride on the first 1x1 conv
    backbone.freeze_at = 2
    backbone.bn_epsilon = 1e-5  # detectron2's FrozenBatchNorm2d
    model = config.model
    model.fpn_channels = 256
    model.p6_input = "p5"
    model.head_num_convs = 4
    model.head_norm = "sync_bn_per_level" if per_level_bn_head else "group"
    model.head_num_groups = 32
    model.centerness_on = "regression"  # ctrness on the box tower
    model.norm_reg_targets = True  # relu(s * x) * stride
    model.score_threshold = 0.05  # INFERENCE_TH_TEST on sigmoid(cls)
    model.score_threshold_on = "class"
    model.pre_nms_top_k = 1000
    model.nms_iou_threshold = 0.6
    model.max_detections = 100
    model.box_plus_one = False  # torchvision batched_nms
    model.clip_after_nms = True  # detector_postprocess clips after NMS, drops empty boxes
    locations = config.locations
    locations.location_offset = 0.5  # x = j * s + s // 2
    locations.location_grid = "paper"
    pipeline = config.pipeline
    pipeline.pixel_norm = "detectron2"
    pipeline.resize_rounding = "round"  # int(h * scale + 0.5)
    pipeline.size_divisibility = 32
    if real_time:
        locations.strides = (8, 16, 32)
        locations.size_ranges = ((-1.0, 64.0), (64.0, 128.0), (128.0, math.inf))
        pipeline.train_short_side = (256, 608)
        pipeline.eval_short_side = 512
        pipeline.max_size = 736
        config.export.input_size = (512, 736)
    else:
        pipeline.eval_short_side = 800
        pipeline.max_size = 1333
    return config


def tianzhi_config(backbone_name="mobilenet_v2_fcos", channels=256):
    """tianzhi0549/FCOS (maskrcnn-benchmark): ``fcos_core/config/defaults.py`` and the model's yaml.

    Args:
        backbone_name: ``"mobilenet_v2_fcos"`` (the MNV2 models: original head) or
            ``"resnet101"`` (``FCOS_imprv_R_101_FPN_2x``: the improvements).
        channels: FPN and head width (``c128``: 128).
    """
    config = base_config()
    backbone = config.backbone
    backbone.name = backbone_name
    model = config.model
    if backbone_name == "mobilenet_v2_fcos":
        backbone.norm = "sync_bn"  # trained BN in every MNV2 model
        model.centerness_on = "classification"
        model.norm_reg_targets = False  # exp(s * x)
        config.locations.center_sampling_radius = 0.0
        model.box_loss = "iou"
    else:
        backbone.layout = "caffe"
        backbone.freeze_at = 2
        backbone.bn_epsilon = 0.0  # FrozenBatchNorm2d without epsilon
        model.centerness_on = "regression"
        model.norm_reg_targets = True
        config.pipeline.train_short_side = (640, 800)
    model.fpn_channels = channels
    model.p6_input = "p5"
    model.head_num_convs = 4
    model.head_norm = "group"
    model.head_num_groups = 32
    model.score_threshold = 0.05
    model.score_threshold_on = "class"
    model.pre_nms_top_k = 1000
    model.nms_iou_threshold = 0.6
    model.max_detections = 100
    model.box_plus_one = True  # clip to size - 1, NMS widths x2 - x1 + 1
    config.locations.location_offset = 0.5
    config.locations.location_grid = "paper"
    pipeline = config.pipeline
    pipeline.pixel_norm = "maskrcnn_benchmark"
    pipeline.resize_rounding = "floor"  # long side int(size * long / short)
    pipeline.eval_short_side = 800
    pipeline.max_size = 1333
    pipeline.size_divisibility = 32
    return config
