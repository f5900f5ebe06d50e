r"""The small CPU recipe: the small backbone on the built-in synthetic shapes dataset.

The default of ``fcos-train``; it shows on a plain CPU that the model learns. Six shape
classes on 128x128 images (1024 training images drawn once and cached, 64 validation images
of another seed), 1 to 4 objects of 16 to 96 pixels per image with light noise and little
occlusion; the small backbone (8-channel stem, 32/64/128 channels), a 64-channel FPN and a
2-conv head on the two pyramid levels these objects reach, P3 (up to 64 pixels from a
location to a box side) and P4 (beyond). 1600 steps of batch 16 with the paper's optimizer
(SGD 0.9, weight decay 1e-4, bias lr x2) at lr 0.08, 100 constant warm-up steps at lr/3,
decays x0.1 at 1300 and 1500. TensorFlow runs one thread per op and two ops at once (a model
this small gains more from running the towers and levels side by side than from splitting
each op).

Command::

    fcos-train --workdir=/tmp/fcos_synthetic

Expected: COCO AP 0.561 (0.545-0.576 over train seeds 0-3) on the validation images in
about 2 minutes on a 2-core AVX-512 CPU, including drawing the data and the evaluation
(BENCHMARKS.md has the measured figures per CPU type); ``<workdir>/metrics.json`` and
``<workdir>/detections.png`` hold the result.
"""

import math

from fcos_tf.core.config import base_config


def get_config():
    """Returns the synthetic small recipe."""
    config = base_config()
    config.backbone.name = "small"
    config.backbone.stem_channels = 8
    model = config.model
    model.fpn_channels = 64
    model.head_num_convs = 2
    model.head_num_groups = 16

    # Objects of 16 to 96 pixels: with the paper's size ranges only P3 (up to 64) and P4 (the
    # rest) get positive locations, so the pyramid stops at P4 (P5-P7 would learn background
    # only, at a sixth of the step's time).
    locations = config.locations
    locations.strides = (8, 16)
    locations.size_ranges = ((-1.0, 64.0), (64.0, math.inf))

    data = config.data
    data.dataset = "synthetic"
    synthetic = data.synthetic
    synthetic.num_train = 1024
    synthetic.num_val = 64
    synthetic.image_size = (128, 128)
    synthetic.num_objects = (1, 4)
    synthetic.min_object_size = 16
    synthetic.max_object_fraction = 0.75
    synthetic.noise_std = (0.0, 4.0)
    synthetic.max_occlusion = 0.2

    pipeline = config.pipeline
    pipeline.train_short_side = (128, 128)
    pipeline.eval_short_side = 128
    pipeline.max_size = 128
    pipeline.pixel_norm = "torchvision"
    pipeline.max_boxes = 16
    pipeline.shuffle_buffer = 1024
    pipeline.cache = True
    pipeline.deterministic = True

    train = config.train
    train.batch_size = 16
    train.resume = "replay"
    train.base_lr = 0.08
    train.reference_batch_size = 16
    train.warmup_steps = 100
    train.total_steps = 1600
    train.lr_steps = (1300, 1500)
    train.steps_per_epoch = 200
    train.checkpoint_every = 400
    train.log_every = 25
    # A model this small runs faster with two ops at once (the towers, the levels), each on
    # half of the cores, than with every op split over all cores.
    train.intra_op_threads = -1  # the cores shared among the inter-op threads
    train.inter_op_threads = 2

    config.eval.batch_size = 16
    config.eval.num_visualize = 4
    config.export.input_size = (128, 128)
    config.export.representative_images = 16
    return config
