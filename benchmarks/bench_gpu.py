"""GPU throughput: FCOS R-50-FPN training images/s per GPU and inference ms/image at 800x1333.

For comparison with torchvision's published FCOS R-50-FPN figures on V100 (0.145 s per
training step of 2 images per GPU, 0.054 s per image at inference) and the project's goals
(>= 40 training images/s per GPU, <= 20 ms/image inference).

Training: every visible GPU under ``MirroredStrategy`` (per-GPU batch ``--batch``), mixed
precision (``mixed_float16`` by default: float16 compute, float32 variables, dynamic loss
scaling through ``optimizer.scale_loss`` in the train step) and XLA for the train step
(``jit_compile=True``; Keras turns "auto" off under a strategy). The input is one batch of
random images with their FCOS targets, repeated, so the figure is the model's, not the
input pipeline's (``bench_pipeline.py`` measures that).

Inference: batch 1, 800x1344 (800x1333 padded to 32), post-processing included, three ways:
the model's predict step (no XLA: NMS has no XLA kernel), and the network under XLA with the
decode + NMS in a separate non-XLA function (``--xla-forward``).

Usage:

    python -m benchmarks.bench_gpu                        # on a GPU machine
    python -m benchmarks.bench_gpu --batch=16 --precision=mixed_bfloat16
    python -m benchmarks.bench_gpu --smoke                # CPU check: small backbone, 128x128
"""

import argparse
import gc

import tensorflow as tf

from benchmarks import common
from benchmarks.common import NUM_CLASSES, fcos_batch, parse_size


def build(backbone, jit_compile):
    import keras

    from fcos_tf.modeling.backbone import build_backbone
    from fcos_tf.modeling.fcos import FCOS

    model = FCOS(build_backbone(backbone), num_classes=NUM_CLASSES)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    return model


def xla_forward_predict(model):
    """Network under XLA, decode + NMS outside it: images -> detections dict."""
    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    post = tf.function(lambda outputs, size: model.postprocess(outputs, size))
    return lambda images: post(forward(images), tf.shape(images)[1:3])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(800, 1344))
    parser.add_argument("--batch", type=int, default=8, help="training images per GPU")
    parser.add_argument(
        "--precision",
        default=None,
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        help="dtype policy (default mixed_float16; float32 with --smoke, as "
        "float16 convolutions are slow to compile and run on a CPU)",
    )
    parser.add_argument(
        "--xla", choices=("on", "off"), default="on", help="jit_compile for the train step"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU check of the script: small backbone, 128x128, batch 2",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.batch, args.backbone = (128, 128), 2, "small"
        args.warmup, args.repeats = 1, 2
        args.precision = args.precision or "float32"
    args.precision = args.precision or "mixed_float16"
    if args.warmup < 1 or args.repeats < 1 or args.batch < 1:
        parser.error("--warmup, --repeats and --batch must be >= 1")

    import keras

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.smoke:
        print("# no GPU visible: this runs on CPU (use --smoke for a quick check)")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    keras.mixed_precision.set_global_policy(args.precision)
    replicas = max(len(gpus), 1)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    h, w = args.size
    jit = args.xla == "on"

    common.print_header(
        f"GPU throughput: FCOS {args.backbone}, {args.precision}, "
        f"XLA train step {args.xla}, {replicas} device(s)"
    )
    rows = []
    with strategy.scope():
        model = build(args.backbone, jit)
    images, labels = fcos_batch(args.batch * replicas, h, w)
    dataset = common.repeat_dataset(images, labels)
    t = common.time_train_steps(model, dataset, warmup=args.warmup, repeats=args.repeats)
    rows.append(
        [
            f"train step, batch {args.batch}/device",
            f"{h}x{w}",
            t["first"],
            t["median"],
            args.batch * replicas / t["median"] / replicas,
            1000 * t["median"] / args.batch,
            t["load"],
        ]
    )

    image = tf.constant(common.random_images(1, h, w, seed=1))
    predict = common.predict_function(model)
    t = common.time_call(lambda: predict(image), warmup=args.warmup, repeats=args.repeats)
    rows.append(
        [
            "predict step (no XLA), batch 1",
            f"{h}x{w}",
            t["first"],
            t["median"],
            1 / t["median"],
            1000 * t["median"],
            t["load"],
        ]
    )
    try:
        fn = xla_forward_predict(model)
        t = common.time_call(lambda: fn(image), warmup=args.warmup, repeats=args.repeats)
        rows.append(
            [
                "XLA forward + non-XLA NMS, batch 1",
                f"{h}x{w}",
                t["first"],
                t["median"],
                1 / t["median"],
                1000 * t["median"],
                t["load"],
            ]
        )
    except Exception as e:  # noqa: BLE001  (report the variant that fails, keep the others)
        print(f"# XLA forward failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    del model
    gc.collect()
    common.print_table(
        [
            "workload",
            "input HxW",
            "first call s",
            "median s/call",
            "images/s per device",
            "ms/image",
            "load (1 min)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
