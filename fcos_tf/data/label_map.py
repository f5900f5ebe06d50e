"""Contiguous class index <-> dataset category id and name.

The network predicts contiguous classes ``0..K-1``; datasets number their categories their own
way (COCO uses 1..90 with gaps). A :class:`LabelMap` holds the mapping, is built by each reader
and is written next to every checkpoint and export as ``label_map.json``::

    [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, ...]

The position in the list is the contiguous class.
"""

import json
import os

import numpy as np
import tensorflow as tf

LABEL_MAP_FILENAME = "label_map.json"

# The 80 categories of COCO 2017 with their official ids (used to give TFDS `coco/2017`,
# whose labels are already contiguous, the category ids that COCO annotation files use).
COCO_2017_CATEGORIES = (
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
)


class LabelMap:
    """Ordered list of categories; the position of a category is its contiguous class.

    Args:
        categories: sequence of ``(category_id, name)`` pairs or of dicts with keys ``"id"``
            and ``"name"``, in contiguous-class order. Ids and names must be unique.
    """

    def __init__(self, categories):
        ids, names = [], []
        for category in categories:
            if isinstance(category, dict):
                if "id" not in category or "name" not in category:
                    raise ValueError(
                        f"`categories` entries need keys 'id' and 'name', got {category!r}."
                    )
                category_id, name = category["id"], category["name"]
            else:
                category_id, name = category
            if isinstance(category_id, bool) or not isinstance(category_id, (int, np.integer)):
                raise TypeError(f"`categories` ids must be integers, got {category_id!r}.")
            ids.append(int(category_id))
            names.append(str(name))
        if not ids:
            raise ValueError("`categories` must not be empty.")
        if len(set(ids)) != len(ids):
            raise ValueError(f"`categories` has duplicate ids: {ids}.")
        if len(set(names)) != len(names):
            raise ValueError(f"`categories` has duplicate names: {names}.")
        self._ids = tuple(ids)
        self._names = tuple(names)
        self._index_of_id = {category_id: i for i, category_id in enumerate(ids)}

    @classmethod
    def from_names(cls, names, first_id=0):
        """Categories numbered ``first_id, first_id + 1, ...`` in the order of ``names``."""
        return cls([(first_id + i, name) for i, name in enumerate(names)])

    @classmethod
    def coco_2017(cls):
        """The 80 COCO 2017 categories with their official ids (1..90)."""
        return cls(COCO_2017_CATEGORIES)

    @property
    def num_classes(self):
        """K, the number of contiguous classes."""
        return len(self._ids)

    @property
    def category_ids(self):
        """Dataset category id of each contiguous class (tuple of K ints)."""
        return self._ids

    @property
    def names(self):
        """Name of each contiguous class (tuple of K strings)."""
        return self._names

    def __len__(self):
        return self.num_classes

    def __eq__(self, other):
        return (
            isinstance(other, LabelMap) and self._ids == other._ids and self._names == other._names
        )

    def __repr__(self):
        return f"LabelMap({self.to_list()!r})"

    def index_of(self, category_id):
        """Contiguous class of a dataset category id; ``KeyError`` naming the id if unknown."""
        try:
            return self._index_of_id[int(category_id)]
        except KeyError:
            raise KeyError(
                f"Unknown category id {category_id}; known ids: {list(self._ids)}."
            ) from None

    def category_id(self, index):
        """Dataset category id of contiguous class ``index`` (0..K-1)."""
        return self._ids[self._checked_index(index)]

    def name(self, index):
        """Name of contiguous class ``index`` (0..K-1)."""
        return self._names[self._checked_index(index)]

    def _checked_index(self, index):
        if not 0 <= int(index) < self.num_classes:
            raise IndexError(f"`index` must be in [0, {self.num_classes}), got {index}.")
        return int(index)

    def classes_to_category_ids(self, classes):
        """Maps contiguous classes to dataset ids inside a graph.

        Args:
            classes: int32 ``[...]`` contiguous classes; ``-1`` (padding) stays ``-1``.

        Returns:
            int64 ``[...]`` category ids, ``-1`` where ``classes`` is ``-1``.
        """
        classes = tf.convert_to_tensor(classes)
        table = tf.constant(self._ids, tf.int64)
        safe = tf.clip_by_value(tf.cast(classes, tf.int32), 0, self.num_classes - 1)
        return tf.where(classes >= 0, tf.gather(table, safe), tf.constant(-1, tf.int64))

    def to_list(self):
        """``[{"id": ..., "name": ...}, ...]`` in contiguous-class order."""
        return [{"id": i, "name": n} for i, n in zip(self._ids, self._names)]

    def save(self, path):
        """Writes the label map as JSON.

        Args:
            path: a file path, or a directory (the file is then ``<dir>/label_map.json``).

        Returns:
            The path of the written file.
        """
        if tf.io.gfile.isdir(path):
            path = os.path.join(path, LABEL_MAP_FILENAME)
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(self.to_list(), f, indent=1)
        return path

    @classmethod
    def load(cls, path):
        """Reads a label map written by :meth:`save` (a file, or a directory holding one)."""
        if tf.io.gfile.isdir(path):
            path = os.path.join(path, LABEL_MAP_FILENAME)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"No label map at `path`={path!r}.")
        with tf.io.gfile.GFile(path) as f:
            return cls(json.load(f))
