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
    model = config.model
    model.backbone = "small"
    model.fpn_channels = 64
    model.head_num_convs = 2
    model.head_num_groups = 16

    data = config.data
    data.dataset = "synthetic"
    data.synthetic_num_train = 1024
    data.synthetic_num_val = 64
    data.synthetic_image_size = (128, 128)
    data.synthetic_num_objects = (1, 4)
    data.synthetic_min_object_size = 16
    data.synthetic_max_object_fraction = 0.75
    data.synthetic_noise_std = (0.0, 4.0)
    data.synthetic_max_occlusion = 0.2
    data.train_short_side = (128, 128)
    data.eval_short_side = 128
    data.max_size = 128
    data.pixel_norm = "torchvision"
    data.max_boxes = 16
    data.shuffle_buffer = 1024
    data.cache = True
    data.deterministic = True
    data.resume = "replay"

    train = config.train
    train.batch_size = 16
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
