"""FCOS model: output layout, config round trip, prediction, replica parity and learning."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.data import synthetic, transforms
from fcos_tf.modeling.backbone import build_backbone
from fcos_tf.modeling.fcos import FCOS
from fcos_tf.ops import locations as loc_lib
from fcos_tf.ops.targets import compute_targets

NUM_CLASSES = 3


def _small_model(seed=0, num_classes=NUM_CLASSES, model_class=FCOS, **kwargs):
    keras.utils.set_random_seed(seed)
    kwargs.setdefault("fpn_channels", 16)
    kwargs.setdefault("head_num_convs", 1)
    kwargs.setdefault("head_num_groups", 8)
    model = model_class(
        build_backbone("small", channels=(16, 32, 64), stem_channels=8), num_classes, **kwargs
    )
    model.build((None, None, None, 3))
    return model


def _labels(boxes_per_image, classes_per_image, image_size):
    """Stacked compute_targets outputs for a list of per-image boxes ``[N, 4]`` xyxy."""
    per_image = [
        compute_targets(
            tf.constant(np.reshape(b, [-1, 4]), tf.float32), tf.constant(c, tf.int32), image_size
        )
        for b, c in zip(boxes_per_image, classes_per_image)
    ]
    keys = ("class_targets", "box_targets", "centerness_targets")
    return {k: tf.stack([t[k] for t in per_image]).numpy() for k in keys}


# ------------------------------------------------------------------------------- outputs


def test_call_output_layout_and_decoding():
    model = _small_model()
    images = tf.random.stateless_normal([2, 72, 40, 3], seed=[1, 2])  # 72 = not a multiple of 32
    out = model(images)
    num_loc = loc_lib.num_locations((72, 40))
    assert out["class_logits"].shape == (2, num_loc, NUM_CLASSES)
    assert out["box_ltrb"].shape == (2, num_loc, 4)
    assert out["centerness_logits"].shape == (2, num_loc)
    assert all(v.dtype == tf.float32 for v in out.values())

    # Level l, cell (i, j) of the head sits at row offset_l + i * w_l + j, as compute_locations.
    head = model.head(model.fpn(model.backbone(images)))
    sizes = loc_lib.feature_map_sizes((72, 40))
    locations, strides = loc_lib.compute_locations((72, 40))
    for level in (0, 1, 2):
        h, w = sizes[level]
        i, j = h - 1, w // 2
        row = sum(a * b for a, b in sizes[:level]) + i * w + j
        stride = model.strides[level]
        np.testing.assert_allclose(
            locations[row], [stride // 2 + j * stride, stride // 2 + i * stride]
        )
        assert float(strides[row]) == stride
        np.testing.assert_allclose(
            out["class_logits"][1, row], head["class_logits"][level][1, i, j], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            out["box_ltrb"][1, row],
            np.maximum(head["box_raw"][level][1, i, j], 0) * stride,
            rtol=1e-5,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            out["centerness_logits"][1, row],
            head["centerness_logits"][level][1, i, j, 0],
            rtol=1e-5,
            atol=1e-6,
        )


def test_exp_box_output_and_no_centerness():
    model = _small_model(norm_reg_targets=False, centerness_on="none")
    images = tf.random.stateless_normal([1, 64, 64, 3], seed=[3, 4])
    out = model(images)
    assert "centerness_logits" not in out
    head = model.head(model.fpn(model.backbone(images)))
    np.testing.assert_allclose(
        out["box_ltrb"][0, 0], np.exp(head["box_raw"][0][0, 0, 0]), rtol=1e-5
    )


def test_constructor_validation():
    backbone = build_backbone("small")
    with pytest.raises(ValueError, match="strides"):
        FCOS(backbone, 3, strides=(8, 16, 32, 128))
    with pytest.raises(ValueError, match="box_loss"):
        FCOS(backbone, 3, box_loss="l1")
    with pytest.raises(TypeError, match="backbone"):
        FCOS("resnet50", 3)


@pytest.mark.parametrize("strides", [(8, 16, 32), (8, 16)])
def test_fewer_levels(strides):
    model = _small_model(strides=strides)
    out = model(tf.zeros([1, 64, 64, 3]))
    assert out["class_logits"].shape[1] == loc_lib.num_locations((64, 64), strides)
    assert len(model.fpn.output_convs) == min(len(strides), 3) and not model.fpn.extra_convs
    assert len(model.head.scales) == len(strides)
    det = model.predict_step(tf.zeros([1, 64, 64, 3]))
    assert det["boxes"].shape == (1, 100, 4)
    # A train step with targets of these levels only: an object of each level's size range
    # gives positives on that level, and the loss is finite.
    inf = float("inf")
    ranges = {
        (8, 16, 32): ((-1.0, 64.0), (64.0, 128.0), (128.0, inf)),
        (8, 16): ((-1.0, 64.0), (64.0, inf)),
    }[strides]
    boxes = tf.constant([[8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 150.0, 160.0]])
    targets = compute_targets(
        boxes, tf.constant([1, 2]), (160, 160), strides=strides, size_ranges=ranges
    )
    per_level = loc_lib.split_per_level(targets["class_targets"], (160, 160), strides)
    assert [int(tf.reduce_sum(tf.cast(t > 0, tf.int32))) > 0 for t in per_level][:2] == [True, True]
    labels = {k: targets[k][None] for k in ("class_targets", "box_targets", "centerness_targets")}
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = model.train_on_batch(tf.zeros([1, 160, 160, 3]), labels, return_dict=True)
    assert np.isfinite(logs["loss"])


# ---------------------------------------------------------------------- config, predict


def test_build_from_feature_channels_equals_a_forward_pass_build():
    # FCOS.build creates the FPN's and the head's weights from the backbone's
    # output_channels: the same weights, in the same order and with the same values for a
    # seed, as creating them by a forward pass; the outputs agree to the bit.
    class BuiltByAForwardPass(FCOS):
        def build(self, input_shape):
            self.call(tf.zeros([1, 32, 32, 3]), training=False)
            self.built = True

    built = _small_model(seed=3)
    called = _small_model(seed=3, model_class=BuiltByAForwardPass)

    def weights(model):
        return [(w.path.split("/", 1)[-1], w.numpy()) for w in model.weights]

    assert len(weights(built)) == len(weights(called)) == 59
    for (name_a, a), (name_b, b) in zip(weights(built), weights(called)):
        assert name_a == name_b
        np.testing.assert_array_equal(a, b)
    images = tf.random.stateless_uniform([2, 64, 96, 3], [0, 1], maxval=255.0)
    for key, value in built(images).items():
        np.testing.assert_array_equal(value, called(images)[key])


def test_backbone_without_output_channels_builds_by_a_forward_pass():
    inputs = keras.Input((None, None, 3))
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inputs)
    c4 = keras.layers.Conv2D(12, 3, strides=2, padding="same")(c3)
    c5 = keras.layers.Conv2D(16, 3, strides=2, padding="same")(c4)
    model = FCOS(
        keras.Model(inputs, [c3, c4, c5]),
        NUM_CLASSES,
        fpn_channels=16,
        head_num_convs=1,
        head_num_groups=8,
    )
    model.build((None, None, None, 3))
    assert model.fpn.built and model.head.built
    assert model.fpn.lateral_convs[-1].kernel.shape == (1, 1, 16, 16)
    outputs = model(tf.zeros([1, 64, 64, 3]))
    # P3-P7 of a 64x64 image: 8x8 + 4x4 + 2x2 + 1 + 1 locations.
    assert outputs["class_logits"].shape == (1, 86, NUM_CLASSES)


def test_get_config_round_trip(tmp_path):
    model = _small_model(
        score_threshold=0.2,
        score_threshold_on="final",
        location_offset=0.0,
        location_grid="torchvision",
        max_detections=7,
        box_loss="iou",
        p6_input="c5",
    )
    config = model.get_config()
    assert config["location_grid"] == "torchvision"
    clone = FCOS.from_config(config)
    assert clone.get_config() == config
    clone.build((None, None, None, 3))
    clone.set_weights(model.get_weights())
    images = tf.random.stateless_normal([1, 64, 96, 3], seed=[5, 6])
    for key, value in model(images).items():
        np.testing.assert_allclose(clone(images)[key], value, rtol=1e-5, atol=1e-6)

    path = str(tmp_path / "fcos.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FCOS) and loaded.max_detections == 7
    for key, value in model(images).items():
        np.testing.assert_allclose(loaded(images)[key], value, rtol=1e-5, atol=1e-6)


def test_predict_shapes_and_padding():
    model = _small_model(max_detections=10, score_threshold=0.0)
    images = np.random.default_rng(0).normal(size=(3, 64, 96, 3)).astype(np.float32)
    det = model.predict(images, batch_size=2, verbose=0)
    assert det["boxes"].shape == (3, 10, 4) and det["scores"].shape == (3, 10)
    assert det["classes"].shape == (3, 10) and det["classes"].dtype == np.int32
    assert det["num_detections"].shape == (3,)
    # Threshold 0 keeps every candidate: 10 detections everywhere, inside the image.
    np.testing.assert_array_equal(det["num_detections"], 10)
    assert (det["classes"] >= 0).all() and (det["classes"] < NUM_CLASSES).all()
    assert (det["boxes"][..., 0::2] <= 96).all() and (det["boxes"][..., 1::2] <= 64).all()
    assert (det["boxes"] >= 0).all()
    assert (np.diff(det["scores"], axis=1) <= 1e-6).all()

    # Prior probability 0.01 < 0.05: an untrained model proposes nothing by default.
    strict = _small_model(max_detections=10)
    det = strict.predict(images, verbose=0)
    np.testing.assert_array_equal(det["num_detections"], 0)
    np.testing.assert_array_equal(det["classes"], -1)


def test_predict_clips_to_valid_size_and_stays_out_of_xla():
    model = _small_model(max_detections=20, score_threshold=0.0)
    model.compile(optimizer="sgd", jit_compile=True)
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    labels = {"image_size": np.array([[64, 64], [40, 24]], np.int32)}
    det = model.predict((images, labels), verbose=0)
    assert (det["boxes"][1, :, 0::2] <= 24).all() and (det["boxes"][1, :, 1::2] <= 40).all()
    assert det["boxes"][0, :, 2].max() > 24


# ----------------------------------------------------------------------- training steps


def _batch(image_size=(64, 64)):
    """4 images; positives are unevenly spread (image 3 has none) across replica halves."""
    rng = np.random.default_rng(7)
    images = rng.normal(size=(4,) + image_size + (3,)).astype(np.float32)
    boxes = [
        [[4, 6, 30, 40], [20, 20, 60, 50], [40, 2, 62, 20]],
        [[10, 10, 50, 60]],
        [[0, 30, 16, 60]],
        np.zeros([0, 4]),
    ]
    classes = [[0, 1, 2], [1], [2], []]
    return images, _labels(boxes, classes, image_size)


def test_compile_builds_the_optimizer_so_fit_traces_the_step_once():
    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    assert model.optimizer.built
    momenta = [v for v in model.optimizer.variables if "momentum" in v.path]
    assert len(momenta) == len(model.trainable_variables)
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    images, labels = _batch()
    model.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(), steps_per_epoch=2, verbose=0)
    # Built inside the first trace, the optimizer's new variables make tf.function trace
    # the whole step twice.
    assert len(traces) == 1


def test_train_step_traces_no_gradient_into_frozen_layers():
    model = _small_model()
    # A frozen layer's TensorFlow variable stays trainable to TensorFlow: a tape that
    # watched every variable it read would trace the gradient down into the frozen stem.
    stem = [layer for layer in model.backbone.layers if layer.name.startswith("stem")]
    assert stem
    for layer in stem:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    images, labels = _batch()
    graph = tf.function(model.train_step).get_concrete_function((images, labels)).graph
    backward = [op.name for op in graph.get_operations() if op.name.startswith("gradient_tape/")]
    assert any("/c3_conv" in name for name in backward)
    assert not [name for name in backward if "/stem" in name]
    # And the step still trains what is trainable, and only that.
    before = [v.numpy() for v in model.weights]
    model.train_step((images, labels))
    changed = {v.path for v, b in zip(model.weights, before, strict=True) if np.any(v.numpy() != b)}
    kernels = {v.path for v in model.backbone.trainable_weights if v.path.endswith("kernel")}
    assert len(kernels) == 6 and kernels <= changed  # c3..c5, two convs each
    assert not changed & {v.path for layer in stem for v in layer.weights}


def _call_config():
    """This thread's session config for function calls (a ``ConfigProto`` to edit)."""
    from tensorflow.python.eager import context

    config = tf.compat.v1.ConfigProto()
    config.ParseFromString(context.context().function_call_options.config_proto_serialized)
    return config


def _rewrite_options():
    """This thread's grappler options for function calls."""
    return _call_config().graph_options.rewrite_options


def test_cpu_train_function_runs_with_lean_graph_rewrites(monkeypatch):
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    defaults = _rewrite_options()
    seen = []

    def recording_make_train_function(self, force=False):
        self.train_function = lambda iterator: seen.append(_rewrite_options()) or iterator

    monkeypatch.setattr(TensorFlowTrainer, "make_train_function", recording_make_train_function)
    assert model.make_train_function()("batch") == "batch"
    (inside,) = seen
    assert inside.memory_optimization == inside.NO_MEM_OPT
    assert inside.layout_optimizer == inside.OFF
    assert inside.meta_optimizer_iterations == inside.ONE
    assert inside.disable_tfg_optimizer and not defaults.disable_tfg_optimizer
    # Only around the train function's calls: this thread's defaults are back afterwards,
    # and other graphs keep them.
    assert _rewrite_options() == defaults
    assert defaults.memory_optimization != defaults.NO_MEM_OPT
    # Eagerly there are no graph rewrites to change.
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    model.make_train_function(force=True)("batch")
    # With a GPU visible the layout and memory optimizers are TensorFlow's to run.
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    model.make_train_function(force=True)("batch")
    assert len(seen) == 3 and seen[1] == seen[2] == defaults


def _optimized_graph(function, *args, tfg):
    """Grappler's graph of ``function``'s first call under ``cpu_train_rewrites``.

    ``tfg``: run the TFG optimizer (the lean rewrites turn it off). Returns the sorted
    ``(name, op, inputs, attributes)`` of the nodes, constant tensors as numpy bytes (TFG
    and grappler write the same value in different proto fields), without what varies
    from one trace of the same step to the next: colocation hints (``_class``; on one device
    they place nothing) and the capture names of arguments.
    """
    from tensorflow.python.eager import context as tf_context

    from fcos_tf.modeling.fcos import cpu_train_rewrites

    context = tf_context.context()
    with cpu_train_rewrites():
        if tfg:
            config = _call_config()
            config.graph_options.rewrite_options.disable_tfg_optimizer = False
            context.function_call_options = tf_context.FunctionCallOptions(
                context.function_call_options.executor_type, config
            )
        context.enable_run_metadata()
        try:
            function(*args)
            metadata = context.export_run_metadata()
        finally:
            context.disable_run_metadata()
    graph = max(metadata.function_graphs, key=lambda g: len(g.post_optimization_graph.node))
    graph = graph.post_optimization_graph
    # Arguments are named after the trace's captures (numbered anew in every trace): name
    # them by position.
    names = {n.name: f"arg{n.attr['index'].i}" for n in graph.node if n.op == "_Arg"}

    def rename(name):
        control, name = ("^", name[1:]) if name.startswith("^") else ("", name)
        node, _, port = name.partition(":")
        return control + names.get(node, node) + (":" + port if port else "")

    nodes = []
    for node in graph.node:
        attributes = []
        for key, value in sorted(node.attr.items()):
            if key in ("_class", "_user_specified_name"):
                continue
            if value.HasField("tensor"):
                array = tf.make_ndarray(value.tensor)
                value = (array.dtype.str, array.shape, array.tobytes())
            else:
                value = value.SerializeToString(deterministic=True)
            attributes.append((key, value))
        nodes.append(
            (rename(node.name), node.op, tuple(map(rename, node.input)), tuple(attributes))
        )
    return sorted(nodes)


def test_lean_rewrites_without_tfg_optimize_the_train_step_alike():
    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    images, labels = _batch()
    data = (tf.constant(images), labels)
    with_tfg = _optimized_graph(tf.function(model.train_step), data, tfg=True)
    lean = _optimized_graph(tf.function(model.train_step), data, tfg=False)
    assert len(lean) > 500 and any(op.startswith("_Fused") for _, op, _, _ in lean)
    assert lean == with_tfg


def _fit_recording_steps(monkeypatch, dataset, gpu=False, **compile_kwargs):
    """``(history, weights, iterations, traces)`` of 2 epochs of ``fit`` on ``dataset``.

    ``traces`` counts the traces of ``FCOS._train_on_next_batch``; ``gpu`` makes the model
    see a GPU, so that ``fit`` runs Keras' own train function.
    """
    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), **compile_kwargs)
    traces = []
    one_step = model._train_on_next_batch
    model._train_on_next_batch = lambda iterator: traces.append(1) or one_step(iterator)
    with monkeypatch.context() as patch:
        if gpu:
            patch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
        history = model.fit(dataset, epochs=2, verbose=0).history
    return history, model.get_weights(), int(model.optimizer.iterations), len(traces)


def test_cpu_fit_steps_in_one_function_as_keras_function_does(monkeypatch):
    images, labels = _batch()
    # Three batches of 4 and no repeat: each epoch ends when the data does.
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3)
    history, weights, iterations, traces = _fit_recording_steps(monkeypatch, dataset)
    assert traces == 1 and iterations == 6
    keras_history, keras_weights, keras_iterations, keras_traces = _fit_recording_steps(
        monkeypatch, dataset, gpu=True
    )
    assert keras_traces == 0 and keras_iterations == 6
    losses = {"loss", "cls_loss", "box_loss", "ctr_loss", "num_pos"}
    assert set(history) == set(keras_history) == losses
    for key, values in history.items():
        assert len(values) == 2
        np.testing.assert_allclose(values, keras_history[key], rtol=1e-6, err_msg=key)
    assert history["loss"][1] < history["loss"][0]
    for index, (a, b) in enumerate(zip(weights, keras_weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"weight {index}")
    # Several steps per call take Keras' function, on the CPU too.
    _, _, iterations, traces = _fit_recording_steps(monkeypatch, dataset, steps_per_execution=2)
    assert traces == 0 and iterations == 6


def test_train_and_test_step_metrics():
    model = _small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images, labels = _batch()
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_step((tf.constant(images), labels))
    logs = {k: float(v) for k, v in logs.items()}
    assert set(logs) == {"loss", "cls_loss", "box_loss", "ctr_loss", "num_pos"}
    np.testing.assert_allclose(
        logs["loss"], logs["cls_loss"] + logs["box_loss"] + logs["ctr_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(logs["num_pos"], (labels["class_targets"] >= 0).sum() / 4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    for metric in model.metrics:
        metric.reset_state()
    after = [w.copy() for w in model.get_weights()]
    test_logs = model.test_step((tf.constant(images), labels))
    assert all(np.array_equal(a, b) for a, b in zip(after, model.get_weights()))
    assert np.isfinite(float(test_logs["loss"]))


def test_mixed_precision_outputs_stay_float32():
    keras.utils.set_random_seed(0)
    model = FCOS(
        build_backbone("small", channels=(16, 32, 64), stem_channels=8),
        NUM_CLASSES,
        fpn_channels=16,
        head_num_convs=1,
        head_num_groups=8,
        dtype="mixed_float16",
    )
    model.build((None, None, None, 3))
    assert model.head.compute_dtype == "float16"
    images, labels = _batch()
    out = model(images)
    assert all(v.dtype == tf.float32 for v in out.values())
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
    history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    clone = FCOS.from_config(model.get_config())
    assert clone.head.compute_dtype == "float16" and clone.fpn.variable_dtype == "float32"


def test_xla_train_step_matches_graph_train_step():
    images, labels = _batch()
    histories = []
    for jit_compile in (False, True):
        model = _small_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit_compile)
        assert model.jit_compile == jit_compile
        histories.append(model.fit(images, labels, batch_size=4, epochs=2, verbose=0).history)
    for key in ("loss", "cls_loss", "box_loss", "ctr_loss"):
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-4, err_msg=key)


def _train(strategy, weights, images, labels, steps):
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = _small_model()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).repeat()
    history, snapshots = [], []
    for epochs in steps:
        result = model.fit(dataset, epochs=epochs, steps_per_epoch=1, verbose=0)
        history += result.history["loss"]
        snapshots.append([w.copy() for w in model.get_weights()])
    return history, snapshots


def test_mirrored_strategy_matches_single_device(two_replicas):
    images, labels = _batch()
    weights = _small_model().get_weights()
    # Replica 0 gets images 0-1 (4 boxes), replica 1 images 2-3 (1 box): local normalisers
    # or averaged gradients would give a different update.
    single_loss, single = _train(None, weights, images, labels, steps=(1, 2))
    strategy = two_replicas
    mirrored_loss, mirrored = _train(strategy, weights, images, labels, steps=(1, 2))

    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(weights, single[0]))
    for after_steps, (got, want) in zip((1, 3), zip(mirrored, single)):
        for index, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_allclose(
                a, b, rtol=1e-5, atol=1e-6, err_msg=f"weight {index} after {after_steps} steps"
            )


# ------------------------------------------------------------------------------ learning


def _iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _ap50(det, gt_boxes, gt_classes, num_classes):
    """Mean over classes of the all-point interpolated AP at IoU 0.5 (COCO/VOC style)."""
    aps = []
    for cls in range(num_classes):
        records = []  # (score, image, box)
        num_gt = sum(int(np.sum(np.asarray(c) == cls)) for c in gt_classes)
        for image in range(len(gt_boxes)):
            for k in range(int(det["num_detections"][image])):
                if det["classes"][image, k] == cls:
                    records.append((det["scores"][image, k], image, det["boxes"][image, k]))
        if num_gt == 0:
            continue
        records.sort(key=lambda r: -r[0])
        used = set()
        tp = []
        for _, image, box in records:
            best, best_iou = None, 0.5
            for g, (gbox, gcls) in enumerate(zip(gt_boxes[image], gt_classes[image])):
                if gcls == cls and (image, g) not in used and _iou(box, gbox) >= best_iou:
                    best, best_iou = g, _iou(box, gbox)
            tp.append(best is not None)
            if best is not None:
                used.add((image, best))
        tp = np.array(tp, np.float64)
        recall = np.concatenate([[0.0], np.cumsum(tp) / num_gt])
        precision = np.concatenate([[1.0], np.cumsum(tp) / np.arange(1, len(tp) + 1)])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        aps.append(np.sum(np.diff(recall) * precision[1:]))
    return float(np.mean(aps))


def test_ap50_helper():
    gt_boxes = [np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    gt_classes = [[0], [0]]
    det = {
        "num_detections": np.array([2, 0]),
        "classes": np.array([[0, 0], [-1, -1]]),
        "scores": np.array([[0.9, 0.8], [0, 0]]),
        "boxes": np.array([[[0, 0, 10, 10], [0, 0, 10, 11]], [[0] * 4] * 2], np.float32),
    }
    # One true positive, one duplicate false positive, one missed box: AP = 0.5.
    assert _ap50(det, gt_boxes, gt_classes, 1) == pytest.approx(0.5)


@pytest.mark.slow
def test_overfits_a_few_synthetic_images():
    size = 128
    examples = [
        synthetic.generate_example(
            i, image_size=size, seed=0, num_objects=(1, 3), min_object_size=12
        )
        for i in range(6)
    ]
    images = np.stack(
        [transforms.normalize_image(e["image"], "torchvision").numpy() for e in examples]
    )
    boxes = [e["boxes"] for e in examples]
    classes = [e["classes"] for e in examples]
    labels = _labels(boxes, classes, (size, size))
    model = _small_model(num_classes=synthetic.NUM_CLASSES, fpn_channels=32, head_num_convs=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(images, labels, batch_size=6, epochs=80, verbose=0)
    det = model.predict(images, verbose=0)
    assert _ap50(det, boxes, classes, synthetic.NUM_CLASSES) >= 0.9


def test_p2_level():
    """Strides from 4: P2 from the backbone's C2; one output row per location of every level."""
    backbone = build_backbone("small", stem_channels=8, min_level=2)
    model = FCOS(
        backbone, 3, fpn_channels=16, head_num_convs=1, head_num_groups=8, strides=(4, 8, 16)
    )
    model.build((None, None, None, 3))
    outputs = model(tf.zeros([2, 40, 72, 3]))
    assert outputs["class_logits"].shape[1] == loc_lib.num_locations((40, 72), (4, 8, 16))
    assert model.fpn.min_level == 2
    with pytest.raises(ValueError, match="need a backbone that returns C2"):
        FCOS(build_backbone("small", stem_channels=8), 3, fpn_channels=16, strides=(4, 8, 16))
