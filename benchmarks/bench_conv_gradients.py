"""GFLOP/s of the convolution ops of an R-50 train step, one shape at a time.

For each convolution shape of ResNet-50's ``layer1``..``layer4`` at 512x512, batch 2
(``[2, H, H, C_in] -> [2, H, H, C_out]``, stride 1): the forward ``Conv2D``, the kernel
gradient ``Conv2DBackpropFilter``, the input gradient ``Conv2DBackpropInput`` and, for 1x1
kernels, the kernel gradient as a matrix product ``reshape(x)^T @ reshape(dy)``
(``fcos_tf.modeling.backbone.conv1x1_kernel_gradient``, what ``FrozenBNConv2D`` takes in
bfloat16 training). Each op runs in a
``tf.function`` of its own; ``--repeats`` calls after two warm-up calls, mean time. The
same-run 4096x4096 ``tf.matmul`` rate per dtype is printed below the table.

Usage (from the repository root):

    python -m benchmarks.bench_conv_gradients
    python -m benchmarks.bench_conv_gradients --dtypes=bfloat16 --repeats=50
"""

import argparse
import time

import tensorflow as tf

from benchmarks import common
from fcos_tf.modeling import backbone

# (H, C_in, C_out, kernel) of ResNet-50 at 512x512: layer1..layer4's 1x1 and 3x3 convs.
SHAPES = (
    (128, 256, 64, 1),
    (128, 64, 256, 1),
    (128, 64, 64, 3),
    (64, 512, 128, 1),
    (64, 128, 512, 1),
    (64, 128, 128, 3),
    (32, 1024, 256, 1),
    (32, 256, 1024, 1),
    (32, 256, 256, 3),
    (16, 2048, 512, 1),
    (16, 512, 2048, 1),
    (16, 512, 512, 3),
)
SMOKE_SHAPES = ((16, 32, 16, 1), (16, 16, 16, 3))
BATCH = 2


def _seconds(function, *args, repeats):
    for _ in range(2):
        function(*args).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        result = function(*args)
    result.numpy()
    return (time.perf_counter() - started) / repeats


def _rates(dtype, size, channels_in, channels_out, kernel, repeats):
    """GFLOP/s of forward, kernel gradient, input gradient and (1x1) matmul kernel gradient."""
    x = tf.cast(tf.random.normal([BATCH, size, size, channels_in]), dtype)
    dy = tf.cast(tf.random.normal([BATCH, size, size, channels_out]), dtype)
    w = tf.cast(tf.random.normal([kernel, kernel, channels_in, channels_out]), dtype)
    flops = 2 * BATCH * size * size * channels_in * channels_out * kernel * kernel
    forward = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    kernel_gradient = tf.function(
        lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
            input=x,
            filter_sizes=[kernel, kernel, channels_in, channels_out],
            out_backprop=dy,
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
    )
    input_gradient = tf.function(
        lambda dy, w: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[BATCH, size, size, channels_in],
            filter=w,
            out_backprop=dy,
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
    )
    times = [
        _seconds(forward, x, w, repeats=repeats),
        _seconds(kernel_gradient, x, dy, repeats=repeats),
        _seconds(input_gradient, dy, w, repeats=repeats),
    ]
    if kernel == 1:
        matmul_gradient = tf.function(backbone.conv1x1_kernel_gradient)
        times.append(_seconds(matmul_gradient, x, dy, repeats=repeats))
    rates = [flops / t / 1e9 for t in times]
    return rates + [float("nan")] * (4 - len(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="two small shapes, 2 repeats")
    args = parser.parse_args()
    shapes, repeats = (SMOKE_SHAPES, 2) if args.smoke else (SHAPES, args.repeats)
    dtypes = [tf.as_dtype(name) for name in args.dtypes.split(",")]
    common.print_header(f"Convolution ops of an R-50 train step, batch {BATCH}, GFLOP/s")
    rows = []
    for dtype in dtypes:
        for size, channels_in, channels_out, kernel in shapes:
            rates = _rates(dtype, size, channels_in, channels_out, kernel, repeats)
            rows.append([dtype.name, f"{size}x{size}", channels_in, channels_out, kernel, *rates])
    common.print_table(
        [
            "dtype",
            "H x W",
            "C_in",
            "C_out",
            "k",
            "forward",
            "kernel gradient",
            "input gradient",
            "kernel gradient as matmul (1x1)",
        ],
        rows,
    )
    size = 512 if args.smoke else 4096
    rates = ", ".join(
        f"{dtype.name} {common.matmul_gflops(size, dtype=dtype)[0]:.0f}" for dtype in dtypes
    )
    print(f"\nSame-run {size}x{size} tf.matmul GFLOP/s: {rates}")


if __name__ == "__main__":
    main()
