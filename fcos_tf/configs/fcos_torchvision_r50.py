r"""torchvision's FCOS R-50-FPN (``fcos_resnet50_fpn``, COCO weights) run with this package.

torchvision reports 39.2 box AP on COCO val2017 for its published weights (trained 26 epochs
with its own recipe). Import them once, then evaluate::

    python -m fcos_tf.importers.torchvision fcos_resnet50_fpn_coco-99b0c9b7.pth \
        --workdir=/tmp/fcos_torchvision
    fcos-train --config=fcos_torchvision_r50 --workdir=/tmp/fcos_torchvision \
        --mode=eval --config.data.coco.root=/data/coco

Expected: 39.2 AP. The import is exact layer by layer, and the profile runs torchvision's
input and location conventions: the resized size rounded down (640x480 -> 1066x800), boxes
mapped back with one ratio per axis, and each level's locations spaced by padded size //
feature size per axis (``location_grid="torchvision"``: at 800x1216, P6 by 61 and 64 pixels,
P7 by 114 and 121), so detections match torchvision's at every image size (boxes within
1e-2 px, scores within 5e-4; the README lists the measured differences). On a 2-core CPU the
5,000 images take hours; the recipe is meant for a GPU.

Without ``--mode=eval`` the same command fine-tunes from the imported weights with the 1x
schedule of the training section (torchvision settings otherwise: ``pixel_norm`` RGB ImageNet,
``location_offset`` 0 on torchvision's location grid for the decoding and the training targets
alike, resize rounded down, candidates by final
score > 0.2).
"""

from fcos_tf.core.config import base_config


def get_config():
    """Returns torchvision's FCOS settings on COCO 2017 (see the module docstring).

    The model and input settings of torchvision's FCOS (docs/design.md §3, after item 20);
    the training section stays the 1x recipe, for fine-tuning.
    """
    config = base_config()
    backbone = config.backbone
    backbone.name = "resnet50"
    backbone.layout = "pytorch"  # stride on the 3x3 conv
    backbone.freeze_at = 2  # torchvision: trainable_backbone_layers=3
    model = config.model
    model.fpn_channels = 256
    model.p6_input = "p5"
    model.head_num_convs = 4
    model.head_norm = "group"
    model.head_num_groups = 32
    model.centerness_on = "regression"
    model.norm_reg_targets = True  # relu(x) * anchor size (= stride)
    model.box_loss = "giou"
    model.score_threshold = 0.2
    model.score_threshold_on = "final"  # sqrt(sigmoid(cls) * sigmoid(ctr)) > 0.2
    model.pre_nms_top_k = 1000
    model.nms_iou_threshold = 0.6
    model.max_detections = 100
    # Anchor centres at j * spacing, the spacing of each level being padded size // feature
    # size per axis: the targets of a fine-tuning run and the decoding both use it.
    config.locations.location_offset = 0.0
    config.locations.location_grid = "torchvision"
    config.data.dataset = "coco"
    pipeline = config.pipeline
    pipeline.pixel_norm = "torchvision"
    pipeline.resize_rounding = "floor"  # new size = floor(size * scale), per axis
    pipeline.eval_short_side = 800
    pipeline.max_size = 1333
    pipeline.size_divisibility = 32
    return config
