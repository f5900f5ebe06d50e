"""Shared benchmark helpers: machine description, median-of-N timing, FLOP counting, peers.

Every benchmark script in this folder prints one Markdown table whose header says on which
machine, when and under which load it ran, so that a table pasted into ``BENCHMARKS.md`` is
self-describing. Timings are medians of ``repeats`` calls after ``warmup`` untimed calls
(the first call traces, and with XLA compiles, the function).

FLOPs are counted from the graph of a traced ``tf.function`` (see :func:`graph_flops`): a
multiply-add is 2 FLOPs, as in ``tf.compat.v1.profiler``; only convolutions and matrix
products are counted, element-wise ops (norms, activations, losses) are not.
"""

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Builds models under a Keras dtype policy ("float32", "mixed_bfloat16", ...), restored on exit.
from fcos_tf.core.builders import dtype_policy  # noqa: E402, F401

# ---------------------------------------------------------------------------------------------
# Machine


def cpu_model():
    """The CPU model name as ``lscpu`` prints it (``platform.processor()`` as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def load_average():
    """The 1-minute load average (``uptime``'s first figure), or NaN where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# Vector and matrix extensions that change which kernels oneDNN and XNNPACK pick.
_ISA_FLAGS = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512F"),
    ("avx512bw", "BW"),
    ("avx512_vnni", "VNNI"),
    ("avx512_bf16", "BF16"),
    ("avx512_fp16", "FP16"),
    ("amx_tile", "AMX"),
)


def cpu_flags():
    """The CPU's vector extensions that matter here, e.g. ``"AVX2, AVX-512F, BW, VNNI, AMX"``.

    Read from ``/proc/cpuinfo``; ``"flags unknown"`` elsewhere. ``ONEDNN_MAX_CPU_ISA``, when
    set, is appended: it limits oneDNN's kernels below what the CPU has.
    """
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("flags"))
        have = set(line.split(":", 1)[1].split())
        text = ", ".join(name for flag, name in _ISA_FLAGS if flag in have) or "no AVX2"
    except (OSError, StopIteration):
        text = "flags unknown"
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        text += f"; oneDNN limited to {os.environ['ONEDNN_MAX_CPU_ISA']}"
    return text


def describe_machine():
    """One line naming the machine, the software and the time of the run.

    Returns:
        str, e.g. ``"AMD EPYC (AVX2), 2 cores, TF 2.21.0, Keras 3.15.1, 2026-11-24 20:12 UTC,
        load 0.4"``.
    """
    import keras

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [
            tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus
        ]
        accel = f", {len(gpus)}x {names[0]}"
    else:
        accel = ""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores{accel}, TF {tf.__version__}, "
        f"Keras {keras.__version__}, {now}, load {load_average():.1f}"
    )


def print_header(title, argv=None):
    """Prints the title, the exact command and the machine line above a table."""
    argv = sys.argv if argv is None else argv
    print(f"\n### {title}\n")
    print(f"Command: `python {' '.join(argv)}`  ")
    print(f"Machine: {describe_machine()}\n")


def print_table(columns, rows):
    """Prints a Markdown table.

    Args:
        columns: list of str, column titles.
        rows: list of lists of cells (formatted with ``str``; floats with 3 significant digits).
    """

    def fmt(cell):
        if isinstance(cell, float):
            if math.isnan(cell):
                return "-"
            return f"{cell:.3g}" if abs(cell) < 1000 else f"{cell:.0f}"
        return str(cell)

    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(c) for c in row) + " |")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Timing


def _sync(outputs):
    """Waits for every tensor in a nested structure (copies it to host memory)."""
    for leaf in tf.nest.flatten(outputs):
        if isinstance(leaf, (tf.Tensor, tf.Variable)):
            leaf.numpy()
    return outputs


def time_call(fn, *, warmup=1, repeats=5):
    """Median wall time of ``fn()`` after ``warmup`` untimed calls.

    Args:
        fn: callable with no argument; its result (tensors, nested) is waited for.
        warmup: int, untimed calls first (tracing, XLA compilation, allocator warm-up).
        repeats: int >= 1, timed calls.

    Returns:
        dict with "median", "min", "max" (seconds), "times" (list of float), "first"
        (seconds of the first warm-up call: tracing and compilation included; NaN when
        warmup is 0) and "load" (1-minute load average after the run).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    first = float("nan")
    for i in range(warmup):
        start = time.perf_counter()
        _sync(fn())
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - start)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "times": times,
        "first": first,
        "load": load_average(),
    }


def matmul_gflops(n=4096, *, dtype=tf.float32, repeats=5):
    """Achieved GFLOP/s of an ``n x n`` by ``n x n`` ``tf.matmul``: the attainable peak.

    Args:
        n: int, matrix side (4096 is large enough to be compute-bound on a CPU).
        dtype: tf.DType of both operands.
        repeats: int, timed calls (median taken).

    Returns:
        (gflops: float, timing dict of :func:`time_call`).
    """
    a = tf.random.stateless_normal([n, n], seed=[1, 2], dtype=tf.float32)
    b = tf.random.stateless_normal([n, n], seed=[3, 4], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda: tf.matmul(a, b))
    timing = time_call(matmul, warmup=2, repeats=repeats)
    return 2.0 * n**3 / timing["median"] / 1e9, timing


# ---------------------------------------------------------------------------------------------
# FLOPs


def _static_shape(tensor):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(f"FLOP counting needs static shapes; {tensor.name} has {shape}")
    return shape.as_list()


def _conv_flops(op):
    """2 * output elements * kernel volume * input channels, for Conv2D and its gradients.

    For ``Conv2DBackpropInput`` (input gradient) and ``Conv2DBackpropFilter`` (weight
    gradient) the count equals the forward convolution's: same multiply-adds, reordered.
    """
    fmt = op.get_attr("data_format").decode()
    if op.type == "Conv2D":
        kernel = _static_shape(op.inputs[1])
        out = _static_shape(op.outputs[0])
    elif op.type == "Conv2DBackpropInput":
        kernel = _static_shape(op.inputs[1])
        out = _static_shape(op.inputs[2])  # gradient w.r.t. the forward output
    else:  # Conv2DBackpropFilter
        kernel = _static_shape(op.outputs[0])
        out = _static_shape(op.inputs[2])
    kh, kw, cin, cout = kernel
    out_spatial = out[1] * out[2] if fmt == "NHWC" else out[2] * out[3]
    return 2 * out[0] * out_spatial * cout * kh * kw * cin


def _matmul_flops(op):
    a = _static_shape(op.inputs[0])
    out = _static_shape(op.outputs[0])
    transpose_a = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
    inner = a[-2] if transpose_a else a[-1]
    return 2 * int(np.prod(out)) * inner


_FLOP_COUNTERS = {
    "Conv2D": _conv_flops,
    "Conv2DBackpropInput": _conv_flops,
    "Conv2DBackpropFilter": _conv_flops,
    "MatMul": _matmul_flops,
    "BatchMatMulV2": _matmul_flops,
    "BatchMatMulV3": _matmul_flops,
}


def graph_flops(graph):
    """FLOPs of the convolutions and matrix products of a traced graph.

    Walks the ops of ``graph`` and of the functions it calls (``PartitionedCall``, ``cond``
    and ``while`` bodies are counted once each). Needs fully static shapes.

    Args:
        graph: a ``tf.Graph``, e.g. ``tf.function(f).get_concrete_function(spec).graph``.

    Returns:
        dict op type -> FLOPs (int), with "total".
    """
    counts = {}
    seen = set()

    def visit(g):
        for op in g.get_operations():
            counter = _FLOP_COUNTERS.get(op.type)
            if counter is not None:
                counts[op.type] = counts.get(op.type, 0) + counter(op)
        # Functions called from this graph (cond/while branches, nested tf.functions).
        for name, fn in getattr(g, "_functions", {}).items():
            if name in seen:
                continue
            seen.add(name)
            sub = getattr(fn, "graph", None)
            if sub is not None:
                visit(sub)

    visit(graph)
    counts["total"] = sum(counts.values())
    return counts


# ---------------------------------------------------------------------------------------------
# Workloads shared by the scripts


def keras_cv_retinanet(num_classes, *, jit_compile=False, learning_rate=0.01):
    """keras-cv 0.9 ``RetinaNet`` on a ResNet-50 (v1) backbone with random weights.

    ``keras_cv.models.ResNet50Backbone()`` fetches its preset config from Kaggle even
    without weights, so the backbone is built from its explicit stage parameters instead
    (the same network). Compiled like FCOS: SGD momentum 0.9, focal + smooth-L1 losses.

    Args:
        num_classes: int, K.
        jit_compile: bool, XLA for the train step (and predict).
        learning_rate: float.

    Returns:
        a compiled ``keras_cv.models.RetinaNet`` (boxes ``xyxy``).
    """
    import keras
    import keras_cv

    backbone = keras_cv.models.ResNetBackbone(
        stackwise_filters=[64, 128, 256, 512],
        stackwise_blocks=[3, 4, 6, 3],
        stackwise_strides=[1, 2, 2, 2],
        block_type="block",
        include_rescaling=False,
        input_shape=(None, None, 3),
    )
    model = keras_cv.models.RetinaNet(
        num_classes=num_classes, bounding_box_format="xyxy", backbone=backbone
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        classification_loss="focal",
        box_loss="smoothl1",
        jit_compile=jit_compile,
    )
    return model


def random_boxes(batch, num_boxes, height, width, num_classes, seed=0):
    """Random valid ground truth: boxes float32 [B, M, 4] xyxy pixels, classes int32 [B, M]."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, width * 0.7, (batch, num_boxes))
    y0 = rng.uniform(0, height * 0.7, (batch, num_boxes))
    w = rng.uniform(16, width * 0.3, (batch, num_boxes))
    h = rng.uniform(16, height * 0.3, (batch, num_boxes))
    boxes = np.stack([x0, y0, np.minimum(x0 + w, width), np.minimum(y0 + h, height)], -1)
    classes = rng.integers(0, num_classes, (batch, num_boxes))
    return boxes.astype(np.float32), classes.astype(np.int32)


def random_images(batch, height, width, seed=0):
    """float32 [B, H, W, 3] in a caffe-normalised range (about -120..150)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (batch, height, width, 3)) - 120.0).astype(np.float32)


def repeat_dataset(*tensors):
    """An endless ``tf.data`` dataset repeating one (already batched) element."""
    element = tensors[0] if len(tensors) == 1 else tuple(tensors)
    return tf.data.Dataset.from_tensors(element).repeat()


def trace_op_times(logdir):
    """``{op event name: total picoseconds}`` over TensorFlow's compute threads of a trace.

    Reads the ``tf.profiler`` trace written into ``logdir``. Op events are named
    ``"<scope>/<node>:<op type>"``; the executor's own events (``ExecutorState::...``,
    thread-pool bookkeeping) are left out. Times add up over the executor's threads.
    """
    import collections
    import glob

    # The XSpace proto that tf.profiler writes; TensorFlow ships its Python module.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "ExecutorState" in name or "Threadpool" in name:
                    continue
                totals[name] += event.duration_ps
    return totals


# Name scopes of a train step's backward ops in a trace: the tape's, those of the head
# towers' backward function (FCOSHead runs the towers as one function per level),
# GroupNorm's written-out backward pass and the ResNet's 1x1 convolutions' (bfloat16).
_BACKWARD_SCOPES = ("gradient_tape/", "/gradients/", "group_norm_gradient", "conv1x1_gradient")


def is_backward_op(name):
    """Whether the op event ``name`` (``scope/.../op:Type``) of a train step is backward."""
    return any(scope in name for scope in _BACKWARD_SCOPES)


def time_train_steps(model, dataset, *, warmup=1, repeats=5):
    """Median time of the model's own compiled train function (what ``fit`` runs per step).

    The first warm-up step goes through ``model.fit`` (which builds the optimizer and
    traces), the rest call ``model.train_function`` on an iterator of ``dataset``, exactly
    the call ``fit`` makes per step, without callbacks and progress bars.

    Args:
        model: a compiled ``keras.Model``.
        dataset: ``tf.data.Dataset`` of batches, endless.
        warmup: int >= 1.
        repeats: int >= 1.

    Returns:
        timing dict of :func:`time_call`; "first" is the time from the ``fit`` call to the end
        of its step (trace, graph optimisation, kernel creation, the step), read by a
        callback: ``fit`` can take seconds more to return while it tears its data iterator
        down (2.4 s in some runs on a 2-core CPU), which is not step time.
    """
    import keras

    class FirstStepEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.at = time.perf_counter()

    first_step_end = FirstStepEnd()
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[first_step_end])
    first = first_step_end.at - start
    iterator = iter(dataset)
    timing = time_call(lambda: model.train_function(iterator), warmup=warmup - 1, repeats=repeats)
    timing["first"] = first
    return timing


def predict_function(model):
    """``images -> model.predict_step(images)`` through the model's own compiled predict function.

    What ``model.predict`` runs per batch, without its data adapter and progress bar.
    ``predict_on_batch`` would do too, but it hands ``predict_step`` a 1-tuple, which keras-cv
    0.9's ``RetinaNet.predict_step`` mistakes for the images (it reads ``args[-1]``) under
    Keras 3.15; passing the bare tensor works for both models.

    Args:
        model: a compiled ``keras.Model``.

    Returns:
        callable: float32 [B, H, W, 3] -> the predict step's outputs.
    """
    model.make_predict_function()
    return lambda images: model.predict_function([images])


def conv_layers_channels_last(model):
    """True when every Conv2D of ``model`` (recursively) uses NHWC (oneDNN's fast path)."""
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D) and layer.data_format != "channels_last":
            return False
    return True


# ---------------------------------------------------------------------------------------------
# FCOS inputs and models shared by the peer comparisons

NUM_CLASSES = 80
NUM_BOXES = 8


def parse_size(text):
    """ "HxW" -> (H, W) ints."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from e
    return h, w


def fcos_batch(batch, height, width, seed=0):
    """(images, labels) of random boxes for FCOS, labels from the real target assignment."""
    from fcos_tf.ops.targets import compute_targets

    images = random_images(batch, height, width, seed)
    boxes, classes = random_boxes(batch, NUM_BOXES, height, width, NUM_CLASSES, seed)
    per_image = [
        compute_targets(tf.constant(b), tf.constant(c), (height, width))
        for b, c in zip(boxes, classes)
    ]
    labels = {
        k: tf.stack([t[k] for t in per_image]).numpy()
        for k in ("class_targets", "box_targets", "centerness_targets")
    }
    return images, labels


def retinanet_dataset(batch, height, width, seed=0):
    """Endless dataset of one random batch for keras-cv RetinaNet: (images, {boxes, classes})."""
    images = random_images(batch, height, width, seed)
    boxes, classes = random_boxes(batch, NUM_BOXES, height, width, NUM_CLASSES, seed)
    return repeat_dataset(images, {"boxes": boxes, "classes": classes.astype(np.float32)})


def build_fcos(backbone, jit_compile):
    """FCOS with random weights, compiled like the recipe (SGD momentum 0.9)."""
    import keras

    from fcos_tf.modeling.backbone import build_backbone
    from fcos_tf.modeling.fcos import FCOS

    model = FCOS(build_backbone(backbone), num_classes=NUM_CLASSES)
    model.build((None, None, None, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    return model


# ---------------------------------------------------------------------------------------------
# PyTorch peer

# The torchvision ops library this module defines where torchvision's own does not load.
_TORCHVISION_OPS = None


def _greedy_nms(boxes, scores, iou_threshold):
    """torchvision's ``nms`` in PyTorch and numpy: indices kept, in descending score order.

    ``boxes`` float ``[N, 4]`` xyxy, ``scores`` float ``[N]``; a box is dropped when its IoU
    with a kept box of higher score exceeds ``iou_threshold`` (torchvision's rule).
    """
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    b = boxes[order].float()
    lo = torch.maximum(b[:, None, :2], b[None, :, :2])
    hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    suppresses = (inter / (area[:, None] + area[None] - inter) > iou_threshold).numpy()
    keep = np.ones([order.numel()], bool)
    for i in range(order.numel()):
        if keep[i]:
            keep[i + 1 :] &= ~suppresses[i, i + 1 :]
    return order[torch.from_numpy(keep)]


def import_torchvision():
    """Imports torchvision, also where its compiled ops do not load.

    PyPI's torchvision wheel is built against CUDA PyTorch; next to the CPU build of
    ``torch`` its ``_C`` library does not load (it links ``libc10_cuda.so``) and
    ``import torchvision`` fails on ``torchvision::nms``. Detection models need only that
    op: it is then defined here (:func:`_greedy_nms`, same rule and output as torchvision's
    C++ kernel, on the CPU) before torchvision is imported.

    Returns:
        ``(torchvision module, note)``: ``note`` is None when torchvision's own ops loaded,
        else one sentence saying that NMS is this module's.
    """
    global _TORCHVISION_OPS
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ImportError("torchvision is not installed (pip install torchvision).")
    note = None
    if _TORCHVISION_OPS is None and not hasattr(torch.ops.torchvision, "nms"):
        folder = spec.submodule_search_locations[0]
        library = next(
            (os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("_C.")), None
        )
        try:
            torch.ops.load_library(library)
        except (OSError, TypeError):
            _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
            _TORCHVISION_OPS.define(
                "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
            _TORCHVISION_OPS.define(
                "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
            _TORCHVISION_OPS.impl("nms", _greedy_nms, "CPU")
    import torchvision
    import torchvision.extension

    if _TORCHVISION_OPS is not None:
        torchvision.extension._has_ops = lambda: True
        note = (
            "torchvision's compiled ops do not load next to this CPU build of torch (a CUDA "
            "wheel); its NMS is benchmarks/common.py's PyTorch/numpy greedy NMS."
        )
    return torchvision, note


def torchvision_fcos(min_size, max_size, seed=0):
    """torchvision's COCO FCOS architecture (FrozenBatchNorm2d) with random weights.

    The BatchNorm statistics are measured on a random picture (one forward pass in training
    mode with cumulative averages), then frozen: the activations keep a trained network's
    scale instead of growing through 50 layers without normalisation.

    Args:
        min_size, max_size: torchvision's resize (short side, long side cap).
        seed: int, of the weights and of the calibration picture.

    Returns:
        ``torchvision.models.detection.FCOS`` in eval mode, float32 NCHW.
    """
    import torch

    torchvision, _ = import_torchvision()
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.fcos import FCOS
    from torchvision.ops import misc as misc_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    def build(norm_layer):
        torch.manual_seed(seed)
        backbone = torchvision.models.resnet50(weights=None, norm_layer=norm_layer)
        backbone = _resnet_fpn_extractor(
            backbone, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
        )
        return FCOS(backbone, 91, min_size=min_size, max_size=max_size)

    calibrating = build(lambda c: torch.nn.BatchNorm2d(c, momentum=None))
    calibrating.backbone.train()
    with torch.no_grad():
        pixels = torch.from_numpy(photo(512, 512, seed)).permute(2, 0, 1).float() / 255
        calibrating.backbone(calibrating.transform([pixels])[0].tensors)
    state = {k: v for k, v in calibrating.state_dict().items() if "num_batches" not in k}
    model = build(misc_ops.FrozenBatchNorm2d)
    model.load_state_dict(state)
    return model.eval()


def photo(height, width, seed=0):
    """A smooth random picture (uint8 RGB) with flat rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [128 + 90 * np.sin(x / (40 + 9 * c + seed) + y / (55 - 7 * c)) for c in range(3)], -1
    )
    for _ in range(12):
        y0, x0 = rng.integers(0, height - 32), rng.integers(0, width - 32)
        h, w = rng.integers(24, max(25, height // 3)), rng.integers(24, max(25, width // 3))
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
