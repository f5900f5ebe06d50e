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
    converted at the edges with the functions of :mod:`fcos_tf.boxes`, named by format pair.

Per-location distances are ``ltrb``: ``(l, t, r, b)`` from a location to the left, top, right
and bottom side of a box, in pixels.
"""

import importlib

__version__ = "0.1.0"

# Public names, each from the module that defines it; imported on first use so that
# ``import fcos_tf`` stays cheap (TensorFlow loads with the first name that needs it). A name
# equal to a submodule's (``postprocess``, ``export_saved_model``) stays the submodule.
_PUBLIC_NAMES = {
    # model
    "FCOS": "fcos_tf.model",
    "FCOSHead": "fcos_tf.head",
    "FPN": "fcos_tf.fpn",
    "GroupNorm": "fcos_tf.head",
    "Scale": "fcos_tf.head",
    "ResNet": "fcos_tf.backbone",
    "SmallBackbone": "fcos_tf.backbone",
    "FrozenBatchNorm": "fcos_tf.backbone",
    "build_backbone": "fcos_tf.backbone",
    # method
    "compute_locations": "fcos_tf.locations",
    "compute_targets": "fcos_tf.targets",
    # data
    "LabelMap": "fcos_tf.data",
    "DatasetError": "fcos_tf.data",
    "PipelineConfig": "fcos_tf.data",
    "make_pipeline": "fcos_tf.data.pipeline",
    # config -> objects, runs
    "load_recipe": "fcos_tf.config",
    "validate_config": "fcos_tf.config",
    "build_model": "fcos_tf.builders",
    "build_train_dataset": "fcos_tf.builders",
    "build_eval_dataset": "fcos_tf.builders",
    "read_split": "fcos_tf.builders",
    "run": "fcos_tf.training",
    "evaluate": "fcos_tf.evaluation",
    "load_trained_model": "fcos_tf.rundir",
    # export
    "ServingConfig": "fcos_tf.serving",
    "convert_tflite": "fcos_tf.export_tflite",
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
