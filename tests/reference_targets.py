"""Plain-Python FCOS target assignment, written from docs/design.md §2-3 for the tests.

Deliberately the obvious way: one location at a time, one box at a time, in float64. It
shares no code with :mod:`fcos_tf.ops.targets` (not even the location grid), so agreement between
the two is evidence that both follow the written rules.
"""

import math

import numpy as np


def reference_targets(
    boxes, classes, image_size, strides, size_ranges, center_sampling_radius, location_offset
):
    """FCOS targets of one image.

    Args:
        boxes: ``[M, 4]`` xyxy pixels (array-like).
        classes: ``[M]`` ints, negative = padding.
        image_size: ``(H, W)`` python ints.
        strides: stride per level.
        size_ranges: inclusive ``(lo, hi)`` per level.
        center_sampling_radius: in strides; 0 = off.
        location_offset: a level's first location sits at ``floor(stride * offset)``.

    Returns:
        dict of numpy arrays with the keys and layout of ``compute_targets``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    height, width = image_size
    class_targets, box_targets, centerness_targets, matched = [], [], [], []

    for stride, (lo, hi) in zip(strides, size_ranges):
        start = math.floor(stride * location_offset)
        rows = math.ceil(height / stride)
        cols = math.ceil(width / stride)
        for i in range(rows):  # y outer, x inner: row-major
            for j in range(cols):
                x = start + j * stride
                y = start + i * stride
                best, best_area = -1, None
                for k in range(len(boxes)):
                    x0, y0, x1, y1 = boxes[k]
                    if classes[k] < 0 or not (x1 > x0 and y1 > y0):
                        continue  # padding or degenerate
                    left, top, right, bottom = x - x0, y - y0, x1 - x, y1 - y
                    if center_sampling_radius > 0:
                        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                        half = center_sampling_radius * stride
                        region = (
                            max(cx - half, x0),
                            max(cy - half, y0),
                            min(cx + half, x1),
                            min(cy + half, y1),
                        )
                        inside = region[0] < x < region[2] and region[1] < y < region[3]
                    else:
                        inside = min(left, top, right, bottom) > 0
                    if not inside:
                        continue
                    if not lo <= max(left, top, right, bottom) <= hi:
                        continue
                    box_area = (x1 - x0) * (y1 - y0)
                    if best == -1 or box_area < best_area:  # strict: ties keep the first box
                        best, best_area = k, box_area

                matched.append(best)
                if best == -1:
                    class_targets.append(-1)
                    box_targets.append((0.0, 0.0, 0.0, 0.0))
                    centerness_targets.append(0.0)
                else:
                    x0, y0, x1, y1 = boxes[best]
                    left, top, right, bottom = x - x0, y - y0, x1 - x, y1 - y
                    class_targets.append(int(classes[best]))
                    box_targets.append((left, top, right, bottom))
                    centerness_targets.append(
                        math.sqrt(
                            min(left, right)
                            / max(left, right)
                            * min(top, bottom)
                            / max(top, bottom)
                        )
                    )

    return {
        "class_targets": np.array(class_targets, np.int32),
        "box_targets": np.array(box_targets, np.float64).reshape(-1, 4),
        "centerness_targets": np.array(centerness_targets, np.float64),
        "matched_box_index": np.array(matched, np.int32),
    }
