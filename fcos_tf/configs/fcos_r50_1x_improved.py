r"""FCOS R-50-FPN 1x "w/ improvements" on COCO 2017: the default profile of docs/design.md §3.

Paper Table 3, last row: 38.6 AP on minival (the authors' repo reports 38.7 for
``fcos_imprv_R_50_FPN_1x``). All improvements on: centerness on the regression branch,
center sampling (radius 1.5), GIoU loss, normalised regression targets (relu(s*x)*stride),
P6 from P5, GroupNorm in the head. 90k iterations at batch 16, lr 0.01 (x2 for biases),
weight decay 1e-4, constant warm-up 500 iterations at lr/3, decays at 60k and 80k.

Command (8 GPUs on one machine; MirroredStrategy is picked automatically)::

    fcos-train --config=fcos_r50_1x_improved --workdir=/tmp/fcos_r50_1x \
        --config.data.coco.root=/data/coco \
        --config.backbone.weights=/weights/resnet50_caffe.weights.h5

Expected: about 38.6 AP (COCO val2017) with ImageNet-initialised weights, in about 12 hours on
8 V100s (the authors' figure for this recipe). Random initialisation gives far less; no
pretrained weights are downloaded by this config. On a 2-core CPU one step of batch 16 at
800x1333 takes minutes (see BENCHMARKS.md): the recipe is for GPUs.
"""

from fcos_tf.core.config import base_config


def get_config():
    """Returns the improved R-50 1x recipe (docs/design.md §3 defaults)."""
    return base_config()
