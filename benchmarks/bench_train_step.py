"""Train-step time of the paper's recipes at full resolution, through the real training path.

Each recipe (``fcos_r50_1x_improved`` ...) is loaded as ``train.py`` loads it,
with only the dataset swapped for the built-in synthetic one (no COCO on this machine) at a
size that the pipeline resizes to the recipe's input (short side 800, long side <= 1333:
600x1000 images become 800x1333, padded to 800x1344) and the global batch set by ``--batch``.
Then ``fcos_tf.training.loop.run`` builds the model, the optimizer and the pipeline from the
config and trains ``--steps`` steps with ``model.fit``: the numbers are what ``train.py``
would run per step. The first step (tracing) is reported separately; "step" is the median
of the others. Random weights (no downloads).

Usage (from the repository root):

    python -m benchmarks.bench_train_step                                   # all recipes
    python -m benchmarks.bench_train_step --recipes=fcos_r50_1x_improved --batch=2
    python -m benchmarks.bench_train_step --smoke                           # 96x160, a minute
"""

import argparse
import importlib.util
import os
import statistics
import time

import keras

from benchmarks import common
from fcos_tf.core import builders
from fcos_tf.core.config import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_recipe(name):
    """``fcos_tf/configs/<name>.py``'s config."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


class StepTimer(keras.callbacks.Callback):
    """Wall time of every train batch (the loss is read back, so the step has finished)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))
        self.times.append(time.perf_counter() - self._start)


def bench_recipe(name, *, batch, steps, image_size, jit_compile, smoke=False):
    """Trains ``steps`` steps of recipe ``name``; returns a table row."""
    config = load_recipe(name)
    pipeline = config.pipeline
    if smoke:
        pipeline.train_short_side, pipeline.eval_short_side, pipeline.max_size = (96, 96), 96, 160
    config.data.dataset = "synthetic"
    synthetic = config.data.synthetic
    synthetic.num_train, synthetic.num_val = max(4, batch * 2), 1
    synthetic.image_size = image_size
    pipeline.shuffle_buffer = 4
    train = config.train
    train.batch_size = batch  # the schedule stays the recipe's (steps 0..N of it)
    train.jit_compile = jit_compile
    validate_config(config, check_paths=False)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    # What training.run() does for the train part, with the recipe's 80 COCO classes in the
    # head (the synthetic labels use the first 6).
    examples = builders.read_split(config, "train")
    model = builders.build_model(config, 80)
    model.compile(optimizer=builders.build_optimizer(config), jit_compile=jit_compile)
    dataset = builders.build_train_dataset(config, examples.dataset)(0)
    timer = StepTimer()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    total = time.perf_counter() - start
    params = model.count_params() / 1e6
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights) / 1e6
    later = timer.times[1:] or timer.times
    step = statistics.median(later)
    return [
        name,
        config.backbone.name,
        f"{batch}",
        f"{len(timer.times)}",
        f"{params:.1f} / {trainable:.1f}",
        timer.times[0],
        step,
        step / batch,
        total,
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipes", default="fcos_r50_1x_improved,fcos_r50_1x_original,fcos_r101_2x_ms"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--xla", action="store_true", help="jit_compile the train step")
    parser.add_argument("--smoke", action="store_true", help="96x160 images, 2 steps")
    args = parser.parse_args()
    image_size = (600, 1000)
    if args.smoke:
        image_size, args.steps = (96, 160), 2
    common.print_header(
        "Train step of the recipes (train.py path, synthetic data at the recipe's input size)"
    )
    rows = []
    for name in args.recipes.split(","):
        rows.append(
            bench_recipe(
                name,
                batch=args.batch,
                steps=args.steps,
                image_size=image_size,
                jit_compile=args.xla,
                smoke=args.smoke,
            )
        )
    size = "96x160" if args.smoke else "800x1344"
    print(f"Input {size} (padded), float32, XLA {'on' if args.xla else 'off'}.\n")
    common.print_table(
        [
            "recipe",
            "backbone",
            "batch",
            "steps",
            "params M (all / trainable)",
            "first step s",
            "step s (median)",
            "s / image",
            "total s",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
