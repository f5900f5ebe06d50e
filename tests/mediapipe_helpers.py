"""MediaPipe ObjectDetector results as rows, for the tests that run exports in MediaPipe."""


def detection_rows(result):
    """``[(category name, score, (origin_x, origin_y, width, height))]`` of a detect() result.

    MediaPipe merges the rows of one box into one detection with several categories; this
    splits them again, one row per category, in MediaPipe's order. Box values are whole
    pixels (origin and size truncated).
    """
    rows = []
    for detection in result.detections:
        b = detection.bounding_box
        box = (b.origin_x, b.origin_y, b.width, b.height)
        rows.extend((c.category_name, c.score, box) for c in detection.categories)
    return rows
