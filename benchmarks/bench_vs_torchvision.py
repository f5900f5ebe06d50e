r"""fcos_tf's served SavedModel against torchvision's ``fcos_resnet50_fpn`` at its best, on the CPU.

    python -m benchmarks.bench_vs_torchvision --part=inference
    python -m benchmarks.bench_vs_torchvision --part=inference --sizes=512x512 --batch=8
    python -m benchmarks.bench_vs_torchvision --part=train
    python -m benchmarks.bench_vs_torchvision --part=first_step
    python -m benchmarks.bench_vs_torchvision --part=train_profile --precision=bfloat16
    python -m benchmarks.bench_vs_torchvision --part=train_kernels --precision=bfloat16
    ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.bench_vs_torchvision --part=inference \
        --sizes=512x512 --peers=none --precision=float32

Both detectors are the same network with the same weights: torchvision's
``fcos_resnet50_fpn`` architecture as its COCO model ships (ResNet-50 with
``FrozenBatchNorm2d``, GroupNorm head), with random weights (no downloads) whose BatchNorm
statistics are those of a random picture (so that activations and scores have realistic
ranges and both run the same, small, NMS), converted to fcos_tf by
:func:`fcos_tf.importers.torchvision.load_torchvision_fcos_weights` (recipe
``fcos_torchvision_r50``).

``--part=inference``, per image size and batch:

- fcos_tf: the SavedModel of ``fcos-export`` at each ``--precision`` (uint8 ``images`` in,
  TF OD API outputs out, called through ``serving_default`` as TF Serving calls it), and
  the network alone (:func:`fcos_tf.serving.precision.inference_model` in a ``tf.function``
  on the normalised, padded input);
- torchvision: the model as shipped (NCHW float32), with ``channels_last`` (float32), with
  ``channels_last`` + ``torch.autocast("cpu", bfloat16)`` and its network alone (backbone
  + FPN + head), from the same uint8 pictures converted as a user would
  (``torch.from_numpy(x).permute(2, 0, 1).float() / 255``), under ``torch.inference_mode``;
  and the ``channels_last`` model and network under ``torch.compile`` (inductor, which
  writes and compiles C++ for the CPU; ``--no-torch_compile`` leaves them out).

Every candidate is called in turn, ``--repeats`` rounds after one warm-up round (the first
call of each is reported), so that the ratios hold on a loaded machine; the 4096x4096 matmul
rate of each framework and precision is measured in the same run and the network rates
(convolution and matmul FLOPs of the network, :func:`common.graph_flops`) are given as a
fraction of it.

``--part=train``: one train step at 512x512, batch 2 (the training pipeline's targets for
fcos_tf; torchvision's own target assignment), SGD momentum 0.9: fcos_tf float32 and
``mixed_bfloat16`` (``model.fit``'s compiled step) against torchvision float32 and
``channels_last`` + ``autocast`` (and that under ``torch.compile``), taking turns as above;
the first step (build and tracing included) separately.

``--part=first_step``: each train-step candidate's build + first step in a new process
(``--rounds`` processes each, taking turns), as a user starting a run sees it, and the
import times of TensorFlow and torch, which come before. (The torchvision processes import
TensorFlow too, idle: the benchmark's helpers do.)

``--part=train_profile`` (the last ``--precision``; ``bfloat16`` is ``mixed_bfloat16``):
where fcos_tf's first step's time goes (building the model, tracing the step in Python, the
first call: grappler, kernel creation and the step itself; and the first step with
``run_eagerly=True``, which traces nothing), and the op time of one step by op type and by
part of the graph (forward, gradient, optimizer), read from a ``tf.profiler`` trace. Op
times add up over TensorFlow's threads, so their sum exceeds the step's wall time. Then
(unless ``--peers=none``) torchvision's step at the same precision (``channels_last``, and
``autocast`` for bfloat16) by op from ``torch.profiler``: its convolutions forward and
backward, and the rest.

``--part=train_kernels`` (the last ``--precision``): the oneDNN primitives of the train step
of each framework (``ONEDNN_VERBOSE=1``, each in a new process, ``--repeats`` steps after
three, fcos_tf with one inter-op thread so that no two primitives share the cores and each
time is its own): time per step by primitive, implementation and propagation kind, then,
for the implementations both frameworks run on the same problems (same shapes, strides and
padding), the time of those problems in each.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# torch's OpenMP workers spin at barriers. Here they would spin on the cores while
# TensorFlow runs its turn (the candidates alternate in one process): with
# OMP_WAIT_POLICY=ACTIVE, TF's 3x3 conv on P3 took 142 ms beside the spinning workers against
# 91 ms without them, on an otherwise idle 2-core machine, while torch's own times did not
# change. On a loaded machine, spinning workers also lose their cores to other processes (an
# R-50 trunk at 128x192: 1.6 s against 0.09 s at load 8.6). Passive waiting is fair to both.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import tensorflow as tf

from benchmarks import common
from fcos_tf.core import builders
from fcos_tf.core import config as config_lib
from fcos_tf.data.label_map import LabelMap
from fcos_tf.importers.torchvision import load_torchvision_fcos_weights
from fcos_tf.modeling.fcos import cpu_train_rewrites
from fcos_tf.serving import graph as serving_lib
from fcos_tf.serving import precision as precision_lib
from fcos_tf.serving import saved_model as export_saved_model

RECIPE = "fcos_torchvision_r50"


def torch_matmul_gflops(torch, n=4096, dtype=None, repeats=5):
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    timing = common.time_call(lambda: torch.matmul(a, b), warmup=2, repeats=repeats)
    return 2.0 * n**3 / timing["median"] / 1e9


def fcos_tf_model(peer, config):
    """The fcos_tf FCOS of ``config`` holding ``peer``'s weights (float32)."""
    label_map = LabelMap.coco_2017()
    model = builders.build_model(config, label_map.num_classes, load_backbone_weights=False)
    state = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    load_torchvision_fcos_weights(model, state, label_map.category_ids)
    return model, label_map


def run_rounds(candidates, repeats):
    """Calls every candidate once per round (one warm-up round first); name -> timing."""
    first, times = {}, {name: [] for name in candidates}
    for name, fn in candidates.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median": statistics.median(t), "min": min(t), "first": first[name]}
        for name, t in times.items()
    }


def inference(args):
    import torch

    torchvision, note = common.import_torchvision()
    torch.set_num_threads(args.threads)
    precisions = args.precision.split(",")
    common.print_header(
        f"Served SavedModel vs torchvision fcos_resnet50_fpn, batch {args.batch}, "
        f"{args.threads} threads"
    )
    if note:
        print(note + "\n")
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (torch).\n")
    # The matmuls run in the same rounds as the detectors, so that their rates see the same
    # load (a shared machine's load moves within minutes). Only at the precisions asked for:
    # with oneDNN held to AVX2 a bfloat16 matmul aborts the process.
    n = 4096
    operands = {}
    for precision, tf_dtype, torch_dtype in (
        ("float32", tf.float32, torch.float32),
        ("bfloat16", tf.bfloat16, torch.bfloat16),
    ):
        if precision not in precisions:
            continue
        a = tf.cast(tf.random.stateless_normal([n, n], [1, 2]), tf_dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], [3, 4]), tf_dtype)
        operands[("tf", precision)] = (tf.function(tf.matmul), a, b)
        operands[("torch", precision)] = (
            torch.matmul,
            torch.randn(n, n).to(torch_dtype),
            torch.randn(n, n).to(torch_dtype),
        )
    matmuls = {
        f"{framework} matmul {n} {precision}": (
            lambda f=fn, a=a, b=b, fw=framework: common._sync(f(a, b)) if fw == "tf" else f(a, b)
        )
        for (framework, precision), (fn, a, b) in operands.items()
    }
    export_root = args.export_dir or tempfile.mkdtemp(prefix="bench_vs_tv_")
    rows = []
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        short, long = min(height, width), max(height, width)
        peer = common.torchvision_fcos(short, long)
        config = config_lib.load_recipe(RECIPE)
        model, label_map = fcos_tf_model(peer, config)
        serving = dataclasses.replace(
            builders.build_serving_config(config), eval_short_side=short, max_size=long
        )
        pixels = np.stack([common.photo(height, width, seed=i) for i in range(args.batch)])
        padded = [-(-height // 32) * 32, -(-width // 32) * 32]
        candidates, flops = {}, {}
        for precision in precisions:
            folder = os.path.join(export_root, f"{size}_{precision}")
            version = os.path.join(folder, "1")
            if not tf.io.gfile.exists(version):
                started = time.perf_counter()
                export_saved_model.export_saved_model(
                    model, label_map, folder, serving, version=1, warmup=False, precision=precision
                )
                print(f"exported {size} {precision} in {time.perf_counter() - started:.0f} s")
            served = tf.saved_model.load(version).signatures[serving_lib.IMAGES_SIGNATURE]
            candidates[f"fcos_tf SavedModel {precision}"] = lambda f=served: common._sync(
                f(images=tf.constant(pixels))
            )
            # The network the SavedModel runs: the frozen one-image network, image by image.
            network = precision_lib.inference_model(model, precision)
            spec = tf.TensorSpec([1, *padded, 3], tf.float32)
            layers_call = tf.function(lambda x, m=network: m(x, training=False))
            graph = layers_call.get_concrete_function(spec).graph
            flops[precision] = args.batch * common.graph_flops(graph)["total"]
            call = tf.function(network.image_network)
            inputs = tf.random.stateless_uniform([args.batch, *padded, 3], [0, 1], -2.0, 2.0)
            candidates[f"fcos_tf network {precision}"] = lambda c=call, x=inputs: [
                common._sync(c(x[i : i + 1])) for i in range(args.batch)
            ]
        if args.peers != "none":
            peer_cl = common.torchvision_fcos(short, long).to(memory_format=torch.channels_last)

            def user_images():
                return [torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pixels]

            def torch_call(m, autocast, network=None):
                def fn():
                    with (
                        torch.inference_mode(),
                        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
                    ):
                        if network is not None:
                            return network(batch_tensor)
                        return m(user_images())

                return fn

            def network_of(m):
                return lambda x: m.head(list(m.backbone(x).values()))

            # torch.compile (inductor's C++ code for the CPU) compiles in the warm-up round;
            # one compiled object per precision.
            compile_peer = torch.compile if args.torch_compile else None

            with torch.inference_mode():
                batch_tensor = peer.transform(user_images())[0].tensors.contiguous(
                    memory_format=torch.channels_last
                )
            if "float32" in precisions:
                candidates["torchvision NCHW float32"] = torch_call(peer, False)
                candidates["torchvision channels_last float32"] = torch_call(peer_cl, False)
                candidates["torchvision network channels_last float32"] = torch_call(
                    peer_cl, False, network_of(peer_cl)
                )
                if compile_peer:
                    candidates["torchvision compiled channels_last float32"] = torch_call(
                        compile_peer(peer_cl), False
                    )
                    candidates["torchvision network compiled channels_last float32"] = torch_call(
                        peer_cl, False, compile_peer(network_of(peer_cl))
                    )
            if "bfloat16" in precisions:
                candidates["torchvision channels_last autocast bf16"] = torch_call(peer_cl, True)
                candidates["torchvision network channels_last autocast bf16"] = torch_call(
                    peer_cl, True, network_of(peer_cl)
                )
                if compile_peer:
                    candidates["torchvision compiled channels_last autocast bf16"] = torch_call(
                        compile_peer(peer_cl), True
                    )
                    candidates["torchvision network compiled channels_last autocast bf16"] = (
                        torch_call(peer_cl, True, compile_peer(network_of(peer_cl)))
                    )
        timings = run_rounds({**matmuls, **candidates}, args.repeats)
        rates = {
            key: 2.0 * n**3 / timings.pop(f"{key[0]} matmul {n} {key[1]}")["median"] / 1e9
            for key in operands
        }
        print(
            f"{size}: same-run {n}x{n} matmul GFLOP/s: "
            + ", ".join(f"{fw} {p} {r:.0f}" for (fw, p), r in rates.items())
        )

        def kind(name):
            precision = "bfloat16" if ("bf" in name.split()[-1]) else "float32"
            return precision, "network" in name

        # The fastest torchvision candidate of the same precision, whole model or network.
        best_peer = {}
        for name, timing in timings.items():
            if name.startswith("torchvision"):
                best = best_peer.get(kind(name))
                if best is None or timing["median"] < best["median"]:
                    best_peer[kind(name)] = timing
        for name, timing in timings.items():
            precision = kind(name)[0]
            framework = "tf" if name.startswith("fcos_tf") else "torch"
            row = [name, size, args.batch, timing["median"], timing["min"], timing["first"]]
            if "network" in name:
                gflops = flops[precision] / timing["median"] / 1e9
                row += [gflops, gflops / rates[(framework, precision)]]
            else:
                row += [float("nan"), float("nan")]
            peer_timing = best_peer.get(kind(name))
            row.append(timing["median"] / peer_timing["median"] if peer_timing else float("nan"))
            rows.append(row)
        del peer
    print(
        f"Network GFLOPs (conv + matmul, batch {args.batch}): "
        + ", ".join(f"{p} {f / 1e9:.0f}" for p, f in flops.items())
        + f"; load after the run {common.load_average():.1f}\n"
    )
    common.print_table(
        [
            "candidate",
            "image",
            "batch",
            "median s",
            "min s",
            "first call s",
            "network GFLOP/s",
            "of same-run matmul",
            "x fastest torchvision (same precision, same part)",
        ],
        rows,
    )


def _train_setup(args, size, batch):
    """fcos_tf's train-step candidates: ``(endless dataset of one batch, build(policy))``.

    The recipe's model and optimizer (``build`` returns the compiled model, seeded), the
    training pipeline's targets.
    """
    import keras

    config = config_lib.load_recipe(RECIPE)
    config.data.dataset = "synthetic"
    config.data.synthetic.num_train, config.data.synthetic.num_val = 4, 1
    config.data.synthetic.image_size = (size, size)
    config.pipeline.train_short_side = (size, size)
    config.pipeline.max_size = size
    config.pipeline.shuffle_buffer = 4
    # The same batch in every process (the pipeline's default is fresh randomness).
    config.pipeline.seed = 0
    config.pipeline.deterministic = True
    config.train.batch_size = batch
    if args.head_norm is not None:
        config.model.head_norm = None if args.head_norm == "none" else args.head_norm
    examples = builders.read_split(config, "train")
    element = next(iter(builders.build_train_dataset(config, examples.dataset)(0)))

    def build(policy, run_eagerly=False):
        keras.utils.set_random_seed(0)
        with common.dtype_policy(policy):
            model = builders.build_model(config, 80, load_backbone_weights=False)
        model.compile(
            optimizer=builders.build_optimizer(config), jit_compile=False, run_eagerly=run_eagerly
        )
        return model

    return common.repeat_dataset(*element), build


# Train-step candidates: name -> (framework, fcos_tf policy or torch (channels_last, autocast,
# torch.compile)).
TRAIN_CANDIDATES = {
    "fcos_tf float32": ("fcos_tf", "float32"),
    "fcos_tf mixed_bfloat16": ("fcos_tf", "mixed_bfloat16"),
    "torchvision NCHW float32": ("torch", (False, False, False)),
    "torchvision channels_last float32": ("torch", (True, False, False)),
    "torchvision channels_last autocast bf16": ("torch", (True, True, False)),
    "torchvision compiled channels_last autocast bf16": ("torch", (True, True, True)),
}


def _train_candidate(args, name, size=512, batch=2, run_eagerly=False):
    """``(step function, build s, first step s)`` of one train-step candidate.

    fcos_tf: the recipe's compiled model (:func:`_train_setup`; ``run_eagerly`` as Keras'),
    its first step through ``fit``. torchvision: its own transform and target assignment, in
    train mode, SGD momentum 0.9; its first step eager.
    """
    framework, option = TRAIN_CANDIDATES[name]
    if framework == "fcos_tf":
        dataset, build = _train_setup(args, size, batch)
        started = time.perf_counter()
        model = build(option, run_eagerly=run_eagerly)
        build_s = time.perf_counter() - started
        timing = common.time_train_steps(model, dataset, warmup=1, repeats=1)
        iterator = iter(dataset)
        return (lambda: model.train_function(iterator)), build_s, timing["first"]
    import torch

    common.import_torchvision()
    torch.set_num_threads(args.threads)
    channels_last, autocast, compiled = option
    images = [
        torch.from_numpy(common.photo(size, size, seed=i)).permute(2, 0, 1).float() / 255
        for i in range(batch)
    ]
    boxes, classes = common.random_boxes(batch, 6, size, size, 80)
    targets = [
        {"boxes": torch.from_numpy(boxes[i]), "labels": torch.from_numpy(classes[i]).long() + 1}
        for i in range(batch)
    ]
    started = time.perf_counter()
    peer = common.torchvision_fcos(size, size).train()
    if channels_last:
        peer = peer.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [p for p in peer.parameters() if p.requires_grad], lr=0.001, momentum=0.9
    )
    forward = torch.compile(peer) if compiled else peer
    build_s = time.perf_counter() - started

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            losses = forward(images, targets)
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    started = time.perf_counter()
    step()
    return step, build_s, time.perf_counter() - started


def _train_candidate_names(args):
    return [
        name
        for name, (framework, option) in TRAIN_CANDIDATES.items()
        if framework == "fcos_tf"
        or (args.peers != "none" and (args.torch_compile or not option[2]))
    ]


def train(args):
    import torch

    _, note = common.import_torchvision()
    torch.set_num_threads(args.threads)
    common.print_header(
        f"Train step 512x512 batch 2, fcos_tf vs torchvision, {args.threads} threads"
    )
    if note:
        print(note + "\n")
    # Every candidate is built and takes its first step, then all take turns for the rounds
    # (run_rounds), so that a change of load touches them alike.
    first, candidates = {}, {}
    for name in _train_candidate_names(args):
        candidates[name], build_s, first_s = _train_candidate(args, name)
        first[name] = build_s + first_s
    timings = run_rounds(candidates, args.repeats)
    common.print_table(
        ["candidate", "step median s", "step min s", "build + first step s (this process)"],
        [[name, t["median"], t["min"], first[name]] for name, t in timings.items()],
    )
    print(f"\nLoad after the run: {common.load_average():.1f}")


def first_step(args):
    """Build + first train step of every candidate, each in a new process, ``--rounds`` times.

    In one process the later candidates find the framework's threads, allocator and oneDNN
    kernels already set up; a user starting a run does not.
    """
    common.print_header(
        f"First train step 512x512 batch 2, each candidate in a new process, {args.threads} "
        f"threads, {args.rounds} processes each"
    )
    times = {name: [] for name in _train_candidate_names(args)}
    for _ in range(args.rounds):  # the candidates take turns, as in the other parts
        for name in times:
            times[name].append(sum(_first_step_in_new_process(args, name)))
    common.print_table(
        ["candidate", "build + first step s, median", "min", "max"],
        [[name, statistics.median(t), min(t), max(t)] for name, t in times.items()],
    )
    print(
        "\nImports before the timer (a new process each, median of 3): "
        + ", ".join(f"{what} {_import_seconds(what):.1f} s" for what in ("tensorflow", "torch"))
    )
    print(f"Load after the run: {common.load_average():.1f}")


def _import_seconds(module):
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for _ in range(3)
    ]
    return statistics.median(runs)


def _run_child(args, part, name, *flags, env=None):
    """The stdout lines of ``--part=<part>`` for candidate ``name`` in a new process."""
    command = [sys.executable, "-m", "benchmarks.bench_vs_torchvision", f"--part={part}"]
    command += [f"--candidate={name}", f"--threads={args.threads}", *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return result.stdout.strip().splitlines()


def _first_step_in_new_process(args, name, run_eagerly=False):
    """``(build s, first step s)`` of candidate ``name``, run by ``--part=first_step_child``."""
    flags = ["--run_eagerly"] if run_eagerly else []
    return tuple(json.loads(_run_child(args, "first_step_child", name, *flags)[-1]))


def first_step_child(args):
    """The helper of :func:`_first_step_in_new_process`: prints ``[build s, first step s]``."""
    _, build_s, first_s = _train_candidate(args, args.candidate, run_eagerly=args.run_eagerly)
    print(json.dumps([build_s, first_s]))


def _op_times(logdir):
    """``{(part, op type): seconds}`` of the ops in the ``tf.profiler`` trace in ``logdir``.

    ``part`` is ``gradient`` (:func:`benchmarks.common.is_backward_op`, and the top-level
    ``AddN`` ops), ``optimizer`` (under the optimizer's name scope) or ``forward``.
    """
    import collections

    times = collections.Counter()
    for name, picoseconds in common.trace_op_times(logdir).items():
        if ":" not in name:
            continue  # not an op (e.g. ParallelFor inside one)
        scope, op_type = name.rsplit(":", 1)
        if "sgd/" in scope:
            part = "optimizer"
        elif common.is_backward_op(name) or scope.split("/")[-1].startswith("AddN"):
            part = "gradient"  # top-level AddNs sum the gradients of shared weights
        else:
            part = "forward"
        times[(part, op_type)] += picoseconds * 1e-12
    return times


def train_profile(args):
    """Where fcos_tf's first train step and later steps spend their time."""
    size, batch = 512, 2
    precision = args.precision.split(",")[-1]
    policy = "mixed_bfloat16" if precision == "bfloat16" else precision
    common.print_header(f"Train step profile {size}x{size} batch {batch}, fcos_tf {policy}")
    dataset, build = _train_setup(args, size, batch)
    started = time.perf_counter()
    model = build(policy)
    build_s = time.perf_counter() - started
    # The model's train_step in a tf.function of its own (what fit's compiled function runs
    # per step, with the same graph rewrites), so that tracing and the first call are timed
    # apart.
    data = next(iter(dataset))
    step = tf.function(model.train_step)
    started = time.perf_counter()
    concrete = step.get_concrete_function(data)
    trace_s = time.perf_counter() - started
    ops = len(concrete.graph.get_operations())
    with cpu_train_rewrites():
        started = time.perf_counter()
        common._sync(step(data))
        first_call_s = time.perf_counter() - started
        timing = common.time_call(lambda: common._sync(step(data)), warmup=1, repeats=3)
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            common._sync(step(data))
            tf.profiler.experimental.stop()
            times = _op_times(logdir)
    # Eagerly, in a new process: in this one, oneDNN's kernels already exist.
    eager_build_s, eager_first_s = _first_step_in_new_process(
        args, f"fcos_tf {policy}", run_eagerly=True
    )
    common.print_table(
        ["first step", "s"],
        [
            ["build + compile", build_s],
            [f"trace the step (Python; {ops} ops)", trace_s],
            ["first call (grappler, kernel creation, the step)", first_call_s],
            ["later steps, median", timing["median"]],
            ["total to the end of the first step", build_s + trace_s + first_call_s],
            ["run_eagerly=True: build + compile", eager_build_s],
            ["run_eagerly=True: first step", eager_first_s],
        ],
    )
    print()
    parts = {}
    for (part, _), seconds in times.items():
        parts[part] = parts.get(part, 0.0) + seconds
    common.print_table(
        ["part of the step", "op time ms"],
        [[part, 1e3 * seconds] for part, seconds in sorted(parts.items())],
    )
    print()
    common.print_table(
        ["part", "op type", "op time ms"],
        [[part, op, 1e3 * seconds] for (part, op), seconds in times.most_common(args.top)],
    )
    if args.peers != "none":
        print()
        _torchvision_train_profile(args, precision)
    print(f"\nLoad after the run: {common.load_average():.1f}")


# torchvision's convolution ops under torch.profiler: forward, and both gradients in one op.
_TORCH_CONV_OPS = {"aten::mkldnn_convolution": "forward", "aten::convolution_backward": "gradient"}


def _torchvision_train_profile(args, precision):
    """The peer's train step at ``precision`` by op, from ``torch.profiler``.

    torch runs one op at a time on all its threads, so its op times add up to the step's
    wall time (fcos_tf's above add up over the ops that run at once).
    """
    import torch

    common.import_torchvision()
    torch.set_num_threads(args.threads)
    name = (
        "torchvision channels_last autocast bf16"
        if precision == "bfloat16"
        else "torchvision channels_last float32"
    )
    step, _, _ = _train_candidate(args, name)
    timing = common.time_call(step, warmup=2, repeats=3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
        step()
    ops = [(event.key, event.self_cpu_time_total * 1e-3) for event in trace.key_averages()]
    convolutions = {part: 0.0 for part in _TORCH_CONV_OPS.values()}
    for op, ms in ops:
        if op in _TORCH_CONV_OPS:
            convolutions[_TORCH_CONV_OPS[op]] += ms
    total = sum(ms for _, ms in ops)
    common.print_table(
        [f"{name}: step", "ms"],
        [
            ["step, median (no profiler)", 1e3 * timing["median"]],
            ["convolutions, forward", convolutions["forward"]],
            ["convolutions, gradient", convolutions["gradient"]],
            ["everything else", total - sum(convolutions.values())],
        ],
    )
    print()
    common.print_table(
        ["torchvision op", "self time ms"],
        [[op, ms] for op, ms in sorted(ops, key=lambda item: -item[1])[: args.top]],
    )


# The oneDNN primitives of a train step (--part=train_kernels): a child process prints this
# before and after the step it reports, so that the build and earlier steps are left out.
_STEP_MARKERS = ("fcos-step-begin", "fcos-step-end")


def train_kernels(args):
    """The oneDNN primitives of the train step of each framework, and their times per step."""
    precision = args.precision.split(",")[-1]
    names = (
        ["fcos_tf mixed_bfloat16", "torchvision channels_last autocast bf16"]
        if precision == "bfloat16"
        else ["fcos_tf float32", "torchvision channels_last float32"]
    )
    if args.peers == "none":
        names = names[:1]
    common.print_header(
        f"oneDNN primitives of the train step 512x512 batch 2, {precision}, {args.threads} "
        f"threads, per step over {args.repeats} steps (ONEDNN_VERBOSE; fcos_tf with one "
        "inter-op thread)"
    )
    calls = {name: _step_primitives(args, name) for name in names}
    for name, (step_s, primitives) in calls.items():
        print(
            f"{name}: step median {step_s:.3f} s (under ONEDNN_VERBOSE), primitives "
            f"{sum(ms for *_, ms in primitives):.0f} ms per step"
        )
    print()
    by_kind = {}
    for column, (_, primitives) in enumerate(calls.values()):
        for kind, implementation, propagation, _, ms in primitives:
            row = by_kind.setdefault((kind, implementation, propagation), [[0, 0.0] for _ in calls])
            row[column][0] += 1
            row[column][1] += ms
    common.print_table(
        ["primitive", "implementation", "propagation"]
        + [f"{name}: calls, ms per step" for name in calls],
        [
            [*key, *(f"{n // args.repeats}, {ms:.1f}" for n, ms in row)]
            for key, row in sorted(by_kind.items(), key=lambda item: -max(ms for _, ms in item[1]))
        ],
    )
    if len(calls) < 2:
        return
    print()
    (_, ours), (_, theirs) = calls.values()
    rows = []
    for key in sorted(by_kind, key=lambda key: -by_kind[key][0][1]):
        # Problems (shapes, strides, padding) that both run with this implementation.
        problems = [{}, {}]
        for side, primitives in zip(problems, (ours, theirs)):
            for *kind, problem, ms in primitives:
                if tuple(kind) == key:
                    side[problem] = side.get(problem, 0.0) + ms
        shared = set(problems[0]) & set(problems[1])
        if shared:
            mine, peer = (sum(side[p] for p in shared) for side in problems)
            rows.append([*key, len(shared), mine, peer, mine / peer])
    common.print_table(
        ["primitive", "implementation", "propagation", "same problems", *calls, "ratio"], rows
    )


def _step_primitives(args, name):
    """``(step s, [(primitive, implementation, propagation, problem, ms per step)])``."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_NUM_INTEROP_THREADS="1")
    lines = _run_child(args, "train_kernels_child", name, f"--repeats={args.repeats}", env=env)
    begin, end = (lines.index(marker) for marker in _STEP_MARKERS)
    primitives = [
        (*primitive[:4], primitive[4] / args.repeats)
        for primitive in onednn_primitives(lines[begin:end])
    ]
    return json.loads(lines[end + 1]), primitives


def onednn_primitives(lines):
    """``[(primitive, implementation, propagation, problem, ms)]`` of oneDNN's verbose lines.

    The lines of executed primitives (``ONEDNN_VERBOSE=1``, oneDNN 3.x) read
    ``onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,<propagation>,
    <memory descriptors>,<attributes>,<auxiliary>,<problem>,<ms>``; other lines are skipped.
    """
    primitives = []
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec") + 2
        primitives.append((*fields[at : at + 3], fields[-2], float(fields[-1])))
    return primitives


def train_kernels_child(args):
    """The helper of :func:`_step_primitives`: three steps, then ``--repeats`` between the markers.

    Prints the median step time after the end marker.
    """
    step, _, _ = _train_candidate(args, args.candidate)
    for _ in range(3):
        common._sync(step())
    print(_STEP_MARKERS[0], flush=True)
    timing = common.time_call(step, warmup=0, repeats=args.repeats)
    print(_STEP_MARKERS[1], flush=True)
    print(json.dumps(timing["median"]), flush=True)


def profile(args):
    """Where the time goes: the network's parts and one head layer's ops, both frameworks."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    precision = args.precision.split(",")[-1]
    height, width = (int(v) for v in args.sizes.split(",")[0].split("x"))
    short, long = min(height, width), max(height, width)
    padded = [-(-height // 32) * 32, -(-width // 32) * 32]
    common.print_header(
        f"Profile, {height}x{width} (padded {padded[0]}x{padded[1]}), batch 1, "
        f"{args.threads} threads, {precision} (torch: channels_last"
        f"{' + autocast' if precision == 'bfloat16' else ''})"
    )
    peer = common.torchvision_fcos(short, long).to(memory_format=torch.channels_last)
    config = config_lib.load_recipe(RECIPE)
    model, _ = fcos_tf_model(peer, config)
    network = precision_lib.inference_model(model, precision)
    x_tf = tf.random.stateless_uniform([1, *padded, 3], [0, 1], -2.0, 2.0)
    x_torch = torch.from_numpy(x_tf.numpy()).permute(0, 3, 1, 2)
    x_torch = x_torch.contiguous(memory_format=torch.channels_last)

    tf_backbone = tf.function(lambda x: network.backbone(x, training=False))
    features = tf_backbone(x_tf)
    tf_fpn = tf.function(lambda f: network.fpn(f))
    pyramid = tf_fpn(features)
    tf_head = tf.function(lambda p: network.head(p))
    tf_net = tf.function(network.image_network)  # frozen, as in the SavedModel
    outputs = tf_net(x_tf)
    tf_post = tf.function(lambda o: network.postprocess(o, tf.constant(padded)))
    # One head layer on P3: 3x3 conv 256 -> 256, GroupNorm(32), ReLU, at the precision.
    p3 = tf.cast(pyramid[0], precision)
    conv = network.head.cls_tower[0]
    norm = network.head.cls_tower[1]
    tf_conv = tf.function(lambda t: conv(t))
    tf_norm = tf.function(lambda t: norm(t))
    tf_relu = tf.function(lambda t: tf.nn.relu(t))

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")

    body, fpn, head = peer.backbone.body, peer.backbone.fpn, peer.head
    with torch.inference_mode(), autocast():
        t_body = body(x_torch)
        t_pyramid = list(fpn(t_body).values())
        t_p3 = t_pyramid[0].to(getattr(torch, precision))
        t_p3 = t_p3.contiguous(memory_format=torch.channels_last)
        t_conv = head.classification_head.conv[0]
        t_norm = head.classification_head.conv[1]

    def torch_fn(fn):
        def call():
            with torch.inference_mode(), autocast():
                return fn()

        return call

    candidates = {
        "fcos_tf backbone": lambda: common._sync(tf_backbone(x_tf)),
        "torch backbone": torch_fn(lambda: body(x_torch)),
        "fcos_tf FPN": lambda: common._sync(tf_fpn(features)),
        "torch FPN": torch_fn(lambda: fpn(t_body)),
        "fcos_tf head": lambda: common._sync(tf_head(pyramid)),
        "torch head": torch_fn(lambda: head(t_pyramid)),
        "fcos_tf network": lambda: common._sync(tf_net(x_tf)),
        "torch network": torch_fn(lambda: head(list(peer.backbone(x_torch).values()))),
        "fcos_tf decode + NMS": lambda: common._sync(tf_post(outputs)),
        "fcos_tf P3 conv3x3 256": lambda: common._sync(tf_conv(p3)),
        "torch P3 conv3x3 256": torch_fn(lambda: t_conv(t_p3)),
        "fcos_tf P3 GroupNorm": lambda: common._sync(tf_norm(p3)),
        "torch P3 GroupNorm": torch_fn(lambda: t_norm(t_p3)),
        "fcos_tf P3 ReLU": lambda: common._sync(tf_relu(p3)),
        "torch P3 ReLU": torch_fn(lambda: F.relu(t_p3)),
    }
    timings = run_rounds(candidates, args.repeats)
    common.print_table(
        ["part", "median ms", "min ms"],
        [[name, 1e3 * t["median"], 1e3 * t["min"]] for name, t in timings.items()],
    )
    print(f"\nLoad after the run: {common.load_average():.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=(
            "inference",
            "train",
            "first_step",
            "first_step_child",
            "train_profile",
            "train_kernels",
            "train_kernels_child",
            "profile",
        ),
        default="inference",
    )
    parser.add_argument("--sizes", default="800x1333,512x512", help="HxW of the pictures.")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="float32,bfloat16")
    parser.add_argument("--peers", choices=("torchvision", "none"), default="torchvision")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=20, help="--part=train_profile: op rows.")
    parser.add_argument("--rounds", type=int, default=2, help="--part=first_step: processes.")
    parser.add_argument("--candidate", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run_eagerly", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--torch_compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also torchvision under torch.compile (--part=inference: compiles in the warm-up "
        "round, about a minute per candidate and image size on 2 cores; --part=train and "
        "first_step: the bfloat16 train step, about 1.5 minutes).",
    )
    parser.add_argument(
        "--head_norm",
        default=None,
        help="--part=train: fcos_tf's head norm instead of the recipe's (`none`: no norm), "
        "to measure what the head's GroupNorm costs.",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--export_dir", default=None, help="Keep (and reuse) the SavedModels in this folder."
    )
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    parts = {"inference": inference, "train": train, "train_profile": train_profile}
    parts["profile"] = profile
    parts.update(train_kernels=train_kernels, train_kernels_child=train_kernels_child)
    parts.update(first_step=first_step, first_step_child=first_step_child)
    parts[args.part](args)


if __name__ == "__main__":
    main()
