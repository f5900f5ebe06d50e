"""Config -> objects: every recipe's targets and decoding agree; run files and command lines."""

import dataclasses
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.core import builders, rundir
from fcos_tf.core import config as config_lib
from fcos_tf.data import pipeline as pipeline_lib
from fcos_tf.ops.locations import split_per_level
from fcos_tf.ops.targets import compute_targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, "fcos_tf", "configs", "[!_]*.py")))


def _python(code, env=None):
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_pipeline_targets_and_model_decoding_share_the_location_settings(path):
    config = config_lib.load_recipe(path)
    pipeline = builders.build_pipeline_config(config, batch_size=2)
    model = builders.build_model(config, num_classes=3, load_backbone_weights=False)
    locations = config.locations
    # What the targets are computed with is what the model decodes with.
    assert tuple(pipeline.strides) == tuple(model.strides) == tuple(locations.strides)
    assert pipeline.location_offset == model.location_offset == locations.location_offset
    assert pipeline.size_ranges == tuple(tuple(r) for r in locations.size_ranges)
    assert pipeline.center_sampling_radius == locations.center_sampling_radius
    # The other sections arrive unrenamed.
    assert pipeline.eval_short_side == config.pipeline.eval_short_side
    assert pipeline.train_short_side == tuple(config.pipeline.train_short_side)
    assert (model.fpn_channels, model.box_loss, model.score_threshold) == (
        config.model.fpn_channels,
        config.model.box_loss,
        config.model.score_threshold,
    )


@pytest.mark.parametrize("recipe", ["synthetic_small", "synthetic_edge"])
def test_synthetic_recipes_train_every_level_and_every_class(recipe):
    # A level without positive locations would only learn background: the synthetic
    # recipes keep the levels their objects reach, and each of them gets positives.
    config = config_lib.load_recipe(recipe)
    config.data.synthetic.num_train = 64
    examples = builders.read_split(config, "train")
    _, labels = next(
        iter(builders.build_train_dataset(config, examples.dataset)(0).unbatch().batch(64))
    )
    classes = labels["class_targets"].numpy()  # [64, L], class index or -1 (background)
    image_size = tuple(config.pipeline.train_short_side[:1] * 2)
    per_level = split_per_level(classes, image_size, tuple(config.locations.strides), axis=1)
    positives = [int(np.sum(np.asarray(level) >= 0)) for level in per_level]
    assert min(positives) >= 16, positives
    assert set(np.unique(classes[classes >= 0])) == set(range(examples.label_map.num_classes))


def test_dtype_policy_builds_under_the_policy_and_restores_the_previous_one():
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    with builders.dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        with builders.dtype_policy("float32"):
            inner = keras.layers.Dense(2)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert inner.compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError, match="while building"):
        with builders.dtype_policy("mixed_float16"):
            raise RuntimeError("while building")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_each_backbone_family_gets_its_own_config_arguments():
    config = config_lib.load_recipe("synthetic_small")
    config.backbone.stem_channels = 24
    small = builders.build_backbone(config.backbone)
    assert small.stem_channels == 24
    assert small.get_layer("stem1_conv").kernel.shape[-1] == 24
    config.backbone.name = "resnet50"  # stem_channels is the small backbone's only
    assert builders.build_backbone(config.backbone, load_weights=False).name.startswith("resnet")


def test_torchvision_recipe_trains_against_locations_without_offset():
    config = config_lib.load_recipe("fcos_torchvision_r50")
    assert config.locations.location_offset == 0.0
    pipeline = dataclasses.replace(
        builders.build_pipeline_config(config, batch_size=1), eval_short_side=64, max_size=64
    )
    boxes = np.array([[3.0, 5.0, 41.0, 30.0], [20.0, 18.0, 60.0, 62.0]], np.float32)
    classes = np.array([1, 0], np.int32)
    example = {
        "image": tf.zeros([64, 64, 3], tf.uint8),
        "boxes": tf.constant(boxes),
        "classes": tf.constant(classes),
        "is_crowd": tf.zeros([2], tf.bool),
        "image_id": tf.constant(0, tf.int64),
    }
    examples = tf.data.Dataset.from_tensors(example)
    _, labels = next(iter(pipeline_lib.make_pipeline(examples, training=False, config=pipeline)))
    padded = (64, 64)
    expected = compute_targets(boxes, classes, padded, location_offset=0.0)
    paper = compute_targets(boxes, classes, padded, location_offset=0.5)
    for key in ("class_targets", "box_targets", "centerness_targets"):
        np.testing.assert_allclose(labels[key][0].numpy(), expected[key].numpy(), err_msg=key)
    # Non-vacuous: the paper's offset gives other targets on this example.
    assert not np.allclose(expected["box_targets"].numpy(), paper["box_targets"].numpy())
    assert (expected["class_targets"].numpy() >= 0).any()


def test_resume_seed_is_the_same_in_every_process():
    code = "from fcos_tf.core import builders; print(builders.resume_seed(7, 1234))"
    seeds = {int(_python(code, {"PYTHONHASHSEED": str(h)})) for h in (1, 2, 3)}
    assert seeds == {builders.resume_seed(7, 1234)}
    assert 0 <= builders.resume_seed(7, 1234) < 2**31
    assert len({builders.resume_seed(7, s) for s in range(100)}) == 100


def test_modules_define_no_flags_and_export_needs_no_training():
    out = _python(
        "import importlib, pkgutil, sys\n"
        "from absl import flags\n"
        "import fcos_tf, tensorflow\n"
        "before = set(flags.FLAGS)  # TensorFlow's own are defined at its import\n"
        "for info in pkgutil.walk_packages(fcos_tf.__path__, 'fcos_tf.'):\n"
        "    if info.name.startswith(('fcos_tf.serving', 'fcos_tf.export', 'fcos_tf.predict')):\n"
        "        importlib.import_module(info.name)\n"
        "print('fcos_tf.training.loop' in sys.modules, 'fcos_tf.core.runner' in sys.modules)\n"
        "for info in pkgutil.walk_packages(fcos_tf.__path__, 'fcos_tf.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(sorted(set(flags.FLAGS) - before))\n"
    )
    training_imported, new_flags = out.strip().splitlines()[-2:]
    # Commands define their flags on FlagValues of their own, when they run.
    assert new_flags == "[]"
    assert training_imported == "False False"  # exporting needs no training loop


def _export_flags(module, argv):
    """The flags of an export command (``--config`` from ``--workdir``) as it parses them."""
    from fcos_tf import cli

    return cli.parse_flags(module._define_flags, argv, module.PROGRAM, workdir_config=True)[0]


def test_export_command_overrides_the_workdirs_own_config(tmp_path):
    from fcos_tf import export

    config = config_lib.load_recipe("synthetic_small")
    rundir.write_config(config, str(tmp_path))
    args = _export_flags(
        export,
        [f"--workdir={tmp_path}", "--output=/unused", "--config.pipeline.eval_short_side=96"],
    )
    assert args.config.pipeline.eval_short_side == 96
    assert args.config.backbone.name == "small"


def test_edge_export_command_reads_the_workdirs_config_with_overrides(tmp_path):
    from fcos_tf import export_edge

    config = config_lib.load_recipe("synthetic_edge")
    rundir.write_config(config, str(tmp_path))
    args = _export_flags(
        export_edge,
        [
            f"--workdir={tmp_path}",
            "--output=/unused.tflite",
            "--config.backbone.alpha=0.5",
            "--variant=fp32",
        ],
    )
    c = args.config
    assert (c.backbone.name, c.backbone.alpha, c.backbone.norm) == ("mobilenet_v2", 0.5, "sync_bn")
    assert args.variant == "fp32"


def test_recipe_by_name_or_path(tmp_path):
    from fcos_tf import export

    named = _export_flags(export, ["--config=synthetic_edge", "--output=/unused"]).config
    by_path = _export_flags(
        export, [f"--config={config_lib.recipe_path('synthetic_edge')}", "--output=/unused"]
    ).config
    recipe = config_lib.load_recipe("synthetic_edge")
    assert named.to_dict() == by_path.to_dict() == recipe.to_dict()
    with pytest.raises(FileNotFoundError, match="synthetic_small"):
        config_lib.recipe_path("no_such_recipe")


def test_workdir_config_round_trips(tmp_path):
    config = config_lib.load_recipe("fcos_torchvision_r50")
    rundir.write_config(config, str(tmp_path))
    again = rundir.read_config(str(tmp_path))
    assert again.to_dict() == config.to_dict()
