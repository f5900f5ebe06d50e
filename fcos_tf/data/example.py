"""The example structure every reader produces, and what a reader returns."""

import dataclasses

import tensorflow as tf

from fcos_tf.data.label_map import LabelMap


@dataclasses.dataclass
class ReadResult:
    """What a reader returns.

    Attributes:
        dataset: ``tf.data.Dataset`` of example dicts: ``"image"`` uint8 ``[H0, W0, 3]`` (or
            ``"image_bytes"`` string when the reader was asked not to decode), ``"boxes"``
            float32 ``[N, 4]`` xyxy original pixels, ``"classes"`` int32 ``[N]`` 0..K-1,
            ``"is_crowd"`` bool ``[N]``, ``"image_id"`` int64 scalar.
        label_map: contiguous class <-> dataset category.
        num_examples: number of examples (None when unknown).
        skipped: ``(path, reason)`` of every image skipped at load time.
        ground_truth_file: the COCO JSON the examples come from, when there is one:
            evaluation then uses its official areas and crowd flags.
        image_sizes: ``{image_id: (height, width)}`` of the original images when the source
            lists them without decoding (a COCO file that gives every image's size), else
            None.
    """

    dataset: tf.data.Dataset
    label_map: LabelMap
    num_examples: int | None = None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    ground_truth_file: str | None = None
    image_sizes: dict[int, tuple[int, int]] | None = None
