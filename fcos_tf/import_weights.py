r"""``fcos-import``: a released PyTorch FCOS checkpoint into a run directory.

    fcos-import FCOS_syncbn_bs32_c128_MNV2_FPN_1x.pth --workdir=/tmp/mnv2_c128
    fcos-import FCOS_MS_R_50_2x.pth --workdir=/tmp/adelaidet_r50
    fcos-import fcos_resnet50_fpn_coco-99b0c9b7.pth --workdir=/tmp/tv --source=torchvision
    python -m fcos_tf.import_weights ...                          # the same

Sources, recognised from the tensor names (``--source`` forces one):

* ``torchvision``: ``fcos_resnet50_fpn`` COCO weights (:mod:`fcos_tf.importers.torchvision`);
* ``adelaidet``: the FCOS authors' AdelaiDet checkpoints (:mod:`fcos_tf.importers.adelaidet`);
* ``tianzhi``: the authors' tianzhi0549/FCOS checkpoints (:mod:`fcos_tf.importers.tianzhi`).

The model is recognised too and picks its recipe of ``fcos_tf/configs/`` (``--variant`` names
another recipe of the same family, e.g. one of one's own): that recipe holds the checkpoint's
exact inference settings (input normalisation, test size, thresholds, NMS convention, head).
The workdir gets what ``fcos-train`` writes (:func:`fcos_tf.core.rundir.write_imported_run`):
``checkpoints/ckpt-0``, ``label_map.json`` (the 80 COCO categories) and ``config.json``, so
evaluation, export, ``fcos-predict`` and fine-tuning read it as a run trained here.

The authors' weights come under their non-commercial licence (AdelaiDet, tianzhi0549/FCOS).

Exit status (:mod:`fcos_tf.cli`): 0 when done; 1 with one line on stderr for a missing file,
an unknown or unsupported checkpoint, a workdir that holds checkpoints already, or a state
dict that does not fit (the tensor is named).
"""

import sys
from collections.abc import Sequence

from fcos_tf import cli

PROGRAM = "fcos-import"
SOURCES = ("torchvision", "adelaidet", "tianzhi")
TORCHVISION_RECIPE = "fcos_torchvision_r50"
_TORCHVISION_SIGNATURE = "head.classification_head.cls_logits.weight"


def detect_source(state_dict) -> str:
    """``"torchvision"``, ``"adelaidet"`` or ``"tianzhi"``, from the tensor names.

    Raises:
        ValueError: when the names are of none of them.
    """
    from fcos_tf.importers import adelaidet, fcos_common, tianzhi

    names = fcos_common.strip_module_prefix(state_dict)
    if _TORCHVISION_SIGNATURE in names:
        return "torchvision"
    if adelaidet.SIGNATURE in names:
        return "adelaidet"
    if tianzhi.SIGNATURE in names:
        return "tianzhi"
    raise ValueError(
        f"not an FCOS checkpoint of {', '.join(SOURCES)}: none of "
        f"{_TORCHVISION_SIGNATURE!r}, {adelaidet.SIGNATURE!r}, {tianzhi.SIGNATURE!r} in its "
        f"{len(names)} tensors."
    )


def recipe_for(state_dict, source: str) -> str:
    """The recipe name of the checkpoint's model (see the importers' ``recipe_for``)."""
    from fcos_tf.importers import adelaidet, tianzhi

    if source == "torchvision":
        return TORCHVISION_RECIPE
    if source == "adelaidet":
        return adelaidet.recipe_for(state_dict)
    if source == "tianzhi":
        return tianzhi.recipe_for(state_dict)
    raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")


def _loader(source, state_dict, label_map):
    from fcos_tf.importers import adelaidet, tianzhi
    from fcos_tf.importers import torchvision as torchvision_importer

    if source == "torchvision":
        return lambda model: torchvision_importer.load_torchvision_fcos_weights(
            model, state_dict, label_map.category_ids
        )
    if source == "adelaidet":
        return lambda model: adelaidet.load_adelaidet_weights(model, state_dict)
    return lambda model: tianzhi.load_tianzhi_weights(model, state_dict)


def import_weights(
    weights_path: str,
    workdir: str,
    *,
    source: str | None = None,
    variant: str | None = None,
) -> tuple:
    """Writes a run directory holding a released FCOS checkpoint (see the module docstring).

    Args:
        weights_path: the ``.pth`` file.
        workdir: directory to create; must not hold checkpoints already.
        source: one of :data:`SOURCES`; default recognised from the names.
        variant: a recipe (name or path) instead of the recognised model's.

    Returns:
        ``(model, source, recipe)``: the built Keras model with the imported weights.
    """
    from fcos_tf.core import config as config_lib
    from fcos_tf.core import rundir
    from fcos_tf.data.label_map import LabelMap
    from fcos_tf.importers import imagenet as weights_lib
    from fcos_tf.importers import torchvision as torchvision_importer

    state_dict = weights_lib.read_torch_state_dict(weights_path)
    if source is None:
        source = detect_source(state_dict)
    elif source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    if source == "torchvision":
        state_dict = torchvision_importer.normalise_state_dict_names(state_dict)
    recipe = variant or recipe_for(state_dict, source)
    config = config_lib.load_recipe(recipe)
    config_lib.validate_config(config, check_paths=False)
    label_map = LabelMap.coco_2017()
    model = rundir.write_imported_run(
        workdir, config, label_map, _loader(source, state_dict, label_map)
    )
    return model, source, recipe


def _define_flags(flag_values):
    from absl import flags

    flags.DEFINE_string("workdir", None, "Run directory to create.", flag_values=flag_values)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)
    flags.DEFINE_enum(
        "source",
        None,
        SOURCES,
        "Where the checkpoint comes from (default: recognised from its tensor names).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "variant",
        None,
        "Recipe (name in fcos_tf/configs/ or path) to use instead of the recognised model's.",
        flag_values=flag_values,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fcos-import`` with ``argv``; returns the exit status."""
    args, files = cli.parse_flags(
        _define_flags, argv, PROGRAM, positional="WEIGHTS.pth", terms={"path": ""}
    )
    if len(files) != 1:
        cli.fail(f"{PROGRAM}: give one .pth checkpoint file.")
    cli.set_up_logging()
    try:
        _, source, recipe = import_weights(
            files[0], args.workdir, source=args.source, variant=args.variant
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        cli.fail(f"Import failed: {error}", error)
    print(
        f"Wrote {args.workdir} ({source} checkpoint, recipe {recipe}): checkpoints/, "
        f"label_map.json, config.json. Evaluate with\n"
        f"  fcos-train --config={recipe} --workdir={args.workdir} --mode=eval "
        f"--config.data.coco.root=<COCO 2017 root>\n"
        f"or export with fcos-export --workdir={args.workdir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
