r"""torchvision's FCOS R-50-FPN (``fcos_resnet50_fpn``, COCO weights) run with this package.

torchvision reports 39.2 box AP on COCO val2017 for its published weights (trained 26 epochs
with its own recipe). Import them once, then evaluate::

    python -m fcos_tf.convert_torchvision fcos_resnet50_fpn_coco-99b0c9b7.pth \
        --workdir=/tmp/fcos_torchvision
    python train.py --config=configs/fcos_torchvision_r50.py --workdir=/tmp/fcos_torchvision \
        --mode=eval --config.data.coco_root=/data/coco

Expected: close to 39.2 AP. The import is exact layer by layer; what can move the figure a
little is the input pipeline (resize rounding, and the P6/P7 location grid: torchvision derives
each level's stride from padded size // feature size, which differs from 64/128 when the padded
sides are not multiples of 128, while this package always uses the true strides). On a 2-core
CPU the 5,000 images take hours; the recipe is meant for a GPU.

Without ``--mode=eval`` the same command fine-tunes from the imported weights with the 1x
schedule of the training section (torchvision settings otherwise: ``pixel_norm`` RGB ImageNet,
``location_offset`` 0, candidates by final score > 0.2).
"""

from fcos_tf.convert_torchvision import torchvision_config


def get_config():
    """Returns torchvision's FCOS settings on COCO 2017 (see the module docstring)."""
    return torchvision_config()
