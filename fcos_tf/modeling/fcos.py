"""The FCOS detector as a ``keras.Model``: wiring, train/test/predict steps (paper Sec. 3).

``call()`` always returns the same dict of raw per-location outputs, flattened over levels
in the order of :func:`fcos_tf.ops.locations.compute_locations`; the losses live in
:mod:`fcos_tf.ops.losses` (used by ``train_step``/``test_step``) and the decoding in
:mod:`fcos_tf.ops.postprocess` (used by ``predict_step`` and by the export).
"""

import contextlib

import keras
import tensorflow as tf
from tensorflow.python.eager import context as tf_context

from fcos_tf.modeling.fpn import FPN, P6_INPUTS
from fcos_tf.modeling.group_norm import GroupNorm
from fcos_tf.modeling.head import CENTERNESS_ON, FCOSHead
from fcos_tf.modeling.head import NORMS as _HEAD_TOWER_NORMS
from fcos_tf.ops import losses as losses_lib
from fcos_tf.ops import postprocess as postprocess_lib
from fcos_tf.ops.locations import (
    DEFAULT_LOCATION_GRID,
    DEFAULT_LOCATION_OFFSET,
    STRIDES,
    check_location_settings,
)

# Values of `head_norm`: the head's tower norms (the head takes None for "none").
HEAD_NORMS = _HEAD_TOWER_NORMS
_LOSS_NAMES = ("loss", "cls_loss", "box_loss", "ctr_loss", "num_pos")


def check_arguments(
    *,
    fpn_channels=256,
    p6_input="p5",
    head_norm="group",
    centerness_on="regression",
    strides=STRIDES,
    location_offset=DEFAULT_LOCATION_OFFSET,
    location_grid=DEFAULT_LOCATION_GRID,
    box_loss="giou",
    score_threshold=0.05,
    score_threshold_on="class",
    pre_nms_top_k=1000,
    nms_iou_threshold=0.6,
    max_detections=100,
    **unchecked,
) -> None:
    """Checks the arguments of :class:`FCOS` without building anything (``FCOS`` runs it).

    The other keyword arguments of ``FCOS`` are accepted and not checked here.

    Raises:
        ValueError: naming the argument: ```head_norm` must be ...``.
    """
    del unchecked
    for name, value in (
        ("fpn_channels", fpn_channels),
        ("pre_nms_top_k", pre_nms_top_k),
        ("max_detections", max_detections),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    for name, value, choices in (
        ("p6_input", p6_input, P6_INPUTS),
        ("head_norm", head_norm, HEAD_NORMS),
        ("centerness_on", centerness_on, CENTERNESS_ON),
        ("box_loss", box_loss, losses_lib.BOX_LOSSES),
        ("score_threshold_on", score_threshold_on, postprocess_lib.SCORE_THRESHOLD_ON),
    ):
        if value not in choices and not (name == "head_norm" and value is None):
            raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"`score_threshold` must be in [0, 1), got {score_threshold!r}")
    if not 0.0 < nms_iou_threshold <= 1.0:
        raise ValueError(f"`nms_iou_threshold` must be in (0, 1], got {nms_iou_threshold!r}")
    check_location_settings(
        strides=tuple(int(s) for s in strides),
        location_offset=location_offset,
        location_grid=location_grid,
    )


@keras.saving.register_keras_serializable(package="fcos_tf")
class FCOS(keras.Model):
    """FCOS: backbone -> FPN -> shared head, with per-location outputs.

    Args:
        backbone: a ``keras.Model`` mapping float32 ``[B, H, W, 3]`` to ``[C3, C4, C5]`` at
            strides 8, 16, 32 (:func:`fcos_tf.modeling.backbone.build_backbone`), or to
            ``[C2, ..., C5]`` (``min_level=2``) when ``strides`` start at 4.
        num_classes: K, number of foreground classes.
        fpn_channels: channels of the FPN and of the head towers.
        p6_input: ``"p5"`` (improved FCOS) or ``"c5"`` (paper's original).
        head_num_convs: convs per head tower.
        head_norm: ``"group"``, ``"bn"``, ``"sync_bn"`` (BatchNorm, SyncBN under a strategy:
            the edge profile) or ``None``/``"none"`` (paper's vanilla rows); see
            :class:`fcos_tf.modeling.head.FCOSHead`.
        head_num_groups: GroupNorm groups of the head; must divide ``fpn_channels``.
        centerness_on: ``"regression"``, ``"classification"`` or ``"none"``.
        norm_reg_targets: box output ``relu(s_l x) * stride`` (improved FCOS) instead of the
            paper's ``exp(s_l x)``.
        strides: strides of the levels: ``(8, 16)``, ``(8, 16, 32)`` or that followed by up
            to two extra levels (64, 128); or the same from 4 (a P2 level from C2, for small
            objects: the backbone must return ``[C2, ..., C5]``).
        location_offset: fraction of the stride added to the location grid (0.5 paper, 0
            torchvision).
        location_grid: spacing of the locations, ``"paper"`` (the stride) or ``"torchvision"``
            (padded size // feature size per axis); see :mod:`fcos_tf.ops.locations`.
        box_loss: ``"giou"`` or ``"iou"``.
        focal_alpha: focal loss alpha.
        focal_gamma: focal loss gamma.
        score_threshold: candidate threshold at inference.
        score_threshold_on: ``"class"`` or ``"final"`` (see
            :func:`fcos_tf.ops.postprocess.postprocess`).
        pre_nms_top_k: candidates kept per level before NMS.
        nms_iou_threshold: class-aware NMS IoU threshold.
        max_detections: D, detections per image.
        box_plus_one: maskrcnn-benchmark's pixel-index boxes at inference (clip to
            ``size - 1``, NMS widths ``x2 - x1 + 1``); see :mod:`fcos_tf.ops.postprocess`.
        clip_after_nms: detectron2's order at inference: NMS on unclipped boxes, then clip
            and drop empty boxes (the AdelaiDet checkpoints).
        **kwargs: passed to ``keras.Model`` (``name``, ``dtype``...).

    Call args:
        images: float32 ``[B, H, W, 3]``, normalised for the backbone, any size (padded to a
            multiple of 32 by the pipeline so that every level aligns).
        training: passed to the backbone.

    Returns:
        dict of float32 tensors (also under mixed precision):
            ``"class_logits"``: ``[B, P, K]``;
            ``"box_ltrb"``: ``[B, P, 4]`` distances in input pixels;
            ``"centerness_logits"``: ``[B, P]`` (absent when ``centerness_on="none"``).
    """

    def __init__(
        self,
        backbone,
        num_classes,
        *,
        fpn_channels=256,
        p6_input="p5",
        head_num_convs=4,
        head_norm="group",
        head_num_groups=32,
        centerness_on="regression",
        norm_reg_targets=True,
        strides=STRIDES,
        location_offset=DEFAULT_LOCATION_OFFSET,
        location_grid=DEFAULT_LOCATION_GRID,
        box_loss="giou",
        focal_alpha=0.25,
        focal_gamma=2.0,
        score_threshold=0.05,
        score_threshold_on="class",
        pre_nms_top_k=1000,
        nms_iou_threshold=0.6,
        max_detections=100,
        box_plus_one=False,
        clip_after_nms=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.Model):
            raise TypeError(f"`backbone` must be a keras.Model, got {type(backbone).__name__}.")
        check_arguments(
            fpn_channels=fpn_channels,
            p6_input=p6_input,
            head_norm=head_norm,
            centerness_on=centerness_on,
            strides=strides,
            location_offset=location_offset,
            location_grid=location_grid,
            box_loss=box_loss,
            score_threshold=score_threshold,
            score_threshold_on=score_threshold_on,
            pre_nms_top_k=pre_nms_top_k,
            nms_iou_threshold=nms_iou_threshold,
            max_detections=max_detections,
        )
        strides = tuple(int(s) for s in strides)
        backbone_strides = tuple(getattr(backbone, "strides", (8, 16, 32)))
        if strides[0] == 4 and backbone_strides[:1] != (4,):
            raise ValueError(
                "`strides` from 4 (P2) need a backbone that returns C2 (ResNet or "
                f"SmallBackbone with min_level=2); this one has strides {backbone_strides}."
            )
        if head_norm == "none":
            head_norm = None
        self.backbone = backbone
        self.num_classes = num_classes
        self.fpn_channels = fpn_channels
        self.p6_input = p6_input
        self.head_num_convs = head_num_convs
        self.head_norm = head_norm
        self.head_num_groups = head_num_groups
        self.centerness_on = centerness_on
        self.norm_reg_targets = bool(norm_reg_targets)
        self.strides = strides
        self.location_offset = float(location_offset)
        self.location_grid = location_grid
        self.box_loss = box_loss
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.score_threshold = float(score_threshold)
        self.score_threshold_on = score_threshold_on
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)
        self.box_plus_one = bool(box_plus_one)
        self.clip_after_nms = bool(clip_after_nms)

        self.fpn = FPN(
            fpn_channels,
            p6_input=p6_input,
            num_levels=len(strides),
            min_level=2 if strides[0] == 4 else 3,
            name="fpn",
            dtype=self.dtype_policy,
        )
        self.head = FCOSHead(
            num_classes,
            channels=fpn_channels,
            num_convs=head_num_convs,
            norm=head_norm,
            num_groups=head_num_groups,
            centerness_on=centerness_on,
            num_levels=len(strides),
            name="head",
            dtype=self.dtype_policy,
        )
        self._trackers = {name: keras.metrics.Mean(name=name) for name in _LOSS_NAMES}
        # Set by enable_per_image_inference: the network on one [1, H, W, 3] image.
        self.image_network = None

    def enable_per_image_inference(self):
        """Makes :meth:`predict_step` run the network one image at a time, on fused kernels.

        Every :class:`fcos_tf.modeling.group_norm.GroupNorm` inside switches to its fused
        one-image path, which needs a batch statically known to be 1, and ``predict_step``
        maps the network over the images of a batch. Nothing in an inference pass mixes
        images (BatchNorm uses its moving statistics, GroupNorm each image's own), so the
        detections are those of the batched network. For the serving copy of a detector
        (:func:`fcos_tf.serving.precision.inference_model`); a model being trained keeps
        the batched path.

        Afterwards ``image_network`` is the callable ``[1, H, W, 3]`` float32 ->
        :meth:`call`'s dict that ``predict_step`` maps; the serving copy replaces it by one
        with its weights frozen into the graph
        (:func:`fcos_tf.serving.precision.frozen_image_network`).
        """
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, GroupNorm):
                layer.fused_inference = True
        self.image_network = lambda images: self(images, training=False)

    def compile(self, optimizer="rmsprop", **kwargs):
        """``keras.Model.compile``, then the optimizer's slots are built for a built model.

        Without a distribution strategy Keras builds the optimizer inside the first trace of
        the train step; ``tf.function`` then traces the whole step a second time, because
        the first trace created variables. Building it here saves that trace: for R-50 at
        512 x 512, batch 2, on 2 cores, ``compile`` + the first ``fit`` step took 16.0 s
        and takes 10.9 s (BENCHMARKS.md, "Serving precision and torchvision at its best").
        Call it in the strategy scope the model was built in, as Keras asks.
        """
        super().compile(optimizer=optimizer, **kwargs)
        if self.built and self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        """Keras' train function; on a machine without GPUs, one lean graph per step.

        Grappler, TensorFlow's graph optimizer, rewrites the train step's graph (about 10k
        ops for R-50) before its first run. On the CPU three of its passes find nothing to do
        in a train step and take a third of that time: the memory optimizer (its swapping
        is for GPU memory), the layout optimizer (it moves GPU convolutions to NCHW; the CPU
        graph is NHWC throughout) and the second round of every pass. Without them the first
        step of R-50 at 512 x 512 (batch 2, ``mixed_bfloat16``, 2 cores) runs its first call
        in 2.3 s instead of 3.3 s, and later steps take the same time (BENCHMARKS.md). The
        TFG optimizer (MLIR passes for shape inference and control flow; a step has no
        control flow) is off too: the optimized graph is the same without it, and it took
        0.2-0.3 s. The options apply to this model's train function only, on the thread that
        calls it; other graphs keep TensorFlow's defaults.

        There, too, a step on a ``tf.data`` iterator (what ``fit`` runs, one step per call,
        without XLA) is one ``tf.function`` that takes the next batch and runs
        :meth:`train_step` in the distribution strategy. Keras traces the step as a function
        of its own, called from a second one that takes the batch; the nested graph takes
        0.5 s more to trace and prepare for its first run, for the same step (R-50 as above,
        BENCHMARKS.md). Other calls (``train_on_batch``, ``steps_per_execution`` > 1, XLA,
        multi-worker and TPU strategies) run Keras' function. With a GPU visible nothing
        changes.
        """
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=force)
        if not self.run_eagerly and not tf.config.list_logical_devices("GPU"):
            keras_function = self.train_function
            one_step = None
            if (
                self.steps_per_execution == 1
                and not self.jit_compile
                and not isinstance(self.distribute_strategy, _MULTI_HOST_STRATEGIES)
            ):
                one_step = tf.function(self._train_on_next_batch, reduce_retracing=True)

            def lean_train_function(iterator):
                with cpu_train_rewrites():
                    if one_step is not None and isinstance(
                        iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)
                    ):
                        return one_step(iterator)
                    return keras_function(iterator)

            self.train_function = lean_train_function
        return self.train_function

    @tf.autograph.experimental.do_not_convert
    def _train_on_next_batch(self, iterator):
        """:meth:`train_step` on ``iterator``'s next batch, in the distribution strategy.

        At the end of the data ``get_next`` raises ``OutOfRangeError``, which ``fit`` takes
        for the end of the epoch, as with Keras' own function. Every replica returns the
        same global values (:meth:`_update_trackers`), so the first local replica's are the
        step's (on one host; strategies over several hosts take Keras' function).
        """
        strategy = self.distribute_strategy
        outputs = strategy.run(self.train_step, args=(iterator.get_next(),))
        return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], outputs)

    def _output_keys(self):
        """The keys of :meth:`call`'s dict."""
        keys = ["class_logits", "box_ltrb"]
        return keys + ["centerness_logits"] if self.head.centerness_pred is not None else keys

    def build(self, input_shape):
        channels = getattr(self.backbone, "output_channels", None)
        if self.backbone.built and channels is not None:
            # The FPN and the head build from the features' channels (a forward pass would
            # take a third of building R-50 FCOS: creating weights does not need one).
            feature_shapes = [(None, None, None, int(c)) for c in channels]
            self.fpn.build(feature_shapes)
            self.head.build(self.fpn.compute_output_shape(feature_shapes))
        else:
            # Any other backbone: one forward pass on a tiny input creates every sub-layer's
            # weights (any size works: each level has ceil(32 / s) >= 1 cells).
            self.call(tf.zeros([1, 32, 32, 3]), training=False)
        self.built = True

    def call(self, images, training=None):
        features = self.backbone(images, training=training)
        head = self.head(self.fpn(features))
        batch = tf.shape(images)[0]

        def flatten(per_level, depth):
            # [B, h, w, depth] per level -> [B, P, depth], P3 first, row-major.
            return [tf.reshape(tf.cast(x, tf.float32), [batch, -1, depth]) for x in per_level]

        class_logits = tf.concat(flatten(head["class_logits"], self.num_classes), axis=1)
        box_ltrb = []
        for box_raw, stride in zip(flatten(head["box_raw"], 4), self.strides):
            if self.norm_reg_targets:
                # Improved FCOS: the head regresses distances in units of the level's stride.
                box_ltrb.append(tf.nn.relu(box_raw) * float(stride))
            else:
                box_ltrb.append(tf.exp(box_raw))  # Sec. 3.2: exp(s_i x)
        outputs = {"class_logits": class_logits, "box_ltrb": tf.concat(box_ltrb, axis=1)}
        if "centerness_logits" in head:
            outputs["centerness_logits"] = tf.concat(flatten(head["centerness_logits"], 1), axis=1)[
                ..., 0
            ]
        return outputs

    # ----------------------------------------------------------------------------- steps

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compute_losses(self, outputs, labels):
        """Losses of this replica's share of the batch (see :func:`fcos_tf.ops.losses.fcos_losses`).

        Returns:
            dict of float32 scalars ``loss`` (sum of the three), ``cls_loss``, ``box_loss``,
            ``ctr_loss``, ``num_pos``.
        """
        result = losses_lib.fcos_losses(
            outputs,
            labels,
            box_loss=self.box_loss,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
        )
        result["loss"] = result["cls_loss"] + result["box_loss"] + result["ctr_loss"]
        if self.losses:
            # Layer regularisers (none by default: weight decay lives in the optimizer). Each
            # replica adds its share so that the summed gradients count them once.
            replicas = tf.distribute.get_replica_context()
            replicas = replicas.num_replicas_in_sync if replicas is not None else 1
            result["loss"] += tf.add_n([tf.cast(x, tf.float32) for x in self.losses]) / replicas
        return result

    def _update_trackers(self, result, images):
        # Every replica logs the same global value: Keras' Mean trackers then aggregate
        # total and count over replicas and report exactly that value.
        num_images = losses_lib.global_sum(tf.cast(tf.shape(images)[0], tf.float32))
        values = {
            name: losses_lib.global_sum(result[name])
            for name in ("loss", "cls_loss", "box_loss", "ctr_loss")
        }
        values["num_pos"] = result["num_pos"] / num_images
        for name, tracker in self._trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    @staticmethod
    def _unpack(data):
        """``images``, ``(images,)``, ``(images, labels)`` or ``((images, labels),)``."""
        while isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        if isinstance(data, (tuple, list)):
            return data[0], data[1]
        return data, None

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images, labels = self._unpack(data)
        if labels is None:
            raise ValueError("train_step expects `data` = (images, labels dict).")
        variables = self.trainable_variables
        # Only the trainable variables are watched: a frozen layer's TensorFlow variable is
        # trainable to TensorFlow all the same, and the tape would trace the gradient down
        # through the frozen stages and into their kernels, for ops nothing uses.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([variable.value for variable in variables])
            outputs = self(images, training=True)
            result = self.compute_losses(outputs, labels)
            # Mixed precision: the loss-scale optimizer scales here and unscales in apply().
            scaled_loss = self.optimizer.scale_loss(result["loss"])
        grads = tape.gradient(scaled_loss, variables)
        # Keras sums the replicas' gradients inside apply() (no averaging): with the global
        # normalisers of the losses this equals the single-device gradient.
        self.optimizer.apply(grads, variables)
        return self._update_trackers(result, images)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        images, labels = self._unpack(data)
        if labels is None:
            raise ValueError("test_step expects `data` = (images, labels dict).")
        outputs = self(images, training=False)
        return self._update_trackers(self.compute_losses(outputs, labels), images)

    def postprocess(
        self, outputs, image_size, valid_size=None, *, nms="combined", max_detections=None
    ):
        """Detections from ``call()`` outputs with this model's inference settings.

        Every path that decodes (``predict_step``, the serving graph, the TFLite graph) comes
        through here, so the decoding settings are read from the model in one place.

        Args:
            outputs: dict from :meth:`call`.
            image_size: ``(H, W)`` of the network input (ints or int32 ``[2]``).
            valid_size: optional int32 ``[B, 2]`` valid region per image for clipping.
            nms: ``"combined"`` or ``"class_offset"`` (TFLite builtins), see
                :func:`fcos_tf.ops.postprocess.postprocess`.
            max_detections: D (default: the model's ``max_detections``).

        Returns:
            dict ``boxes`` float32 ``[B, D, 4]`` xyxy input pixels, ``scores`` float32
            ``[B, D]``, ``classes`` int32 ``[B, D]`` (-1 padding), ``num_detections`` int32 ``[B]``.
        """
        return postprocess_lib.postprocess(
            outputs,
            image_size,
            strides=self.strides,
            location_offset=self.location_offset,
            location_grid=self.location_grid,
            score_threshold=self.score_threshold,
            score_threshold_on=self.score_threshold_on,
            pre_nms_top_k=self.pre_nms_top_k,
            nms_iou_threshold=self.nms_iou_threshold,
            max_detections=max_detections or self.max_detections,
            valid_size=valid_size,
            nms=nms,
            box_plus_one=self.box_plus_one,
            clip_after_nms=self.clip_after_nms,
        )

    def predict_step(self, data):
        """Detections for ``images`` or ``(images, labels)``.

        The one detection path: the exported serving graph and the COCO evaluation both call
        it with each image's valid size, so evaluation scores what a server returns.

        Args:
            data: float ``[B, H, W, 3]`` network inputs, or ``(images, labels)`` with labels
                holding ``"image_size"``: int32 ``[B, 2]`` ``(H, W)`` of each image's valid
                (resized, unpadded) region. Boxes are clipped to that region before NMS;
                without it, to the whole ``(H, W)`` input.

        Returns:
            dict of :meth:`postprocess`: boxes xyxy in network-input pixels.
        """
        images, labels = self._unpack(data)
        if self.image_network is not None:
            outputs = tf.map_fn(
                lambda image: {k: v[0] for k, v in self.image_network(image[None]).items()},
                images,
                fn_output_signature={k: tf.float32 for k in self._output_keys()},
                parallel_iterations=1,
            )
        else:
            outputs = self(images, training=False)
        valid_size = None
        if isinstance(labels, dict) and "image_size" in labels:
            valid_size = labels["image_size"]
        return self.postprocess(outputs, tf.shape(images)[1:3], valid_size=valid_size)

    def make_predict_function(self, force=False):
        # NMS has no XLA kernel: keep prediction out of XLA even when jit_compile is on for
        # training (docs/design.md §5).
        if self.predict_function is not None and not force:
            return self.predict_function
        jit_compile = self.jit_compile
        self.jit_compile = False
        try:
            return super().make_predict_function(force=force)
        finally:
            self.jit_compile = jit_compile

    # ---------------------------------------------------------------------------- config

    def get_config(self):
        return {
            "name": self.name,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "fpn_channels": self.fpn_channels,
            "p6_input": self.p6_input,
            "head_num_convs": self.head_num_convs,
            "head_norm": self.head_norm,
            "head_num_groups": self.head_num_groups,
            "centerness_on": self.centerness_on,
            "norm_reg_targets": self.norm_reg_targets,
            "strides": list(self.strides),
            "location_offset": self.location_offset,
            "location_grid": self.location_grid,
            "box_loss": self.box_loss,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "score_threshold": self.score_threshold,
            "score_threshold_on": self.score_threshold_on,
            "pre_nms_top_k": self.pre_nms_top_k,
            "nms_iou_threshold": self.nms_iou_threshold,
            "max_detections": self.max_detections,
            "box_plus_one": self.box_plus_one,
            "clip_after_nms": self.clip_after_nms,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = config.pop("backbone")
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(backbone, **config)


_LEAN_OPTIONS = {}

# Strategies whose step outputs Keras reduces across hosts; their train function stays
# Keras' (FCOS.make_train_function).
_MULTI_HOST_STRATEGIES = (
    tf.distribute.MultiWorkerMirroredStrategy,
    tf.distribute.TPUStrategy,
    tf.distribute.experimental.ParameterServerStrategy,
)


@contextlib.contextmanager
def cpu_train_rewrites():
    """Context: function calls in this thread run without grappler's memory and layout
    optimizers and its TFG optimizer, and with one round of its passes.

    What :meth:`FCOS.make_train_function` wraps around each call of the train function on a
    machine without GPUs; a caller that runs ``train_step`` in a ``tf.function`` of its own
    gets the same graph rewrites inside it.
    """
    context = tf_context.context()
    saved = context.function_call_options
    key = (saved.executor_type, saved.config_proto_serialized)
    if key not in _LEAN_OPTIONS:
        config = tf.compat.v1.ConfigProto()
        config.ParseFromString(saved.config_proto_serialized)
        rewrites = config.graph_options.rewrite_options
        rewrites.memory_optimization = rewrites.NO_MEM_OPT
        rewrites.layout_optimizer = rewrites.OFF
        rewrites.meta_optimizer_iterations = rewrites.ONE
        rewrites.disable_tfg_optimizer = True
        _LEAN_OPTIONS[key] = tf_context.FunctionCallOptions(saved.executor_type, config)
    context.function_call_options = _LEAN_OPTIONS[key]
    try:
        yield
    finally:
        context.function_call_options = saved
