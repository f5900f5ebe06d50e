"""fcos-convert-dataset: COCO, VOC and YOLO to sharded TFRecords that read back the same; the
``voc``, ``yolo`` and ``tfrecord`` sections of config.data through read_split."""

import os

import format_helpers
import numpy as np
import pytest

from fcos_tf import convert_dataset
from fcos_tf.core import builders
from fcos_tf.core import config as config_lib
from fcos_tf.data import coco, synthetic, tfrecord


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return format_helpers.write_all_formats(tmp_path_factory.mktemp("formats"), num_images=5)


def _examples(read):
    return list(read.dataset.as_numpy_iterator())


@pytest.mark.parametrize("source", ["coco", "voc", "yolo"])
def test_converts_each_format_to_tfrecords_that_read_back_the_same(
    written, tmp_path, source, capsys
):
    output = tmp_path / "records" / "train"
    if source == "coco":
        flags = [f"--annotations={written['coco'][0]}", f"--images={written['coco'][1]}"]
    else:
        flags = [f"--root={written[source]}", "--split=train"]
    if source == "voc":
        flags.append(f"--class_names={','.join(synthetic.CLASS_NAMES)}")
    status = convert_dataset.main(
        [f"--from={source}", *flags, f"--output={output}", "--num_shards=2"]
    )
    assert status == 0
    assert capsys.readouterr().out.strip() == (
        f"Wrote 5 images (0 skipped) of 6 classes into 2 files: {output}-00000-of-00002.tfrecord"
        f" ... {output}-00001-of-00002.tfrecord, and {output.parent / 'label_map.json'}"
    )
    assert sorted(os.listdir(output.parent)) == [
        "label_map.json",
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    read = tfrecord.read_tfrecord(f"{output}-*")
    assert read.num_examples == 5 and read.label_map.names == synthetic.CLASS_NAMES
    expected = _examples(coco.read_coco(*written["coco"]))
    for a, b in zip(expected, _examples(read), strict=True):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["image"], b["image"])


def test_skipped_images_are_counted_and_bad_data_is_one_line(written, tmp_path, capsys):
    import shutil

    root = tmp_path / "yolo"
    shutil.copytree(written["yolo"], root)
    (root / "images" / "train" / "000004.jpg").write_bytes(b"")
    output = tmp_path / "out" / "train"
    assert convert_dataset.main(["--from=yolo", f"--root={root}", f"--output={output}"]) == 0
    # One shard (the default): "1 file", and no "first ... last" range.
    assert capsys.readouterr().out.strip() == (
        f"Wrote 4 images (1 skipped) of 6 classes into 1 file: {output}-00000-of-00001.tfrecord,"
        f" and {output.parent / 'label_map.json'}"
    )
    (root / "labels" / "train" / "000001.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        convert_dataset.main(["--from=yolo", f"--root={root}", f"--output={output}"])
    assert str(exit_info.value).startswith("Bad data: ")
    assert "000001.txt' line 1 has 4 values" in str(exit_info.value)
    assert "\n" not in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        convert_dataset.main(["--from=coco", f"--root={root}", f"--output={output}"])
    assert "--from=coco needs --annotations and --images" in str(exit_info.value)


def test_a_second_split_must_share_the_folders_label_map(written, tmp_path, capsys):
    output = tmp_path / "records"
    yolo = ["--from=yolo", f"--root={written['yolo']}"]
    assert convert_dataset.main([*yolo, f"--output={output / 'train'}"]) == 0
    # VOC numbers the same names from 1, YOLO from 0: the val files would not fit train's map.
    voc = ["--from=voc", f"--root={written['voc']}", "--split=train"]
    voc.append(f"--class_names={','.join(synthetic.CLASS_NAMES)}")
    with pytest.raises(SystemExit, match="holds another label map than this data's"):
        convert_dataset.main([*voc, f"--output={output / 'val'}"])
    assert not list(output.glob("val-*"))
    label_map = output / "label_map.json"
    assert (
        convert_dataset.main([*voc, f"--output={output / 'val'}", f"--label_map={label_map}"]) == 0
    )
    train = _examples(tfrecord.read_tfrecord(str(output / "train-*")))
    val = _examples(tfrecord.read_tfrecord(str(output / "val-*")))
    for a, b in zip(train, val, strict=True):
        np.testing.assert_array_equal(a["classes"], b["classes"])


def _config(dataset, section):
    config = config_lib.load_recipe("synthetic_small")
    config.data.dataset = dataset
    for key, value in section.items():
        config.data[dataset][key] = value
    return config


def test_read_split_and_validation_of_the_file_formats(written, tmp_path):
    yolo_config = _config("yolo", {"root": written["yolo"], "val_split": "train"})
    config_lib.validate_config(yolo_config)
    for split in ("train", "val"):
        read = builders.read_split(yolo_config, split)
        assert read.num_examples == 5 and read.ground_truth_file is None
        assert "image_bytes" in read.dataset.element_spec  # the pipeline decodes in parallel
    assert builders.dataset_label_map(yolo_config.data).names == synthetic.CLASS_NAMES

    voc_config = _config("voc", {"root": written["voc"], "val_split": "train"})
    config_lib.validate_config(voc_config)
    train, val = (builders.read_split(voc_config, split) for split in ("train", "val"))
    assert train.label_map == val.label_map  # the training split's names, found and sorted

    pattern = os.path.join(os.path.dirname(written["tfrecord"][0]), "train-*")
    records = _config("tfrecord", {"train_file_pattern": pattern, "val_file_pattern": pattern})
    config_lib.validate_config(records)
    read = builders.read_split(records, "val")
    assert read.num_examples == 5 and read.label_map == synthetic.label_map()

    with pytest.raises(ValueError, match=r"config.data.voc.train_split: .*nope.txt does not"):
        config_lib.validate_config(_config("voc", {"root": written["voc"], "train_split": "nope"}))
    with pytest.raises(ValueError, match=r"config.data.yolo.root: .* is not a directory"):
        config_lib.validate_config(_config("yolo", {"root": str(tmp_path / "none")}))
    with pytest.raises(ValueError, match=r"config.data.tfrecord.val_file_pattern: is empty"):
        config_lib.validate_config(_config("tfrecord", {"train_file_pattern": pattern}))
    with pytest.raises(ValueError, match=r"config.data.tfrecord.train_file_pattern: no file"):
        config_lib.validate_config(
            _config("tfrecord", {"train_file_pattern": pattern + "x", "val_file_pattern": pattern})
        )
    with pytest.raises(ValueError, match=r"config.data.yolo.class_names: must be distinct"):
        config_lib.validate_config(
            _config("yolo", {"root": written["yolo"], "class_names": ("a", "a")}),
            check_paths=False,
        )
