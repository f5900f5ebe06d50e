"""Shared pieces of the recipes in ``fcos_tf/configs/``: the default profile and its validation.

``base_config()`` is docs/design.md §3 written out: the paper's "w/ improvements" ResNet-50 1x
recipe on COCO (Table 3, last row). Each ``fcos_tf/configs/<recipe>.py`` starts from it,
changes what its recipe changes and returns the result.

Every section is named after what it feeds, and its keys are the names of that part's
arguments, so that :mod:`fcos_tf.core.builders` (the only module that reads a config) passes a
section on as keyword arguments without renaming anything:

==================  ========================================================================
section             becomes
==================  ========================================================================
``backbone``        :func:`fcos_tf.core.builders.build_backbone` (``name``, ``weights``, the
                    ``ResNet`` arguments ``layout``, ``freeze_at``, ``bn_epsilon`` and the
                    ``MobileNetBackbone`` arguments ``alpha``, ``norm``)
``model``           keyword arguments of :class:`fcos_tf.modeling.fcos.FCOS`
``locations``       settings that target assignment (``PipelineConfig``) and decoding
                    (``FCOS``) share: ``strides``, ``size_ranges``, ``center_sampling_radius``,
                    ``location_offset``, ``location_grid``; read by both, never copied
``pipeline``        fields of :class:`fcos_tf.data.pipeline.PipelineConfig` (the batch size
                    comes from ``train``/``eval``)
``data``            the reader: ``dataset`` picks one of the subsections ``coco``, ``tfds``,
                    ``synthetic``, ``voc``, ``yolo``, ``tfrecord``
``train``           optimizer and schedule (:func:`fcos_tf.core.builders.build_optimizer`),
                    strategy (:func:`fcos_tf.core.builders.build_strategy`), the run's loop
``eval``            evaluation after training
``export``          the TFLite export (``fcos-export``)
==================  ========================================================================

``validate_config()`` runs at the start of every script so that an impossible value fails
in its first seconds with a message naming the key, not an hour into a run. Unknown keys
are already refused by ``config_flags.DEFINE_config_file(..., lock_config=True)``, before
TensorFlow loads (this module and the recipes import none of it); the checks here are about
values and their combinations. The allowed values of a key are defined by the module that
uses them and imported by ``validate_config``.
"""

import contextlib
import importlib.util
import logging
import math
import os
import re

import ml_collections

from fcos_tf.ops import location_defaults

# What fcos-train runs (``--mode``; ``validate_config(mode=...)``, ``runner.run``).
RUN_MODES = ("train_and_eval", "train", "eval")

# The recipe files (fcos_tf/configs/*.py) of a source checkout.
# The recipes shipped with the package (package data of fcos_tf.configs).
RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def recipe_names() -> list[str]:
    """The recipes of ``fcos_tf/configs/`` by name."""
    return sorted(
        name[:-3]
        for name in os.listdir(RECIPES_DIR)
        if name.endswith(".py") and not name.startswith("_")
    )


def recipe_path(name_or_path: str) -> str:
    """The file of a recipe given by name (one of :func:`recipe_names`) or by path.

    Raises:
        FileNotFoundError: naming the recipes there are, when there is no such recipe.
    """
    if name_or_path.endswith(".py") or os.sep in name_or_path:
        path = name_or_path
    else:
        path = os.path.join(RECIPES_DIR, f"{name_or_path}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No recipe {name_or_path!r}: give one of {', '.join(recipe_names())} "
            f"or the path of a recipe file."
        )
    return path


def base_config() -> ml_collections.ConfigDict:
    """The default profile: FCOS R-50-FPN 1x "w/ improvements" on COCO 2017 (38.6 AP).

    Returns:
        An unlocked ``ml_collections.ConfigDict`` with the sections ``backbone``, ``model``,
        ``locations``, ``pipeline``, ``data``, ``train``, ``eval`` and ``export``.
    """
    config = ml_collections.ConfigDict()

    # --- backbone (docs/design.md §3 item 1) -> builders.build_backbone --------------------
    config.backbone = backbone = ml_collections.ConfigDict()
    backbone.name = "resnet50"  # one of backbone.BACKBONES
    backbone.layout = "caffe"  # ResNet: "caffe" (stride in 1x1, MSRA) | "pytorch"
    backbone.freeze_at = 2  # ResNet: stem + stage 1 frozen
    backbone.bn_epsilon = 1e-5  # ResNet: norm epsilon (0: maskrcnn-benchmark's FrozenBN)
    backbone.alpha = 1.0  # MobileNet: width multiplier
    backbone.norm = "sync_bn"  # MobileNet: one of mobile_backbones.MOBILE_NORMS
    backbone.stem_channels = 16  # small backbone: channels of its two stride-2 stem convs
    # Optional path to backbone weights (.weights.h5); MobileNets also take "imagenet"
    # (keras.applications download) or a keras.applications "*_no_top*.h5" file.
    backbone.weights = ""

    # --- model (items 2-6, 13-18) -> FCOS(**config.model) ------------------------------------
    config.model = model = ml_collections.ConfigDict()
    model.fpn_channels = 256
    model.p6_input = "p5"  # "p5" (improved) | "c5" (paper's original)
    model.head_num_convs = 4
    model.head_norm = "group"  # "group" | "none" | "bn" | "sync_bn" (edge profile)
    model.head_num_groups = 32
    model.centerness_on = "regression"  # "regression" | "classification" | "none"
    model.norm_reg_targets = True  # relu(s*x)*stride instead of exp(s*x)
    model.box_loss = "giou"  # "giou" | "iou"
    model.focal_alpha = 0.25
    model.focal_gamma = 2.0
    model.score_threshold = 0.05
    model.score_threshold_on = "class"
    model.pre_nms_top_k = 1000
    model.nms_iou_threshold = 0.6
    model.max_detections = 100
    model.box_plus_one = False  # maskrcnn-benchmark boxes: clip to size - 1, NMS "+1" widths
    model.clip_after_nms = False  # detectron2: NMS unclipped, then clip and drop empty boxes

    # --- locations (items 7-9, 18): read by the targets AND the decoding ----------------------
    config.locations = locations = ml_collections.ConfigDict()
    locations.strides = location_defaults.STRIDES
    locations.size_ranges = location_defaults.SIZE_RANGES
    locations.center_sampling_radius = 1.5  # 0 turns center sampling off
    locations.location_offset = location_defaults.DEFAULT_LOCATION_OFFSET
    locations.location_grid = location_defaults.DEFAULT_LOCATION_GRID  # "paper" | "torchvision"

    # --- pipeline (items 10-12, 20) -> PipelineConfig(**config.pipeline) ----------------------
    config.pipeline = pipeline = ml_collections.ConfigDict()
    pipeline.train_short_side = (800, 800)  # inclusive range of the random short side
    pipeline.eval_short_side = 800
    pipeline.max_size = 1333  # long side at most
    pipeline.size_divisibility = 32
    pipeline.hflip_prob = 0.5
    pipeline.pixel_norm = "caffe"  # must match the backbone weights
    pipeline.resize_rounding = "round"  # "round" | "floor" (torchvision's resize)
    pipeline.max_boxes = 100  # M: ground-truth rows per image after padding
    pipeline.shuffle_buffer = 1000
    pipeline.cache = False  # cache decoded reader examples in memory
    pipeline.deterministic = False  # element order independent of thread timing
    pipeline.seed = 0

    # --- data: the reader; each subsection holds its reader's arguments -----------------------
    config.data = data = ml_collections.ConfigDict()
    data.dataset = "coco"  # one of builders.DATASETS
    data.coco = coco = ml_collections.ConfigDict()
    coco.root = "/data/coco"  # holds train2017/, val2017/, annotations/
    coco.train_images = "train2017"  # relative to root unless absolute
    coco.train_annotations = "annotations/instances_train2017.json"
    coco.val_images = "val2017"
    coco.val_annotations = "annotations/instances_val2017.json"
    data.tfds = tfds = ml_collections.ConfigDict()
    tfds.name = "coco/2017"
    tfds.data_dir = ""  # "" = TFDS default (~/tensorflow_datasets)
    tfds.train_split = "train"
    tfds.val_split = "validation"
    # Pascal VOC (fcos_tf.data.voc.read_voc): Annotations/, JPEGImages/, ImageSets/Main/.
    data.voc = voc = ml_collections.ConfigDict()
    voc.root = "/data/VOCdevkit/VOC2012"
    voc.train_split = "train"  # ImageSets/Main/<split>.txt
    voc.val_split = "val"
    voc.class_names = ()  # () = the 20 VOC classes (or the names found when others)
    # YOLO txt (fcos_tf.data.yolo.read_yolo): images/<split>/, labels/<split>/.
    data.yolo = yolo = ml_collections.ConfigDict()
    yolo.root = "/data/yolo"
    yolo.train_split = "train"
    yolo.val_split = "val"
    yolo.class_names = ()  # () = from <root>/data.yaml or <root>/classes.txt
    # Sharded TFRecords (fcos_tf.data.tfrecord.read_tfrecord), e.g. fcos-convert-dataset's.
    data.tfrecord = tfrecord = ml_collections.ConfigDict()
    tfrecord.train_file_pattern = ""  # e.g. /data/records/train-*-of-*.tfrecord or gs://...
    tfrecord.val_file_pattern = ""
    tfrecord.class_names = ()  # () = label_map_file
    tfrecord.label_map_file = ""  # "" = label_map.json beside the files
    tfrecord.check_records = True  # read every record once at start (checks, counts)
    data.synthetic = synthetic = ml_collections.ConfigDict()
    synthetic.num_train = 512
    synthetic.num_val = 64
    synthetic.seed = 0
    synthetic.image_size = (128, 128)  # (H, W)
    synthetic.num_objects = (1, 8)  # (min, max) objects per image
    synthetic.min_object_size = 6  # pixels
    synthetic.noise_std = (0.0, 12.0)
    synthetic.max_occlusion = 0.5  # fraction of an object another may hide
    synthetic.max_object_fraction = 0.95  # largest object side / image side

    # --- train (item 19) ----------------------------------------------------------------------
    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 16  # global batch, split over all replicas
    train.base_lr = 0.01  # at reference_batch_size
    train.reference_batch_size = 16  # lr = base_lr * batch_size / reference_batch_size
    train.momentum = 0.9
    train.weight_decay = 1e-4  # L2, not on biases and norm parameters
    train.bias_lr_factor = 2.0
    train.warmup_steps = 500
    train.warmup_factor = 1.0 / 3.0
    train.warmup_method = "constant"
    train.total_steps = 90_000
    train.lr_steps = (60_000, 80_000)
    train.lr_gamma = 0.1
    # 0 = no clipping. Keras clips before the cross-replica sum, so with several replicas
    # each replica's share of the gradient is clipped to this norm.
    train.clip_global_norm = 0.0
    train.precision = "float32"
    train.jit_compile = False  # XLA for the train step
    train.strategy = "auto"  # auto: mirrored on >1 GPU, multi_worker with TF_CONFIG
    train.devices = ()  # for "mirrored": e.g. ("/gpu:0", "/gpu:1"); () = all
    # TensorFlow's CPU thread pools, set by fcos-train before TensorFlow starts
    # (builders.apply_thread_pools); 0 = TensorFlow's choice (every op on all cores);
    # intra_op_threads = -1: the cores of the machine shared among the inter-op threads.
    train.intra_op_threads = 0
    train.inter_op_threads = 0
    # On resume: "replay" skips the batches already seen (exact continuation; replays the
    # input pipeline, fine for small datasets), "reshuffle" starts a fresh shuffle seeded by
    # the step (no replay cost; step, weights, optimizer state and schedule still exact).
    train.resume = "reshuffle"
    train.steps_per_epoch = 1000  # progress-bar unit; also the TensorBoard interval
    train.checkpoint_every = 5000
    train.keep_checkpoints = 3
    train.log_every = 20  # TensorBoard step scalars
    train.seed = 0

    # --- eval ---------------------------------------------------------------------------------
    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.batch_size = 8
    evaluation.num_images = 0  # 0 = the whole validation split
    evaluation.num_visualize = 4  # images drawn into <workdir>/detections.png
    evaluation.visualize_score_threshold = 0.3

    # --- export (read by fcos-export) -----------------------------------------------
    config.export = export = ml_collections.ConfigDict()
    export.input_size = (800, 1344)  # fixed (H, W) of the TFLite graph
    export.tflite_max_detections = 100
    export.representative_images = 100
    return config


def load_recipe(name_or_path: str) -> ml_collections.ConfigDict:
    """The ``get_config()`` of a recipe file.

    Args:
        name_or_path: a recipe of ``fcos_tf/configs/`` by name (``"fcos_torchvision_r50"``) or the
            path of a recipe file.

    Raises:
        FileNotFoundError: naming the path when there is no such file.
    """
    path = recipe_path(name_or_path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _fail(key, message):
    raise ValueError(f"config.{key}: {message}")


def _get(config, key):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


@contextlib.contextmanager
def _keys_of(config, sections):
    """Turns a constructor's ```name` must be ...`` into ``config.<section>.name: must be ...``,
    the section being the first of ``sections`` that holds the key."""
    try:
        yield
    except ValueError as error:
        match = re.match(r"`(\w+)` (.*)", str(error), re.DOTALL)
        if match is None:
            raise
        name, message = match.groups()
        section = next((s for s in sections if name in config[s]), sections[0])
        _fail(f"{section}.{name}", message.rstrip("."))


def _check_choice(config, key, choices):
    value = _get(config, key)
    if value not in choices:
        _fail(key, f"{value!r} is not one of {tuple(choices)}")


def validate_config(
    config: ml_collections.ConfigDict,
    num_replicas: int = 1,
    *,
    mode: str = "train_and_eval",
    check_paths: bool = True,
) -> None:
    """Fails with a clear ``ValueError`` on impossible values; returns nothing.

    Args:
        config: the ``ConfigDict`` of a recipe (after command-line overrides).
        num_replicas: number of replicas of the distribution strategy in use; the global
            batch must split evenly over them.
        mode: "train_and_eval" | "train" | "eval": which dataset splits must exist.
        check_paths: whether to check that the configured dataset files exist.

    Raises:
        ValueError: naming the offending key (``config.train.batch_size: ...``).
    """
    # The modules that define the allowed values; imported here, not at the top, so that
    # loading a recipe (and parsing a command line) needs no TensorFlow.
    from fcos_tf.core import builders
    from fcos_tf.modeling import backbone as backbone_lib
    from fcos_tf.modeling import fcos as model_lib
    from fcos_tf.training import distribution, optimization

    for key, choices in (
        ("backbone.name", backbone_lib.BACKBONES),
        ("data.dataset", builders.DATASETS),
        ("train.strategy", distribution.STRATEGIES),
        ("train.precision", optimization.PRECISIONS),
        ("train.warmup_method", optimization.WARMUP_METHODS),
        ("train.resume", builders.RESUME_MODES),
    ):
        _check_choice(config, key, choices)

    train, model = config.train, config.model
    positive_ints = (
        ("train.batch_size", train.batch_size),
        ("train.reference_batch_size", train.reference_batch_size),
        ("train.total_steps", train.total_steps),
        ("train.steps_per_epoch", train.steps_per_epoch),
        ("train.checkpoint_every", train.checkpoint_every),
        ("train.keep_checkpoints", train.keep_checkpoints),
        ("train.log_every", train.log_every),
        ("eval.batch_size", config.eval.batch_size),
    )
    for key, value in positive_ints:
        if not isinstance(value, int) or value <= 0:
            _fail(key, f"must be a positive integer, got {value!r}")
    for key in ("intra_op_threads", "inter_op_threads"):
        value = train[key]
        lowest = -1 if key == "intra_op_threads" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            _fail(
                f"train.{key}",
                f"must be an integer >= {lowest} (0: TensorFlow's"
                + ("; -1: the cores shared among the inter-op threads" if lowest else "")
                + f"), got {value!r}",
            )
    if train.batch_size % num_replicas:
        _fail(
            "train.batch_size",
            f"the global batch {train.batch_size} does not split evenly over "
            f"{num_replicas} replicas; use a multiple of {num_replicas}",
        )
    if not train.base_lr > 0 or not math.isfinite(train.base_lr):
        _fail("train.base_lr", f"must be a positive number, got {train.base_lr!r}")
    if train.weight_decay < 0:
        _fail("train.weight_decay", f"must be >= 0, got {train.weight_decay!r}")
    if not 0.0 <= train.momentum < 1.0:
        _fail("train.momentum", f"must be in [0, 1), got {train.momentum!r}")
    if not 0.0 < train.warmup_factor <= 1.0:
        _fail("train.warmup_factor", f"must be in (0, 1], got {train.warmup_factor!r}")
    if train.warmup_steps < 0:
        _fail("train.warmup_steps", f"must be >= 0, got {train.warmup_steps!r}")
    steps = tuple(train.lr_steps)
    if list(steps) != sorted(steps) or any(s <= 0 for s in steps):
        _fail("train.lr_steps", f"must be positive and increasing, got {steps!r}")
    late = [s for s in steps if s >= train.total_steps]
    if late:
        # A shortened run (e.g. --config.train.total_steps=40 to try a recipe) is allowed.
        logging.warning(
            "config.train.lr_steps: the decay step(s) %s come at or after "
            "train.total_steps=%d and have no effect.",
            ", ".join(map(str, late)),
            train.total_steps,
        )
    if train.clip_global_norm < 0:
        _fail("train.clip_global_norm", f"must be >= 0 (0 = off), got {train.clip_global_norm!r}")
    # The sections that feed one constructor are checked by it (PipelineConfig, FCOS), with
    # its argument named as the key it comes from.
    with _keys_of(config, ("pipeline", "locations")):
        builders.build_pipeline_config(config, train.batch_size)
    with _keys_of(config, ("model", "locations")):
        model_lib.check_arguments(**model, **config.locations)
    data = config.data
    if data.dataset == "synthetic":
        size = tuple(data.synthetic.image_size)
        if len(size) != 2 or any(not isinstance(v, int) or v <= 0 for v in size):
            _fail("data.synthetic.image_size", f"must be (H, W) positive ints, got {size!r}")
        for key in ("num_train", "num_val"):
            if not isinstance(data.synthetic[key], int) or data.synthetic[key] <= 0:
                _fail(
                    f"data.synthetic.{key}",
                    f"must be a positive integer, got {data.synthetic[key]!r}",
                )
    if check_paths and data.dataset == "coco":
        paths = builders.coco_paths(data.coco)
        needed = [] if mode == "eval" else ["train_images", "train_annotations"]
        needed += [] if mode == "train" else ["val_images", "val_annotations"]
        for name in needed:
            if not os.path.exists(paths[name]):
                _fail(
                    f"data.coco.{name}",
                    f"{paths[name]} does not exist (set config.data."
                    f"coco.root or config.data.coco.{name} to where COCO 2017 lies)",
                )
    if data.dataset in ("voc", "yolo", "tfrecord"):
        _validate_files_dataset(data, mode, check_paths)
    if check_paths and data.dataset == "tfds" and data.tfds.data_dir:
        if not os.path.isdir(data.tfds.data_dir):
            _fail("data.tfds.data_dir", f"{data.tfds.data_dir} is not a directory")
    _validate_backbone(config)


def _validate_files_dataset(data, mode, check_paths):
    """The keys of config.data.voc, .yolo or .tfrecord (the files of the splits ``mode`` needs)."""
    import tensorflow as tf

    name = data.dataset
    section = data[name]
    names = tuple(section.class_names)
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        _fail(f"data.{name}.class_names", f"must be distinct non-empty strings, got {names!r}")
    splits = [] if mode == "eval" else ["train"]
    splits += [] if mode == "train" else ["val"]
    if name == "tfrecord":
        for split in splits:
            key = f"{split}_file_pattern"
            pattern = section[key]
            if not pattern:
                _fail(f"data.tfrecord.{key}", "is empty: set the TFRecord files of the split")
            if check_paths and not tf.io.gfile.glob(pattern):
                _fail(f"data.tfrecord.{key}", f"no file matches {pattern!r}")
        label_map_file = section.label_map_file
        if check_paths and label_map_file and not tf.io.gfile.exists(label_map_file):
            _fail("data.tfrecord.label_map_file", f"{label_map_file} does not exist")
        return
    if not check_paths:
        return
    if not tf.io.gfile.isdir(section.root):
        _fail(f"data.{name}.root", f"{section.root} is not a directory")
    for split in splits:
        value = section[f"{split}_split"]
        if name == "voc":
            path = os.path.join(section.root, "ImageSets", "Main", f"{value}.txt")
            exists = tf.io.gfile.exists(path)
        else:
            path = os.path.join(section.root, "images", value)
            exists = tf.io.gfile.isdir(path)
        if not exists:
            _fail(f"data.{name}.{split}_split", f"{path} does not exist")


def _validate_backbone(config):
    from fcos_tf.modeling import mobilenet as mobile_backbones
    from fcos_tf.modeling import mobilenet_fcos

    backbone = config.backbone
    mobile = backbone.name in mobile_backbones.MOBILE_BACKBONES
    if mobile and tuple(config.locations.strides)[0] == 4:
        _fail(
            "locations.strides",
            f"a P2 level (stride 4) needs C2, which {backbone.name} does not return; use a "
            "ResNet or the small backbone",
        )
    if mobile or backbone.name == mobilenet_fcos.MOBILENET_V2_FCOS:
        _check_choice(config, "backbone.norm", mobile_backbones.MOBILE_NORMS)
        if not isinstance(backbone.alpha, (int, float)) or not backbone.alpha > 0:
            _fail("backbone.alpha", f"must be a positive number, got {backbone.alpha!r}")
    if backbone.name == "small":
        stem = backbone.stem_channels
        if isinstance(stem, bool) or not isinstance(stem, int) or stem <= 0 or stem % 8:
            _fail(
                "backbone.stem_channels",
                f"must be a positive multiple of 8 (the small backbone's GroupNorm groups), "
                f"got {stem!r}",
            )
    if backbone.weights == "imagenet":
        if not mobile:
            _fail(
                "backbone.weights",
                f"'imagenet' (a keras.applications download) is for "
                f"{mobile_backbones.MOBILE_BACKBONES}; {backbone.name} takes a weights file",
            )
        return  # downloaded (or found in ~/.keras/models) when the backbone is built
    if backbone.weights and not os.path.exists(backbone.weights):
        _fail("backbone.weights", f"{backbone.weights} does not exist")
