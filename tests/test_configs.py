"""Recipe files: they load, hold the paper's values, and bad values fail at start, clearly."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from fcos_tf.core import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "fcos_tf", "configs", "[!_]*.py")))


def _load(name):
    path = os.path.join(REPO, "fcos_tf", "configs", name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_recipe_validates_and_documents_its_command(path):
    config = _load(os.path.basename(path))
    config_lib.validate_config(config, check_paths=False)
    for section in (
        "backbone",
        "model",
        "locations",
        "pipeline",
        "data",
        "train",
        "eval",
        "export",
    ):
        assert section in config
    with open(path) as f:
        source = f.read()
    assert "fcos-train" in source and "Expected" in source


def test_improved_recipe_is_the_papers_default_profile():
    config = _load("fcos_r50_1x_improved.py")
    assert (
        config.backbone.name,
        config.model.p6_input,
        config.model.centerness_on,
        config.model.box_loss,
        config.model.norm_reg_targets,
    ) == ("resnet50", "p5", "regression", "giou", True)
    assert config.locations.center_sampling_radius == 1.5
    assert config.locations.location_offset == 0.5
    assert (
        config.train.batch_size,
        config.train.base_lr,
        config.train.total_steps,
        tuple(config.train.lr_steps),
        config.train.warmup_steps,
    ) == (16, 0.01, 90_000, (60_000, 80_000), 500)
    assert (config.train.momentum, config.train.weight_decay, config.train.bias_lr_factor) == (
        0.9,
        1e-4,
        2.0,
    )
    assert (
        config.model.nms_iou_threshold,
        config.model.pre_nms_top_k,
        config.model.max_detections,
        config.model.score_threshold,
    ) == (0.6, 1000, 100, 0.05)


def test_original_and_r101_recipes_change_only_their_rows():
    original = _load("fcos_r50_1x_original.py")
    assert (
        original.model.p6_input,
        original.model.centerness_on,
        original.model.box_loss,
        original.model.norm_reg_targets,
        original.locations.center_sampling_radius,
    ) == ("c5", "classification", "iou", False, 0.0)
    r101 = _load("fcos_r101_2x_ms.py")
    assert r101.backbone.name == "resnet101"
    assert tuple(r101.pipeline.train_short_side) == (640, 800)
    assert (r101.train.total_steps, tuple(r101.train.lr_steps)) == (180_000, (120_000, 160_000))


def _synthetic():
    return _load("synthetic_small.py")


def test_batch_not_divisible_by_replicas_is_refused():
    config = _synthetic()
    config.train.batch_size = 6
    config_lib.validate_config(config, num_replicas=2, check_paths=False)
    with pytest.raises(ValueError, match=r"config\.train\.batch_size.*4 replicas"):
        config_lib.validate_config(config, num_replicas=4, check_paths=False)


def test_missing_dataset_paths_are_named():
    config = _load("fcos_r50_1x_improved.py")
    config.data.coco.root = "/nonexistent/coco"
    with pytest.raises(
        ValueError, match=r"config\.data\.coco\.train_images: /nonexistent/coco/train"
    ):
        config_lib.validate_config(config)
    with pytest.raises(ValueError, match=r"config\.data\.coco\.val_images"):
        config_lib.validate_config(config, mode="eval")


def test_missing_backbone_weights_are_named(tmp_path):
    config = _synthetic()
    config.backbone.weights = str(tmp_path / "nope.weights.h5")
    with pytest.raises(ValueError, match=r"config\.backbone\.weights: .*nope"):
        config_lib.validate_config(config)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.lr_steps", (700, 500), "increasing"),
        ("train.base_lr", -0.1, "positive"),
        ("train.batch_size", 0, "positive integer"),
        ("train.strategy", "tpu", "not one of"),
        ("backbone.name", "resnet18", "not one of"),
        ("pipeline.train_short_side", (800, 640), "inclusive range"),
        ("pipeline.hflip_prob", 1.5, "probability"),
        ("locations.location_offset", 1.0, r"\[0, 1\)"),
        ("locations.strides", (8,), "first 2 to 5"),
        ("locations.strides", (8, 32, 64), "first 2 to 5"),
        ("train.intra_op_threads", -2, "integer >= -1"),
        ("backbone.stem_channels", 12, "multiple of 8"),
        ("train.inter_op_threads", -1, "integer >= 0"),
        ("train.resume", "rewind", "not one of"),
        ("data.dataset", "kitti", "not one of"),
        ("model.nms_iou_threshold", 0.0, r"\(0, 1\]"),
        ("train.precision", "float16", "not one of"),
        # Checked by the constructor the section feeds (PipelineConfig, FCOS), named as keys.
        ("pipeline.pixel_norm", "bgr", "must be one of"),
        ("pipeline.max_boxes", 0, "positive integer"),
        ("model.head_norm", "layer", "must be one of"),
        ("model.fpn_channels", 0, "positive integer"),
        ("locations.size_ranges", ((0, 1),), "one \\(low, high\\) pair per stride"),
    ],
)
def test_impossible_values_fail_with_the_key(key, value, message):
    config = _synthetic()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=rf"config\.{key}: .*{message}"):
        config_lib.validate_config(config, check_paths=False)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("backbone.norm", "group", "not one of"),
        ("backbone.alpha", 0.0, "positive number"),
    ],
)
def test_impossible_mobile_backbone_values_fail_with_the_key(key, value, message):
    config = _load("synthetic_edge.py")
    config_lib.validate_config(config, check_paths=False)
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=rf"config\.{key}: .*{message}"):
        config_lib.validate_config(config, check_paths=False)


def test_imagenet_weights_are_for_the_mobile_backbones_only():
    config = _load("fcos_mnv2_c128_320.py")
    config_lib.validate_config(config, check_paths=False)  # downloaded when built, not here
    config.backbone.name = "resnet50"
    with pytest.raises(ValueError, match=r"config\.backbone\.weights: 'imagenet'.*weights file"):
        config_lib.validate_config(config, check_paths=False)


def _run_train(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_train_py_refuses_a_typo_in_a_config_key(tmp_path):
    result = _run_train(f"--workdir={tmp_path}", "--config.train.bach_size=4")
    assert result.returncode != 0
    assert 'Did you mean "batch_size" instead of "bach_size"?' in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "checkpoints")
    explicit = _run_train(
        f"--workdir={tmp_path}",
        "--config=fcos_tf/configs/synthetic_small.py",
        "--config.backbone.nam=small",
    )
    assert explicit.returncode != 0 and "Traceback" not in explicit.stderr
    assert "config.backbone has no key 'nam'" in explicit.stderr


def test_train_py_refuses_an_impossible_value_before_training(tmp_path):
    result = _run_train(
        f"--workdir={tmp_path}",
        "--config.data.dataset=coco",
        "--config.data.coco.root=/nonexistent",
    )
    assert result.returncode != 0
    assert "Invalid config: config.data.coco.train_images" in result.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_train_py_refuses_a_negative_thread_count_before_tensorflow_starts(tmp_path):
    result = _run_train(f"--workdir={tmp_path}", "--config.train.intra_op_threads=-2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Invalid config: `intra_op` must be an int >= 0 (0: TensorFlow's), got -2."
    )
    assert not os.path.exists(tmp_path / "checkpoints")


def test_thread_pools_are_set_before_tensorflow_starts_and_kept_after(tmp_path):
    code = (
        "import logging, sys\n"
        "import tensorflow as tf\n"
        "from fcos_tf.core import builders, config\n"
        "recipe = config.load_recipe('synthetic_small')\n"
        "assert (recipe.train.intra_op_threads, recipe.train.inter_op_threads) == (-1, 2)\n"
        "assert builders.apply_thread_pools(recipe)\n"
        "t = tf.config.threading\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
        "tf.constant(1.0) + 1.0  # TensorFlow starts\n"
        "recipe.train.intra_op_threads = t.get_intra_op_parallelism_threads() + 1\n"
        "print(builders.apply_thread_pools(recipe))\n"
        "recipe.train.intra_op_threads = -1\n"
        "print(builders.apply_thread_pools(recipe))\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    intra = max(1, cores // 2)
    assert result.stdout.split() == [str(intra), "2", "False", "True", str(intra), "2"]
    assert "apply only to a new process" in result.stderr


def test_train_py_says_when_tfds_data_is_not_prepared(tmp_path):
    # TFDS reads prepared data only; an empty data folder is what an offline machine has.
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    result = _run_train(
        f"--workdir={tmp_path / 'run'}",
        "--config=fcos_tf/configs/fcos_r50_1x_improved.py",
        "--config.data.dataset=tfds",
        f"--config.data.tfds.data_dir={data_dir}",
        "--config.backbone.name=small",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Input not found: Could not load TFDS dataset 'coco/2017'" in result.stderr
    assert "tfds build coco/2017" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_each_constructor_checks_its_own_arguments():
    """The checks validate_config relies on hold for the objects built without a config."""
    from fcos_tf.data.pipeline import PipelineConfig
    from fcos_tf.modeling.backbone import SmallBackbone
    from fcos_tf.modeling.fcos import FCOS
    from fcos_tf.serving.graph import ServingConfig

    with pytest.raises(ValueError, match="`pixel_norm` must be one of"):
        PipelineConfig(pixel_norm="bgr")
    with pytest.raises(ValueError, match="`pixel_norm` must be one of"):
        ServingConfig(pixel_norm="bgr")
    with pytest.raises(ValueError, match="`hflip_prob` must be a probability"):
        PipelineConfig(hflip_prob=2.0)
    with pytest.raises(ValueError, match="`strides` must be the first 2 to 5"):
        PipelineConfig(strides=(8, 32), size_ranges=((-1, 64), (64, 1e8)))
    with pytest.raises(ValueError, match="`head_norm` must be one of"):
        FCOS(SmallBackbone(), 3, head_norm="layer")
    with pytest.raises(ValueError, match="`location_offset` must be in"):
        FCOS(SmallBackbone(), 3, location_offset=1.5)


def test_decay_steps_after_the_end_are_named_not_refused(caplog):
    config = _synthetic()
    config.train.total_steps = 40  # a shortened run of the recipe
    with caplog.at_level("WARNING"):
        config_lib.validate_config(config, check_paths=False)
    assert "decay step(s) 1300, 1500 come at or after train.total_steps=40" in caplog.text


def test_p2_strides():
    config = config_lib.load_recipe("fcos_r50_p2_small_objects")
    assert tuple(config.locations.strides) == (4, 8, 16, 32, 64)
    config_lib.validate_config(config, check_paths=False)
    config.locations.strides = (4, 16, 32, 64, 128)
    with pytest.raises(ValueError, match="or 4 \\(a P2 level\\)"):
        config_lib.validate_config(config, check_paths=False)
    config = config_lib.load_recipe("fcos_r50_p2_small_objects")
    config.backbone.name = "mobilenet_v2"
    config.backbone.norm = "bn"
    with pytest.raises(ValueError, match="config.locations.strides: a P2 level"):
        config_lib.validate_config(config, check_paths=False)
