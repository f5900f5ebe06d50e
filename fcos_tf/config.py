"""Shared pieces of the recipe files in ``configs/``: the default profile and its validation.

``base_config()`` is DESIGN.md §3 written out: the paper's "w/ improvements" ResNet-50 1x
recipe on COCO (Table 3, last row). Each ``configs/<recipe>.py`` starts from it, changes what
its recipe changes and returns the result. The config object is read only by the scripts
(``train.py``, ``export_savedmodel.py``), which unpack it into keyword arguments of the
builders; no layer ever sees it.

``validate_config()`` runs at the start of every script so that a typo or an impossible value
fails in the first second with a message naming the key, not an hour into a run. Unknown keys
are already refused by ``config_flags.DEFINE_config_file(..., lock_config=True)``; the checks
here are about values and their combinations.
"""

import math
import os

import ml_collections

# Values a few keys may take, defined once for the recipes and the validation.
BACKBONES = ("small", "resnet50", "resnet101", "mobilenet_v2", "mobilenet_v3_large")
DATASETS = ("synthetic", "coco", "tfds")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
WARMUP_METHODS = ("constant", "linear")
PIXEL_NORMS = ("caffe", "torchvision", "inception")


def base_config():
    """The default profile: FCOS R-50-FPN 1x "w/ improvements" on COCO 2017 (38.6 AP).

    Returns:
        An unlocked ``ml_collections.ConfigDict`` with the sections ``model``, ``data``,
        ``train``, ``eval`` and ``export``.
    """
    config = ml_collections.ConfigDict()

    # --- model (DESIGN.md §3 items 1-6, 13-18) ------------------------------------------------
    config.model = model = ml_collections.ConfigDict()
    model.backbone = "resnet50"
    model.backbone_layout = "caffe"        # "caffe" (stride in 1x1, MSRA weights) | "pytorch"
    model.backbone_freeze_at = 2           # stem + stage 1 frozen
    model.backbone_weights = ""            # optional path to backbone weights (.weights.h5)
    model.fpn_channels = 256
    model.p6_input = "p5"                  # "p5" (improved) | "c5" (paper's original)
    model.head_num_convs = 4
    model.head_norm = "group"              # "group" | "none"
    model.head_num_groups = 32
    model.centerness_on = "regression"     # "regression" | "classification" | "none"
    model.norm_reg_targets = True          # relu(s*x)*stride instead of exp(s*x)
    model.location_offset = 0.5
    model.box_loss = "giou"                # "giou" | "iou"
    model.focal_alpha = 0.25
    model.focal_gamma = 2.0
    model.score_threshold = 0.05
    model.score_threshold_on = "class"
    model.pre_nms_top_k = 1000
    model.nms_iou_threshold = 0.6
    model.max_detections = 100

    # --- data (items 7-12, 20) ----------------------------------------------------------------
    config.data = data = ml_collections.ConfigDict()
    data.dataset = "coco"
    data.coco_root = "/data/coco"          # holds train2017/, val2017/, annotations/
    data.train_images = "train2017"        # relative to coco_root unless absolute
    data.train_annotations = "annotations/instances_train2017.json"
    data.val_images = "val2017"
    data.val_annotations = "annotations/instances_val2017.json"
    data.tfds_name = "coco/2017"
    data.tfds_data_dir = ""                # "" = TFDS default (~/tensorflow_datasets)
    data.tfds_train_split = "train"
    data.tfds_val_split = "validation"
    data.synthetic_num_train = 512
    data.synthetic_num_val = 64
    data.synthetic_image_size = (128, 128)  # (H, W)
    data.synthetic_num_classes = 6
    data.synthetic_seed = 0
    data.synthetic_num_objects = (1, 8)    # (min, max) objects per image
    data.synthetic_min_object_size = 6     # pixels
    data.synthetic_noise_std = (0.0, 12.0)
    data.synthetic_max_occlusion = 0.5     # fraction of an object another may hide
    data.synthetic_max_object_fraction = 0.95  # largest object side / image side
    data.train_short_side = (800, 800)     # inclusive range of the random short side
    data.eval_short_side = 800
    data.max_size = 1333                   # long side at most
    data.size_divisibility = 32
    data.hflip_prob = 0.5
    data.pixel_norm = "caffe"              # must match the backbone weights
    data.max_boxes = 100                   # M: ground-truth rows per image after padding
    data.center_sampling_radius = 1.5      # 0 turns center sampling off
    data.shuffle_buffer = 1000
    data.cache = False                     # cache decoded reader examples in memory
    data.deterministic = False             # element order independent of thread timing
    # On resume: "replay" skips the batches already seen (exact continuation; replays the
    # input pipeline, fine for small datasets), "reshuffle" starts a fresh shuffle seeded by
    # the step (no replay cost; step, weights, optimizer state and schedule still exact).
    data.resume = "reshuffle"
    data.seed = 0

    # --- train (item 19) ----------------------------------------------------------------------
    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 16                  # global batch, split over all replicas
    train.base_lr = 0.01                   # at reference_batch_size
    train.reference_batch_size = 16        # lr = base_lr * batch_size / reference_batch_size
    train.momentum = 0.9
    train.weight_decay = 1e-4              # L2, not on biases and norm parameters
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
    train.jit_compile = False              # XLA for the train step
    train.strategy = "auto"                # auto: mirrored on >1 GPU, multi_worker with TF_CONFIG
    train.devices = ()                     # for "mirrored": e.g. ("/gpu:0", "/gpu:1"); () = all
    train.steps_per_epoch = 1000           # progress-bar unit; also the TensorBoard interval
    train.checkpoint_every = 5000
    train.keep_checkpoints = 3
    train.log_every = 20                   # TensorBoard step scalars
    train.seed = 0

    # --- eval ---------------------------------------------------------------------------------
    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.batch_size = 8
    evaluation.num_images = 0              # 0 = the whole validation split
    evaluation.num_visualize = 4           # images drawn into <workdir>/detections.png
    evaluation.visualize_score_threshold = 0.3

    # --- export (read by export_savedmodel.py) -----------------------------------------------
    config.export = export = ml_collections.ConfigDict()
    export.input_size = (800, 1344)        # fixed (H, W) of the TFLite graph
    export.tflite_max_detections = 100
    export.representative_images = 100
    return config


def num_classes(config):
    """Number of foreground classes K of the configured dataset (COCO: 80)."""
    if config.data.dataset == "synthetic":
        return config.data.synthetic_num_classes
    return 80


def _fail(key, message):
    raise ValueError(f"config.{key}: {message}")


def _check_choice(config, key, choices):
    section, name = key.split(".")
    value = config[section][name]
    if value not in choices:
        _fail(key, f"{value!r} is not one of {choices}")


def _resolve(root, path):
    return path if os.path.isabs(path) else os.path.join(root, path)


def dataset_paths(config):
    """Absolute paths of the COCO image folders and annotation files (train and val)."""
    data = config.data
    return {
        "train_images": _resolve(data.coco_root, data.train_images),
        "train_annotations": _resolve(data.coco_root, data.train_annotations),
        "val_images": _resolve(data.coco_root, data.val_images),
        "val_annotations": _resolve(data.coco_root, data.val_annotations),
    }


def validate_config(config, num_replicas=1, *, mode="train_and_eval", check_paths=True):
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
    for key, choices in (("model.backbone", BACKBONES), ("data.dataset", DATASETS),
                         ("train.strategy", STRATEGIES), ("train.precision", PRECISIONS),
                         ("train.warmup_method", WARMUP_METHODS),
                         ("data.pixel_norm", PIXEL_NORMS),
                         ("data.resume", ("replay", "reshuffle")),
                         ("model.p6_input", ("p5", "c5")),
                         ("model.head_norm", ("group", "none", "bn", "sync_bn")),
                         ("model.centerness_on", ("regression", "classification", "none")),
                         ("model.box_loss", ("giou", "iou")),
                         ("model.score_threshold_on", ("class", "final"))):
        _check_choice(config, key, choices)

    train, data, model = config.train, config.data, config.model
    positive_ints = (("train.batch_size", train.batch_size),
                     ("train.reference_batch_size", train.reference_batch_size),
                     ("train.total_steps", train.total_steps),
                     ("train.steps_per_epoch", train.steps_per_epoch),
                     ("train.checkpoint_every", train.checkpoint_every),
                     ("train.keep_checkpoints", train.keep_checkpoints),
                     ("train.log_every", train.log_every),
                     ("eval.batch_size", config.eval.batch_size),
                     ("data.max_size", data.max_size),
                     ("data.max_boxes", data.max_boxes),
                     ("data.size_divisibility", data.size_divisibility),
                     ("model.fpn_channels", model.fpn_channels),
                     ("model.max_detections", model.max_detections))
    for key, value in positive_ints:
        if not isinstance(value, int) or value <= 0:
            _fail(key, f"must be a positive integer, got {value!r}")
    if train.batch_size % num_replicas:
        _fail("train.batch_size",
              f"the global batch {train.batch_size} does not split evenly over "
              f"{num_replicas} replicas; use a multiple of {num_replicas}")
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
    if steps and steps[-1] >= train.total_steps:
        _fail("train.lr_steps", f"the last decay step {steps[-1]} is not before "
              f"train.total_steps={train.total_steps}")
    if train.clip_global_norm < 0:
        _fail("train.clip_global_norm", f"must be >= 0 (0 = off), got {train.clip_global_norm!r}")
    sizes = tuple(data.train_short_side)
    if (len(sizes) != 2 or any(not isinstance(s, int) or s <= 0 for s in sizes)
            or sizes[0] > sizes[1]):
        _fail("data.train_short_side", f"must be an inclusive range (low, high) of positive "
              f"integers, got {sizes!r}")
    if not isinstance(data.eval_short_side, int) or data.eval_short_side <= 0:
        _fail("data.eval_short_side", f"must be a positive integer, got {data.eval_short_side!r}")
    if not 0.0 <= data.hflip_prob <= 1.0:
        _fail("data.hflip_prob", f"must be a probability, got {data.hflip_prob!r}")
    if data.center_sampling_radius < 0:
        _fail("data.center_sampling_radius",
              f"must be >= 0 (0 = off), got {data.center_sampling_radius!r}")
    if not 0.0 <= model.score_threshold < 1.0:
        _fail("model.score_threshold", f"must be in [0, 1), got {model.score_threshold!r}")
    if not 0.0 < model.nms_iou_threshold <= 1.0:
        _fail("model.nms_iou_threshold",
              f"must be in (0, 1], got {model.nms_iou_threshold!r}")
    if data.dataset == "synthetic":
        size = tuple(data.synthetic_image_size)
        if len(size) != 2 or any(not isinstance(v, int) or v <= 0 for v in size):
            _fail("data.synthetic_image_size", f"must be (H, W) positive ints, got {size!r}")
        for key in ("synthetic_num_train", "synthetic_num_val", "synthetic_num_classes"):
            if not isinstance(data[key], int) or data[key] <= 0:
                _fail(f"data.{key}", f"must be a positive integer, got {data[key]!r}")
    if check_paths and data.dataset == "coco":
        paths = dataset_paths(config)
        needed = [] if mode == "eval" else ["train_images", "train_annotations"]
        needed += [] if mode == "train" else ["val_images", "val_annotations"]
        for name in needed:
            if not os.path.exists(paths[name]):
                _fail(f"data.{name}", f"{paths[name]} does not exist (set config.data."
                      f"coco_root or config.data.{name} to where COCO 2017 lies)")
    if check_paths and data.dataset == "tfds" and data.tfds_data_dir:
        if not os.path.isdir(data.tfds_data_dir):
            _fail("data.tfds_data_dir", f"{data.tfds_data_dir} is not a directory")
    if model.backbone_weights and not os.path.exists(model.backbone_weights) and not (
            model.backbone_weights == "imagenet" and model.backbone.startswith("mobilenet")):
        _fail("model.backbone_weights", f"{model.backbone_weights} does not exist")
