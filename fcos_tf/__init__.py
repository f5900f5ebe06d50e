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

__version__ = "0.1.0"
