"""PyTorch reference of torchvision's ResNet / FPN / FCOS head, written with functional ops.

Used by the weight-import tests: random state dicts with torchvision's parameter names and
shapes, and forward passes built only from ``torch.nn.functional`` (conv2d with its padding,
max_pool2d, eval-mode batch_norm with eps 1e-5, group_norm, interpolate "nearest"), so the
Keras layers are checked against PyTorch's own conventions. :func:`fcos_detect` adds
torchvision's whole inference path around them (``GeneralizedRCNNTransform``: normalise,
resize by ``interpolate(scale_factor, recompute_scale_factor=True)``, pad to 32; anchors at
``j * (padded size // feature size)``; ``FCOS.postprocess_detections``; boxes back with
per-axis ratios), and :func:`python_nms` stands in for torchvision's compiled NMS. Importing
this module needs torch (not torchvision).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN_EPSILON = 1e-5  # torchvision's FrozenBatchNorm2d / BatchNorm2d


def _conv_weight(rng, out_channels, in_channels, kernel_size):
    fan_in = in_channels * kernel_size * kernel_size
    return rng.normal(
        0.0, math.sqrt(2.0 / fan_in), (out_channels, in_channels, kernel_size, kernel_size)
    ).astype("float32")


def _bn(rng, state, name, channels, with_counter):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype("float32")
    state[f"{name}.bias"] = rng.normal(0.0, 0.1, channels).astype("float32")
    state[f"{name}.running_mean"] = rng.normal(0.0, 0.1, channels).astype("float32")
    state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, channels).astype("float32")
    if with_counter:
        state[f"{name}.num_batches_tracked"] = np.array(100, "int64")


def resnet_state_dict(depth=50, seed=0, prefix="", classifier=True):
    """Random ImageNet-style ResNet state dict (torchvision names, NCHW shapes)."""
    rng = np.random.default_rng(seed)
    state = {}
    # An ImageNet checkpoint has BN counters and the fc layer; a detector's frozen BN has not.
    counters = classifier
    state[f"{prefix}conv1.weight"] = _conv_weight(rng, 64, 3, 7)
    _bn(rng, state, f"{prefix}bn1", 64, counters)
    in_channels = 64
    for stage, num_blocks in enumerate(BLOCKS[depth], start=1):
        width = 64 * 2 ** (stage - 1)
        for block in range(num_blocks):
            name = f"{prefix}layer{stage}.{block}"
            state[f"{name}.conv1.weight"] = _conv_weight(rng, width, in_channels, 1)
            state[f"{name}.conv2.weight"] = _conv_weight(rng, width, width, 3)
            # Small last conv of each residual branch keeps activations bounded.
            state[f"{name}.conv3.weight"] = 0.3 * _conv_weight(rng, 4 * width, width, 1)
            for index, channels in ((1, width), (2, width), (3, 4 * width)):
                _bn(rng, state, f"{name}.bn{index}", channels, counters)
            if block == 0:
                state[f"{name}.downsample.0.weight"] = _conv_weight(rng, 4 * width, in_channels, 1)
                _bn(rng, state, f"{name}.downsample.1", 4 * width, counters)
            in_channels = 4 * width
    if classifier:
        state[f"{prefix}fc.weight"] = rng.normal(0, 0.01, (1000, 2048)).astype("float32")
        state[f"{prefix}fc.bias"] = np.zeros(1000, "float32")
    return state


def _t(array):
    """A tensor in PyTorch's own memory, as torchvision's parameters and activations are.

    Some CPU kernels round differently with the alignment of their buffers, and a numpy
    array's alignment changes from one process to the next; PyTorch aligns its own.
    """
    return torch.tensor(np.asarray(array))


def _batch_norm(x, state, name):
    return F.batch_norm(
        x,
        _t(state[f"{name}.running_mean"]),
        _t(state[f"{name}.running_var"]),
        _t(state[f"{name}.weight"]),
        _t(state[f"{name}.bias"]),
        training=False,
        eps=BN_EPSILON,
    )


def resnet_forward(state, images_nhwc, depth=50, prefix=""):
    """torchvision ResNet (stride on the 3x3 conv) -> [C3, C4, C5] as NHWC numpy arrays."""
    x = _t(np.transpose(images_nhwc, (0, 3, 1, 2)))
    with torch.no_grad():
        x = F.conv2d(x, _t(state[f"{prefix}conv1.weight"]), stride=2, padding=3)
        x = F.relu(_batch_norm(x, state, f"{prefix}bn1"))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        features = []
        for stage, num_blocks in enumerate(BLOCKS[depth], start=1):
            for block in range(num_blocks):
                name = f"{prefix}layer{stage}.{block}"
                stride = 2 if (block == 0 and stage > 1) else 1
                identity = x
                if block == 0:
                    identity = F.conv2d(x, _t(state[f"{name}.downsample.0.weight"]), stride=stride)
                    identity = _batch_norm(identity, state, f"{name}.downsample.1")
                y = F.relu(
                    _batch_norm(
                        F.conv2d(x, _t(state[f"{name}.conv1.weight"])), state, f"{name}.bn1"
                    )
                )
                y = F.conv2d(y, _t(state[f"{name}.conv2.weight"]), stride=stride, padding=1)
                y = F.relu(_batch_norm(y, state, f"{name}.bn2"))
                y = _batch_norm(
                    F.conv2d(y, _t(state[f"{name}.conv3.weight"])), state, f"{name}.bn3"
                )
                x = F.relu(y + identity)
            if stage >= 2:
                features.append(x)
    return [np.transpose(f.numpy(), (0, 2, 3, 1)) for f in features]


def fpn_state_dict(
    in_channels=(512, 1024, 2048), channels=256, seed=1, prefix="", legacy_names=False
):
    """torchvision FPN + LastLevelP6P7 state dict (``inner_blocks.i.0.weight``, or the
    pre-0.13 ``inner_blocks.i.weight`` with ``legacy_names``)."""
    rng = np.random.default_rng(seed)
    state = {}
    sub = "" if legacy_names else ".0"
    for index, c in enumerate(in_channels):
        state[f"{prefix}inner_blocks.{index}{sub}.weight"] = _conv_weight(rng, channels, c, 1)
        state[f"{prefix}inner_blocks.{index}{sub}.bias"] = rng.normal(0, 0.1, channels).astype(
            "float32"
        )
        state[f"{prefix}layer_blocks.{index}{sub}.weight"] = _conv_weight(
            rng, channels, channels, 3
        )
        state[f"{prefix}layer_blocks.{index}{sub}.bias"] = rng.normal(0, 0.1, channels).astype(
            "float32"
        )
    for level in ("p6", "p7"):
        state[f"{prefix}extra_blocks.{level}.weight"] = _conv_weight(rng, channels, channels, 3)
        state[f"{prefix}extra_blocks.{level}.bias"] = rng.normal(0, 0.1, channels).astype("float32")
    return state


def _fpn_key(state, prefix, block, index, kind):
    key = f"{prefix}{block}.{index}.0.{kind}"
    return key if key in state else f"{prefix}{block}.{index}.{kind}"


def fpn_forward(state, features_nhwc, prefix=""):
    """torchvision FPN with P6 on P5 and P7 on ReLU(P6) -> [P3..P7] NHWC numpy arrays."""
    feats = [_t(np.transpose(f, (0, 3, 1, 2))) for f in features_nhwc]

    def conv(x, block, index, **kwargs):
        return F.conv2d(
            x,
            _t(state[_fpn_key(state, prefix, block, index, "weight")]),
            _t(state[_fpn_key(state, prefix, block, index, "bias")]),
            **kwargs,
        )

    with torch.no_grad():
        last_inner = conv(feats[2], "inner_blocks", 2)
        results = [conv(last_inner, "layer_blocks", 2, padding=1)]
        for index in (1, 0):
            lateral = conv(feats[index], "inner_blocks", index)
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, conv(last_inner, "layer_blocks", index, padding=1))
        p6 = F.conv2d(
            results[-1],
            _t(state[f"{prefix}extra_blocks.p6.weight"]),
            _t(state[f"{prefix}extra_blocks.p6.bias"]),
            stride=2,
            padding=1,
        )
        p7 = F.conv2d(
            F.relu(p6),
            _t(state[f"{prefix}extra_blocks.p7.weight"]),
            _t(state[f"{prefix}extra_blocks.p7.bias"]),
            stride=2,
            padding=1,
        )
        results += [p6, p7]
    return [np.transpose(r.numpy(), (0, 2, 3, 1)) for r in results]


def head_state_dict(num_classes=91, channels=256, seed=2, prefix="head."):
    """torchvision FCOSHead state dict: classification_head.* and regression_head.*."""
    rng = np.random.default_rng(seed)
    state = {}
    for branch in ("classification_head", "regression_head"):
        for index in range(4):
            state[f"{prefix}{branch}.conv.{3 * index}.weight"] = _conv_weight(
                rng, channels, channels, 3
            )
            state[f"{prefix}{branch}.conv.{3 * index}.bias"] = rng.normal(0, 0.1, channels).astype(
                "float32"
            )
            state[f"{prefix}{branch}.conv.{3 * index + 1}.weight"] = rng.uniform(
                0.5, 1.5, channels
            ).astype("float32")
            state[f"{prefix}{branch}.conv.{3 * index + 1}.bias"] = rng.normal(
                0, 0.1, channels
            ).astype("float32")
    for name, out in (
        ("classification_head.cls_logits", num_classes),
        ("regression_head.bbox_reg", 4),
        ("regression_head.bbox_ctrness", 1),
    ):
        state[f"{prefix}{name}.weight"] = 0.3 * _conv_weight(rng, out, channels, 3)
        state[f"{prefix}{name}.bias"] = rng.normal(0, 0.1, out).astype("float32")
    return state


def head_forward(state, levels_nhwc, prefix="head."):
    """torchvision FCOS head per level -> dict of lists of NHWC numpy arrays:
    ``class_logits``, ``bbox_regression`` (after ReLU, in stride units), ``centerness_logits``."""
    outputs = {"class_logits": [], "bbox_regression": [], "centerness_logits": []}

    def tower(x, branch):
        for index in range(4):
            x = F.conv2d(
                x,
                _t(state[f"{prefix}{branch}.conv.{3 * index}.weight"]),
                _t(state[f"{prefix}{branch}.conv.{3 * index}.bias"]),
                padding=1,
            )
            x = F.group_norm(
                x,
                32,
                _t(state[f"{prefix}{branch}.conv.{3 * index + 1}.weight"]),
                _t(state[f"{prefix}{branch}.conv.{3 * index + 1}.bias"]),
                eps=1e-5,
            )
            x = F.relu(x)
        return x

    def predict(x, name):
        return F.conv2d(
            x, _t(state[f"{prefix}{name}.weight"]), _t(state[f"{prefix}{name}.bias"]), padding=1
        )

    with torch.no_grad():
        for level in levels_nhwc:
            x = _t(np.transpose(level, (0, 3, 1, 2)))
            cls_features = tower(x, "classification_head")
            box_features = tower(x, "regression_head")
            results = {
                "class_logits": predict(cls_features, "classification_head.cls_logits"),
                "bbox_regression": F.relu(predict(box_features, "regression_head.bbox_reg")),
                "centerness_logits": predict(box_features, "regression_head.bbox_ctrness"),
            }
            for key, value in results.items():
                outputs[key].append(np.transpose(value.numpy(), (0, 2, 3, 1)))
    return outputs


def fcos_state_dict(num_classes=91, seed=0, legacy_fpn_names=False):
    """A random state dict with the names and shapes of torchvision's fcos_resnet50_fpn."""
    state = resnet_state_dict(50, seed=seed, prefix="backbone.body.", classifier=False)
    state.update(
        fpn_state_dict(seed=seed + 1, prefix="backbone.fpn.", legacy_names=legacy_fpn_names)
    )
    state.update(head_state_dict(num_classes, seed=seed + 2))
    return state


def fcos_forward(state, images_nhwc):
    """Raw torchvision FCOS outputs for NHWC images (see :func:`head_forward`)."""
    features = resnet_forward(state, images_nhwc, prefix="backbone.body.")
    return head_forward(state, fpn_forward(state, features, prefix="backbone.fpn."))


def save_state_dict(state, path):
    """Writes a numpy state dict as a ``.pth`` file of torch tensors."""
    torch.save({name: _t(value) for name, value in state.items()}, path)


# torchvision's GeneralizedRCNNTransform defaults for its COCO detectors.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def python_nms(boxes, scores, iou_threshold):
    """Greedy NMS in plain torch ops: indices of kept boxes, by decreasing score.

    A box is suppressed by a kept box of higher score when their IoU is above
    ``iou_threshold`` (torchvision's ``ops.nms`` semantics).

    Args:
        boxes: float ``[N, 4]`` xyxy.
        scores: float ``[N]``.
        iou_threshold: float.

    Returns:
        int64 ``[N_kept]``.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (areas[:, None] + areas[None, :] - inter)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for index in range(len(order)):
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= iou[index] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def python_batched_nms(boxes, scores, labels, iou_threshold):
    """Class-aware NMS (NMS per label), kept indices by decreasing score."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for label in torch.unique(labels):
        index = torch.where(labels == label)[0]
        keep[index[python_nms(boxes[index], scores[index], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def transform(image_uint8, min_size=800, max_size=1333, size_divisible=32):
    """torchvision's eval-mode ``GeneralizedRCNNTransform`` for one image.

    Args:
        image_uint8: numpy uint8 ``[H0, W0, 3]`` RGB.

    Returns:
        ``(batch, resized_size)``: float32 numpy ``[1, Hp, Wp, 3]`` (NHWC, zero padded at the
        bottom and right) and the ``(H, W)`` before padding.
    """
    x = torch.from_numpy(np.ascontiguousarray(image_uint8)).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]
    height, width = x.shape[-2:]
    # Python floats, as the transform computes them.
    scale = min(min_size / min(height, width), max_size / max(height, width))
    x = F.interpolate(
        x[None],
        scale_factor=scale,
        mode="bilinear",
        recompute_scale_factor=True,
        align_corners=False,
    )[0]
    resized = tuple(x.shape[-2:])
    padded = [int(math.ceil(s / size_divisible) * size_divisible) for s in resized]
    batch = torch.zeros([1, 3] + padded)
    batch[0, :, : resized[0], : resized[1]] = x
    return np.transpose(batch.numpy(), (0, 2, 3, 1)), resized


def fcos_detect(
    state,
    image_uint8,
    *,
    score_threshold=0.2,
    top_k=1000,
    nms_threshold=0.6,
    max_detections=100,
    nms=python_batched_nms,
    head=None,
):
    """torchvision ``fcos_resnet50_fpn`` inference on one image, from functional parts.

    ``head`` may hold :func:`fcos_forward`'s outputs of :func:`transform`'s batch of this
    image, computed once for several settings.

    Returns:
        dict of numpy ``boxes`` float32 ``[D, 4]`` xyxy pixels of the original image,
        ``scores`` float32 ``[D]`` (decreasing), ``labels`` int64 ``[D]`` (torchvision's
        logit index = COCO category id), ``levels`` int64 ``[D]`` (0 = P3).
    """
    batch, resized = transform(image_uint8)
    if head is None:
        head = fcos_forward(state, batch)
    padded_height, padded_width = batch.shape[1:3]
    all_boxes, all_scores, all_labels, all_levels = [], [], [], []
    for level, (cls, reg, ctr) in enumerate(
        zip(head["class_logits"], head["bbox_regression"], head["centerness_logits"])
    ):
        height, width, num_classes = cls.shape[1:]
        anchor_size = 8 * 2**level  # AnchorGenerator sizes (8,), (16,), ... (128,)
        # Anchor centres: j * (padded size // feature size), per axis.
        shift_y, shift_x = torch.meshgrid(
            torch.arange(height) * (padded_height // height),
            torch.arange(width) * (padded_width // width),
            indexing="ij",
        )
        centres = torch.stack([shift_x.reshape(-1), shift_y.reshape(-1)], -1).float()
        scores = torch.sqrt(
            torch.sigmoid(torch.from_numpy(cls[0])) * torch.sigmoid(torch.from_numpy(ctr[0]))
        ).reshape(-1)
        candidates = torch.where(scores > score_threshold)[0]
        scores, order = scores[candidates].topk(min(top_k, len(candidates)))
        candidates = candidates[order]
        anchor_index = torch.div(candidates, num_classes, rounding_mode="floor")
        distances = torch.from_numpy(reg[0]).reshape(-1, 4)[anchor_index] * anchor_size
        centre = centres[anchor_index]
        boxes = torch.cat([centre - distances[:, :2], centre + distances[:, 2:]], -1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, resized[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, resized[0])
        all_boxes.append(boxes)
        all_scores.append(scores)
        all_labels.append(candidates % num_classes)
        all_levels.append(torch.full([len(candidates)], level))
    boxes, scores, labels, levels = (
        torch.cat(x) for x in (all_boxes, all_scores, all_labels, all_levels)
    )
    keep = nms(boxes, scores, labels, nms_threshold)[:max_detections]
    boxes, scores, labels, levels = boxes[keep], scores[keep], labels[keep], levels[keep]
    # transform.postprocess: per-axis ratios original / resized, in float32.
    ratio_height = torch.tensor(image_uint8.shape[0], dtype=torch.float32) / resized[0]
    ratio_width = torch.tensor(image_uint8.shape[1], dtype=torch.float32) / resized[1]
    boxes = boxes * torch.stack([ratio_width, ratio_height, ratio_width, ratio_height])
    return {
        "boxes": boxes.numpy(),
        "scores": scores.numpy(),
        "labels": labels.numpy(),
        "levels": levels.numpy(),
    }
