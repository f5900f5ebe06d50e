r"""The small CPU recipe: the small backbone on the built-in synthetic shapes dataset.

The default of ``train.py``; it shows on a plain CPU that the model learns. Six shape
classes, 128x128 images, a small backbone (32/64/128 channels), a 64-channel FPN and
2-conv head, 600 steps of batch 8 with lr 0.01 (x2 for biases) after 50 warm-up steps,
decays at 450 and 550.

Command::

    python train.py --workdir=/tmp/fcos_synthetic

Expected: about 7 minutes on a 2-core CPU, COCO AP >= 0.5 on the 64 validation images
(see BENCHMARKS.md for the measured figures).
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
    train.batch_size = 8
    train.base_lr = 0.01
    train.reference_batch_size = 8
    train.warmup_steps = 50
    train.total_steps = 600
    train.lr_steps = (450, 550)
    train.steps_per_epoch = 100
    train.checkpoint_every = 200
    train.log_every = 10

    config.eval.batch_size = 16
    config.eval.num_visualize = 4
    config.export.input_size = (128, 128)
    config.export.representative_images = 16
    return config
