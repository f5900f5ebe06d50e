"""FCOS training losses (paper Sec. 3.1 eq. 2, Sec. 3.3) with global-batch normalisers.

Each loss is a *local* sum over this replica's part of the batch divided by a normaliser of
the *global* batch (summed over all replicas). Keras sums gradients across replicas, so the
sum of the replicas' gradients equals the gradient of the single-device loss on the whole
global batch, whatever the number of replicas (docs/design.md §3 item 13). The authors' repo divides
by the per-GPU average instead, because PyTorch DDP averages gradients.

Shapes use the letters of :mod:`fcos_tf`; a leading ``...`` is any batch shape (usually
``[B]``).
"""

import tensorflow as tf

from fcos_tf.ops import boxes as box_ops

BOX_LOSSES = ("giou", "iou")


def global_sum(value):
    """Sums ``value`` over all replicas of the current ``tf.distribute`` strategy.

    Identity without a strategy (the default replica context) and in a cross-replica
    context, where there is no per-replica value to combine. The result carries no gradient:
    it is only ever used as a normaliser or for logging.

    Args:
        value: a float tensor of any shape, this replica's contribution.

    Returns:
        A tensor of the same shape and dtype, the sum over replicas.
    """
    value = tf.stop_gradient(tf.convert_to_tensor(value))
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_num_positives(local_count):
    """Number of positive locations of the global batch, at least 1 (Sec. 3.1 ``N_pos``).

    Args:
        local_count: float32 scalar, positives in this replica's part of the batch.

    Returns:
        float32 scalar ``max(sum over replicas, 1)``.
    """
    return tf.maximum(global_sum(tf.cast(local_count, tf.float32)), 1.0)


def sigmoid_focal_loss(class_logits, class_targets, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss (Lin et al. 2017) summed over classes, not normalised.

    Args:
        class_logits: float ``[..., P, K]`` logits before the sigmoid.
        class_targets: int32 ``[..., P]`` class of each location, ``-1`` = background (a
            background location is a negative for all K classes).
        alpha: weight of the positives; negatives get ``1 - alpha``. A negative value
            disables the alpha weighting.
        gamma: focusing exponent (0 gives plain sigmoid cross-entropy).

    Returns:
        float32 ``[..., P]``, the loss of each location summed over its K classes.
    """
    class_logits = tf.cast(class_logits, tf.float32)
    class_targets = tf.convert_to_tensor(class_targets)
    if class_targets.dtype.is_floating:
        raise TypeError(
            f"`class_targets` must be an integer tensor, got {class_targets.dtype.name}."
        )
    num_classes = class_logits.shape[-1]
    if num_classes is None:
        num_classes = tf.shape(class_logits)[-1]
    # one_hot of -1 is all zeros: background is a negative for every class.
    onehot = tf.one_hot(tf.cast(class_targets, tf.int32), num_classes, dtype=tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=class_logits)
    prob = tf.sigmoid(class_logits)
    p_t = onehot * prob + (1.0 - onehot) * (1.0 - prob)
    loss = ce * tf.pow(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = loss * (onehot * alpha + (1.0 - onehot) * (1.0 - alpha))
    return tf.reduce_sum(loss, axis=-1)


def box_loss(pred_ltrb, target_ltrb, kind="giou", eps=1e-7):
    """Element-wise IoU-based regression loss on ``ltrb`` pairs of the same location.

    Args:
        pred_ltrb: float ``[..., 4]`` predicted distances (>= 0), pixels.
        target_ltrb: float ``[..., 4]`` target distances (> 0 on positives), same units.
        kind: ``"giou"`` for ``1 - GIoU`` (improved FCOS), ``"iou"`` for the paper's
            UnitBox loss ``-log IoU``.
        eps: IoU floor for the logarithm, so that a degenerate prediction gives a finite
            loss.

    Returns:
        float32 ``[...]``. Meaningful on positive locations only: the caller masks the rest.
    """
    pred_ltrb = tf.cast(pred_ltrb, tf.float32)
    target_ltrb = tf.cast(target_ltrb, tf.float32)
    if kind == "giou":
        return 1.0 - box_ops.giou_ltrb(pred_ltrb, target_ltrb)
    if kind == "iou":
        return -tf.math.log(tf.maximum(box_ops.iou_ltrb(pred_ltrb, target_ltrb), eps))
    raise ValueError(f"`kind` must be one of {BOX_LOSSES}, got {kind!r}.")


# fcos_losses() takes a `box_loss` keyword (the loss kind), which hides the function.
_elementwise_box_loss = box_loss


def centerness_loss(centerness_logits, centerness_targets):
    """Element-wise sigmoid binary cross-entropy of the centerness branch (Sec. 3.3).

    Args:
        centerness_logits: float ``[...]`` logits.
        centerness_targets: float ``[...]`` targets in [0, 1].

    Returns:
        float32 ``[...]``.
    """
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(centerness_targets, tf.float32),
        logits=tf.cast(centerness_logits, tf.float32),
    )


def fcos_losses(outputs, labels, *, box_loss="giou", focal_alpha=0.25, focal_gamma=2.0):
    """The three FCOS losses of this replica's batch, normalised by global-batch counts.

    Call it inside the replica function (``train_step``): the normalisers are summed over
    replicas with :func:`global_sum`.

    * ``cls_loss``: focal loss summed over locations x classes / global ``N_pos`` (>= 1).
    * ``box_loss``: GIoU (or IoU) loss of positives weighted by their centerness target /
      global sum of centerness targets of the positives. The weighting follows the authors'
      "improved" FCOS; the paper's eq. 2 divides by ``N_pos`` with weight 1.
    * ``ctr_loss``: centerness BCE summed over positives / global ``N_pos`` (>= 1).

    Args:
        outputs: dict from ``FCOS.call``: ``"class_logits"`` float ``[B, P, K]``,
            ``"box_ltrb"`` float ``[B, P, 4]`` pixels, optional ``"centerness_logits"``
            float ``[B, P]`` (absent: ``ctr_loss`` is 0 and the box loss still uses the
            centerness targets as weights).
        labels: dict with ``"class_targets"`` int32 ``[B, P]`` (-1 background),
            ``"box_targets"`` float32 ``[B, P, 4]`` ltrb pixels, ``"centerness_targets"``
            float32 ``[B, P]`` (0 on background). Other keys are ignored.
        box_loss: ``"giou"`` or ``"iou"``.
        focal_alpha: focal loss alpha.
        focal_gamma: focal loss gamma.

    Returns:
        dict of float32 scalars: ``cls_loss``, ``box_loss``, ``ctr_loss`` (this replica's
        share: summing them over replicas gives the global-batch loss) and ``num_pos`` (the
        global number of positive locations, no clipping).
    """
    for key in ("class_targets", "box_targets", "centerness_targets"):
        if key not in labels:
            raise ValueError(f"`labels` is missing {key!r}; it has {sorted(labels)}.")
    for key in ("class_logits", "box_ltrb"):
        if key not in outputs:
            raise ValueError(f"`outputs` is missing {key!r}; it has {sorted(outputs)}.")
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"`box_loss` must be one of {BOX_LOSSES}, got {box_loss!r}.")

    class_targets = tf.cast(labels["class_targets"], tf.int32)
    box_targets = tf.cast(labels["box_targets"], tf.float32)
    ctr_targets = tf.cast(labels["centerness_targets"], tf.float32)
    positive = class_targets >= 0  # [B, P]
    pos_weight = tf.cast(positive, tf.float32)

    num_pos = global_sum(tf.reduce_sum(pos_weight))
    normaliser = tf.maximum(num_pos, 1.0)
    ctr_weight = ctr_targets * pos_weight
    # Small floor instead of 1: the sum of centerness targets is below N_pos by nature and
    # a batch with positives always has a positive sum; with no positives the numerator is 0.
    box_normaliser = tf.maximum(global_sum(tf.reduce_sum(ctr_weight)), 1e-6)

    focal = sigmoid_focal_loss(outputs["class_logits"], class_targets, focal_alpha, focal_gamma)
    cls_loss = tf.reduce_sum(focal) / normaliser

    # Background rows get a harmless box so that no NaN reaches the gradient through where().
    safe_targets = tf.where(positive[..., None], box_targets, tf.ones_like(box_targets))
    safe_pred = tf.where(
        positive[..., None], tf.cast(outputs["box_ltrb"], tf.float32), tf.ones_like(box_targets)
    )
    per_location = _elementwise_box_loss(safe_pred, safe_targets, kind=box_loss)  # [B, P]
    box = tf.reduce_sum(per_location * ctr_weight) / box_normaliser

    if "centerness_logits" in outputs:
        bce = centerness_loss(outputs["centerness_logits"], ctr_targets)
        ctr = tf.reduce_sum(bce * pos_weight) / normaliser
    else:
        ctr = tf.zeros([], tf.float32)
    return {"cls_loss": cls_loss, "box_loss": box, "ctr_loss": ctr, "num_pos": num_pos}
