r"""The small CPU recipe: the small backbone on the built-in synthetic shapes dataset.

The default of ``train.py``; it shows on a plain CPU that the model learns. Six shape
classes on 128x128 images (1024 training images drawn once and cached, 64 validation images
of another seed), 1 to 4 objects of 16 to 96 pixels per image with light noise and little
occlusion; the small backbone (32/64/128 channels), a 64-channel FPN and a 2-conv head.
2000 steps of batch 16 with the paper's optimizer (SGD 0.9, weight decay 1e-4, bias lr x2)
at lr 0.08, 100 constant warm-up steps at lr/3, decays x0.1 at 1600 and 1850.

Command::

    python train.py --workdir=/tmp/fcos_synthetic

Expected: COCO AP about 0.55 (>= 0.5) on the validation images in 5 to 7 minutes on a
2-core CPU, including drawing the data and the evaluation (BENCHMARKS.md has the measured
figures); ``<workdir>/metrics.json`` and ``<workdir>/detections.png`` hold the result.
"""

from fcos_tf.config import base_config


def get_config():
    """Returns the synthetic small recipe."""
    config = base_config()
    config.backbone.name = "small"
    model = config.model
    model.fpn_channels = 64
    model.head_num_convs = 2
    model.head_num_groups = 16

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
    train.total_steps = 2000
    train.lr_steps = (1600, 1850)
    train.steps_per_epoch = 250
    train.checkpoint_every = 500
    train.log_every = 25

    config.eval.batch_size = 16
    config.eval.num_visualize = 4
    config.export.input_size = (128, 128)
    config.export.representative_images = 16
    return config
