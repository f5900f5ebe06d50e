r"""tianzhi0549/FCOS MobileNetV2-FPN c128 (``FCOS_syncbn_bs32_c128_MNV2_FPN_1x``, 30.9 AP):
the authors' MobileNetV2 with a 128-channel FPN and head.

Import the released weights (a download from the authors' model zoo; non-commercial licence of
the authors) once, then evaluate or export::

    fcos-import FCOS_syncbn_bs32_c128_MNV2_FPN_1x.pth --workdir=/tmp/fcos_tianzhi_mnv2_c128
    fcos-train --config=fcos_tianzhi_mnv2_c128 --workdir=/tmp/fcos_tianzhi_mnv2_c128 \
        --mode=eval --config.data.coco.root=/data/coco
    fcos-export --workdir=/tmp/fcos_tianzhi_mnv2_c128 --output=/tmp/fcos_serving
    fcos-export-edge --workdir=/tmp/fcos_tianzhi_mnv2_c128 --output=/tmp/fcos_int8.tflite \
        --config.data.coco.root=/data/coco   # calibration images

Test size (short / long side) 800 / 1333. Expected: 30.9 box AP on COCO minival (the authors'
table); the import is exact layer by layer (tests/test_import_tianzhi.py). The training section
is the base 1x schedule, for fine-tuning from the imported weights.
"""

from fcos_tf.configs._authors import tianzhi_config


def get_config():
    """Returns the checkpoint's inference settings (see the module docstring)."""
    return tianzhi_config("mobilenet_v2_fcos", 128)
