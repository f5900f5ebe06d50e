"""The benchmarks' helper library (benchmarks/common.py): what its figures rest on."""

import argparse
import importlib
import pkgutil

import numpy as np
import pytest
import tensorflow as tf

import benchmarks
from benchmarks import common


def test_every_benchmark_script_imports():
    # The scripts share their inputs and models through common.py: a helper one of them
    # imports from there must be defined there (the peers, torch and keras-cv, load inside
    # the functions that use them).
    names = [module.name for module in pkgutil.iter_modules(benchmarks.__path__)]
    assert {"common", "bench_flops", "bench_train_vs_retinanet", "bench_vs_torchvision"} <= set(
        names
    )
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


def test_graph_flops_counts_a_convolution_and_a_matmul_by_hand():
    kernel = tf.ones([3, 3, 4, 8])
    weights = tf.ones([8, 5])

    @tf.function(input_signature=[tf.TensorSpec([2, 10, 12, 4])])
    def fn(x):
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")  # [2, 10, 12, 8]
        return tf.matmul(tf.reshape(y, [-1, 8]), weights)  # [240, 8] x [8, 5]

    graph = fn.get_concrete_function().graph
    conv = 2 * (2 * 10 * 12 * 8) * 3 * 3 * 4  # 2 x outputs x kh x kw x C_in
    matmul = 2 * 240 * 5 * 8  # 2 x M x N x K
    assert common.graph_flops(graph) == {"Conv2D": conv, "MatMul": matmul, "total": conv + matmul}


def test_time_call_takes_the_median_after_the_warmup():
    calls = []
    durations = iter([0.0, 0.03, 0.01, 0.02])

    def fn():
        import time

        calls.append(1)
        time.sleep(next(durations))
        return tf.constant(1.0)

    result = common.time_call(fn, warmup=1, repeats=3)
    assert len(calls) == 4
    assert result["min"] <= result["median"] <= result["max"]
    assert 0.015 <= result["median"] < 0.03  # the middle of 0.03, 0.01, 0.02
    assert len(result["times"]) == 3
    with pytest.raises(ValueError, match="repeats"):
        common.time_call(fn, repeats=0)


def test_random_ground_truth_is_valid_xyxy_inside_the_image():
    boxes, classes = common.random_boxes(3, 7, 120, 200, 5, seed=1)
    assert boxes.shape == (3, 7, 4) and classes.shape == (3, 7)
    assert np.all(boxes[..., 0] < boxes[..., 2]) and np.all(boxes[..., 1] < boxes[..., 3])
    assert boxes[..., [0, 2]].min() >= 0 and boxes[..., [0, 2]].max() <= 200
    assert boxes[..., [1, 3]].min() >= 0 and boxes[..., [1, 3]].max() <= 120
    assert classes.min() >= 0 and classes.max() < 5
    again, _ = common.random_boxes(3, 7, 120, 200, 5, seed=1)
    np.testing.assert_array_equal(boxes, again)


def test_fcos_batch_labels_come_from_the_target_assignment():
    from fcos_tf.ops.locations import num_locations

    images, labels = common.fcos_batch(2, 64, 96, seed=3)
    p = num_locations((64, 96))
    assert images.shape == (2, 64, 96, 3)
    assert labels["class_targets"].shape == (2, p)
    assert labels["box_targets"].shape == (2, p, 4)
    positive = labels["class_targets"] >= 0
    assert positive.any()
    assert np.all(labels["box_targets"][positive] > 0)  # inside its box: l, t, r, b > 0
    assert np.all(labels["centerness_targets"][~positive] == 0)


def test_parse_size_and_cpu_flags():
    assert common.parse_size("512x768") == (512, 768)
    with pytest.raises(argparse.ArgumentTypeError, match="512x512"):
        common.parse_size("512")
    flags = common.cpu_flags()
    assert isinstance(flags, str) and flags


def test_is_backward_op_on_the_names_of_a_profiled_train_step():
    # Op events as they appear in the profile of an R-50 train step (fit's compiled
    # function, and train_step in a tf.function of its own).
    backward = [
        "StatefulPartitionedCall/gradient_tape/fcos_1/resnet50_1/conv3_block1_2_conv/"
        "convolution/Conv2DBackpropFilter:_MklNativeConv2DBackpropFilter",
        "PartitionedCall/gradients/cls_tower_conv0_1/convolution_grad/Conv2DBackpropInput:"
        "_MklNativeConv2DBackpropInput",
        "StatefulPartitionedCall/PartitionedCall_1/gradients/box_tower_norm0_1/IdentityN_grad/"
        "group_norm_gradient/Mean_2:Mean",
        "StatefulPartitionedCall/group_norm_gradient_7/sub:Sub",
        "StatefulPartitionedCall/conv1x1_gradient_12/MatMul:_MklMatMul",
    ]
    forward = [
        "fcos_1/head_1/StatefulPartitionedCall/cls_tower_conv3_1/BiasAdd:_MklNativeFusedConv2D",
        "StatefulPartitionedCall/fcos_1/head_1/StatefulPartitionedCall_1/box_tower_norm0_1/"
        "sub_2:Sub",
        "fcos_1/resnet50_1/conv2_block1_1_conv/BiasAdd:_MklNativeFusedConv2D",
        "StatefulPartitionedCall/detection_sgd/ResourceApplyKerasMomentum:"
        "ResourceApplyKerasMomentum",
    ]
    assert [common.is_backward_op(name) for name in backward] == [True] * len(backward)
    assert [common.is_backward_op(name) for name in forward] == [False] * len(forward)


def test_trace_op_times_reads_the_ops_of_a_profiled_function(tmp_path):
    a = tf.random.stateless_normal([256, 256], [1, 2])

    @tf.function
    def fn(x):
        return tf.reduce_sum(tf.nn.relu(tf.matmul(x, x)))

    fn(a)  # traced and warm outside the trace
    tf.profiler.experimental.start(str(tmp_path))
    fn(a)
    tf.profiler.experimental.stop()
    times = common.trace_op_times(str(tmp_path))
    op_types = {name.rsplit(":", 1)[-1] for name in times if ":" in name}
    # The matmul (under whatever kernel name oneDNN gives it), the ReLU and the sum.
    assert any("MatMul" in op for op in op_types), op_types
    assert {"Relu", "Sum"} <= op_types, op_types
    matmul = sum(t for name, t in times.items() if "MatMul" in name.rsplit(":", 1)[-1])
    assert matmul > 0 and all(duration >= 0 for duration in times.values())
    assert not any("ExecutorState" in name for name in times)


def test_onednn_primitives_reads_the_verbose_lines_of_a_convolution(tmp_path):
    # What --part=train_kernels rests on: oneDNN's verbose format, as this TensorFlow prints
    # it. A 3x3 convolution 8 -> 16 channels on a 1x12x10 input: one forward primitive.
    import os
    import subprocess
    import sys

    from benchmarks.bench_vs_torchvision import onednn_primitives

    code = (
        "import tensorflow as tf\n"
        "x = tf.ones([1, 12, 10, 8]); w = tf.ones([3, 3, 8, 16])\n"
        "print('begin', flush=True)\n"
        "print(float(tf.reduce_sum(tf.nn.conv2d(x, w, 1, 'SAME'))), flush=True)\n"
    )
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    lines = result.stdout.splitlines()
    after = lines[lines.index("begin") :]
    primitives = onednn_primitives(after)
    convolutions = [p for p in primitives if p[0] == "convolution"]
    assert len(convolutions) == 1, after
    kind, implementation, propagation, problem, ms = convolutions[0]
    assert propagation in ("forward_training", "forward_inference")
    assert implementation  # e.g. brg_conv_fwd:avx512_core
    assert problem.startswith("mb1_ic8oc16_ih12oh12kh3sh1")
    assert ms > 0
    # Lines that are not executed primitives are skipped, and a made-up line is read field
    # by field.
    assert onednn_primitives(["onednn_verbose,v1,info,oneDNN v3.7.3", "other output"]) == []
    line = "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src dst,,,256x256x3x3,0.5"
    assert onednn_primitives([line]) == [("reorder", "jit:uni", "undef", "256x256x3x3", 0.5)]
