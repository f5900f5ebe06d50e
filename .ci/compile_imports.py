"""Byte-compiles, into ``__pycache__``, every module that fcos_tf's processes import.

``.ci/install`` installs with ``pip --no-compile``, which leaves the compilation of each module
to its first import. Python skips writing the result where ``PYTHONDONTWRITEBYTECODE`` is set
(many container images set it), and every later process would then compile TensorFlow again:
about 4 s per process on 2 cores, paid by each ``train.py``, export and test subprocess. This
script imports every module of the package and the optional libraries that it imports lazily,
once, with writing allowed, so that only the modules in use are compiled (a fraction of what
pip would compile). ``.ci/install`` runs it last, with ``PYTHONDONTWRITEBYTECODE`` removed
from its environment.
"""

import importlib
import os
import pkgutil
import sys
import time

# Imported inside functions by fcos_tf (readers, exports, the weight import), or by the tests
# and their subprocesses; each is skipped where it is not installed.
OPTIONAL = (
    "ai_edge_litert.interpreter",
    "mediapipe",
    "tensorflow_datasets",
    "tensorflow_serving.apis.prediction_log_pb2",
    "torch",
)


def main():
    if sys.flags.dont_write_bytecode:
        sys.exit("compile_imports.py: PYTHONDONTWRITEBYTECODE is set, nothing would be kept")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.time()
    import fcos_tf

    names = [fcos_tf.__name__] + [
        module.name
        for module in pkgutil.walk_packages(fcos_tf.__path__, prefix=f"{fcos_tf.__name__}.")
    ]
    for name in names:
        importlib.import_module(name)
    skipped = []
    for name in OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError:
            skipped.append(name)
    seconds = time.time() - started
    message = f"Compiled the imports of {len(names)} fcos_tf modules in {seconds:.1f} s"
    if skipped:
        message += f" (not installed: {', '.join(skipped)})"
    print(message, flush=True)


if __name__ == "__main__":
    main()
