"""Config -> objects: the only module that reads a recipe's ``ConfigDict``.

Each section of the config (see :mod:`fcos_tf.core.config`) holds the keyword arguments of the
part it builds, under the argument's own name, so a section is passed on with ``**`` and
nothing is renamed on the way:

=========================  ===================================================================
builder                    reads
=========================  ===================================================================
:func:`build_backbone`     ``config.backbone`` -> :func:`fcos_tf.modeling.backbone.build_backbone`
:func:`build_model`        ``config.model`` -> :class:`fcos_tf.modeling.fcos.FCOS`, plus ``strides``
                           and ``location_offset`` from ``config.locations``
:func:`build_pipeline_config`  ``config.pipeline`` and ``config.locations`` ->
                           :class:`fcos_tf.data.pipeline.PipelineConfig`
:func:`read_split`         ``config.data`` -> a reader of :mod:`fcos_tf.data`
:func:`build_train_dataset`, :func:`build_eval_dataset`  the two pipelines of a run
:func:`build_optimizer`    ``config.train`` -> ``DetectionSGD`` on a ``WarmupStepSchedule``
:func:`build_strategy`     ``config.train.strategy``, ``config.train.devices``
:func:`build_serving_config`  ``config.pipeline`` -> :class:`fcos_tf.serving.graph.ServingConfig`
=========================  ===================================================================

``config.locations`` holds what target assignment and decoding must agree on (strides, size
ranges, center sampling radius, location offset): the pipeline's targets and the model's
decoding both read it here, so the two can never drift apart.

The heavy modules are imported inside the builders, so that importing this module (as the
config validation does, for the allowed values) stays cheap.
"""

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap

# Values of config.data.dataset: the readers read_split knows.
DATASETS = ("synthetic", "coco", "tfds", "voc", "yolo", "tfrecord")
# Values of config.train.resume (see build_train_dataset).
RESUME_MODES = ("replay", "reshuffle")
# Labels the train step uses (see fcos_tf.modeling.fcos.FCOS.train_step).
TRAIN_LABEL_KEYS = ("class_targets", "box_targets", "centerness_targets")
# The arguments of config.backbone (besides name and weights) each backbone family takes.
_BACKBONE_ARGS = {
    "resnet": ("layout", "freeze_at", "bn_epsilon"),
    "mobilenet": ("alpha", "norm"),
    "small": ("stem_channels",),
}

Config = ml_collections.ConfigDict


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dtype_policy(name: str):
    """Context: layers created inside it take the Keras dtype policy ``name``.

    ``name`` is ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``. The global
    policy is what a layer reads when it is created; the previous one is restored on exit,
    also on an error, so a model built later in the same process gets its own.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_backbone(backbone_config: Config, *, load_weights: bool = True, min_level: int = 3):
    """The backbone of ``config.backbone``, with its weights file loaded when one is set.

    Args:
        backbone_config: ``config.backbone``: ``name`` (one of
            :data:`fcos_tf.modeling.backbone.BACKBONES`), ``weights`` (path or ""; the MobileNets
            also take ``"imagenet"``), the ResNet arguments ``layout``, ``freeze_at``,
            ``bn_epsilon`` and the
            :class:`fcos_tf.modeling.mobilenet.MobileNetBackbone` arguments ``alpha``, ``norm``,
            the small backbone's ``stem_channels``; each family gets its own arguments only.
        load_weights: read ``weights`` (False when a checkpoint will set every weight).
        min_level: 2 also returns C2 (ResNet and the small backbone; for ``config.locations``
            strides from 4), 3 (default) does not.

    Returns:
        A ``keras.Model`` mapping float32 ``[B, H, W, 3]`` to ``[C3, C4, C5]`` (``[C2, ...]``
        with ``min_level=2``).
    """
    from fcos_tf.modeling import backbone as backbone_lib

    name = backbone_config.name
    weights = backbone_config.get("weights", "")
    # An unknown name gets no arguments and fails in backbone_lib.build_backbone.
    family = next((f for f in _BACKBONE_ARGS if name.startswith(f)), None)
    options = {key: backbone_config[key] for key in _BACKBONE_ARGS.get(family, ())}
    if family == "mobilenet":
        # keras.applications loads its ImageNet weights ("imagenet" or its own .h5 file)
        # while it builds the trunk.
        return backbone_lib.build_backbone(
            name, **options, weights=(weights or None) if load_weights else None
        )
    if min_level != 3:
        options["min_level"] = min_level
    backbone = backbone_lib.build_backbone(name, **options)
    if weights and load_weights:
        backbone.load_weights(weights)
    return backbone


def build_model(config: Config, num_classes: int, *, load_backbone_weights: bool = True):
    """An ``FCOS`` built from ``config.backbone``, ``config.model`` and ``config.locations``.

    Args:
        config: the recipe.
        num_classes: K, from the dataset's label map.
        load_backbone_weights: read ``config.backbone.weights`` (False when restoring a
            checkpoint, which holds every weight).

    Returns:
        A built ``fcos_tf.modeling.fcos.FCOS`` decoding with ``config.locations``' strides, offset
        and grid.
    """
    from fcos_tf.modeling.fcos import FCOS

    backbone = build_backbone(
        config.backbone,
        load_weights=load_backbone_weights,
        min_level=2 if config.locations.strides[0] == 4 else 3,
    )
    model = FCOS(
        backbone,
        num_classes,
        **config.model,
        strides=tuple(config.locations.strides),
        location_offset=config.locations.location_offset,
        location_grid=config.locations.location_grid,
    )
    model.build((None, None, None, 3))
    return model


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def build_pipeline_config(config: Config, batch_size: int):
    """The ``PipelineConfig`` of ``config.pipeline`` with the targets of ``config.locations``.

    Args:
        config: the recipe.
        batch_size: global batch (``config.train.batch_size`` or ``config.eval.batch_size``).

    Returns:
        A :class:`fcos_tf.data.pipeline.PipelineConfig`.
    """
    from fcos_tf.data.pipeline import PipelineConfig

    locations = config.locations
    pipeline = dict(config.pipeline)
    pipeline["train_short_side"] = tuple(pipeline["train_short_side"])
    return PipelineConfig(
        batch_size=batch_size,
        **pipeline,
        strides=tuple(locations.strides),
        size_ranges=tuple(tuple(r) for r in locations.size_ranges),
        center_sampling_radius=locations.center_sampling_radius,
        location_offset=locations.location_offset,
        location_grid=locations.location_grid,
    )


def coco_paths(coco_config: Config) -> dict[str, str]:
    """Absolute paths of the COCO image folders and annotation files of ``config.data.coco``.

    Returns:
        dict with ``"train_images"``, ``"train_annotations"``, ``"val_images"``,
        ``"val_annotations"`` (relative entries are taken relative to ``root``).
    """

    def resolve(path):
        return path if os.path.isabs(path) else os.path.join(coco_config.root, path)

    return {
        key: resolve(coco_config[key])
        for key in ("train_images", "train_annotations", "val_images", "val_annotations")
    }


def read_split(config: Config, split: str) -> ReadResult:
    """Reader examples of ``split`` ("train" | "val") of ``config.data`` as a ``ReadResult``."""
    if split not in ("train", "val"):
        raise ValueError(f"`split` must be 'train' or 'val', got {split!r}.")
    data = config.data
    if data.dataset == "synthetic":
        from fcos_tf.data import synthetic

        options = dict(data.synthetic)
        num_train, num_val = options.pop("num_train"), options.pop("num_val")
        options = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in options.items()}
        if split == "val":
            # The validation images are another seed's: never seen in training.
            options["seed"] += 1_000_003
        return synthetic.synthetic_dataset(num_train if split == "train" else num_val, **options)
    if data.dataset == "coco":
        from fcos_tf.data.coco import read_coco

        paths = coco_paths(data.coco)
        return read_coco(paths[f"{split}_annotations"], paths[f"{split}_images"], decode=False)
    if data.dataset == "tfds":
        from fcos_tf.data import tfds as tfds_reader

        return tfds_reader.read_tfds(
            data.tfds.name, split=data.tfds[f"{split}_split"], data_dir=data.tfds.data_dir or None
        )
    if data.dataset in ("voc", "yolo", "tfrecord"):
        return _read_files_dataset(data, split)
    raise ValueError(f"config.data.dataset: {data.dataset!r} is not one of {DATASETS}")


def _read_files_dataset(data: Config, split: str) -> ReadResult:
    """``read_split`` of ``config.data.voc``, ``.yolo`` or ``.tfrecord``.

    Both splits get the same label map: the one the section fixes (``class_names``, the YOLO
    folder's names, the TFRecords' label map) or, for VOC without ``class_names``, the one of
    the training split's XML files.
    """
    section = data[data.dataset]
    class_names = tuple(section.class_names)
    if data.dataset == "tfrecord":
        from fcos_tf.data.tfrecord import read_tfrecord

        return read_tfrecord(
            section[f"{split}_file_pattern"],
            class_names=class_names,
            label_map_file=section.label_map_file,
            decode=False,
            check_records=section.check_records,
            # make_pipeline shards its batches by element, which AUTO comes to: a FILE
            # policy here would be changed to DATA there, with tf.data's warning.
            shard_by_file=False,
        )
    if data.dataset == "yolo":
        from fcos_tf.data.yolo import read_yolo

        return read_yolo(
            section.root, section[f"{split}_split"], class_names=class_names, decode=False
        )
    from fcos_tf.data import voc

    label_map = None
    if split == "val" and not class_names:
        label_map = voc.split_label_map(section.root, section.train_split)
    return voc.read_voc(
        section.root,
        section[f"{split}_split"],
        class_names=class_names,
        label_map=label_map,
        decode=False,
    )


def dataset_label_map(data_config: Config) -> LabelMap:
    """The label map of ``config.data``'s dataset without reading it (for a bare checkpoint).

    Raises:
        ValueError: when the dataset's categories are only known from its files.
    """
    if data_config.dataset == "synthetic":
        from fcos_tf.data import synthetic

        return synthetic.label_map()
    if data_config.dataset in ("voc", "yolo", "tfrecord"):
        class_names = tuple(data_config[data_config.dataset].class_names)
        if class_names:
            # The readers' category ids: YOLO's class numbers, 1..K for VOC and TFRecord.
            return LabelMap.from_names(class_names, first_id=int(data_config.dataset != "yolo"))
        if data_config.dataset == "yolo":
            from fcos_tf.data.yolo import class_names_of

            return LabelMap.from_names(class_names_of(data_config.yolo.root))
    if data_config.dataset == "coco" or (
        data_config.dataset == "tfds" and data_config.tfds.name.startswith("coco/2017")
    ):
        return LabelMap.coco_2017()
    raise ValueError(
        f"No label map for dataset {data_config.dataset!r}: pass `label_map` or a "
        f"workdir holding label_map.json."
    )


def resume_seed(seed: int, step: int) -> int:
    """Seed of the fresh input stream of a run resumed at ``step`` (``train.resume="reshuffle"``).

    Derived with SHA-256, so it is the same in every process (Python's ``hash`` of a tuple
    is not, across interpreters and versions).

    Returns:
        int in ``[0, 2**31)``.
    """
    digest = hashlib.sha256(f"fcos_tf.resume:{int(seed)}:{int(step)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31)


def build_train_dataset(
    config: Config, examples: tf.data.Dataset
) -> Callable[[int], tf.data.Dataset]:
    """``start_step -> dataset`` of training batches (global batch) for ``training.fit``.

    Args:
        config: the recipe (``pipeline``, ``locations``, ``train.batch_size``,
            ``train.resume``).
        examples: reader examples (``read_split(config, "train").dataset``).

    Returns:
        A function of the first step returning an infinite dataset of ``(images, targets)``
        whose first batch is the batch of that step: with ``train.resume="replay"`` the batches
        already seen are produced again and dropped, with ``"reshuffle"`` a fresh stream seeded
        by :func:`resume_seed` starts at once.
    """
    from fcos_tf.data.pipeline import make_pipeline

    pipeline_config = build_pipeline_config(config, config.train.batch_size)
    resume = config.train.resume

    def targets_only(images, labels):
        # The train step reads only the targets. Dropping the rest also keeps Keras' first
        # batch under a strategy (averaged over replicas to build the model) free of bools.
        return images, {key: labels[key] for key in TRAIN_LABEL_KEYS}

    def pipeline(start_step):
        if resume == "replay" or start_step == 0:
            dataset = make_pipeline(examples, training=True, config=pipeline_config)
            # Exact continuation: the batches of steps 0..start_step-1 are produced and
            # dropped (input pipeline only, no model compute).
            return dataset.skip(start_step) if start_step else dataset
        # A fresh, still deterministic stream for this resume point.
        return make_pipeline(
            examples,
            training=True,
            config=pipeline_config,
            seed=resume_seed(pipeline_config.seed or 0, start_step),
        )

    def dataset_fn(start_step):
        # Built inside flat_map, the pipeline's seeded shuffle and augmentation seeds start
        # afresh for every iterator: Keras iterates a dataset once more under a strategy
        # (to build the model), and a reshuffling dataset object would otherwise give that
        # second iterator another order than a single-device run or a resumed run sees.
        dataset = tf.data.Dataset.range(1).flat_map(
            tf.autograph.experimental.do_not_convert(lambda _: pipeline(start_step))
        )
        return dataset.map(tf.autograph.experimental.do_not_convert(targets_only))

    return dataset_fn


def build_eval_dataset(config: Config, examples: tf.data.Dataset) -> tf.data.Dataset:
    """Validation batches of ``config.eval.batch_size`` (no flip, fixed short side, once)."""
    from fcos_tf.data.pipeline import make_pipeline

    pipeline_config = build_pipeline_config(config, config.eval.batch_size)
    return make_pipeline(
        examples,
        training=False,
        config=pipeline_config,
        repeat=False,
        shuffle_buffer=0,
        deterministic=True,
    )


# --------------------------------------------------------------------------------------------
# Optimization and distribution
# --------------------------------------------------------------------------------------------


def build_optimizer(config: Config):
    """The optimizer of ``config.train``: ``DetectionSGD`` on a ``WarmupStepSchedule``.

    The learning rate is ``base_lr * batch_size / reference_batch_size``; with mixed
    float16 the optimizer is wrapped in a ``LossScaleOptimizer``.
    """
    import keras

    from fcos_tf.training import optimization

    train = config.train
    lr = optimization.scaled_learning_rate(
        train.base_lr, train.batch_size, train.reference_batch_size
    )
    schedule = optimization.WarmupStepSchedule(
        lr,
        boundaries=tuple(train.lr_steps),
        gamma=train.lr_gamma,
        warmup_steps=train.warmup_steps,
        warmup_factor=train.warmup_factor,
        warmup_method=train.warmup_method,
    )
    optimizer = optimization.DetectionSGD(
        schedule,
        momentum=train.momentum,
        l2=train.weight_decay,
        bias_lr_factor=train.bias_lr_factor,
        global_clipnorm=train.clip_global_norm or None,
    )
    if train.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_thread_pools(config: Config) -> bool:
    """Sizes TensorFlow's CPU thread pools as ``config.train`` says (before any TF op).

    ``intra_op_threads = -1`` shares the cores this process may use among the inter-op
    threads (``cores // inter_op_threads``, at least 1), so that a recipe says how to use a
    machine without naming its core count.

    Returns:
        False when TensorFlow had started with other sizes (see
        ``distribution.set_thread_pools``).
    """
    from fcos_tf.training import distribution

    intra_op, inter_op = config.train.intra_op_threads, config.train.inter_op_threads
    if intra_op == -1:
        intra_op = max(1, distribution.available_cores() // max(1, inter_op))
    return distribution.set_thread_pools(intra_op, inter_op)


def build_strategy(config: Config) -> tf.distribute.Strategy:
    """The distribution strategy of ``config.train`` (``strategy``, ``devices``)."""
    from fcos_tf.training import distribution

    return distribution.select_strategy(config.train.strategy, tuple(config.train.devices))


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def build_serving_config(config: Config):
    """The in-graph preprocessing of the export: the evaluation pipeline of ``config.pipeline``.

    Returns:
        A :class:`fcos_tf.serving.graph.ServingConfig`.
    """
    from fcos_tf.serving.graph import ServingConfig

    fields = {field.name for field in dataclasses.fields(ServingConfig)}
    return ServingConfig(**{key: value for key, value in config.pipeline.items() if key in fields})


def build_representative_images(config: Config, count: int | None = None) -> list[np.ndarray]:
    """Training images resized and padded to the TFLite input, for int8 calibration.

    Args:
        config: the recipe; ``config.export.input_size`` is the TFLite input.
        count: number of images (default ``config.export.representative_images``).

    Returns:
        uint8 ``[1, H, W, 3]`` arrays.
    """
    from fcos_tf.data import transforms
    from fcos_tf.serving import tflite_client

    serving = build_serving_config(config)
    count = int(config.export.representative_images) if count is None else int(count)
    images = []
    for example in read_split(config, "train").dataset.take(count):
        # COCO examples carry the encoded file, the others the decoded pixels.
        image = (
            example["image"]
            if "image" in example
            else transforms.decode_image(example["image_bytes"])
        )
        images.append(
            tflite_client.tflite_input(image.numpy(), tuple(config.export.input_size), serving)[0]
        )
    return images
