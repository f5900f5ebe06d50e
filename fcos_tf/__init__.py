"""fcos_tf: FCOS (Fully Convolutional One-Stage Object Detection) in TensorFlow/Keras.

Conventions used in every docstring of the package.

Dimension letters:
    B  batch
    H  height, W width (of the network input unless stated otherwise)
    C  channels
    K  number of classes (contiguous ids 0..K-1; -1 means background or padding)
    P  number of locations over all pyramid levels, P3 first, each level row-major
    M  padded number of ground-truth boxes per image
    D  maximum number of detections per image

Boxes:
    Inside the package boxes are ``xyxy``: float32 ``[x1, y1, x2, y2]`` in absolute pixels of
    the (resized, padded) network input, with ``0 <= x1 < x2 <= W``. Other formats (COCO
    ``xywh``, TFDS normalised ``yxyx``, exported normalised ``[ymin, xmin, ymax, xmax]``) are
    converted at the edges with the functions of :mod:`fcos_tf.ops.boxes`, named by format pair.

Per-location distances are ``ltrb``: ``(l, t, r, b)`` from a location to the left, top, right
and bottom side of a box, in pixels.
"""

import importlib

__version__ = "0.1.0"

# Public names, each from the module that defines it; imported on first use so that
# ``import fcos_tf`` stays cheap (TensorFlow loads with the first name that needs it).
_PUBLIC_NAMES = {
    # model
    "FCOS": "fcos_tf.modeling.fcos",
    "FCOSHead": "fcos_tf.modeling.head",
    "FPN": "fcos_tf.modeling.fpn",
    "GroupNorm": "fcos_tf.modeling.group_norm",
    "Scale": "fcos_tf.modeling.head",
    "ResNet": "fcos_tf.modeling.backbone",
    "SmallBackbone": "fcos_tf.modeling.backbone",
    "FrozenBatchNorm": "fcos_tf.modeling.backbone",
    "MobileNetBackbone": "fcos_tf.modeling.mobilenet",
    "build_backbone": "fcos_tf.modeling.backbone",
    # method
    "compute_locations": "fcos_tf.ops.locations",
    "compute_targets": "fcos_tf.ops.targets",
    # data
    "LabelMap": "fcos_tf.data",
    "DatasetError": "fcos_tf.data",
    "PipelineConfig": "fcos_tf.data",
    "make_pipeline": "fcos_tf.data.pipeline",
    # config -> objects, runs
    "load_recipe": "fcos_tf.core.config",
    "validate_config": "fcos_tf.core.config",
    "build_model": "fcos_tf.core.builders",
    "build_train_dataset": "fcos_tf.core.builders",
    "build_eval_dataset": "fcos_tf.core.builders",
    "read_split": "fcos_tf.core.builders",
    "run": "fcos_tf.core.runner",
    "evaluate": "fcos_tf.training.evaluation",
    "load_trained_model": "fcos_tf.core.rundir",
    "load_detector": "fcos_tf.core.rundir",
    # export
    "Detector": "fcos_tf.serving.detector",
    "ServingConfig": "fcos_tf.serving.graph",
    "convert_tflite": "fcos_tf.serving.tflite",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name):
    module = _PUBLIC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'fcos_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
