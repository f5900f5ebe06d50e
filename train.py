r"""Trains and evaluates FCOS from a recipe in configs/.

    python train.py --workdir=/tmp/fcos_small                      # synthetic data, CPU
    python train.py --config=configs/fcos_r50_1x_improved.py --workdir=/tmp/r50 \
        --config.data.coco.root=/data/coco --config.train.batch_size=8
    python train.py --config=configs/fcos_r50_1x_improved.py --workdir=/tmp/r50 --mode=eval

Any config value can be overridden with ``--config.<section>.<key>=...``; an unknown key is
an error. Running again with the same ``--workdir`` resumes from its last checkpoint.
Several GPUs are used through ``MirroredStrategy``, several machines through
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set; the global batch is the config's.

Exit status: 0 when done; 1 with one line on stderr for an invalid config, bad data, missing
input or a non-finite loss (``--debug`` or ``FCOS_DEBUG=1`` adds the traceback); 128 + N
when signal N stopped the run (143 for SIGTERM, 130 for Ctrl-C). The progress bar is a live
bar on a terminal and one line per epoch when the output goes to a file or a pipe.
"""

import logging
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from fcos_tf import builders, cli, training
from fcos_tf import config as config_lib
from fcos_tf.data import DatasetError


def _message(error):
    """The innermost message of a (chained) config error, without quoting."""
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    return str(error.args[0]) if error.args else str(error)


def _parse_flags(argv):
    # An unknown --config.<key> is refused by lock_config with a KeyError/AttributeError
    # (with a "did you mean"); absl only formats its own flag errors.
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        cli.fail(f"FATAL Flags parsing error: {error}", error)
    except (KeyError, AttributeError) as error:
        cli.fail(f"Invalid --config override: {_message(error)}", error)


_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs", "synthetic_small.py"
)
try:
    # The overrides of the default recipe are applied here, while the flag is defined.
    config_flags.DEFINE_config_file(
        "config",
        default=_DEFAULT_CONFIG,
        help_string="Recipe file (configs/*.py); default: the small synthetic recipe.",
        lock_config=True,
    )
except (KeyError, AttributeError, TypeError, ValueError) as error:
    cli.fail(f"Invalid --config override: {_message(error)}", error)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, TensorBoard).")
flags.DEFINE_enum("mode", "train_and_eval", ["train_and_eval", "train", "eval"], "What to run.")
flags.DEFINE_bool("debug", False, cli.DEBUG_FLAG_HELP)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = FLAGS.config
    started = time.time()
    try:
        # The thread pools, then the strategy: both are fixed once TensorFlow has started
        # (multi-worker collectives must be set up before any other TF op).
        builders.apply_thread_pools(config)
    except ValueError as error:
        cli.fail(f"Invalid config: {error}", error)
    strategy = builders.build_strategy(config)
    try:
        config_lib.validate_config(config, strategy.num_replicas_in_sync, mode=FLAGS.mode)
    except ValueError as error:
        cli.fail(f"Invalid config: {error}", error)
    print(
        f"FCOS {FLAGS.mode}: backbone {config.backbone.name}, dataset {config.data.dataset}, "
        f"{config.train.total_steps} steps of global batch {config.train.batch_size} on "
        f"{strategy.num_replicas_in_sync} replica(s); workdir {FLAGS.workdir}",
        flush=True,
    )
    try:
        result = training.run(
            config, FLAGS.workdir, FLAGS.mode, strategy, verbose=cli.progress_verbosity()
        )
    except training.NonFiniteLossError as error:
        cli.fail(f"Training stopped: {error}", error)
    except DatasetError as error:
        # Bad annotations or a split without one usable image: the message names the file.
        cli.fail(f"Bad data: {error}", error)
    except FileNotFoundError as error:
        # Readers say what is missing and how to provide it (e.g. TFDS data not prepared).
        cli.fail(f"Input not found: {error}", error)
    minutes = (time.time() - started) / 60
    if result["interrupted"] is not None:
        print(
            f"Interrupted at step {result['step']} after {minutes:.1f} min; checkpoint saved. "
            f"Run the same command again to resume.",
            flush=True,
        )
        sys.exit(128 + result["interrupted"])
    message = f"Done at step {result['step']} in {minutes:.1f} min."
    if "metrics" in result:
        message += (
            f" AP {result['metrics']['AP']:.3f}, AP50 {result['metrics']['AP50']:.3f} "
            f"-> {FLAGS.workdir}/metrics.json"
        )
    print(message, flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
