r"""AdelaiDet FCOS_RT R-50 with a BatchNorm head (``FCOS_RT_MS_R_50_4x_syncbn_bn_head``, 39.3
AP at 512 px): P3-P5 only, one BatchNorm per level at each tower position.

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_RT_MS_R_50_4x_syncbn_bn_head.pth --workdir=/tmp/fcos_adelaidet_rt_r50_bn
    fcos-train --config=fcos_adelaidet_rt_r50_bn --workdir=/tmp/fcos_adelaidet_rt_r50_bn \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_adelaidet_rt_r50_bn --output=/tmp/fcos_serving

Test size (short / long side) 512 / 736. Expected: 39.3 box AP on COCO val2017 (AdelaiDet's
table); the import is exact layer by layer (tests/test_import_adelaidet.py). The training
section is the base 1x schedule, for fine-tuning from the imported weights.
"""

from fcos_tf.configs._authors import adelaidet_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return adelaidet_config(50, real_time=True, per_level_bn_head=True)
