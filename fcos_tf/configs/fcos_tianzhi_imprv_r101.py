r"""tianzhi0549/FCOS ``FCOS_imprv_R_101_FPN_2x`` (43.0 AP): R-101 with the improvements.

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_imprv_R_101_FPN_2x.pth --workdir=/tmp/fcos_tianzhi_imprv_r101
    fcos-train --config=fcos_tianzhi_imprv_r101 --workdir=/tmp/fcos_tianzhi_imprv_r101 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_tianzhi_imprv_r101 --output=/tmp/fcos_serving

Test size (short / long side) 800 / 1333. Expected: 43.0 box AP on COCO minival (the authors'
table); the import is exact layer by layer (tests/test_import_tianzhi.py). The training section
is the base 1x schedule, for fine-tuning from the imported weights.
"""

from fcos_tf.configs._authors import tianzhi_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return tianzhi_config("resnet101", 256)
