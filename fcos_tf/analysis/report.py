"""Aggregation of the per-image statistics of :mod:`fcos_tf.analysis.assignment` into a report.

:class:`Accumulator` sums the per-image results (NumPy); :meth:`Accumulator.summary` gives
the JSON-ready dict that ``fcos-analyze`` writes to ``analysis.json``; :func:`format_text`
renders it as the text report and :func:`size_histogram_png` / :func:`positives_png` draw
the pictures with PIL.
"""

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from fcos_tf.analysis.assignment import ANCHOR_RULES, REASONS, SIZE_BUCKETS, size_bucket

# Upper edges of the histogram of positives per object (the last bin is open).
POSITIVE_BINS = (0, 1, 2, 4, 8, 16, 32, 64)
# Log-spaced edges of the object-size histogram, in pixels (max(w, h) / 2 after the resize).
SIZE_EDGES = tuple(float(2 ** (k / 2)) for k in range(0, 23))  # 1 .. 2048
MAX_LISTED = 1000  # boxes without positives listed one by one in analysis.json


def level_name(stride: int) -> str:
    """``"P3"`` for stride 8: the level of a stride is its base-2 logarithm."""
    return f"P{int(round(math.log2(stride)))}"


class Accumulator:
    """Sums per-image assignment statistics over a dataset.

    Args:
        strides: the recipe's strides.
        size_ranges: the recipe's size ranges (drawn on the histogram).
        class_names: name of each class id 0..K-1.
    """

    def __init__(
        self,
        strides: Sequence[int],
        size_ranges: Sequence[Sequence[float]],
        class_names: Sequence[str],
    ):
        self.strides = tuple(int(s) for s in strides)
        self.size_ranges = tuple((float(lo), float(hi)) for lo, hi in size_ranges)
        self.class_names = list(class_names)
        self.num_images = 0
        self.ambiguity = np.zeros(3, np.int64)
        self._boxes = {
            key: [] for key in ("positives", "reason", "anchors", "bucket", "classes", "half_size")
        }
        self.missed = []
        self.num_missed = 0

    def add(self, image_id, stats, boxes, original_boxes, classes):
        """Adds one image.

        Args:
            image_id: the image's id.
            stats: NumPy values of :func:`fcos_tf.analysis.assignment.image_statistics`.
            boxes: float ``[M, 4]`` xyxy pixels of the network input.
            original_boxes: float ``[M, 4]`` the same boxes in original-image pixels.
            classes: int ``[M]``.
        """
        self.num_images += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        original_boxes = np.asarray(original_boxes, np.float64).reshape(-1, 4)
        self.ambiguity += np.asarray(stats["ambiguity"], np.int64)
        self._boxes["positives"].append(np.asarray(stats["positives"]).T)  # [M, L]
        reason = np.asarray(stats["reason"])
        self._boxes["reason"].append(reason)
        if "anchor_recalled" in stats:
            self._boxes["anchors"].append(np.asarray(stats["anchor_recalled"]).T)  # [M, 3]
        self._boxes["bucket"].append(size_bucket(original_boxes))
        self._boxes["classes"].append(np.asarray(classes))
        self._boxes["half_size"].append(
            np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2.0
        )
        for row in np.flatnonzero(reason >= 0):
            self.num_missed += 1
            if len(self.missed) < MAX_LISTED:
                self.missed.append(
                    {
                        "image_id": int(image_id),
                        "box": [round(float(v), 2) for v in original_boxes[row]],
                        "box_resized": [round(float(v), 2) for v in boxes[row]],
                        "class": self._name(int(np.asarray(classes)[row])),
                        "reason": REASONS[int(reason[row])],
                    }
                )

    def _name(self, class_id):
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)

    def _concat(self, key, width=None):
        parts = self._boxes[key]
        if parts:
            return np.concatenate(parts, axis=0)
        return np.zeros((0,) if width is None else (0, width))

    def summary(self) -> dict:
        """The report as a JSON-ready dict (see ``fcos-analyze``)."""
        num_levels = len(self.strides)
        positives = self._concat("positives", num_levels).reshape(-1, num_levels)
        reason = self._concat("reason")
        bucket = self._concat("bucket")
        classes = self._concat("classes")
        half_size = self._concat("half_size")
        per_object = positives.sum(axis=1)
        recalled = per_object > 0
        num_boxes = int(recalled.size)

        def rate(mask):
            count = int(mask.sum())
            hits = int(recalled[mask].sum())
            return {"boxes": count, "recalled": hits, "bpr": hits / count if count else None}

        per_level = positives.sum(axis=0)
        names = [level_name(s) for s in self.strides]
        empty = [name for name, count in zip(names, per_level) if count == 0]
        summary = {
            "num_images": self.num_images,
            "num_boxes": num_boxes,
            "levels": names,
            "strides": list(self.strides),
            "size_ranges": [
                [lo, hi if math.isfinite(hi) else "inf"] for lo, hi in self.size_ranges
            ],
            "bpr": rate(np.ones(num_boxes, bool)),
            "bpr_per_size": {name: rate(bucket == i) for i, name in enumerate(SIZE_BUCKETS)},
            "bpr_per_class": {
                self._name(c): rate(classes == c) for c in sorted(set(classes.tolist()))
            },
            "missed_per_reason": {name: int((reason == i).sum()) for i, name in enumerate(REASONS)},
            "missed": self.missed,
            "missed_listed": len(self.missed),
            "ambiguity": {
                "candidate_locations": int(self.ambiguity[0]),
                "several_boxes": int(self.ambiguity[1]),
                "different_classes": int(self.ambiguity[2]),
                "share_several_boxes": _share(self.ambiguity[1], self.ambiguity[0]),
                "share_different_classes": _share(self.ambiguity[2], self.ambiguity[0]),
            },
            "positives_per_level": {name: int(c) for name, c in zip(names, per_level)},
            "positives_per_object": {
                "mean": float(per_object.mean()) if num_boxes else None,
                "median": float(np.median(per_object)) if num_boxes else None,
                "max": int(per_object.max()) if num_boxes else None,
                "histogram": _histogram_counts(per_object),
            },
            "objects_per_level": {
                name: int((positives[:, i] > 0).sum()) for i, name in enumerate(names)
            },
            "levels_without_positives": empty,
            "suggestion": _suggestion(self.strides, self.size_ranges, per_level),
            "size_histogram": {
                "quantity": "max(w, h) / 2 in network-input pixels",
                "edges": list(SIZE_EDGES),
                "counts": np.histogram(
                    np.clip(half_size, SIZE_EDGES[0], SIZE_EDGES[-1]), bins=SIZE_EDGES
                )[0].tolist(),
            },
        }
        anchors = self._concat("anchors", len(ANCHOR_RULES)).reshape(-1, len(ANCHOR_RULES))
        if self._boxes["anchors"]:
            summary["anchor_bpr"] = {
                rule: (float(anchors[:, i].mean()) if num_boxes else None)
                for i, rule in enumerate(ANCHOR_RULES)
            }
        return summary


def _share(part, whole):
    return float(part) / float(whole) if whole else None


def _histogram_counts(per_object):
    counts = {}
    for low, high in zip(POSITIVE_BINS, POSITIVE_BINS[1:]):
        label = str(low) if high == low + 1 else f"{low}-{high - 1}"
        counts[label] = int(((per_object >= low) & (per_object < high)).sum())
    counts[f"{POSITIVE_BINS[-1]}+"] = int((per_object >= POSITIVE_BINS[-1]).sum())
    return counts


def _suggestion(strides, size_ranges, per_level):
    """The recipe change dropping the top levels that never get a positive (or None)."""
    keep = len(strides)
    while keep > 2 and per_level[keep - 1] == 0:
        keep -= 1
    if keep == len(strides):
        return None
    ranges = list(size_ranges[:keep])
    ranges[-1] = (ranges[-1][0], math.inf)

    def number(value):
        return "1e8" if math.isinf(value) else f"{value:g}"

    strides_text = ", ".join(str(s) for s in strides[:keep])
    ranges_text = ", ".join(f"({number(lo)}, {number(hi)})" for lo, hi in ranges)
    return (
        f"--config.locations.strides='({strides_text})' "
        f"--config.locations.size_ranges='({ranges_text})'"
    )


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def format_text(summary: dict, title: str = "") -> str:
    """The text report of a :meth:`Accumulator.summary`."""
    lines = []
    if title:
        lines.append(title)
    bpr = summary["bpr"]
    lines.append(
        f"{summary['num_images']} images, {summary['num_boxes']} boxes (crowd boxes left out); "
        f"levels {', '.join(summary['levels'])}"
    )
    lines.append(
        f"Best possible recall: {_percent(bpr['bpr'])} ({bpr['recalled']}/{bpr['boxes']} boxes "
        "with at least one positive location)"
    )
    for name, value in summary["bpr_per_size"].items():
        lines.append(f"  {name:<8} {_percent(value['bpr']):>8}  of {value['boxes']} boxes")
    lines.append(
        "  per class: "
        + ", ".join(f"{name} {_percent(v['bpr'])}" for name, v in summary["bpr_per_class"].items())
    )
    missed = summary["missed_per_reason"]
    if sum(missed.values()):
        lines.append("Boxes without a positive location, by reason:")
        for reason, count in missed.items():
            if count:
                lines.append(f"  {count:>8}  {reason}")
        lines.append(f"  (the first {summary['missed_listed']} are listed in analysis.json)")
    if "anchor_bpr" in summary:
        lines.append(
            "RetinaNet anchors (P3-P7, 9 per location), BPR: "
            + ", ".join(f"{rule} {_percent(v)}" for rule, v in summary["anchor_bpr"].items())
        )
    amb = summary["ambiguity"]
    lines.append(
        f"Ambiguous locations: {_percent(amb['share_several_boxes'])} of the "
        f"{amb['candidate_locations']} candidate locations lie in several boxes, "
        f"{_percent(amb['share_different_classes'])} in boxes of different classes"
    )
    per_object = summary["positives_per_object"]
    if per_object["mean"] is not None:
        lines.append(
            f"Positives per object: mean {per_object['mean']:.1f}, median "
            f"{per_object['median']:.0f}, max {per_object['max']}"
        )
    lines.append(
        "Positives per level: "
        + ", ".join(f"{name} {count}" for name, count in summary["positives_per_level"].items())
    )
    if summary["levels_without_positives"]:
        lines.append(
            "Levels without any positive location: "
            + ", ".join(summary["levels_without_positives"])
            + " (they learn background only)"
        )
        if summary["suggestion"]:
            lines.append(f"  drop them with: {summary['suggestion']}")
    else:
        lines.append("Every level gets positive locations.")
    return "\n".join(lines)


_LEVEL_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
)


def _bar_chart(values, labels, title, *, lines=(), width=640, height=320):
    """A PIL bar chart; ``lines`` are ``(bar position, colour, text)`` vertical markers."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 10, 24, height - 40
    draw.text((left, 4), title, fill=(0, 0, 0))
    draw.line([left, bottom, right, bottom], fill=(0, 0, 0))
    draw.line([left, top, left, bottom], fill=(0, 0, 0))
    peak = max(max(values), 1)
    draw.text((4, top), str(int(peak)), fill=(0, 0, 0))
    slot = (right - left) / max(len(values), 1)
    for i, value in enumerate(values):
        x0 = left + i * slot + 1
        y0 = bottom - (bottom - top) * value / peak
        draw.rectangle([x0, y0, x0 + slot - 2, bottom], fill=(90, 90, 90))
    step = max(1, len(labels) // 12)
    for i in range(0, len(labels), step):
        draw.text((left + i * slot, bottom + 4), labels[i], fill=(0, 0, 0))
    for k, (position, colour, text) in enumerate(lines):
        x = left + position * slot
        draw.line([x, top, x, bottom], fill=colour, width=2)
        draw.text((x + 2, top + 2 + 11 * k), text, fill=colour)
    return image


def size_histogram_png(summary: dict, path: str) -> str:
    """Writes the object-size histogram with the level size ranges drawn; returns ``path``."""
    histogram = summary["size_histogram"]
    edges = histogram["edges"]
    labels = [f"{edge:.0f}" for edge in edges[:-1]]
    markers = []
    for k, (name, (lo, _)) in enumerate(zip(summary["levels"], summary["size_ranges"])):
        colour = _LEVEL_COLOURS[k % len(_LEVEL_COLOURS)]
        if lo > 0:
            position = math.log2(lo) * 2 - math.log2(edges[0]) * 2
            markers.append((position, colour, f"{name} from {lo:g}"))
    image = _bar_chart(
        histogram["counts"],
        labels,
        "Objects by max(w, h) / 2 (px, log scale) and the levels' size ranges",
        lines=markers,
    )
    image.save(path)
    return path


def positives_png(summary: dict, path: str) -> str:
    """Writes the bar chart of positive locations per level; returns ``path``."""
    per_level = summary["positives_per_level"]
    image = _bar_chart(
        list(per_level.values()),
        [f"{name}: {count}" for name, count in per_level.items()],
        "Positive locations per level",
    )
    image.save(path)
    return path
