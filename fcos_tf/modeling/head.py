"""The FCOS head shared by all pyramid levels (paper Sec. 3.1-3.3, docs/design.md §3 items 3-6)."""

import math

import keras
import tensorflow as tf
from keras import ops

from fcos_tf.modeling.group_norm import GroupNorm

CENTERNESS_ON = ("regression", "classification", "none")
# Values of `norm` ("none" is taken for None); fcos_tf.modeling.fcos.HEAD_NORMS lists them
# for the config.
NORMS = ("group", "bn", "sync_bn", "bn_per_level", "sync_bn_per_level", "none")
# Norms with one BatchNorm per level at each tower position (AdelaiDet's BN head).
PER_LEVEL_NORMS = ("bn_per_level", "sync_bn_per_level")


@keras.saving.register_keras_serializable(package="fcos_tf")
class Scale(keras.layers.Layer):
    """Multiplies its input by one learnable scalar (Sec. 3.2: ``exp(s_i x)``).

    Args:
        initial_value: starting value of the scalar (1.0 in the paper).
        **kwargs: passed to ``keras.layers.Layer``.
    """

    def __init__(self, initial_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            trainable=True,
            initializer=keras.initializers.Constant(self.initial_value),
        )

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"initial_value": self.initial_value})
        return config


@keras.saving.register_keras_serializable(package="fcos_tf")
class FCOSHead(keras.layers.Layer):
    """Classification, box and centerness predictions on every pyramid level.

    Two towers of ``num_convs x [3x3 conv (bias) -> norm -> ReLU]``; the classification
    tower feeds a 3x3 conv with ``num_classes`` logits, the regression tower a 3x3 conv with
    4 box outputs (multiplied by a per-level :class:`Scale`) and, by default, the 3x3
    centerness conv. The same weights run on every level; only the scales are per level.

    Init (Sec. 4.1, as RetinaNet): tower and predictor kernels ~ N(0, 0.01), biases 0, class
    bias ``-log((1 - prior_prob) / prior_prob)`` so that every location starts with a
    foreground probability of ``prior_prob``.

    Layer names (for weight import): ``cls_tower_conv{i}``, ``cls_tower_norm{i}``,
    ``box_tower_conv{i}``, ``box_tower_norm{i}``, ``cls_logits``, ``box_pred``,
    ``centerness_pred``, ``scale_p{3..}``; with a per-level norm ``cls_tower_norm{i}_p{3..}``
    and ``box_tower_norm{i}_p{3..}`` (the tower's norm position ``i`` holds a tuple of one
    BatchNorm per level).

    Args:
        num_classes: K, number of foreground classes (no background class).
        channels: channels of the tower convs.
        num_convs: convs per tower.
        norm: ``"group"`` (:class:`GroupNorm`, epsilon 1e-5), ``"bn"`` (BatchNorm, statistics per
            replica), ``"sync_bn"`` (BatchNorm with statistics over the global batch under a
            ``MirroredStrategy``: the authors' SyncBN) or ``None`` (the paper's vanilla rows).
            The BatchNorm of a tower position is shared by all levels, like its conv, and
            its batch statistics are those of all levels' locations together; at
            export :func:`fcos_tf.serving.bn_folding.fold_batch_norms` folds it into the conv, so an
            int8 model has no normalisation op. ``channels`` is the authors' head width
            (``c128`` = 128). ``"bn_per_level"`` / ``"sync_bn_per_level"``: one BatchNorm
            per level at each tower position, the convs still shared (AdelaiDet's
            ``FCOS_RT_MS_R_50_4x_syncbn_bn_head``); each level is normalised with its own
            statistics in training too. It does not fold into the shared conv.
        num_groups: GroupNorm groups; must divide ``channels``.
        centerness_on: ``"regression"`` (default, improved FCOS), ``"classification"`` (the
            paper's Fig. 2) or ``"none"`` (no centerness branch).
        num_levels: number of pyramid levels, one :class:`Scale` each.
        prior_prob: initial foreground probability of the classifier.
        **kwargs: passed to ``keras.layers.Layer``.

    Call args:
        inputs: list over levels of float ``[B, h_l, w_l, C]``.
        training: passed to the norms. In a training call inside a ``tf.function`` (with
            GroupNorm or no norm) one graph function runs the towers and predictors on every
            level, traced once; the outputs are the same.

    Returns:
        Dict of lists over levels: ``"class_logits"`` ``[B, h_l, w_l, K]``, ``"box_raw"``
        ``[B, h_l, w_l, 4]`` (after the level's scale, before ``exp``/``relu``) and
        ``"centerness_logits"`` ``[B, h_l, w_l, 1]`` (absent when ``centerness_on="none"``).
    """

    def __init__(
        self,
        num_classes,
        channels=256,
        num_convs=4,
        norm="group",
        num_groups=32,
        centerness_on="regression",
        num_levels=5,
        prior_prob=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        if not (isinstance(channels, int) and channels > 0):
            raise ValueError(f"`channels` must be a positive int, got {channels!r}.")
        if not (isinstance(num_convs, int) and num_convs >= 0):
            raise ValueError(f"`num_convs` must be an int >= 0, got {num_convs!r}.")
        if norm not in NORMS + (None,):
            raise ValueError(f"`norm` must be one of {NORMS} or None, got {norm!r}.")
        if norm == "none":
            norm = None
        if norm == "group" and channels % num_groups:
            raise ValueError(f"`num_groups`={num_groups} must divide `channels`={channels}.")
        if centerness_on not in CENTERNESS_ON:
            raise ValueError(
                f"`centerness_on` must be one of {CENTERNESS_ON}, got {centerness_on!r}."
            )
        if not (isinstance(num_levels, int) and num_levels > 0):
            raise ValueError(f"`num_levels` must be a positive int, got {num_levels!r}.")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"`prior_prob` must be in (0, 1), got {prior_prob!r}.")
        self.num_classes = num_classes
        self.channels = channels
        self.num_convs = num_convs
        self.norm = norm
        self.num_groups = num_groups
        self.centerness_on = centerness_on
        self.num_levels = num_levels
        self.prior_prob = float(prior_prob)

        def conv(filters, name, bias_init="zeros"):
            return keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                bias_initializer=bias_init,
                name=name,
                dtype=self.dtype_policy,
            )

        def batch_norm(name):
            return keras.layers.BatchNormalization(
                momentum=0.9,
                epsilon=1e-5,
                synchronized=norm.startswith("sync_bn"),
                name=name,
                dtype=self.dtype_policy,
            )

        # Tuples, not lists: Keras 3 leaves list attributes out of tf.train.Checkpoint's
        # object graph, so their weights would silently not be saved or restored there.
        def tower(prefix):
            layers = []
            for index in range(num_convs):
                layers.append(conv(channels, f"{prefix}_conv{index}"))
                if norm == "group":
                    layers.append(
                        GroupNorm(
                            num_groups,
                            epsilon=1e-5,
                            name=f"{prefix}_norm{index}",
                            dtype=self.dtype_policy,
                        )
                    )
                elif norm in ("bn", "sync_bn"):
                    layers.append(batch_norm(f"{prefix}_norm{index}"))
                elif norm in PER_LEVEL_NORMS:
                    layers.append(
                        tuple(
                            batch_norm(f"{prefix}_norm{index}_p{3 + level}")
                            for level in range(num_levels)
                        )
                    )
                layers.append(
                    keras.layers.ReLU(name=f"{prefix}_relu{index}", dtype=self.dtype_policy)
                )
            return tuple(layers)

        self.cls_tower = tower("cls_tower")
        self.box_tower = tower("box_tower")
        prior_bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        self.cls_logits = conv(
            num_classes, "cls_logits", bias_init=keras.initializers.Constant(prior_bias)
        )
        self.box_pred = conv(4, "box_pred")
        self.centerness_pred = None if centerness_on == "none" else conv(1, "centerness_pred")
        self.scales = tuple(
            Scale(1.0, name=f"scale_p{3 + level}", dtype=self.dtype_policy)
            for level in range(num_levels)
        )

    def _check_inputs(self, input_shapes):
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) != self.num_levels:
            raise ValueError(
                f"FCOSHead expects a list of {self.num_levels} feature maps, got {input_shapes!r}."
            )
        channels = {shape[-1] for shape in input_shapes}
        if len(channels) != 1 or None in channels:
            raise ValueError(
                f"Every level must have the same known channel count, got {input_shapes!r}."
            )

    def build(self, input_shape):
        self._check_inputs(input_shape)
        in_shape = (None, None, None, input_shape[0][-1])
        tower_shape = (None, None, None, self.channels)
        for tower in (self.cls_tower, self.box_tower):
            shape = in_shape
            for layer in tower:
                for sublayer in layer if isinstance(layer, tuple) else (layer,):
                    sublayer.build(shape)
                if isinstance(layer, keras.layers.Conv2D):
                    shape = tower_shape
        out_shape = tower_shape if self.num_convs else in_shape
        for layer in (self.cls_logits, self.box_pred, self.centerness_pred):
            if layer is not None:
                layer.build(out_shape)
        for scale in self.scales:
            scale.build(())

    @staticmethod
    def _run_tower(tower, x, level):
        for layer in tower:
            # A tuple is a per-level norm position: the level's own BatchNorm.
            x = layer[level](x) if isinstance(layer, tuple) else layer(x)
        return x

    def _run_towers(self, tower, inputs):
        """The tower on every level; a BatchNorm normalises all levels' locations together.

        One set of statistics for the shared weights: in training the batch statistics are
        those of every location of every level (and, with SyncBN, of every replica), the
        same population the moving averages describe at inference. Normalising each level
        with its own statistics would train with per-level statistics and infer with their
        blend.
        """
        if self.norm not in ("bn", "sync_bn"):
            return [self._run_tower(tower, x, level) for level, x in enumerate(inputs)]
        per_level = list(inputs)
        for layer in tower:
            if not isinstance(layer, keras.layers.BatchNormalization):
                per_level = [layer(x) for x in per_level]
                continue
            shapes = [tf.shape(x) for x in per_level]
            # [B, h_l * w_l, 1, C] per level -> [B, sum_l h_l * w_l, 1, C]
            flat = [
                tf.reshape(x, [shape[0], -1, 1, x.shape[-1]]) for x, shape in zip(per_level, shapes)
            ]
            joint = layer(tf.concat(flat, axis=1))
            sizes = tf.stack([shape[1] * shape[2] for shape in shapes])
            per_level = [
                tf.reshape(x, shape)
                for x, shape in zip(tf.split(joint, sizes, axis=1, num=len(flat)), shapes)
            ]
        return per_level

    def _predictions(self, cls_features, box_features):
        """``[class logits, box before the scale (, centerness logits)]`` of one level."""
        predictions = [self.cls_logits(cls_features), self.box_pred(box_features)]
        if self.centerness_pred is not None:
            source = box_features if self.centerness_on == "regression" else cls_features
            predictions.append(self.centerness_pred(source))
        return predictions

    def _level_predictions(self, features):
        """Both towers and the predictor convs on one level (no per-level norm)."""
        return self._predictions(
            self._run_tower(self.cls_tower, features, 0),
            self._run_tower(self.box_tower, features, 0),
        )

    def _traced_once(self, inputs):
        """:meth:`_level_predictions` on every level through one graph function.

        The function's input has unknown height and width, so the towers and their
        gradient are traced once for all levels instead of once per level. They are most of
        a training step's ops, and Python builds a graph at about 0.25 ms per op: traced per
        level, the R-50 step has 10075 ops, traced once 3667 (and 1904 in the functions),
        and the time to the first step is 2.4 s shorter (BENCHMARKS.md). TensorFlow inlines
        the calls when it runs the step, so grappler's fusions, the kernels and the outputs
        are those of per-level copies; only the order in which the levels' weight gradients
        are summed can differ.
        """
        spec = tf.TensorSpec([inputs[0].shape[0], None, None, inputs[0].shape[-1]], inputs[0].dtype)
        level_function = tf.function(
            self._level_predictions, input_signature=[spec], autograph=False
        )
        per_level = []
        for features in inputs:
            predictions = level_function(features)
            for prediction in predictions:  # the static shape the call cannot know
                prediction.set_shape(features.shape[:3] + prediction.shape[3:])
            per_level.append(predictions)
        return per_level

    def call(self, inputs, training=None):
        if training and tf.inside_function() and len(inputs) > 1 and self.norm in ("group", None):
            # A training step's graph (the towers' statistics are per level, so one function
            # serves every level). Inference graphs, which export and conversion read, keep
            # the towers' ops in the graph itself.
            per_level = self._traced_once(inputs)
        else:
            per_level = [
                self._predictions(cls_features, box_features)
                for cls_features, box_features in zip(
                    self._run_towers(self.cls_tower, inputs),
                    self._run_towers(self.box_tower, inputs),
                )
            ]
        outputs = {
            "class_logits": [predictions[0] for predictions in per_level],
            "box_raw": [
                scale(predictions[1]) for predictions, scale in zip(per_level, self.scales)
            ],
        }
        if self.centerness_pred is not None:
            outputs["centerness_logits"] = [predictions[2] for predictions in per_level]
        return outputs

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)
        shapes = {
            "class_logits": [tuple(s[:3]) + (self.num_classes,) for s in input_shape],
            "box_raw": [tuple(s[:3]) + (4,) for s in input_shape],
        }
        if self.centerness_pred is not None:
            shapes["centerness_logits"] = [tuple(s[:3]) + (1,) for s in input_shape]
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "channels": self.channels,
                "num_convs": self.num_convs,
                "norm": self.norm,
                "num_groups": self.num_groups,
                "centerness_on": self.centerness_on,
                "num_levels": self.num_levels,
                "prior_prob": self.prior_prob,
            }
        )
        return config
