"""The tf.data pipeline: reader examples -> (images, labels) batches for ``model.fit``.

Per example (parallel map): decode (when the reader gave encoded bytes), random horizontal
flip (training), resize of the short side (random integer in a range when training, fixed
otherwise) under a long-side cap, box clipping and filtering, pixel normalisation, zero
padding to a multiple of 32 (or to a fixed ``pad_to``) and padding of the boxes to M rows.
Per batch: images are padded to the largest in the batch, then the FCOS targets are computed
for every image on the locations of the batch's padded size with
:func:`fcos_tf.ops.targets.compute_targets` (no assignment logic in the model, docs/design.md §3).

Output structure (contract of ``fcos_tf.data``)::

    images: float32 [B, Hp, Wp, 3], normalised and padded
    labels: {
        "class_targets": int32 [B, P], -1 background
        "box_targets": float32 [B, P, 4], ltrb pixels
        "centerness_targets": float32 [B, P]
        "matched_box_index": int32 [B, P], row of "boxes", -1 background
        "boxes": float32 [B, M, 4] xyxy network-input pixels, zero rows where classes == -1
        "classes": int32 [B, M], -1 padding
        "is_crowd": bool [B, M]
        "image_id": int64 [B]
        "original_size": int32 [B, 2] (H0, W0)
        "image_size": int32 [B, 2] valid (resized, unpadded) size; original boxes = boxes
            scaled by original_size / image_size per axis
    }

Crowd boxes: training batches drop them. Evaluation batches keep them in ``boxes`` with
``is_crowd`` True (so a COCO ground truth can be rebuilt from the batches) but they never
produce targets.
"""

import dataclasses
import warnings

import tensorflow as tf

from fcos_tf.data import transforms
from fcos_tf.ops import locations as loc
from fcos_tf.ops.targets import compute_targets

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Options of :func:`make_pipeline`; the defaults are the paper's (docs/design.md §3).

    The field names are the keys of ``config.pipeline`` (the sizes, augmentation and
    reading options) and ``config.locations`` (target assignment), so that
    :func:`fcos_tf.core.builders.build_pipeline_config` passes those sections on unchanged.

    Attributes:
        batch_size: images per batch (global batch under a distribution strategy).
        train_short_side: inclusive range ``(low, high)`` of the random short side when
            training.
        eval_short_side: short side at evaluation.
        max_size: cap on the long side after resizing (None: no cap).
        hflip_prob: probability of a horizontal flip when training.
        pixel_norm: one of ``transforms.PIXEL_NORMS`` (see ``transforms.normalize_image``).
        resize_rounding: ``"round"`` or ``"floor"`` (torchvision's), see
            ``transforms.resize_size``.
        size_divisibility: padded sides are multiples of it.
        pad_to: optional fixed padded size ``(H, W)`` for static shapes (XLA, TFLite).
        max_boxes: M, ground-truth rows per image (extra boxes are dropped, in order).
        strides, size_ranges, center_sampling_radius, location_offset, location_grid: target
            assignment, forwarded to ``compute_targets`` (``config.locations``).
        shuffle_buffer: examples in the shuffle buffer when training (0: no shuffle).
        cache: cache the reader's examples (encoded, before decoding) in memory, or in the
            file named by a string.
        repeat: repeat forever when training.
        drop_remainder: drop a last incomplete batch (default: when training).
        deterministic: keep element order and randomness independent of parallelism.
        seed: seed of shuffling and augmentation (None: fresh randomness); the stream also
            follows TensorFlow's global seed (``tf.random.set_seed``), which training sets
            from ``config.train.seed``.
        num_parallel_calls: map parallelism (default AUTOTUNE).
        prefetch: batches prefetched (default AUTOTUNE).
    """

    batch_size: int = 16
    train_short_side: tuple[int, int] = (640, 800)
    eval_short_side: int = 800
    max_size: int | None = 1333
    hflip_prob: float = 0.5
    pixel_norm: str = "caffe"
    resize_rounding: str = "round"
    size_divisibility: int = 32
    pad_to: tuple[int, int] | None = None
    max_boxes: int = 100
    strides: tuple[int, ...] = loc.STRIDES
    size_ranges: tuple[tuple[float, float], ...] = loc.SIZE_RANGES
    center_sampling_radius: float = 1.5
    location_offset: float = loc.DEFAULT_LOCATION_OFFSET
    location_grid: str = loc.DEFAULT_LOCATION_GRID
    shuffle_buffer: int = 1000
    cache: object = False
    repeat: bool = True
    drop_remainder: bool | None = None
    deterministic: bool = False
    seed: int | None = None
    num_parallel_calls: int | None = None
    prefetch: int | None = None

    def __post_init__(self):
        def positive_int(value):
            return not isinstance(value, bool) and isinstance(value, int) and value > 0

        if not positive_int(self.batch_size):
            raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size!r}")
        sizes = tuple(self.train_short_side)
        if len(sizes) != 2 or not all(map(positive_int, sizes)) or sizes[0] > sizes[1]:
            raise ValueError(
                f"`train_short_side` must be an inclusive range (low, high) of positive "
                f"integers, got {sizes!r}"
            )
        transforms.check_preprocessing(
            eval_short_side=self.eval_short_side,
            max_size=self.max_size,
            size_divisibility=self.size_divisibility,
            pixel_norm=self.pixel_norm,
            resize_rounding=self.resize_rounding,
        )
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"`hflip_prob` must be a probability, got {self.hflip_prob!r}")
        if self.pad_to is not None and (
            len(self.pad_to) != 2 or not all(map(positive_int, self.pad_to))
        ):
            raise ValueError(f"`pad_to` must be a pair (H, W) of positive ints, got {self.pad_to}")
        if not positive_int(self.max_boxes):
            raise ValueError(f"`max_boxes` must be a positive integer, got {self.max_boxes!r}")
        loc.check_location_settings(
            strides=self.strides,
            size_ranges=self.size_ranges,
            center_sampling_radius=self.center_sampling_radius,
            location_offset=self.location_offset,
            location_grid=self.location_grid,
        )


def _shard_policy(dataset: tf.data.Dataset):
    """The auto-shard policy a reader set on ``dataset``.

    Inside a traced function (the training input is built in one, per resume step)
    TensorFlow warns that options are read at graph construction: that is when they are
    set here, by the reader, so the value read is the reader's and the warning is dropped.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data")
        return dataset.options().experimental_distribute.auto_shard_policy


def preprocess_example(example, seed, *, training, config):
    """Transforms one reader example into network input and padded ground truth.

    Args:
        example: reader dict: ``"image"`` uint8 ``[H0, W0, 3]`` or ``"image_bytes"`` string,
            ``"boxes"`` float32 ``[N, 4]`` xyxy original pixels, ``"classes"`` int32 ``[N]``,
            ``"is_crowd"`` bool ``[N]``, ``"image_id"`` int64.
        seed: int64 ``[2]`` stateless seed of this example's augmentation.
        training: python bool: random short side and flip, crowd boxes dropped.
        config: :class:`PipelineConfig`.

    Returns:
        dict with ``"image"`` float32 ``[Hp, Wp, 3]`` (padded to ``size_divisibility`` or
        ``pad_to``),
        ``"boxes"`` ``[M, 4]``, ``"classes"`` ``[M]``, ``"is_crowd"`` ``[M]``, ``"image_id"``,
        ``"original_size"``, ``"image_size"``.
    """
    if "image" in example:
        image = example["image"]
    else:
        image = transforms.decode_image(example["image_bytes"])
    boxes = tf.cast(example["boxes"], tf.float32)
    classes = tf.cast(example["classes"], tf.int32)
    is_crowd = tf.cast(example["is_crowd"], tf.bool)
    original_size = tf.shape(image)[:2]

    if training:
        flip_seed, size_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=2), axis=0
        )
        # Flipping the small uint8 original instead of the resized float image is cheaper and
        # the same picture: the bilinear resize with half-pixel centres is mirror-symmetric.
        image, boxes, _ = transforms.random_horizontal_flip(
            image, boxes, config.hflip_prob, flip_seed
        )
        low, high = config.train_short_side
        short_side = transforms.random_short_side(low, high, size_seed)
    else:
        short_side = config.eval_short_side
    _, image_size = transforms.resize_size(
        original_size, short_side, config.max_size, rounding=config.resize_rounding
    )
    image = transforms.resize_image(image, image_size)
    # One ratio per axis (the rounded size may scale the axes a little differently); the
    # detections go back to the original image the same way (serving.detections_to_outputs).
    boxes = transforms.rescale_boxes(boxes, original_size, image_size)
    boxes, classes, is_crowd = transforms.clip_and_filter_boxes(
        boxes, classes, is_crowd, image_size, drop_crowd=training
    )
    image = transforms.normalize_image(image, config.pixel_norm)
    image = transforms.pad_image(image, config.size_divisibility, config.pad_to)
    boxes, classes, is_crowd = transforms.pad_boxes(boxes, classes, is_crowd, config.max_boxes)
    return {
        "image": image,
        "boxes": boxes,
        "classes": classes,
        "is_crowd": is_crowd,
        "image_id": tf.cast(example["image_id"], tf.int64),
        "original_size": original_size,
        "image_size": image_size,
    }


def batch_targets(boxes, classes, is_crowd, image_size, config):
    """FCOS targets of every image of a batch on the locations of one padded size.

    Args:
        boxes: float32 ``[B, M, 4]`` xyxy pixels.
        classes: int32 ``[B, M]``, -1 padding.
        is_crowd: bool ``[B, M]``; crowd rows get no targets.
        image_size: ``(Hp, Wp)`` padded size shared by the batch (ints or int32 ``[2]``).
        config: :class:`PipelineConfig`.

    Returns:
        dict of ``compute_targets`` outputs stacked over the batch (``[B, P]``, ``[B, P, 4]``).
    """
    # Valid rows come first (``transforms.pad_boxes``): give compute_targets only the rows up
    # to the batch's largest count (at least one), its cost grows with P x M.
    num_rows = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(classes >= 0, tf.int32), 1)), 1)
    boxes, classes, is_crowd = boxes[:, :num_rows], classes[:, :num_rows], is_crowd[:, :num_rows]
    target_classes = tf.where(is_crowd, tf.constant(-1, tf.int32), classes)
    num_locations = loc.num_locations(image_size, config.strides)

    def one(args):
        image_boxes, image_classes = args
        return compute_targets(
            image_boxes,
            image_classes,
            image_size,
            strides=config.strides,
            size_ranges=config.size_ranges,
            center_sampling_radius=config.center_sampling_radius,
            location_offset=config.location_offset,
            location_grid=config.location_grid,
        )

    static_p = num_locations if isinstance(num_locations, int) else None
    signature = {
        "class_targets": tf.TensorSpec([static_p], tf.int32),
        "box_targets": tf.TensorSpec([static_p, 4], tf.float32),
        "centerness_targets": tf.TensorSpec([static_p], tf.float32),
        "matched_box_index": tf.TensorSpec([static_p], tf.int32),
    }
    return tf.map_fn(
        tf.autograph.experimental.do_not_convert(one),
        (boxes, target_classes),
        fn_output_signature=signature,
    )


def _decode(example):
    example = dict(example)
    example["image"] = transforms.decode_image(example.pop("image_bytes"))
    return example


def _repeat_or_fail(examples):
    """``examples.repeat()`` that raises ``InvalidArgumentError`` if an epoch yields nothing."""

    def fail(_):
        check = tf.debugging.Assert(
            False,
            [
                "No example of the dataset could be read in a whole epoch: every image failed to "
                "decode (see the skipped-file warnings above)."
            ],
        )
        with tf.control_dependencies([check]):
            # Never produced: a placeholder element of the right structure for concatenate.
            return tf.nest.map_structure(
                lambda spec: tf.zeros([d or 0 for d in spec.shape], spec.dtype),
                examples.element_spec,
            )

    # The repeat only ends when an epoch is empty.
    return examples.repeat().concatenate(
        tf.data.Dataset.from_tensors(0).map(tf.autograph.experimental.do_not_convert(fail))
    )


def _to_model_inputs(batch, config):
    images = batch.pop("image")
    static = images.shape[1:3]
    if static.is_fully_defined():
        padded = (int(static[0]), int(static[1]))
    else:
        padded = tf.shape(images)[1:3]
    labels = dict(batch)
    labels.update(
        batch_targets(batch["boxes"], batch["classes"], batch["is_crowd"], padded, config)
    )
    return images, labels


_FILE_SHARDING = tf.data.experimental.AutoShardPolicy.FILE
_DATA_SHARDING = tf.data.experimental.AutoShardPolicy.DATA


def make_pipeline(
    examples: tf.data.Dataset, *, training: bool, config: PipelineConfig | None = None, **overrides
) -> tf.data.Dataset:
    """Builds the batched input pipeline of ``model.fit`` / ``model.evaluate``.

    Args:
        examples: ``tf.data.Dataset`` of reader examples (see :func:`preprocess_example`),
            e.g. ``read_coco(...).dataset``.
        training: python bool: shuffle, repeat, multi-scale resize, flip, crowd dropped.
        config: :class:`PipelineConfig`; keyword ``overrides`` replace its fields.

    Returns:
        ``tf.data.Dataset`` of ``(images, labels)`` as described in the module docstring.
        Examples whose image fails to decode are skipped (logged by tf.data). A repeated
        training stream raises ``tf.errors.InvalidArgumentError`` when a whole epoch yields
        no example, rather than skipping forever.
    """
    config = dataclasses.replace(config or PipelineConfig(), **overrides)
    parallel = config.num_parallel_calls or AUTOTUNE
    options = tf.data.Options()
    options.deterministic = config.deterministic
    examples = examples.with_options(options)

    if config.cache:
        examples = examples.cache(config.cache if isinstance(config.cache, str) else "")
    if training and config.shuffle_buffer:
        examples = examples.shuffle(
            config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True
        )
    if "image_bytes" in examples.element_spec:
        examples = examples.map(
            tf.autograph.experimental.do_not_convert(_decode),
            num_parallel_calls=parallel,
            deterministic=config.deterministic,
        )
        # A corrupt file that passed the reader's checks fails here: skip it, with a log line.
        # Only the decoding is guarded, so errors of the later steps (e.g. an image larger
        # than `pad_to`) still stop the run instead of silently emptying the dataset.
        examples = examples.ignore_errors(log_warning=True)
    if training and config.repeat:
        # Repeated after the skipping, so an epoch in which nothing decodes ends the repeat
        # (tf.data stops repeating an empty epoch) and fails below, instead of skipping
        # errors forever inside one C++ call that no signal interrupts.
        examples = _repeat_or_fail(examples)
    # One stateless seed pair per example: augmentation does not depend on thread timing.
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2, drop_remainder=True)
    dataset = tf.data.Dataset.zip((examples, seeds))
    dataset = dataset.map(
        tf.autograph.experimental.do_not_convert(
            lambda example, seed: preprocess_example(
                example, seed, training=training, config=config
            )
        ),
        num_parallel_calls=parallel,
        deterministic=config.deterministic,
    )
    drop_remainder = training if config.drop_remainder is None else config.drop_remainder
    # Normalised images are padded with zeros (the mean colour), boxes are already [M, 4].
    dataset = dataset.padded_batch(config.batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        tf.autograph.experimental.do_not_convert(lambda batch: _to_model_inputs(batch, config)),
        num_parallel_calls=parallel,
        deterministic=config.deterministic,
    )
    dataset = dataset.prefetch(config.prefetch or AUTOTUNE)
    if _shard_policy(examples) == _FILE_SHARDING:
        # A reader that shards by file (fcos_tf.data.tfrecord) asks for FILE, but tf.data
        # cannot find the files through the skipping of undecodable images and the zip with
        # the seeds, and distributing the batches would fail; shard them by element instead,
        # as AUTO does for the other readers.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = _DATA_SHARDING
        dataset = dataset.with_options(options)
    return dataset
