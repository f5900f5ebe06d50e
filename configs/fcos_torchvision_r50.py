r"""torchvision's FCOS R-50-FPN (``fcos_resnet50_fpn``, COCO weights) run with this package.

torchvision reports 39.2 box AP on COCO val2017 for its published weights (trained 26 epochs
with its own recipe). Import them once, then evaluate::

    python -m fcos_tf.convert_torchvision fcos_resnet50_fpn_coco-99b0c9b7.pth \
        --workdir=/tmp/fcos_torchvision
    python train.py --config=configs/fcos_torchvision_r50.py --workdir=/tmp/fcos_torchvision \
        --mode=eval --config.data.coco_root=/data/coco

Expected: 39.2 AP. The import is exact layer by layer, and the profile runs torchvision's
input and location conventions: the resized size rounded down (640x480 -> 1066x800), boxes
mapped back with one ratio per axis, and each level's locations spaced by padded size //
feature size per axis (``location_grid="torchvision"``: at 800x1216, P6 by 61 and 64 pixels,
P7 by 114 and 121), so detections match torchvision's at every image size (boxes within
1e-2 px, scores within 5e-4; the README lists the measured differences). On a 2-core CPU the
5,000 images take hours; the recipe is meant for a GPU.

Without ``--mode=eval`` the same command fine-tunes from the imported weights with the 1x
schedule of the training section (torchvision settings otherwise: ``pixel_norm`` RGB ImageNet,
``location_offset`` 0 on torchvision's location grid, resize rounded down, candidates by final
score > 0.2).
"""

from fcos_tf.convert_torchvision import torchvision_config


def get_config():
    """Returns torchvision's FCOS settings on COCO 2017 (see the module docstring)."""
    return torchvision_config()
