r"""AdelaiDet FCOS R-101-FPN (``FCOS_MS_R_101_2x`` 43.1 AP, ``_iou`` 43.5).

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_MS_R_101_2x.pth --workdir=/tmp/fcos_adelaidet_r101
    fcos-train --config=fcos_adelaidet_r101 --workdir=/tmp/fcos_adelaidet_r101 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_adelaidet_r101 --output=/tmp/fcos_serving

Test size (short / long side) 800 / 1333. Expected: 43.1 (43.5 for ``_iou``) box AP on COCO
val2017 (AdelaiDet's table); the import is exact layer by layer
(tests/test_import_adelaidet.py). The training section is the base 1x schedule, for fine-tuning
from the imported weights.
"""

from fcos_tf.configs._authors import adelaidet_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return adelaidet_config(101)
