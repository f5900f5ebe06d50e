r"""AdelaiDet FCOS_RT R-50 (``FCOS_RT_MS_R_50_4x_syncbn``, 40.2 AP at 512 px): P3-P5 only.

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_RT_MS_R_50_4x_syncbn.pth --workdir=/tmp/fcos_adelaidet_rt_r50
    fcos-train --config=fcos_adelaidet_rt_r50 --workdir=/tmp/fcos_adelaidet_rt_r50 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_adelaidet_rt_r50 --output=/tmp/fcos_serving

Test size (short / long side) 512 / 736. Expected: 40.2 box AP on COCO val2017 (AdelaiDet's
table); the import is exact layer by layer (tests/test_import_adelaidet.py). The training
section is the base 1x schedule, for fine-tuning from the imported weights.
"""

from fcos_tf.configs._authors import adelaidet_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return adelaidet_config(50, real_time=True)
