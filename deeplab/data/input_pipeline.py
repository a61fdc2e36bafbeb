"""tf.data input pipelines for training and evaluation (Sec. 4.1), from TFRecords or TFDS.

Training::

    shards --(shuffled file order, parallel interleave)--> serialized records
      --[bootstrapping: records with a hard class repeated k times (Sec. 4.3)]--> shuffle --> repeat
      --(parallel map: decode, random scale, pad, crop, flip, normalize; one seed per example)
      --> batch --> prefetch

Evaluation: every image once, in shard order, at its own size, normalized, label untouched.

``dataset_dir`` is either a directory made by ``datasets/*.py`` (shards + dataset.json) or a
TFDS spec::

    tfds:NAME[?key=value&key=value...]

NAME is what ``tfds.load`` takes (``oxford_iiit_pet``, ``cityscapes/semantic_segmentation``,
``my_dataset:1.0.0``). Keys (all optional for the built-in presets below):

    image=FEATURE        image feature (uint8 RGB)
    label=FEATURE        segmentation-mask feature (one channel)
    label_map=a:b,c:d    raw mask value -> class index; unmapped values become the ignore label.
                         Without it the mask values are used as they are.
    num_classes=N        number of classes after mapping
    ignore_label=K       default 255
    class_names=a,b,... optional
    data_dir=PATH        TFDS data directory
    download=0|1         let TFDS download and prepare (default 0: the data must be prepared
                         already)

Presets: ``oxford_iiit_pet`` (trimap 1 pet -> 1, 2 background -> 0, 3 border -> ignore; 2 classes)
and ``cityscapes/*`` (labelIds -> the 19 train ids). ``make_train_dataset`` / ``make_eval_dataset``
also take ``label_map=`` (dict or 256-entry list) as a keyword, which overrides the spec's. The TFDS
split argument is any TFDS split string ("train", "test", "train[:90%]").
"""

import contextlib
import os
import re
import secrets

import numpy as np
import tensorflow as tf

from deeplab.data import augment
from deeplab.data import datasets_info
from deeplab.data import records
from deeplab.data import tfds_source
from deeplab.data import tfrecord
from deeplab.common.errors import ConfigError, DataError

AUTOTUNE = tf.data.AUTOTUNE
# ---------------------------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------------------------


def _load_tfds(source, split, **kwargs):
    """tfds_source.load with the image/label size check every record source gets."""
    ds, decode = tfds_source.load(source, split, **kwargs)

    def checked(example):
        raw = decode(example)
        records.assert_same_size(raw["image"], raw["label"], raw["filename"],
                                  what=f"tfds:{source.name} example")
        return raw

    return ds, checked


def _base_seed(seed):
    if seed is None:
        seed = secrets.randbits(62)
    return int(seed)


def _bootstrap_counts(classes_present, label, bootstrap_ids, repeat):
    """How many times an example appears: ``repeat`` if it holds any bootstrap class, else 1."""
    present = tf.cast(classes_present, tf.int32)
    ids = tf.constant(bootstrap_ids, tf.int32)
    hit = tf.reduce_any(tf.equal(present[:, tf.newaxis], ids[tf.newaxis, :]))
    if label is not None:
        in_label = tf.reduce_any(tf.equal(tf.reshape(label, [-1, 1]), ids[tf.newaxis, :]))
        hit = tf.logical_or(hit, in_label)
    return tf.where(hit, tf.constant(repeat, tf.int64), tf.constant(1, tf.int64))


def _hw(crop_size):
    if isinstance(crop_size, (int, np.integer)):
        return int(crop_size), int(crop_size)
    height, width = crop_size
    return int(height), int(width)


def _options(deterministic, private_threadpool_size):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.autotune.enabled = True
    if private_threadpool_size:
        options.threading.private_threadpool_size = int(private_threadpool_size)
    return options


@contextlib.contextmanager
def explain_data_errors(dataset_dir, split):
    """Turns TensorFlow's DataLossError (which names no file) into a DataError naming the bad shard.

    Wrap a loop that iterates a dataset of this module::

        with input_pipeline.explain_data_errors(dataset_dir, "train"):
            model.fit(train_ds, ...)

    On a DataLossError every shard of the split is re-read to find the damaged one.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        marker = "labels must be class indices"
        if marker not in e.message:
            raise
        found = re.search(r"(labels must be class indices.*?); offending values:\] \[([^\]]*)\]",
                          e.message)
        if found:
            values = sorted({v.strip(".") for v in found.group(2).split()}, key=int)
            detail = f"{found.group(1)}; values seen, e.g.: {' '.join(values)}"
        else:
            detail = e.message[e.message.index(marker):].splitlines()[0]
        raise DataError(f"{dataset_dir} split {split!r}: {detail}") from None
    except tf.errors.DataLossError as e:
        if str(dataset_dir).startswith(tfds_source.TFDS_PREFIX):
            raise DataError(f"{dataset_dir} split {split!r}: corrupt data ({e.message}); "
                            "re-prepare it with tfds build.") from e
        records.verify_shards(dataset_dir, split, full=True)  # raises DataError naming the shard
        raise DataError(f"{dataset_dir} split {split!r}: corrupt record ({e.message}); re-run "
                        "the converter.") from e


def _record_files(dataset_dir, split, info, verify):
    files = tfrecord.list_shards(dataset_dir, split)
    expected = info["splits"].get(split)
    if expected == 0:
        raise DataError(f"{dataset_dir}/{tfrecord.DATASET_INFO_FILE}: split {split!r} has 0 "
                        "examples")
    if verify:
        total = sum(tfrecord.check_shard_framing(f) for f in files)
        if expected is not None and total != expected:
            raise DataError(
                f"{dataset_dir}: split {split!r} has {total} records in its shards but "
                f"dataset.json says {expected}; re-run the converter."
            )
        if total == 0:
            raise DataError(f"{dataset_dir}: split {split!r} has no records")
    return files


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------


def make_train_dataset(
    dataset_dir,
    split,
    *,
    batch_size,
    crop_size,
    min_scale=0.5,
    max_scale=2.0,
    scale_step=0.25,
    flip=True,
    bootstrap_classes=(),
    bootstrap_repeat=1,
    shuffle_buffer=1000,
    seed=None,
    deterministic=False,
    input_context=None,
    num_classes=None,
    drop_remainder=True,
    label_map=None,
    verify=True,
    num_parallel_calls=AUTOTUNE,
    private_threadpool_size=None,
    interleave_cycle_length=4,
    skip_batches=0,
    pad_value=augment.MEAN_RGB,
):
    """The training stream of Sec. 4.1: random scale, pad, crop, flip, normalize; repeated forever.

    Args:
      dataset_dir: directory of shards + dataset.json, or a ``tfds:`` spec (module docstring).
      split: split name ("train", "trainaug", ...; a TFDS split string for tfds:).
      batch_size: global batch size. With ``input_context`` each pipeline yields
        ``input_context.get_per_replica_batch_size(batch_size)`` examples per batch.
      crop_size: int or (height, width); 513 in the paper, 769 for Cityscapes.
      min_scale, max_scale, scale_step: random scale range and step (0 = continuous), Sec. 4.1.
      flip: random left-right flips.
      bootstrap_classes: class indices or names; training images that contain any of them appear
        ``bootstrap_repeat`` times per epoch (Sec. 4.3: bicycle, chair, diningtable, pottedplant,
        sofa).
      bootstrap_repeat: k, the number of copies of each hard image (1 = off).
      shuffle_buffer: examples in the shuffle buffer (serialized records, so cheap to hold).
      seed: makes file order, shuffling and every augmentation reproducible; None draws a fresh
        seed.
      deterministic: keep element order fixed under parallelism (tests, debugging); slower.
      input_context: ``tf.distribute.InputContext``: each input pipeline reads its own shards (or
        every n-th record when there are fewer shards than pipelines).
      num_classes: if given, must equal dataset.json's (ConfigError otherwise).
      drop_remainder: batches of static size.
      label_map: TFDS only, raw mask value -> class (overrides the spec).
      verify: check shard files (complete set, no truncation, count = dataset.json) before building.
      num_parallel_calls: parallelism of the per-example map.
      private_threadpool_size: give tf.data its own pool of this many threads.
      interleave_cycle_length: shards read concurrently.
      skip_batches: start after this many batches of the stream (a resumed run): skipped as
        serialized records, before decoding; every later example keeps its index, so it gets the
        same augmentation as in the uninterrupted stream. Exact with ``deterministic``.
      pad_value: RGB value padding a crop larger than the scaled image
        (``deeplab.model.preprocessing.pad_pixel(backbone)``: the value the backbone's input
        maps to 0).

    Returns:
      tf.data.Dataset of (images float32 [B, crop_h, crop_w, 3] normalized, labels int32 [B, crop_h,
      crop_w]).

    Raises:
      ConfigError: num_classes disagrees with the dataset, bad arguments.
      DataError: missing, incomplete or truncated shards; empty split.
    """
    crop_h, crop_w = _hw(crop_size)
    if batch_size < 1 or crop_h < 1 or crop_w < 1:
        raise ConfigError(f"batch_size and crop_size must be positive, got {batch_size}, "
                          f"{crop_size}")
    if bootstrap_repeat < 1:
        raise ConfigError(f"bootstrap_repeat must be >= 1, got {bootstrap_repeat}")
    dataset_dir = os.fspath(dataset_dir)
    is_tfds = dataset_dir.startswith(tfds_source.TFDS_PREFIX)
    if is_tfds:
        source = tfds_source.parse_tfds_spec(dataset_dir, label_map=label_map,
                                             num_classes=num_classes)
        info = tfds_source.tfds_dataset_info(dataset_dir, label_map=label_map,
                                             num_classes=source.num_classes)
        if num_classes is not None and int(num_classes) != info["num_classes"]:
            raise ConfigError(f"num_classes={num_classes} disagrees with {dataset_dir}, which has "
                              f"{info['num_classes']}")
    else:
        info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes)
        tfrecord.check_label_classes(info, split,
                                     os.path.join(dataset_dir, tfrecord.DATASET_INFO_FILE))
    ignore_label = info["ignore_label"]
    bootstrap_ids = datasets_info.resolve_class_ids(bootstrap_classes, info["class_names"])
    base_seed = _base_seed(seed)
    per_replica_batch = batch_size
    pipeline_id, num_pipelines = 0, 1
    if input_context is not None:
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        num_pipelines = input_context.num_input_pipelines
    # Different pipelines shuffle and augment differently; each is still reproducible.
    base_seed = (base_seed + 1_000_003 * pipeline_id) % (2**62)
    shuffle_seed = base_seed % (2**31)

    if is_tfds:
        ds, decode = _load_tfds(source, split, shuffle_files=True, seed=shuffle_seed,
                                input_context=input_context)
        if bootstrap_ids and bootstrap_repeat > 1:
            ds = ds.map(
                lambda ex: (ex, _bootstrap_counts(tf.zeros([0], tf.int64), decode(ex)["label"],
                                                  bootstrap_ids, bootstrap_repeat)),
                num_parallel_calls=AUTOTUNE,
                deterministic=True if deterministic else None,
            )
            ds = ds.flat_map(lambda ex, n: tf.data.Dataset.from_tensors(ex).repeat(n))
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True).repeat()

        def load(ex):
            decoded = decode(ex)
            return decoded["image"], decoded["label"]

    else:
        files = _record_files(dataset_dir, split, info, verify)
        by_file = num_pipelines > 1 and len(files) >= num_pipelines
        by_record = num_pipelines > 1 and not by_file
        if by_file:
            files = files[pipeline_id::num_pipelines]
        ds = tf.data.Dataset.from_tensor_slices(files)
        if not by_record:
            ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
        # Sharding by record needs the same record order in every pipeline: fixed file order,
        # ordered interleave.
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), interleave_cycle_length),
            num_parallel_calls=AUTOTUNE,
            deterministic=True if (deterministic or by_record) else None,
        )
        if by_record:
            ds = ds.shard(num_pipelines, pipeline_id)
        if bootstrap_ids and bootstrap_repeat > 1:

            def count(serialized):
                parsed = records.parse_example(serialized)
                present = parsed["classes_present"]
                # Records without the classes-present key (made by other tools): look at the label
                # itself.
                label = tf.cond(
                    tf.size(present) > 0,
                    lambda: tf.zeros([0, 0], tf.int32),
                    lambda: records.decode_label(parsed["label_encoded"]),
                )
                return serialized, _bootstrap_counts(present, label, bootstrap_ids,
                                                     bootstrap_repeat)

            ds = ds.map(count, num_parallel_calls=AUTOTUNE,
                        deterministic=True if deterministic else None)
            ds = ds.flat_map(lambda s, n: tf.data.Dataset.from_tensors(s).repeat(n))
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True).repeat()

        def load(serialized):
            parsed = records.parse_example(serialized)
            image = tf.io.decode_image(parsed["image_encoded"], channels=3, expand_animations=False)
            image = tf.ensure_shape(image, [None, None, 3])
            # uint8 until the end
            label = tf.io.decode_png(parsed["label_encoded"], channels=1)[:, :, 0]
            records.assert_same_size(image, label, parsed["filename"])
            return image, label

    key = tf.constant([base_seed >> 31, base_seed & (2**31 - 1)], tf.int64)

    def transform(index, element):
        image, label = load(element)
        example_seed = tf.random.experimental.stateless_fold_in(key, index)
        return augment.train_transform(
            image,
            label,
            example_seed,
            crop_size=(crop_h, crop_w),
            min_scale=min_scale,
            max_scale=max_scale,
            scale_step=scale_step,
            flip=flip,
            ignore_label=ignore_label,
            pad_value=pad_value,
        )

    ds = ds.enumerate()
    if skip_batches:
        ds = ds.skip(int(skip_batches) * per_replica_batch)
    ds = ds.map(transform, num_parallel_calls=num_parallel_calls,
                deterministic=True if deterministic else None)
    ds = ds.batch(per_replica_batch, drop_remainder=drop_remainder)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(deterministic, private_threadpool_size))


# ---------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------


def make_eval_dataset(dataset_dir, split, *, num_classes=None, limit=None, label_map=None,
                      input_context=None, verify=True):
    """Evaluation examples (Sec. 4.1): whole images at their own size, no augmentation, labels
    untouched.

    Args:
      dataset_dir: directory of shards + dataset.json, or a ``tfds:`` spec.
      split: split name.
      num_classes: if given, must equal the dataset's (ConfigError otherwise).
      limit: keep only the first ``limit`` examples.
      label_map: TFDS only, raw mask value -> class.
      input_context: each input pipeline gets every n-th example (each example is seen exactly
        once).
      verify: check the shard files before building.

    Returns:
      un-batched, un-repeated tf.data.Dataset of dicts: "image" float32 [H, W, 3] normalized,
      "raw_image" uint8 [H, W, 3], "label" int32 [H, W], "filename" tf.string. Order: shard order
      (the converter's input order) for TFRecords.
    """
    dataset_dir = os.fspath(dataset_dir)
    if dataset_dir.startswith(tfds_source.TFDS_PREFIX):
        source = tfds_source.parse_tfds_spec(dataset_dir, label_map=label_map,
                                             num_classes=num_classes)
        if num_classes is not None and int(num_classes) != source.num_classes:
            raise ConfigError(f"num_classes={num_classes} disagrees with {dataset_dir}, which has "
                              f"{source.num_classes}")
        ds, decode = _load_tfds(source, split, shuffle_files=False, seed=None,
                                input_context=input_context)
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes)
        tfrecord.check_label_classes(info, split,
                                     os.path.join(dataset_dir, tfrecord.DATASET_INFO_FILE))
        files = _record_files(dataset_dir, split, info, verify)
        ds = tf.data.TFRecordDataset(files)
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.map(records.decode_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    if limit is not None:
        ds = ds.take(int(limit))

    def finish(example):
        image, label = augment.eval_transform(example["image"], example["label"])
        return {"image": image, "raw_image": example["image"], "label": label,
                "filename": example["filename"]}

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


__all__ = [
    "make_train_dataset",
    "make_eval_dataset",
    "explain_data_errors",
]
