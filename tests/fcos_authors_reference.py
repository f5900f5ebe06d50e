"""PyTorch references of the FCOS authors' released models, for the import tests.

Written from reading AdelaiDet (``adet/modeling/fcos/fcos.py``, ``fcos_outputs.py``, detectron2's
ResNet/FPN) and tianzhi0549/FCOS (``fcos_core/modeling/rpn/fcos/{fcos,inference}.py``, its
ResNet, FPN and ``backbone/mobilenet.py``): their packages do not install on a CPU-only
PyTorch 2, so the forward passes are re-stated here in ``torch.nn.functional``, in float64,
on a state dict with exactly their tensor names and shapes (random seeded values).

Inputs are NCHW, already normalised and zero-padded to a multiple of 32, as both codes feed
their networks.
"""

import math

import numpy as np
import tensorflow as tf
import torch
import torch.nn.functional as F

NUM_CLASSES = 80
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# (expansion, out channels, repeats, first stride) of the authors' MobileNetV2 (width 1).
MNV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


# ------------------------------------------------------------------------------- state dicts


class _Random:
    """Seeded values that keep activations O(1) through 100+ layers."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def conv(self, out_channels, in_channels, k, std=None):
        fan_in = in_channels * k * k
        std = math.sqrt(2.0 / fan_in) if std is None else std
        return self.rng.normal(0, std, (out_channels, in_channels, k, k))

    def norm(self, d, prefix, c, weight_scale=1.0, stats=True, tracked=False):
        d[f"{prefix}.weight"] = self.rng.uniform(0.5, 1.5, c) * weight_scale
        d[f"{prefix}.bias"] = self.rng.normal(0, 0.1, c)
        if stats:
            d[f"{prefix}.running_mean"] = self.rng.normal(0, 0.1, c)
            d[f"{prefix}.running_var"] = self.rng.uniform(0.5, 2.0, c)
        if tracked:
            d[f"{prefix}.num_batches_tracked"] = np.array(1000, np.int64)

    def vector(self, n, std=0.1):
        return self.rng.normal(0, std, n)


def resnet_state_dict(r, d, depth, style):
    """ResNet tensors: ``style`` ``"d2"`` (detectron2 names) or ``"mrcn"`` (maskrcnn-benchmark)."""
    if style == "d2":
        base = "backbone.bottom_up."
        d[base + "stem.conv1.weight"] = r.conv(64, 3, 7)
        r.norm(d, base + "stem.conv1.norm", 64)
    else:
        base = "backbone.body."
        d[base + "stem.conv1.weight"] = r.conv(64, 3, 7)
        r.norm(d, base + "stem.bn1", 64)
    in_channels = 64
    for stage, blocks in enumerate(RESNET_BLOCKS[depth]):
        b = 64 * 2**stage
        for block in range(blocks):
            if style == "d2":
                p = f"{base}res{stage + 2}.{block}."
                names = [(f"{p}conv{k}.weight", f"{p}conv{k}.norm") for k in (1, 2, 3)]
                short = (f"{p}shortcut.weight", f"{p}shortcut.norm")
            else:
                p = f"{base}layer{stage + 1}.{block}."
                names = [(f"{p}conv{k}.weight", f"{p}bn{k}") for k in (1, 2, 3)]
                short = (f"{p}downsample.0.weight", f"{p}downsample.1")
            shapes = [(b, in_channels, 1), (b, b, 3), (4 * b, b, 1)]
            for (w, n), (o, i, k) in zip(names, shapes):
                d[w] = r.conv(o, i, k)
                r.norm(d, n, o, weight_scale=0.2 if k == 1 and o == 4 * b else 1.0)
            if block == 0:
                d[short[0]] = r.conv(4 * b, in_channels, 1)
                r.norm(d, short[1], 4 * b, weight_scale=0.5)
            in_channels = 4 * b
    return d


def mnv2_state_dict(r, d):
    """The authors' MobileNetV2 ``backbone.body.features.{0..17}`` (BN with counters)."""
    base = "backbone.body.features."
    d[base + "0.0.weight"] = r.conv(32, 3, 3)
    r.norm(d, base + "0.1", 32, tracked=True)
    in_channels, k = 32, 1
    for expansion, out_channels, repeats, _ in MNV2_STAGES:
        for _ in range(repeats):
            hidden = in_channels * expansion
            p = f"{base}{k}.conv."
            if expansion == 1:
                layers = [("0", (hidden, 1, 3)), ("3", (out_channels, hidden, 1))]
            else:
                layers = [
                    ("0", (hidden, in_channels, 1)),
                    ("3", (hidden, 1, 3)),
                    ("6", (out_channels, hidden, 1)),
                ]
            for index, (o, i, ks) in layers:
                d[f"{p}{index}.weight"] = r.conv(o, i, ks, std=math.sqrt(2.0 / (i * ks * ks)))
                last = index == layers[-1][0]
                r.norm(d, f"{p}{int(index) + 1}", o, weight_scale=0.5 if last else 1.0,
                       tracked=True)  # fmt: skip
            in_channels = out_channels
            k += 1
    return d


def fpn_state_dict(r, d, style, in_channels, channels, top_levels):
    names = {
        "d2": (
            ["backbone.fpn_lateral3", "backbone.fpn_lateral4", "backbone.fpn_lateral5"],
            ["backbone.fpn_output3", "backbone.fpn_output4", "backbone.fpn_output5"],
            ["backbone.top_block.p6", "backbone.top_block.p7"],
        ),
        "mrcn": (
            ["backbone.fpn.fpn_inner2", "backbone.fpn.fpn_inner3", "backbone.fpn.fpn_inner4"],
            ["backbone.fpn.fpn_layer2", "backbone.fpn.fpn_layer3", "backbone.fpn.fpn_layer4"],
            ["backbone.fpn.top_blocks.p6", "backbone.fpn.top_blocks.p7"],
        ),
    }[style]
    for lateral, output, c in zip(names[0], names[1], in_channels):
        d[lateral + ".weight"] = r.conv(channels, c, 1, std=1.0 / math.sqrt(c))
        d[lateral + ".bias"] = r.vector(channels)
        d[output + ".weight"] = r.conv(channels, channels, 3, std=1.0 / math.sqrt(9 * channels))
        d[output + ".bias"] = r.vector(channels)
    for top in names[2][:top_levels]:
        d[top + ".weight"] = r.conv(channels, channels, 3, std=1.0 / math.sqrt(9 * channels))
        d[top + ".bias"] = r.vector(channels)
    return d


def head_state_dict(r, d, prefix, channels, num_levels, norm, centerness_name, box_std):
    """Head tensors; ``norm`` ``"gn"`` or ``"bn_per_level"`` (``ModuleListDial`` of BNs)."""
    for tower in ("cls_tower", "bbox_tower"):
        for i in range(4):
            d[f"{prefix}{tower}.{3 * i}.weight"] = r.conv(channels, channels, 3)
            d[f"{prefix}{tower}.{3 * i}.bias"] = r.vector(channels)
            if norm == "gn":
                r.norm(d, f"{prefix}{tower}.{3 * i + 1}", channels, stats=False)
            else:
                for level in range(num_levels):
                    # Fixed statistics do not renormalise like GroupNorm: small gammas keep
                    # the towers O(1), so scores do not saturate into ties.
                    r.norm(
                        d, f"{prefix}{tower}.{3 * i + 1}.{level}", channels, weight_scale=0.5,
                        tracked=True,
                    )  # fmt: skip
    std = 1.0 / math.sqrt(9 * channels)
    d[f"{prefix}cls_logits.weight"] = r.conv(NUM_CLASSES, channels, 3, std=std)
    # A few hundred candidates per image: below the 1000 per level, so no top-k cut.
    d[f"{prefix}cls_logits.bias"] = r.vector(NUM_CLASSES, 0.5) - 5.0
    d[f"{prefix}bbox_pred.weight"] = r.conv(4, channels, 3, std=box_std)
    # Boxes of a few strides: relu(s x) * stride with x ~ 1, or exp(s x) with x ~ 3 (20 px).
    d[f"{prefix}bbox_pred.bias"] = r.vector(4, 0.2) + (3.0 if box_std < 0.01 else 1.0)
    d[f"{prefix}{centerness_name}.weight"] = r.conv(1, channels, 3, std=std)
    d[f"{prefix}{centerness_name}.bias"] = r.vector(1)
    for level in range(num_levels):
        d[f"{prefix}scales.{level}.scale"] = r.rng.uniform(0.5, 1.5, 1)
    return d


def adelaidet_state_dict(depth=50, real_time=False, bn_head=False, seed=0):
    """An AdelaiDet FCOS checkpoint's state dict (``{"model": ...}`` content), random values."""
    r = _Random(seed)
    d = resnet_state_dict(r, {}, depth, "d2")
    levels = 3 if real_time else 5
    fpn_state_dict(r, d, "d2", (512, 1024, 2048), 256, 0 if real_time else 2)
    head_state_dict(
        r, d, "proposal_generator.fcos_head.", 256, levels, "bn_per_level" if bn_head else "gn",
        "ctrness", box_std=0.01,
    )  # fmt: skip
    d["pixel_mean"] = np.array([103.530, 116.280, 123.675]).reshape(3, 1, 1)
    d["pixel_std"] = np.ones((3, 1, 1))
    return d


def tianzhi_state_dict(backbone="mnv2", channels=256, seed=0):
    """A tianzhi0549/FCOS checkpoint's ``model`` state dict (``module.`` prefix), random values."""
    r = _Random(seed)
    if backbone == "mnv2":
        d = mnv2_state_dict(r, {})
        in_channels = (32, 96, 320)
    else:
        d = resnet_state_dict(r, {}, 101, "mrcn")
        in_channels = (512, 1024, 2048)
    fpn_state_dict(r, d, "mrcn", in_channels, channels, 2)
    head_state_dict(
        r, d, "rpn.head.", channels, 5, "gn", "centerness",
        box_std=0.002 if backbone == "mnv2" else 0.01,
    )  # fmt: skip
    return {f"module.{k}": v for k, v in d.items()}


def to_torch(state_dict):
    """float64 torch tensors (int counters kept)."""
    return {
        k: torch.from_numpy(np.asarray(v)).to(torch.float64)
        if np.asarray(v).dtype != np.int64
        else torch.from_numpy(np.asarray(v))
        for k, v in state_dict.items()
    }


# --------------------------------------------------------------------------------- forwards


def _bn(x, d, prefix, eps):
    scale = d[f"{prefix}.weight"] / torch.sqrt(d[f"{prefix}.running_var"] + eps)
    shift = d[f"{prefix}.bias"] - d[f"{prefix}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def resnet_forward(d, x, depth, style, eps):
    """``[C3, C4, C5]``; stride on the first 1x1 conv (STRIDE_IN_1X1)."""
    if style == "d2":
        base, stem_norm = "backbone.bottom_up.", "backbone.bottom_up.stem.conv1.norm"
    else:
        base, stem_norm = "backbone.body.", "backbone.body.stem.bn1"
    x = F.conv2d(x, d[base + "stem.conv1.weight"], stride=2, padding=3)
    x = F.relu(_bn(x, d, stem_norm, eps))
    x = F.max_pool2d(x, 3, 2, 1)
    features = []
    for stage, blocks in enumerate(RESNET_BLOCKS[depth]):
        for block in range(blocks):
            stride = 2 if (block == 0 and stage > 0) else 1
            if style == "d2":
                p = f"{base}res{stage + 2}.{block}."
                conv = [f"{p}conv{k}" for k in (1, 2, 3)]
                norm = [f"{p}conv{k}.norm" for k in (1, 2, 3)]
                short, short_norm = f"{p}shortcut", f"{p}shortcut.norm"
            else:
                p = f"{base}layer{stage + 1}.{block}."
                conv = [f"{p}conv{k}" for k in (1, 2, 3)]
                norm = [f"{p}bn{k}" for k in (1, 2, 3)]
                short, short_norm = f"{p}downsample.0", f"{p}downsample.1"
            y = F.relu(_bn(F.conv2d(x, d[conv[0] + ".weight"], stride=stride), d, norm[0], eps))
            y = F.relu(_bn(F.conv2d(y, d[conv[1] + ".weight"], padding=1), d, norm[1], eps))
            y = _bn(F.conv2d(y, d[conv[2] + ".weight"]), d, norm[2], eps)
            if block == 0:
                x = _bn(F.conv2d(x, d[short + ".weight"], stride=stride), d, short_norm, eps)
            x = F.relu(y + x)
        if stage >= 1:
            features.append(x)
    return features


def mnv2_forward(d, x):
    """The authors' MobileNetV2: outputs of features 6, 13, 17 (C3, C4, C5)."""
    base = "backbone.body.features."
    x = F.conv2d(x, d[base + "0.0.weight"], stride=2, padding=1)
    x = torch.clamp(_bn(x, d, base + "0.1", 1e-5), 0, 6)
    k, in_channels, features = 1, 32, []
    for expansion, out_channels, repeats, first_stride in MNV2_STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            hidden = in_channels * expansion
            p = f"{base}{k}.conv."
            y = x
            if expansion == 1:
                y = F.conv2d(y, d[p + "0.weight"], stride=stride, padding=1, groups=hidden)
                y = torch.clamp(_bn(y, d, p + "1", 1e-5), 0, 6)
                y = _bn(F.conv2d(y, d[p + "3.weight"]), d, p + "4", 1e-5)
            else:
                y = torch.clamp(_bn(F.conv2d(y, d[p + "0.weight"]), d, p + "1", 1e-5), 0, 6)
                y = F.conv2d(y, d[p + "3.weight"], stride=stride, padding=1, groups=hidden)
                y = torch.clamp(_bn(y, d, p + "4", 1e-5), 0, 6)
                y = _bn(F.conv2d(y, d[p + "6.weight"]), d, p + "7", 1e-5)
            x = x + y if (stride == 1 and in_channels == out_channels) else y
            if k in (6, 13, 17):
                features.append(x)
            in_channels = out_channels
            k += 1
    return features


def fpn_forward(d, features, style, top_levels):
    if style == "d2":
        lateral = ["backbone.fpn_lateral3", "backbone.fpn_lateral4", "backbone.fpn_lateral5"]
        output = ["backbone.fpn_output3", "backbone.fpn_output4", "backbone.fpn_output5"]
        top = ["backbone.top_block.p6", "backbone.top_block.p7"]
    else:
        lateral = [f"backbone.fpn.fpn_inner{i}" for i in (2, 3, 4)]
        output = [f"backbone.fpn.fpn_layer{i}" for i in (2, 3, 4)]
        top = ["backbone.fpn.top_blocks.p6", "backbone.fpn.top_blocks.p7"]

    def conv(name, x, **kwargs):
        return F.conv2d(x, d[name + ".weight"], d[name + ".bias"], **kwargs)

    merged = conv(lateral[2], features[2])
    outputs = [conv(output[2], merged, padding=1)]
    for index in (1, 0):
        lat = conv(lateral[index], features[index])
        merged = lat + F.interpolate(merged, size=lat.shape[-2:], mode="nearest")
        outputs.insert(0, conv(output[index], merged, padding=1))
    if top_levels:
        p6 = conv(top[0], outputs[-1], stride=2, padding=1)
        p7 = conv(top[1], F.relu(p6), stride=2, padding=1)
        outputs += [p6, p7]
    return outputs


def head_forward(d, levels, prefix, centerness_name, norm, centerness_on, box_mode, strides):
    """Per level ``(logits [1,80,h,w], dist [1,4,h,w] pixels, centerness logits [1,1,h,w])``."""

    def conv(name, x):
        return F.conv2d(x, d[name + ".weight"], d[name + ".bias"], padding=1)

    results = []
    for level, (x, stride) in enumerate(zip(levels, strides)):
        towers = {}
        for tower in ("cls_tower", "bbox_tower"):
            y = x
            for i in range(4):
                y = conv(f"{prefix}{tower}.{3 * i}", y)
                n = f"{prefix}{tower}.{3 * i + 1}"
                if norm == "gn":
                    y = F.group_norm(y, 32, d[n + ".weight"], d[n + ".bias"], 1e-5)
                else:
                    y = _bn(y, d, f"{n}.{level}", 1e-5)
                y = F.relu(y)
            towers[tower] = y
        logits = conv(f"{prefix}cls_logits", towers["cls_tower"])
        source = towers["bbox_tower"] if centerness_on == "regression" else towers["cls_tower"]
        ctr = conv(f"{prefix}{centerness_name}", source)
        reg = d[f"{prefix}scales.{level}.scale"] * conv(f"{prefix}bbox_pred", towers["bbox_tower"])
        dist = F.relu(reg) * stride if box_mode == "relu" else torch.exp(reg)
        results.append((logits, dist, ctr))
    return results


# --------------------------------------------------------------------------- post-processing


def _candidates(results, strides, threshold=0.05, top_n=1000):
    boxes, scores, labels = [], [], []
    for (logits, dist, ctr), stride in zip(results, strides):
        _, _, h, w = logits.shape
        cls = torch.sigmoid(logits[0]).permute(1, 2, 0).reshape(h * w, -1)
        c = torch.sigmoid(ctr[0]).permute(1, 2, 0).reshape(h * w)
        ltrb = dist[0].permute(1, 2, 0).reshape(h * w, 4)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64) * stride + stride // 2,
            torch.arange(w, dtype=torch.float64) * stride + stride // 2,
            indexing="ij",
        )
        loc = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
        cand = cls > threshold
        sc = (cls * c[:, None])[cand]
        loc_index, label = cand.nonzero(as_tuple=True)
        if sc.numel() > top_n:
            sc, keep = sc.topk(top_n)
            loc_index, label = loc_index[keep], label[keep]
        left, top, right, bottom = ltrb[loc_index].unbind(1)
        x, y = loc[loc_index].unbind(1)
        boxes.append(torch.stack([x - left, y - top, x + right, y + bottom], 1))
        scores.append(torch.sqrt(sc))
        labels.append(label)
    return torch.cat(boxes), torch.cat(scores), torch.cat(labels)


def adelaidet_postprocess(results, strides, valid_size, max_detections=100):
    """FCOSOutputs.predict_proposals + detector_postprocess at scale 1: boxes, scores, labels."""
    boxes, scores, labels = _candidates(results, strides)
    # torchvision.ops.batched_nms: per class, plain (x2 - x1) widths.
    keep = _per_class_nms(boxes, scores, labels, 0.6, plus=0.0)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if len(scores) > max_detections:
        threshold = torch.kthvalue(scores, len(scores) - max_detections + 1).values
        keep = scores >= threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    height, width = valid_size
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        1,
    )
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep], labels[keep]


def _nms(boxes, scores, threshold, plus):
    """Greedy NMS; widths ``x2 - x1 + plus``; kept indices in ascending order."""
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(boxes[i, 0], boxes[:, 0])
        yy1 = torch.maximum(boxes[i, 1], boxes[:, 1])
        xx2 = torch.minimum(boxes[i, 2], boxes[:, 2])
        yy2 = torch.minimum(boxes[i, 3], boxes[:, 3])
        inter = (xx2 - xx1 + plus).clamp(min=0) * (yy2 - yy1 + plus).clamp(min=0)
        area = (boxes[:, 2] - boxes[:, 0] + plus) * (boxes[:, 3] - boxes[:, 1] + plus)
        iou = inter / (area[i] + area - inter).clamp(min=1e-12)
        suppressed |= iou > threshold
    return torch.tensor(sorted(keep), dtype=torch.long)


def _per_class_nms(boxes, scores, labels, threshold, plus):
    kept = []
    for label in labels.unique():
        index = (labels == label).nonzero()[:, 0]
        kept.append(index[_nms(boxes[index], scores[index], threshold, plus)])
    return torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)


def tianzhi_postprocess(results, strides, valid_size, max_detections=100):
    """FCOSPostProcessor at scale 1 (clip to size - 1, +1 NMS per class): boxes, scores, labels."""
    boxes, scores, labels = _candidates(results, strides)
    height, width = valid_size
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, width - 1),
            boxes[:, 1].clamp(0, height - 1),
            boxes[:, 2].clamp(0, width - 1),
            boxes[:, 3].clamp(0, height - 1),
        ],
        1,
    )
    keep = _per_class_nms(boxes, scores, labels, 0.6, plus=1.0)  # ml_nms, "+1" widths
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if len(scores) > max_detections:
        threshold = torch.kthvalue(scores, len(scores) - max_detections + 1).values
        keep = scores >= threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return boxes, scores, labels


# ------------------------------------------------------------------------------ comparisons


def padded_input(image_size, seed):
    """A normalised image ``[H, W, 3]`` zero-padded to a multiple of 32: NHWC f32, NCHW f64."""
    height, width = image_size
    rng = np.random.default_rng(seed)
    padded = np.zeros((1, -(-height // 32) * 32, -(-width // 32) * 32, 3), np.float32)
    padded[0, :height, :width] = rng.normal(0.0, 50.0, (height, width, 3))
    return padded, torch.from_numpy(padded.transpose(0, 3, 1, 2).astype(np.float64))


def flatten(results):
    """Reference per-level outputs -> ``FCOS.call``'s ``(class_logits, box_ltrb, ctr)``."""

    def flat(x):
        return x[0].permute(1, 2, 0).reshape(-1, x.shape[1]).numpy()

    return (
        np.concatenate([flat(r[0]) for r in results]),
        np.concatenate([flat(r[1]) for r in results]),
        np.concatenate([flat(r[2]) for r in results])[:, 0],
    )


def assert_raw_outputs_match(outputs, results):
    """``FCOS.call`` outputs (batch 1) against the reference, level by level."""
    logits, ltrb, ctr = flatten(results)
    sizes = [r[0].shape[2] * r[0].shape[3] for r in results]
    start = 0
    for level, size in enumerate(sizes):
        part = slice(start, start + size)
        np.testing.assert_allclose(
            np.asarray(outputs["class_logits"])[0, part], logits[part], atol=2e-3, rtol=1e-3,
            err_msg=f"class logits, level {level}",
        )  # fmt: skip
        np.testing.assert_allclose(
            np.asarray(outputs["box_ltrb"])[0, part], ltrb[part], atol=1e-2, rtol=1e-4,
            err_msg=f"box distances (px), level {level}",
        )  # fmt: skip
        np.testing.assert_allclose(
            np.asarray(outputs["centerness_logits"])[0, part], ctr[part], atol=2e-3, rtol=1e-3,
            err_msg=f"centerness logits, level {level}",
        )  # fmt: skip
        start += size


def assert_detections_match(boxes, scores, classes, reference, min_count=5):
    """Detections (numpy, valid rows only) equal the reference's: 1e-2 px, 5e-4 score.

    Each detection must match its own reference detection (same class). The reference may
    hold more only through ties at the 100th score, which both sources' ``kthvalue`` rule
    keeps (this package keeps exactly 100): the unmatched ones must score at that cut.
    """
    ref_boxes, ref_scores, ref_labels = (t.numpy() for t in reference)
    assert len(ref_scores) >= min_count, "the test case should produce detections"
    unused = np.ones(len(ref_scores), bool)
    for box, score, label in zip(boxes, scores, classes):
        fits = (
            unused
            & (ref_labels == label)
            & (np.abs(ref_scores - score) <= 5e-4)
            & (np.abs(ref_boxes - box).max(axis=1) <= 1e-2)
        )
        assert fits.any(), f"detection {box}, {score}, {label} is not in the reference"
        unused[np.argmax(fits)] = False
    if unused.any():
        assert len(ref_scores) > 100 - 5, (len(scores), len(ref_scores))
        np.testing.assert_allclose(ref_scores[unused], scores.min(), atol=5e-4)


def assert_model_matches(model, nhwc, image_size, results, postprocess, strides):
    """An imported ``FCOS`` on ``nhwc`` against the reference forward pass and inference.

    Args:
        model: the imported Keras model.
        nhwc: the padded input of :func:`padded_input`.
        image_size: ``(H, W)`` valid region of the input.
        results: the reference's per-level outputs on the same input.
        postprocess: the source's inference (:func:`adelaidet_postprocess` or
            :func:`tianzhi_postprocess`).
        strides: the reference levels' strides.
    """
    outputs = model(tf.constant(nhwc), training=False)
    assert_raw_outputs_match(outputs, results)
    detections = model.postprocess(
        outputs, nhwc.shape[1:3], valid_size=tf.constant([image_size], tf.int32)
    )
    num = int(detections["num_detections"][0])
    assert_detections_match(
        detections["boxes"][0, :num].numpy(),
        detections["scores"][0, :num].numpy(),
        detections["classes"][0, :num].numpy(),
        postprocess(results, strides, image_size),
    )
