"""``python export_savedmodel.py ...`` from a checkout: the same command as ``fcos-export``
(fcos_tf/export.py)."""

import sys

from fcos_tf.export import main

if __name__ == "__main__":
    sys.exit(main())
