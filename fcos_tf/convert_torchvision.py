r"""``fcos-convert-torchvision``: torchvision's COCO FCOS weights into a run directory.

    fcos-convert-torchvision fcos_resnet50_fpn_coco-99b0c9b7.pth --workdir=/tmp/fcos_torchvision
    fcos-train --config=fcos_torchvision_r50 --workdir=/tmp/fcos_torchvision \
        --mode=eval --config.data.coco.root=/data/coco
    python -m fcos_tf.convert_torchvision ...                    # the same

The workdir gets what ``fcos-train`` writes and reads, through :mod:`fcos_tf.core.rundir`:
``checkpoints/ckpt-0`` (model and optimizer at step 0), ``label_map.json`` (the 80 COCO
categories) and ``config.json`` (the recipe ``fcos_torchvision_r50``). Evaluating it,
exporting it or fine-tuning from it then works as for a run trained here. The mapping itself
is :mod:`fcos_tf.importers.torchvision`.

Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing file,
a workdir that holds checkpoints already, or a state dict that does not fit (the tensor is
named).
"""

import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-convert-torchvision"
# The recipe of torchvision's settings, in fcos_tf/configs/.
RECIPE = "fcos_torchvision_r50"


def convert(weights_path: str, workdir: str, config=None):
    """Writes a run directory holding torchvision's FCOS weights (see the module docstring).

    Args:
        weights_path: torchvision ``fcos_resnet50_fpn`` ``.pth`` file.
        workdir: directory to create; must not hold checkpoints already.
        config: the recipe, an ``ml_collections.ConfigDict`` (default
            ``fcos_tf/configs/fcos_torchvision_r50.py``); its model section must keep
            torchvision's architecture.

    Returns:
        The built Keras model, with the imported weights.
    """
    from fcos_tf.core import config as config_lib
    from fcos_tf.core import rundir
    from fcos_tf.data.label_map import LabelMap
    from fcos_tf.importers import imagenet as weights_lib
    from fcos_tf.importers.torchvision import load_torchvision_fcos_weights

    config = config or config_lib.load_recipe(RECIPE)
    state_dict = weights_lib.read_torch_state_dict(weights_path)
    label_map = LabelMap.coco_2017()
    return rundir.write_imported_run(
        workdir,
        config,
        label_map,
        lambda model: load_torchvision_fcos_weights(model, state_dict, label_map.category_ids),
    )


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_string("workdir", None, "Run directory to create.", flag_values=flag_values)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-convert-torchvision`` with ``argv``; returns the exit status."""
    args, files = cli.parse_flags(
        _define_flags, argv, PROGRAM, positional="WEIGHTS.pth", terms={"path": ""}
    )
    if len(files) != 1:
        cli.fail(f"{PROGRAM}: give one torchvision fcos_resnet50_fpn .pth file.")
    cli.set_up_logging()
    try:
        convert(files[0], args.workdir)
    except (FileNotFoundError, ValueError, ImportError) as error:
        cli.fail(f"Conversion failed: {error}", error)
    print(
        f"Wrote {args.workdir}: checkpoints/, label_map.json, config.json. Evaluate with\n"
        f"  fcos-train --config={RECIPE} --workdir={args.workdir} --mode=eval "
        f"--config.data.coco.root=<COCO 2017 root>"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
