r"""tianzhi0549/FCOS MobileNetV2-FPN (``FCOS_syncbn_bs32_MNV2_FPN_1x`` 33.1 AP,
``FCOS_bn_bs16_MNV2_FPN_1x`` 31.0: same network): the authors' MobileNetV2, 256 channels.

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_syncbn_bs32_MNV2_FPN_1x.pth --workdir=/tmp/fcos_tianzhi_mnv2
    fcos-train --config=fcos_tianzhi_mnv2 --workdir=/tmp/fcos_tianzhi_mnv2 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_tianzhi_mnv2 --output=/tmp/fcos_serving
    fcos-export-edge --workdir=/tmp/fcos_tianzhi_mnv2 --output=/tmp/fcos_int8.tflite \
        --config.data.coco.root=/data/coco   # calibration images

Test size (short / long side) 800 / 1333. Expected: 33.1 (31.0 for the bn_bs16 file) box AP on
COCO minival (the authors' table); the import is exact layer by layer
(tests/test_import_tianzhi.py). The training section is the base 1x schedule, for fine-tuning
from the imported weights.
"""

from fcos_tf.configs._authors import tianzhi_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return tianzhi_config("mobilenet_v2_fcos", 256)
