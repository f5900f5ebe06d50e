r"""``fcos-train``: trains and evaluates FCOS from a recipe.

    fcos-train --workdir=/tmp/fcos_small                       # synthetic data, CPU
    fcos-train --config=fcos_r50_1x_improved --workdir=/tmp/r50 \
        --config.data.coco.root=/data/coco --config.train.batch_size=8
    fcos-train --config=fcos_r50_1x_improved --workdir=/tmp/r50 --mode=eval
    python -m fcos_tf.train ...                                # the same

``--config`` names a recipe of ``fcos_tf/configs/`` or the path of a recipe file (default:
``synthetic_small``). Any config value can be overridden with
``--config.<section>.<key>=...``; an unknown key is an error. Running again with the same
``--workdir`` resumes from its last checkpoint. Several GPUs are used through
``MirroredStrategy``, several machines through ``MultiWorkerMirroredStrategy`` when
``TF_CONFIG`` is set; the global batch is the config's.

Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for an invalid
config, bad data, missing input or a non-finite loss; 128 + N when signal N stopped the run
(143 for SIGTERM, 130 for Ctrl-C), after a checkpoint. The progress bar is a live bar on a
terminal and one line per epoch when the output goes to a file or a pipe.
"""

import sys
import time
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-train"
DEFAULT_RECIPE = "synthetic_small"


def _define_flags(flag_values):
    from absl import flags

    from fcos_tf.core.config import RUN_MODES

    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory (checkpoints, metrics, TensorBoard).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum("mode", RUN_MODES[0], RUN_MODES, "What to run.", flag_values=flag_values)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-train`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, _ = cli.parse_flags(_define_flags, argv, PROGRAM, recipe_default=DEFAULT_RECIPE)
    cli.set_up_logging()
    from fcos_tf.core import builders, runner
    from fcos_tf.core import config as config_lib
    from fcos_tf.data import DatasetError
    from fcos_tf.training.checkpoint import CheckpointMismatchError

    config = args.config
    started = time.time()
    try:
        # The thread pools, then the strategy: both are fixed once TensorFlow has started
        # (multi-worker collectives must be set up before any other TF op).
        builders.apply_thread_pools(config)
        strategy = builders.build_strategy(config)
        config_lib.validate_config(config, strategy.num_replicas_in_sync, mode=args.mode)
    except ValueError as error:
        cli.fail(f"Invalid config: {error}", error)
    what = f"backbone {config.backbone.name}, dataset {config.data.dataset}"
    if args.mode != "eval":
        what += (
            f", {config.train.total_steps} steps of global batch {config.train.batch_size} on "
            f"{strategy.num_replicas_in_sync} replica(s)"
        )
    print(f"FCOS {args.mode}: {what}; workdir {args.workdir}", flush=True)
    try:
        result = runner.run(
            config, args.workdir, args.mode, strategy, verbose=cli.progress_verbosity()
        )
    except runner.NonFiniteLossError as error:
        cli.fail(f"Training stopped: {error}", error)
    except CheckpointMismatchError as error:
        # A workdir of another recipe: its checkpoints cannot be resumed with this one.
        cli.fail(f"Cannot resume: {error}", error)
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
        return 128 + result["interrupted"]
    message = f"Done at step {result['step']} in {minutes:.1f} min."
    if "metrics" in result:
        message += (
            f" AP {result['metrics']['AP']:.3f}, AP50 {result['metrics']['AP50']:.3f} "
            f"-> {args.workdir}/metrics.json"
        )
    print(message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
