"""The error of unusable input data."""


class DatasetError(ValueError):
    """The dataset cannot be used as it is: the message names the file and what is wrong.

    Raised by the readers for a bad annotation file (not JSON, duplicate image ids, an
    annotation naming an unknown image or category) and for a split with no usable image.
    ``fcos-train`` prints it as one line and exits with status 1.
    """
