"""The tf.data pipelines (Sec. 4.1): train stream, eval stream, bootstrapping, sharding, TFDS, bad
input."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.data import augment
from deeplab.data import input_pipeline
from deeplab.data import records
from deeplab.data import synthetic
from deeplab.data import tfds_source
from deeplab.data import tfrecord
from deeplab.model import preprocessing

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """12 train / 5 val synthetic examples, 25x31 px (val with size jitter), 3 train shards."""
    directory = tmp_path_factory.mktemp("synthetic")
    synthetic.build_synthetic_dataset(
        directory,
        num_train=12,
        num_val=5,
        image_size=(25, 31),
        num_classes=NUM_CLASSES,
        seed=3,
        num_shards=3,
        size_jitter=0.3,
    )
    return str(directory)


def _records(dataset_dir, split):
    return [
        records.decode_example(r)
        for r in tf.data.TFRecordDataset(tfrecord.list_shards(dataset_dir, split))
    ]


def _identity_train(dataset_dir, split="train", **kw):
    """A train stream whose crops are whole, unchanged images (scale 1, crop = image size, no
    flip)."""
    kw = (
        dict(
            batch_size=1,
            crop_size=(31, 31),
            min_scale=1.0,
            max_scale=1.0,
            flip=False,
            seed=0,
            deterministic=True,
        )
        | kw
    )
    return input_pipeline.make_train_dataset(dataset_dir, split, **kw)


def _key(label):
    return np.asarray(label).tobytes()


@pytest.mark.slow
def test_train_batches_shapes_dtypes_values(dataset_dir):
    ds = input_pipeline.make_train_dataset(
        dataset_dir, "train", batch_size=4, crop_size=(21, 17), seed=1
    )
    assert ds.element_spec[0].shape == (4, 21, 17, 3) and ds.element_spec[1].shape == (4, 21, 17)
    for images, labels in ds.take(3):
        assert images.dtype == tf.float32 and labels.dtype == tf.int32
        assert set(np.unique(labels.numpy())) <= set(range(NUM_CLASSES)) | {255}
        rgb = preprocessing.denormalize_image(images).numpy()
        assert rgb.min() > -1e-3 and rgb.max() < 255 + 1e-3


def test_train_crop_larger_than_images_is_padded_with_ignore_and_mean(dataset_dir):
    ds = input_pipeline.make_train_dataset(
        dataset_dir, "train", batch_size=2, crop_size=61, min_scale=1.0, max_scale=1.0, seed=0
    )
    images, labels = next(iter(ds))
    assert (labels.numpy()[:, 25:, :] == 255).all() and (labels.numpy()[:, :, 31:] == 255).all()
    assert (images.numpy()[:, 25:, :] == 0).all()  # the mean pixel after normalization


@pytest.mark.slow
def test_train_is_reproducible_with_seed_and_differs_across_seeds(dataset_dir):
    def first(seed):
        ds = input_pipeline.make_train_dataset(
            dataset_dir, "train", batch_size=3, crop_size=13, seed=seed, deterministic=True
        )
        return [(x.numpy(), y.numpy()) for x, y in ds.take(4)]

    a, b, c = first(5), first(5), first(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


@pytest.mark.slow
def test_train_stream_equals_train_transform_of_the_records(dataset_dir):
    """The pipeline applies exactly augment.train_transform to the decoded records (any seed per
    example)."""
    ds = input_pipeline.make_train_dataset(
        dataset_dir,
        "train",
        batch_size=1,
        crop_size=31,
        min_scale=1.0,
        max_scale=1.0,
        flip=False,
        seed=0,
        deterministic=True,
        shuffle_buffer=1,
    )
    by_label = {}
    for rec in _records(dataset_dir, "train"):
        image, label = augment.train_transform(
            rec["image"],
            rec["label"],
            tf.constant([0, 0], tf.int64),
            crop_size=31,
            min_scale=1.0,
            max_scale=1.0,
            flip=False,
        )
        by_label[_key(label.numpy())] = image.numpy()
    for images, labels in ds.take(12):
        np.testing.assert_array_equal(images.numpy()[0], by_label[_key(labels.numpy()[0])])


@pytest.mark.slow
def test_one_epoch_visits_every_example_once(dataset_dir):
    keys = [_key(lab.numpy()[0]) for _, lab in _identity_train(dataset_dir).take(12)]
    expected = {
        _key(
            augment.train_transform(
                r["image"],
                r["label"],
                tf.constant([0, 0]),
                crop_size=31,
                min_scale=1.0,
                max_scale=1.0,
                flip=False,
            )[1].numpy()
        )
        for r in _records(dataset_dir, "train")
    }
    assert set(keys) == expected and len(set(keys)) == 12


@pytest.mark.slow
def test_bootstrapping_repeats_images_with_hard_classes(dataset_dir):
    decoded = _records(dataset_dir, "train")
    hard = 1
    has_hard = [hard in r["classes_present"].numpy() for r in decoded]
    assert 0 < sum(has_hard) < 12  # the fixture has both kinds
    k = 3
    epoch = 12 + (k - 1) * sum(has_hard)
    ds = _identity_train(
        dataset_dir, bootstrap_classes=["shape_1"], bootstrap_repeat=k, shuffle_buffer=1
    )
    seen = [_key(lab.numpy()[0]) for _, lab in ds.take(epoch)]
    counts = {key: seen.count(key) for key in set(seen)}
    for rec, hit in zip(decoded, has_hard):
        key = _key(
            augment.train_transform(
                rec["image"],
                rec["label"],
                tf.constant([0, 0]),
                crop_size=31,
                min_scale=1.0,
                max_scale=1.0,
                flip=False,
            )[1].numpy()
        )
        assert counts[key] == (k if hit else 1)


def test_bootstrapping_without_classes_present_key_reads_the_label(tmp_path):
    """Records made by other tools lack image/segmentation/class/present: bootstrapping decodes
    labels."""
    with records.ShardedWriter(tmp_path, "train", 4, 1) as writer:
        for i in range(4):
            label = np.full((5, 5), i % 2, np.uint8)
            buf = io.BytesIO()
            Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(buf, format="PNG")
            writer.write(
                i,
                records.encode_example(
                    image_bytes=buf.getvalue(),
                    image_format="png",
                    height=5,
                    width=5,
                    label_png=tfrecord.encode_label_png(label),
                    filename=str(i),
                ),
            )
    tfrecord.write_dataset_info(
        tmp_path,
        name="t",
        num_classes=2,
        ignore_label=255,
        class_names=["a", "b"],
        palette=[[0, 0, 0], [1, 1, 1]],
        splits={"train": 4},
    )
    ds = input_pipeline.make_train_dataset(
        tmp_path,
        "train",
        batch_size=1,
        crop_size=5,
        min_scale=1.0,
        max_scale=1.0,
        flip=False,
        bootstrap_classes=[1],
        bootstrap_repeat=4,
        shuffle_buffer=1,
        seed=0,
        deterministic=True,
    )
    firsts = [int(lab.numpy()[0, 0, 0]) for _, lab in ds.take(10)]
    assert firsts == [0, 1, 1, 1, 1, 0, 1, 1, 1, 1]


@pytest.mark.slow
def test_input_context_gives_each_pipeline_its_own_examples(dataset_dir):
    def keys(pipeline_id, num_pipelines):
        context = tf.distribute.InputContext(
            num_input_pipelines=num_pipelines,
            input_pipeline_id=pipeline_id,
            num_replicas_in_sync=num_pipelines,
        )
        ds = _identity_train(dataset_dir, input_context=context, batch_size=num_pipelines)
        n = 12 // num_pipelines
        return [_key(lab.numpy()[0]) for _, lab in ds.take(n)]

    # 3 shards, 3 pipelines: by file; 3 shards, 2 pipelines: by file too (shard 0+2 / shard 1)
    parts = [keys(i, 3) for i in range(3)]
    assert all(len(set(p)) == 4 for p in parts)
    assert len(set().union(*map(set, parts))) == 12
    # more pipelines than shards: every 4th record
    parts = [set(keys(i, 4)) for i in range(4)]
    assert all(len(p) == 3 for p in parts) and len(set().union(*parts)) == 12


def test_input_context_batches_per_replica(dataset_dir):
    context = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4
    )
    ds = input_pipeline.make_train_dataset(
        dataset_dir, "train", batch_size=8, crop_size=9, input_context=context, seed=0
    )
    assert ds.element_spec[0].shape[0] == 2


def test_eval_dataset_whole_images_in_order_labels_untouched(dataset_dir):
    decoded = _records(dataset_dir, "val")
    examples = list(input_pipeline.make_eval_dataset(dataset_dir, "val", num_classes=NUM_CLASSES))
    assert len(examples) == 5
    assert [e["filename"].numpy() for e in examples] == [f"val_{i:06d}".encode() for i in range(5)]
    sizes = set()
    for example, record in zip(examples, decoded):
        assert example["image"].dtype == tf.float32 and example["raw_image"].dtype == tf.uint8
        assert example["label"].dtype == tf.int32
        np.testing.assert_array_equal(example["raw_image"].numpy(), record["image"].numpy())
        np.testing.assert_array_equal(example["label"].numpy(), record["label"].numpy())
        np.testing.assert_array_equal(
            example["image"].numpy(), preprocessing.normalize_image(record["image"]).numpy()
        )
        sizes.add(tuple(example["label"].shape))
    assert len(sizes) > 1  # each at its own size
    assert len(list(input_pipeline.make_eval_dataset(dataset_dir, "val", limit=2))) == 2


def test_eval_input_context_splits_examples(dataset_dir):
    names = []
    for i in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        names.append(
            [
                e["filename"].numpy()
                for e in input_pipeline.make_eval_dataset(dataset_dir, "val", input_context=context)
            ]
        )
    assert sorted(names[0] + names[1]) == [f"val_{i:06d}".encode() for i in range(5)] and not set(
        names[0]
    ) & set(names[1])


def test_num_classes_disagreement_names_both(dataset_dir):
    with pytest.raises(ConfigError, match=r"num_classes=21 .* num_classes=4"):
        input_pipeline.make_train_dataset(
            dataset_dir, "train", batch_size=2, crop_size=9, num_classes=21
        )
    with pytest.raises(ConfigError, match=r"num_classes=3 .* num_classes=4"):
        input_pipeline.make_eval_dataset(dataset_dir, "val", num_classes=3)


def test_missing_split_and_missing_dataset(dataset_dir, tmp_path):
    with pytest.raises(DataError, match=r"no shards for split 'test'.*splits present: train, val"):
        input_pipeline.make_eval_dataset(dataset_dir, "test")
    with pytest.raises(DataError, match=r"dataset\.json: not found"):
        input_pipeline.make_train_dataset(str(tmp_path), "train", batch_size=1, crop_size=9)


def _copy_dataset(src, dst):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())


def test_truncated_shard_is_a_data_error_naming_it(dataset_dir, tmp_path):
    copy = str(tmp_path / "copy")
    _copy_dataset(dataset_dir, copy)
    shard = os.path.join(copy, "train-00001-of-00003.tfrecord")
    with open(shard, "rb") as f:
        data = f.read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train-00001-of-00003\.tfrecord: truncated TFRecord file"):
        input_pipeline.make_train_dataset(copy, "train", batch_size=2, crop_size=9)
    with pytest.raises(DataError, match=r"train-00001-of-00003\.tfrecord: truncated"):
        input_pipeline.make_eval_dataset(copy, "train")


def test_corrupt_payload_found_while_reading_names_the_shard(dataset_dir, tmp_path):
    copy = str(tmp_path / "copy")
    _copy_dataset(dataset_dir, copy)
    shard = tfrecord.list_shards(copy, "val")[1]
    data = bytearray(open(shard, "rb").read())
    data[100] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    ds = input_pipeline.make_eval_dataset(copy, "val")  # framing intact: the check passes
    with pytest.raises(DataError, match=r"val-00001-of-00003\.tfrecord: corrupt TFRecord file"):
        with input_pipeline.explain_data_errors(copy, "val"):
            for _ in ds:
                pass


def test_record_count_must_match_dataset_json(dataset_dir, tmp_path):
    copy = str(tmp_path / "copy")
    _copy_dataset(dataset_dir, copy)
    info = tfrecord.read_dataset_info(copy)
    tfrecord.write_dataset_info(
        copy,
        **{k: info[k] for k in ("name", "num_classes", "ignore_label", "class_names", "palette")},
        splits={"train": 13, "val": 5},
    )
    with pytest.raises(DataError, match="12 records in its shards but dataset.json says 13"):
        input_pipeline.make_train_dataset(copy, "train", batch_size=2, crop_size=9)


def test_bad_arguments(dataset_dir):
    with pytest.raises(ConfigError, match="not one of this dataset's classes"):
        input_pipeline.make_train_dataset(
            dataset_dir,
            "train",
            batch_size=2,
            crop_size=9,
            bootstrap_classes=["sofa"],
            bootstrap_repeat=2,
        )
    with pytest.raises(ConfigError, match="bootstrap_repeat"):
        input_pipeline.make_train_dataset(
            dataset_dir, "train", batch_size=2, crop_size=9, bootstrap_repeat=0
        )


# ------------------------------------------------------------------------------------------------
# TFDS through its mock data.
# ------------------------------------------------------------------------------------------------

PET_MASKS = [
    np.array([[1, 2, 3, 1], [2, 2, 3, 1], [1, 1, 1, 2]], np.uint8),
    np.array([[2, 2], [2, 3]], np.uint8),
    np.array([[3, 1, 1], [1, 1, 2]], np.uint8),
]


def _pet_mock(encoded):
    """tfds mock: oxford_iiit_pet examples with known trimaps (PNG bytes when the loader skips
    decoding)."""
    import tensorflow_datasets as tfds

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        skip = bool(decoders) and encoded
        images = [np.full(m.shape + (3,), 10 * i, np.uint8) for i, m in enumerate(PET_MASKS)]

        def png(array):
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="PNG")
            return buf.getvalue()

        def gen():
            for i, (image, mask) in enumerate(zip(images, PET_MASKS)):
                yield {
                    "image": png(image) if skip else image,
                    "segmentation_mask": png(mask) if skip else mask[:, :, None],
                    "file_name": f"pet_{i}.jpg",
                    "label": 0,
                    "species": 0,
                    "head_bbox": np.zeros(4, np.float32),
                }

        image_spec = (
            tf.TensorSpec([], tf.string) if skip else tf.TensorSpec([None, None, 3], tf.uint8)
        )
        mask_spec = (
            tf.TensorSpec([], tf.string) if skip else tf.TensorSpec([None, None, 1], tf.uint8)
        )
        signature = {
            "image": image_spec,
            "segmentation_mask": mask_spec,
            "file_name": tf.TensorSpec([], tf.string),
            "label": tf.TensorSpec([], tf.int64),
            "species": tf.TensorSpec([], tf.int64),
            "head_bbox": tf.TensorSpec([4], tf.float32),
        }
        return tf.data.Dataset.from_generator(gen, output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.mark.parametrize("encoded", [True, False])
@pytest.mark.slow
def test_tfds_eval_maps_pet_trimap_to_two_classes(encoded):
    lut = {1: 1, 2: 0, 3: 255}
    with _pet_mock(encoded):
        examples = list(input_pipeline.make_eval_dataset("tfds:oxford_iiit_pet", "test"))
    assert [e["filename"].numpy() for e in examples] == [b"pet_0.jpg", b"pet_1.jpg", b"pet_2.jpg"]
    for example, mask in zip(examples, PET_MASKS):
        np.testing.assert_array_equal(example["label"].numpy(), np.vectorize(lut.get)(mask))
        assert example["raw_image"].shape == mask.shape + (3,)


def test_tfds_train_and_custom_label_map_spec():
    spec = "tfds:oxford_iiit_pet?label_map=1:0,2:1&num_classes=2&class_names=bg,fg"
    with _pet_mock(True):
        info = tfds_source.tfds_dataset_info(spec)
        assert info["class_names"] == ["bg", "fg"] and info["num_classes"] == 2
        ds = input_pipeline.make_train_dataset(
            spec,
            "train",
            batch_size=3,
            crop_size=4,
            min_scale=1.0,
            max_scale=1.0,
            flip=False,
            seed=0,
        )
        _, labels = next(iter(ds))
        assert set(np.unique(labels.numpy())) <= {0, 1, 255}
        # the keyword label_map overrides the spec: everything to class 1
        examples = list(
            input_pipeline.make_eval_dataset(
                "tfds:oxford_iiit_pet", "test", label_map={1: 1, 2: 1, 3: 1}
            )
        )
        assert all((e["label"].numpy() == 1).all() for e in examples)
    with pytest.raises(ConfigError, match="num_classes=5 disagrees"):
        with _pet_mock(True):
            input_pipeline.make_eval_dataset("tfds:oxford_iiit_pet", "test", num_classes=5)


def test_tfds_spec_errors():
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        tfds_source.parse_tfds_spec("tfds:oxford_iiit_pet?colour=1")
    with pytest.raises(ConfigError, match="give num_classes"):
        tfds_source.parse_tfds_spec("tfds:some_dataset?image=a&label=b")
    with pytest.raises(ConfigError, match="label_map must look like"):
        tfds_source.parse_tfds_spec("tfds:some_dataset?label_map=1-2&num_classes=2")
    source = tfds_source.parse_tfds_spec("tfds:cityscapes/semantic_segmentation")
    assert (
        source.num_classes == 19
        and source.label_map[7] == 0
        and source.label_map[33] == 18
        and source.label_map[0] == 255
    )


@pytest.mark.slow
def test_tfds_bootstrapping_repeats_examples_with_the_class():
    with _pet_mock(True):
        ds = input_pipeline.make_train_dataset(
            "tfds:oxford_iiit_pet",
            "train",
            batch_size=1,
            crop_size=4,
            min_scale=1.0,
            max_scale=1.0,
            flip=False,
            seed=0,
            deterministic=True,
            shuffle_buffer=1,
            bootstrap_classes=["pet"],
            bootstrap_repeat=2,
        )
        labels = [lab.numpy()[0] for _, lab in ds.take(5)]
    has_pet = [bool((lab == 1).any()) for lab in labels]
    assert has_pet == [
        True,
        True,
        False,
        True,
        True,
    ]  # masks 0 and 2 hold the pet (raw 1); mask 1 does not
