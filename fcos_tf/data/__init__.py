"""Input pipeline: readers (COCO JSON, VOC, YOLO, TFRecord, TFDS, synthetic), transforms, batching
with targets.

Typical use::

    from fcos_tf.data import coco, pipeline

    read = coco.read_coco("annotations/instances_train2017.json", "train2017", decode=False)
    read.label_map.save(checkpoint_dir)  # label_map.json next to the checkpoints
    dataset = pipeline.make_pipeline(read.dataset, training=True, batch_size=16)
    model.fit(dataset, steps_per_epoch=...)

Every reader returns a :class:`~fcos_tf.data.example.ReadResult` whose dataset yields the same
example structure; :func:`~fcos_tf.data.pipeline.make_pipeline` turns it into ``(images,
labels)`` batches (see :mod:`fcos_tf.data.pipeline` for the exact structure).
"""

from fcos_tf.data.errors import DatasetError
from fcos_tf.data.example import ReadResult
from fcos_tf.data.label_map import LabelMap
from fcos_tf.data.pipeline import PipelineConfig, make_pipeline
from fcos_tf.data.transforms import denormalize_image, normalize_image

__all__ = [
    "DatasetError",
    "LabelMap",
    "PipelineConfig",
    "ReadResult",
    "denormalize_image",
    "make_pipeline",
    "normalize_image",
]
