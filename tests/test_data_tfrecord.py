"""The record format: schema round trip, atomic sharded writing, shard checks, dataset.json."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import harness
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.data import records
from deeplab.data import tfrecord

INFO = dict(
    name="toy",
    num_classes=3,
    ignore_label=255,
    class_names=["a", "b", "c"],
    palette=[[0, 0, 0], [1, 2, 3], [4, 5, 6]],
)


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _example(index, height=6, width=5):
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (height, width)).astype(np.uint8)
    label[0, 0] = 255
    return image, label


def _write_split(directory, split, n, num_shards):
    with records.ShardedWriter(directory, split, n, num_shards) as writer:
        for i in range(n):
            image, label = _example(i)
            writer.write(
                i,
                records.encode_example(
                    image_bytes=_png(image),
                    image_format="png",
                    height=6,
                    width=5,
                    label_png=tfrecord.encode_label_png(label),
                    filename=f"ex{i}",
                    classes_present=np.unique(label[label != 255]),
                ),
            )
    return writer


def test_encode_decode_round_trip_png_and_jpeg():
    image, label = _example(0)
    for fmt, data in (("png", _png(image)), ("jpeg", None)):
        if fmt == "jpeg":
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=95)
            data = buf.getvalue()
        serialized = records.encode_example(
            image_bytes=data,
            image_format=fmt,
            height=6,
            width=5,
            label_png=tfrecord.encode_label_png(label),
            filename="2007_000032",
            classes_present=[2, 0, 1],
        )
        decoded = records.decode_example(tf.constant(serialized))
        assert decoded["image"].dtype == tf.uint8 and decoded["image"].shape == (6, 5, 3)
        if fmt == "png":
            np.testing.assert_array_equal(decoded["image"].numpy(), image)
        else:
            # the JPEG bytes are stored as they were: decoding gives TF's (and, within rounding,
            # PIL's) pixels
            np.testing.assert_array_equal(
                decoded["image"].numpy(), tf.io.decode_jpeg(data, channels=3).numpy()
            )
            pil = np.asarray(Image.open(io.BytesIO(data))).astype(int)
            assert (
                np.abs(decoded["image"].numpy().astype(int) - pil).mean() < 4.0
            )  # chroma upsampling differs
        np.testing.assert_array_equal(decoded["label"].numpy(), label.astype(np.int32))
        assert decoded["label"].dtype == tf.int32
        assert decoded["filename"].numpy() == b"2007_000032"
        assert decoded["classes_present"].numpy().tolist() == [0, 1, 2]


def test_schema_has_the_original_deeplab_keys():
    image, label = _example(1)
    serialized = records.encode_example(
        image_bytes=_png(image),
        image_format="png",
        height=6,
        width=5,
        label_png=tfrecord.encode_label_png(label),
        filename="x",
    )
    keys = set(tf.train.Example.FromString(serialized).features.feature)
    assert keys == {
        "image/encoded",
        "image/filename",
        "image/format",
        "image/height",
        "image/width",
        "image/channels",
        "image/segmentation/class/encoded",
        "image/segmentation/class/format",
    }


def test_record_written_by_plain_tf_with_only_original_keys_decodes():
    """A record as the original DeepLab build_data.py writes it (no extra keys) loads unchanged."""
    image, label = _example(2)
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(image)])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"old"])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[6])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
        "image/channels": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        "image/segmentation/class/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[_png(label)])
        ),
        "image/segmentation/class/format": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"png"])
        ),
    }
    serialized = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    decoded = records.decode_example(tf.constant(serialized))
    np.testing.assert_array_equal(decoded["image"].numpy(), image)
    np.testing.assert_array_equal(decoded["label"].numpy(), label)
    assert decoded["classes_present"].numpy().size == 0


def test_decode_rejects_size_mismatch_naming_the_record():
    image, _ = _example(3)
    serialized = records.encode_example(
        image_bytes=_png(image),
        image_format="png",
        height=6,
        width=5,
        label_png=tfrecord.encode_label_png(np.zeros((4, 4), np.uint8)),
        filename="mismatched_one",
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="mismatched_one"):
        records.decode_example(tf.constant(serialized))


def test_label_png_is_single_channel_8bit_and_exact():
    label = np.arange(256, dtype=np.uint8).reshape(16, 16)
    png = tfrecord.encode_label_png(label)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.asarray(decoded), label)
    with pytest.raises(ValueError):
        tfrecord.encode_label_png(np.full((2, 2), 300))


def test_sharded_writer_names_contiguous_blocks_and_order(tmp_path):
    writer = _write_split(tmp_path, "train", 7, 3)
    assert writer.count == 7
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]
    counts = [tfrecord.check_shard_framing(tmp_path / n) for n in names]
    assert counts == [3, 2, 2]  # i * 3 // 7: 0,0,0,1,1,2,2
    files = tfrecord.list_shards(tmp_path, "train")
    filenames = [
        records.decode_example(r)["filename"].numpy().decode()
        for r in tf.data.TFRecordDataset(files)
    ]
    assert filenames == [f"ex{i}" for i in range(7)]


def test_writer_interrupted_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(RuntimeError):
        with records.ShardedWriter(tmp_path, "val", 4, 2) as writer:
            image, label = _example(0)
            writer.write(0, b"not even a real example")
            raise RuntimeError("converter killed")
    assert os.listdir(tmp_path) == []
    # A hard kill (no cleanup) leaves only hidden .incomplete- files, which no reader takes for
    # shards.
    writer = records.ShardedWriter(tmp_path, "val", 4, 2)
    writer.write(0, b"x")
    writer._writer.flush()
    assert all(n.startswith(".incomplete-") for n in os.listdir(tmp_path))
    with pytest.raises(DataError, match="no shards for split 'val'"):
        tfrecord.list_shards(tmp_path, "val")
    # ... and the next writer of that split removes them.
    writer._writer.close()
    _write_split(tmp_path, "val", 2, 1)
    assert sorted(os.listdir(tmp_path)) == ["val-00000-of-00001.tfrecord"]


def test_rewriting_a_split_with_another_shard_count_removes_the_old_shards(tmp_path):
    _write_split(tmp_path, "train", 6, 3)
    _write_split(tmp_path, "train", 6, 2)
    assert sorted(os.listdir(tmp_path)) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]


def test_list_shards_detects_missing_and_mixed_shards(tmp_path):
    _write_split(tmp_path, "train", 6, 3)
    os.remove(tmp_path / "train-00001-of-00003.tfrecord")
    with pytest.raises(DataError, match="missing train-00001-of-00003.tfrecord"):
        tfrecord.list_shards(tmp_path, "train")
    (tmp_path / "train-00001-of-00003.tfrecord").write_bytes(b"")
    (tmp_path / "train-00000-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match=r"mixes shard sets of \[2, 3\]"):
        tfrecord.list_shards(tmp_path, "train")


def test_crc32c_known_value():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_framing_check_finds_truncation_and_names_the_shard(tmp_path):
    _write_split(tmp_path, "train", 4, 1)
    path = tmp_path / "train-00000-of-00001.tfrecord"
    assert tfrecord.check_shard_framing(path) == 4
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(
        DataError, match=r"train-00000-of-00001\.tfrecord: truncated TFRecord file \(record 3"
    ):
        tfrecord.check_shard_framing(path)
    bad = bytearray(data)
    bad[3] ^= 0xFF  # first length header
    path.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="bad length header of record 0"):
        tfrecord.check_shard_framing(path)


def test_verify_shards_full_finds_payload_corruption(tmp_path):
    _write_split(tmp_path, "train", 4, 2)
    path = tmp_path / "train-00001-of-00002.tfrecord"
    bad = bytearray(path.read_bytes())
    bad[40] ^= 0xFF  # inside the first payload: the framing is intact, the data CRC is not
    path.write_bytes(bytes(bad))
    assert records.verify_shards(tmp_path, "train") == 4  # the quick check cannot see it
    with pytest.raises(DataError, match=r"train-00001-of-00002\.tfrecord: corrupt TFRecord file"):
        records.verify_shards(tmp_path, "train", full=True)


def test_dataset_info_round_trip_merge_and_atomic_write(tmp_path):
    written = tfrecord.write_dataset_info(tmp_path, **INFO, splits={"train": 5})
    assert tfrecord.read_dataset_info(tmp_path) == written
    tfrecord.write_dataset_info(tmp_path, **INFO, splits={"val": 2})
    assert tfrecord.read_dataset_info(tmp_path)["splits"] == {"train": 5, "val": 2}
    tfrecord.write_dataset_info(tmp_path, **INFO, splits={"val": 3}, merge=False)
    assert tfrecord.read_dataset_info(tmp_path)["splits"] == {"val": 3}
    assert sorted(os.listdir(tmp_path)) == ["dataset.json"]  # no temporary file left


def test_read_dataset_info_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json: not found"):
        tfrecord.read_dataset_info(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        tfrecord.read_dataset_info(tmp_path)
    bad_cases = [
        ({k: v for k, v in INFO.items() if k != "palette"} | {"splits": {}}, "missing key"),
        (INFO | {"splits": {}, "palette": [[0, 0, 0]]}, "palette must be a list of 3"),
        (INFO | {"splits": {}, "ignore_label": 1}, "ignore_label must be an integer"),
        (INFO | {"splits": {}, "class_names": ["a"]}, "class_names must be a list of 3"),
        (INFO | {"splits": {"train": -1}}, "splits must map"),
    ]
    for info, message in bad_cases:
        (tmp_path / "dataset.json").write_text(json.dumps(info))
        with pytest.raises(DataError, match=message) as err:
            tfrecord.read_dataset_info(tmp_path)
        assert str(tmp_path / "dataset.json") in str(err.value)


def test_num_classes_disagreement_is_a_config_error_naming_both(tmp_path):
    tfrecord.write_dataset_info(tmp_path, **INFO, splits={"train": 1})
    with pytest.raises(ConfigError, match=r"num_classes=21 .* num_classes=3"):
        tfrecord.read_dataset_info(tmp_path, num_classes=21)
    assert tfrecord.read_dataset_info(tmp_path, num_classes=3)["num_classes"] == 3


def test_converter_workers_and_dataset_json_readers_do_not_import_tensorflow(tmp_path):
    """What a converter worker runs (read, check and encode one example) and what reads
    dataset.json and the shard lists import neither TensorFlow nor Keras: deeplab.data.tfrecord
    is TF-free, and TensorFlow comes only with deeplab.data.records."""
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.ones((4, 5), np.uint8)).save(tmp_path / "a_label.png")
    tfrecord.write_dataset_info(tmp_path, **INFO, splits={"train": 1})
    code = (
        "import sys\n"
        "from deeplab.data import convert, tfrecord\n"
        f"folder = {str(tmp_path)!r}\n"
        "spec = convert.ExampleSpec(folder + '/a.png', convert.PngLabel(folder + '/a_label.png'),"
        " 'a')\n"
        "example = convert.load_example(spec, 3, 255)\n"
        "assert example['classes_present'] == [1], example\n"
        "assert tfrecord.read_dataset_info(folder)['num_classes'] == 3\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    result = harness.run("-c", code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
