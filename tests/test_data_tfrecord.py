"""TFRecord reader/writer: round trip, identical targets from every format, bad records, and
file sharding over two local workers."""

import json
import os
import sys

import export_helpers
import format_helpers
import numpy as np
import pytest
import tensorflow as tf

from fcos_tf.data import DatasetError, coco, pipeline, synthetic, tfrecord, voc, yolo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return format_helpers.write_all_formats(tmp_path_factory.mktemp("formats"), num_images=5)


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    # 64 x 64: every normalised coordinate of an integer box is a binary fraction, exact in
    # float32 and in YOLO's 8 decimals, so all four formats give bit-identical boxes.
    return format_helpers.write_all_formats(
        tmp_path_factory.mktemp("square"), num_images=6, image_size=64, seed=5, num_shards=4
    )


def _examples(read):
    return list(read.dataset.as_numpy_iterator())


def _pattern(shards):
    return os.path.join(os.path.dirname(shards[0]), "train-*-of-*.tfrecord")


def test_writes_shards_round_robin_with_the_object_detection_api_keys(written):
    shards = written["tfrecord"]
    assert [os.path.basename(p) for p in shards] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    counts = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in shards]
    assert counts == [2, 2, 1]  # examples 0, 3 | 1, 4 | 2
    record = next(iter(tf.data.TFRecordDataset(shards[1]))).numpy()
    feature = tf.train.Example.FromString(record).features.feature
    item = written["items"][1]
    assert feature["image/source_id"].bytes_list.value == [b"1"]
    assert feature["image/format"].bytes_list.value == [b"jpeg"]
    assert feature["image/encoded"].bytes_list.value[0] == item["image_bytes"]
    assert feature["image/height"].int64_list.value == [64]
    assert feature["image/width"].int64_list.value == [80]
    np.testing.assert_allclose(
        feature["image/object/bbox/xmax"].float_list.value, item["boxes"][:, 2] / 80, rtol=1e-6
    )
    labels = synthetic.label_map()
    assert list(feature["image/object/class/label"].int64_list.value) == [
        labels.category_id(c) for c in item["classes"]
    ]
    assert [t.decode() for t in feature["image/object/class/text"].bytes_list.value] == [
        labels.name(c) for c in item["classes"]
    ]
    assert os.path.exists(os.path.join(os.path.dirname(shards[0]), "label_map.json"))


def test_reads_back_the_synthetic_set_in_written_order(written):
    expected = _examples(coco.read_coco(*written["coco"]))
    read = tfrecord.read_tfrecord(_pattern(written["tfrecord"]))
    got = _examples(read)
    assert read.num_examples == 5 and read.label_map == synthetic.label_map()
    options = read.dataset.options().experimental_distribute
    assert options.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE
    for a, b in zip(expected, got, strict=True):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)  # float32 normalised
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["is_crowd"], b["is_crowd"])
        np.testing.assert_array_equal(a["image"], b["image"])
    undecoded = _examples(tfrecord.read_tfrecord(written["tfrecord"], decode=False))
    assert [e["image_bytes"] for e in undecoded] == [i["image_bytes"] for i in written["items"]]
    np.testing.assert_allclose(undecoded[3]["boxes"], got[3]["boxes"])


def _reads(formats):
    return {
        "coco": coco.read_coco(*formats["coco"], decode=False),
        "voc": voc.read_voc(formats["voc"], "train", class_names=synthetic.CLASS_NAMES),
        "yolo": yolo.read_yolo(formats["yolo"], "train", decode=False),
        "tfrecord": tfrecord.read_tfrecord(_pattern(formats["tfrecord"])),
    }


def test_every_format_gives_identical_training_targets(square):
    reads = _reads(square)
    boxes = {name: [e["boxes"] for e in _examples(r)] for name, r in reads.items()}
    for name in ("voc", "yolo", "tfrecord"):
        for a, b in zip(boxes["coco"], boxes[name], strict=True):
            np.testing.assert_array_equal(a, b)
    batches = {}
    for name, read in reads.items():
        dataset = pipeline.make_pipeline(
            read.dataset,
            training=True,
            batch_size=3,
            train_short_side=(96, 96),
            max_size=160,
            hflip_prob=0.5,
            shuffle_buffer=0,
            deterministic=True,
            repeat=False,
            seed=7,
        )
        batches[name] = [
            (images.numpy(), {k: v.numpy() for k, v in labels.items()})
            for images, labels in dataset
        ]
    assert len(batches["coco"]) == 2
    positives = sum(int((labels["class_targets"] >= 0).sum()) for _, labels in batches["coco"])
    assert positives > 20
    for name in ("voc", "yolo", "tfrecord"):
        for (images_a, labels_a), (images_b, labels_b) in zip(
            batches["coco"], batches[name], strict=True
        ):
            np.testing.assert_array_equal(images_a, images_b)
            assert labels_a.keys() == labels_b.keys()
            for key in labels_a:
                np.testing.assert_array_equal(labels_a[key], labels_b[key], err_msg=f"{name} {key}")


def _rewrite(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_bad_records_are_errors_naming_file_and_record(written, tmp_path):
    source = written["tfrecord"][0]
    records = _records(source)
    example = tf.train.Example.FromString(records[1])
    example.features.feature["image/object/class/label"].int64_list.value[0] = 99
    bad = tmp_path / "train-00000-of-00001.tfrecord"
    _rewrite(bad, [records[0], example.SerializeToString()])
    labels = synthetic.label_map()
    with pytest.raises(DatasetError, match=r"00001\.tfrecord' record 1 has unknown class 99"):
        tfrecord.read_tfrecord(str(bad), label_map=labels)
    # Unchecked: the stream stops with an error naming the file.
    read = tfrecord.read_tfrecord(str(bad), label_map=labels, check_records=False, decode=False)
    assert read.num_examples is None
    with pytest.raises(tf.errors.InvalidArgumentError, match="00001.tfrecord"):
        _examples(read)

    example = tf.train.Example.FromString(records[1])
    del example.features.feature["image/object/bbox/ymax"].float_list.value[0]
    _rewrite(bad, [example.SerializeToString()])
    with pytest.raises(DatasetError, match=r"record 0: the box and class lists differ"):
        tfrecord.read_tfrecord(str(bad), label_map=labels)
    example = tf.train.Example.FromString(records[1])
    example.features.feature["image/object/bbox/xmax"].float_list.value[0] = 1.5
    _rewrite(bad, [example.SerializeToString()])
    with pytest.raises(DatasetError, match=r"record 0: box .* is not a normalised"):
        tfrecord.read_tfrecord(str(bad), label_map=labels)
    _rewrite(bad, [b"not a proto"])
    with pytest.raises(DatasetError, match=r"record 0 is not a tf.train.Example"):
        tfrecord.read_tfrecord(str(bad), label_map=labels)

    data = open(source, "rb").read()
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(DatasetError, match=r"00001\.tfrecord' is not a complete TFRecord file"):
        tfrecord.read_tfrecord(str(bad), label_map=labels)
    with pytest.raises(DatasetError, match=r"does not exist; pass `class_names`"):
        tfrecord.read_tfrecord(str(bad))
    with pytest.raises(FileNotFoundError, match="No TFRecord file matches"):
        tfrecord.read_tfrecord(str(tmp_path / "none-*"))


def test_labels_by_name_difficult_as_crowd_and_text_ids(written, tmp_path):
    example = tf.train.Example.FromString(_records(written["tfrecord"][1])[0])
    feature = example.features.feature
    del feature["image/object/class/label"].int64_list.value[:]
    count = len(feature["image/object/class/text"].bytes_list.value)
    del feature["image/object/is_crowd"].int64_list.value[:]
    feature["image/object/difficult"].int64_list.value[:] = [1] + [0] * (count - 1)
    feature["image/source_id"].bytes_list.value[:] = [b"img_a"]
    path = tmp_path / "x.tfrecord"
    _rewrite(path, [example.SerializeToString()])
    (got,) = _examples(tfrecord.read_tfrecord(str(path), class_names=synthetic.CLASS_NAMES))
    item = written["items"][1]
    np.testing.assert_array_equal(got["classes"], item["classes"])
    np.testing.assert_array_equal(got["is_crowd"], [True] + [False] * (count - 1))
    expected_id = tf.strings.to_hash_bucket_fast("img_a", 2**62).numpy()
    assert got["image_id"] == expected_id


# ------------------------------------------------------------------------ two local workers

WORKER = """
import json, sys
import tensorflow as tf
from fcos_tf.data import tfrecord

strategy = tf.distribute.MultiWorkerMirroredStrategy()
read = tfrecord.read_tfrecord(sys.argv[1], decode=False, check_records=False)
ids = read.dataset.map(lambda e: e["image_id"]).batch(2)
seen = []
for batch in strategy.experimental_distribute_dataset(ids):
    for local in strategy.experimental_local_results(batch):
        seen += local.numpy().tolist()
print("IDS", json.dumps(seen))
"""


@pytest.mark.slow
def test_two_local_workers_read_their_own_files(written, tmp_path):
    # Files of 1, 3, 3 and 1 records: worker 0 reads files 0 and 2, worker 1 files 1 and 3
    # (4 records each). Sharding by element instead would give worker 0 the even positions of
    # the interleaved order 0 | 1 | 4 | 7 | 2 | 5 | 3 | 6, i.e. ids {0, 4, 2, 3}.
    items = [dict(item, image_id=i) for i, item in enumerate(written["items"] * 2)][:8]
    blocks = [[0], [1, 2, 3], [4, 5, 6], [7]]
    labels = synthetic.label_map()
    for index, block in enumerate(blocks):
        with tf.io.TFRecordWriter(str(tmp_path / f"t-{index:05d}-of-00004.tfrecord")) as writer:
            for i in block:
                item = items[i]
                writer.write(
                    tfrecord.encode_example(
                        item["image_bytes"],
                        height=item["height"],
                        width=item["width"],
                        image_id=i,
                        boxes=item["boxes"],
                        classes=item["classes"],
                        is_crowd=item["is_crowd"],
                        label_map=labels,
                    ).SerializeToString()
                )
    labels.save(str(tmp_path))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    outputs = export_helpers.run_local_workers(
        [sys.executable, str(script), str(tmp_path / "t-*-of-00004.tfrecord")],
        timeout=240,
        env={"PYTHONPATH": REPO},
    )
    seen = []
    for output in outputs:
        line = next(line for line in output.splitlines() if line.startswith("IDS "))
        seen.append(sorted(json.loads(line[4:])))
    assert seen == [[0, 4, 5, 6], [1, 2, 3, 7]]


def _pipeline_shards(dataset, workers=2):
    """``(shard policy, image ids per worker)`` of make_pipeline's one-image batches of
    ``dataset``, each worker's share as ``MultiWorkerMirroredStrategy`` would cut it."""
    from tensorflow.python.distribute import input_ops

    batches = pipeline.make_pipeline(
        dataset,
        training=False,
        batch_size=1,
        repeat=False,
        eval_short_side=64,
        max_size=80,
        deterministic=True,
    )
    ids = [
        [
            int(labels["image_id"][0])
            for _, labels in input_ops.auto_shard_dataset(batches, workers, w)
        ]
        for w in range(workers)
    ]
    return batches.options().experimental_distribute.auto_shard_policy, ids


def test_batches_of_the_pipeline_shard_by_element(written):
    from tensorflow.python.distribute import input_ops

    read = tfrecord.read_tfrecord(_pattern(written["tfrecord"]), decode=False)
    # The reader's own dataset shards by file: 3 files over 2 workers.
    ids = [
        sorted(int(e["image_id"]) for e in input_ops.auto_shard_dataset(read.dataset, 2, w))
        for w in range(2)
    ]
    assert ids == [[0, 2, 3], [1, 4]]  # files 0 and 2 | file 1
    policy, ids = _pipeline_shards(read.dataset)
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    assert ids == [[0, 2, 4], [1, 3]]


def test_the_training_input_leaves_the_shard_policy_to_tfdata_and_shards_by_element(written):
    # The run's input reads without the FILE policy (which make_pipeline would change to
    # DATA, with tf.data's warning on every pipeline): tf.data's AUTO shards the batches by
    # element all the same, as the test above does with DATA.
    from fcos_tf.core import builders
    from fcos_tf.core import config as config_lib

    config = config_lib.load_recipe("synthetic_small")
    config.data.dataset = "tfrecord"
    config.data.tfrecord.train_file_pattern = _pattern(written["tfrecord"])
    read = builders.read_split(config, "train")
    auto = tf.data.experimental.AutoShardPolicy.AUTO
    assert read.dataset.options().experimental_distribute.auto_shard_policy == auto
    policy, ids = _pipeline_shards(read.dataset)
    assert policy == auto
    assert ids == [[0, 2, 4], [1, 3]]
