"""``python train.py ...`` in a checkout: the command ``fcos-train`` (fcos_tf/train.py)."""

import sys

from fcos_tf.train import main

if __name__ == "__main__":
    sys.exit(main())
