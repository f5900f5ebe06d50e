r"""AdelaiDet FCOS R-50-FPN (``FCOS_R_50_1x`` 38.7 AP, ``FCOS_MS_R_50_2x`` 41.0, and
their ``_iou`` variants 39.4 / 41.5: same network and inference).

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_MS_R_50_2x.pth --workdir=/tmp/fcos_adelaidet_r50
    fcos-train --config=fcos_adelaidet_r50 --workdir=/tmp/fcos_adelaidet_r50 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_adelaidet_r50 --output=/tmp/fcos_serving

Test size (short / long side) 800 / 1333. Expected: 38.7 to 41.5 box AP on COCO val2017,
depending on the checkpoint (AdelaiDet's table); the import is exact layer by layer
(tests/test_import_adelaidet.py). The training section is the base 1x schedule, for fine-tuning
from the imported weights.
"""

from fcos_tf.configs._authors import adelaidet_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return adelaidet_config(50)
