"""tf.data input pipelines for training and evaluation (Sec. 4.1), from TFRecords or TFDS.

Training::

    shards --(shuffled file order, parallel interleave)--> serialized records
      --[bootstrapping: records with a hard class repeated k times (Sec. 4.3)]--> shuffle --> repeat
      --(parallel map: decode, random scale, pad, crop, flip, normalize; one seed per example)
      --> batch --> prefetch

Evaluation: every image once, in shard order, at its own size, normalized, label untouched.

What is done to each decoded example is a :class:`Parser`'s (``parse_train``: the augmentation;
``parse_eval``: the whole image); the readers (:func:`read_train_dataset`,
:func:`make_eval_dataset`) only read, sample and batch. :func:`make_train_dataset` takes the
parser's settings as keywords and builds it.

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
import dataclasses
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
# Parsing: a decoded (image, label) to what the model sees, on the train path and the eval path.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Parser:
    """Turns decoded examples into model inputs: :meth:`parse_train` (the augmentation of
    Sec. 4.1) and :meth:`parse_eval` (the whole image, normalized). Model Garden's
    ``segmentation_input.Parser`` is the idea: one object holds the parsing settings, and the
    pipeline that reads records does not know them. Checked once, when made.

    What records decode to (the TFDS ``label_map``, the class count) is the source's business,
    checked against dataset.json before any parsing; the parser sees class indices.

    Attributes:
      crop_size: (height, width) of a training crop (an int S means (S, S)); 513 in the
        paper, 769 for Cityscapes.
      min_scale, max_scale, scale_step: random scale range and step (0 = continuous), Sec. 4.1.
      flip: random left-right flips.
      ignore_label: label of padded pixels (None: the dataset's, which
        :func:`read_train_dataset` fills in).
      pad_value: RGB value padding a crop larger than the scaled image
        (``deeplab.model.preprocessing.pad_pixel(backbone)``: the value the backbone's input
        maps to 0).

    Raises:
      ConfigError: a crop size that is not positive, or a scale range that is empty.
    """

    crop_size: tuple = (513, 513)
    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.25
    flip: bool = True
    ignore_label: int = None
    pad_value: tuple = augment.MEAN_RGB

    def __post_init__(self):
        crop_h, crop_w = _hw(self.crop_size)
        if crop_h < 1 or crop_w < 1:
            raise ConfigError(f"crop_size must be positive, got {self.crop_size}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, "
                              f"{self.max_scale}")
        if self.scale_step < 0:
            raise ConfigError(f"scale_step must be >= 0, got {self.scale_step}")
        object.__setattr__(self, "crop_size", (crop_h, crop_w))
        object.__setattr__(self, "pad_value", tuple(self.pad_value))

    def parse_train(self, image, label, seed):
        """One training example: uint8 image [H, W, 3] and label [H, W], stateless seed [2] ->
        (image float32 [crop_h, crop_w, 3] normalized, label int32 [crop_h, crop_w])."""
        return augment.train_transform(
            image,
            label,
            seed,
            crop_size=self.crop_size,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            scale_step=self.scale_step,
            flip=self.flip,
            ignore_label=255 if self.ignore_label is None else self.ignore_label,
            pad_value=self.pad_value,
        )

    def parse_eval(self, example):
        """One evaluation example (a decoded record): the whole image at its own size,
        normalized, the label untouched -> {"image", "raw_image", "label", "filename"}."""
        image, label = augment.eval_transform(example["image"], example["label"])
        return {"image": image, "raw_image": example["image"], "label": label,
                "filename": example["filename"]}


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
    """:func:`read_train_dataset` with a :class:`Parser` of the augmentation keywords
    (``crop_size``, ``min_scale``, ``max_scale``, ``scale_step``, ``flip``, ``pad_value``: see
    :class:`Parser`); the other keywords are :func:`read_train_dataset`'s. What the trainer
    (``DataConfig.pipeline_kwargs()``), the benchmarks and the experiments call.
    """
    parser = Parser(crop_size=crop_size, min_scale=min_scale, max_scale=max_scale,
                    scale_step=scale_step, flip=flip, pad_value=pad_value)
    return read_train_dataset(
        dataset_dir,
        split,
        parser,
        batch_size=batch_size,
        bootstrap_classes=bootstrap_classes,
        bootstrap_repeat=bootstrap_repeat,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        deterministic=deterministic,
        input_context=input_context,
        num_classes=num_classes,
        drop_remainder=drop_remainder,
        label_map=label_map,
        verify=verify,
        num_parallel_calls=num_parallel_calls,
        private_threadpool_size=private_threadpool_size,
        interleave_cycle_length=interleave_cycle_length,
        skip_batches=skip_batches,
    )


def _train_source(dataset_dir, split, label_map, num_classes):
    """(dataset info, the TFDS source or None) of a training split, checked."""
    if dataset_dir.startswith(tfds_source.TFDS_PREFIX):
        source = tfds_source.parse_tfds_spec(dataset_dir, label_map=label_map,
                                             num_classes=num_classes)
        info = tfds_source.tfds_dataset_info(dataset_dir, label_map=label_map,
                                             num_classes=source.num_classes)
        if num_classes is not None and int(num_classes) != info["num_classes"]:
            raise ConfigError(f"num_classes={num_classes} disagrees with {dataset_dir}, which has "
                              f"{info['num_classes']}")
        return info, source
    info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes)
    tfrecord.check_label_classes(info, split,
                                 os.path.join(dataset_dir, tfrecord.DATASET_INFO_FILE))
    return info, None


def _repeated(ds, counts, deterministic):
    """Each element of ``ds`` ``counts(element)`` times (bootstrapping, Sec. 4.3)."""
    ds = ds.map(lambda element: (element, counts(element)), num_parallel_calls=AUTOTUNE,
                deterministic=True if deterministic else None)
    return ds.flat_map(lambda element, n: tf.data.Dataset.from_tensors(element).repeat(n))


def _tfds_train_stream(source, split, *, shuffle_seed, input_context, bootstrap, deterministic):
    """(TFDS examples, shuffled and repeated; a function decoding one to (image, label))."""
    ds, decode = _load_tfds(source, split, shuffle_files=True, seed=shuffle_seed,
                            input_context=input_context)
    if bootstrap:
        ids, repeat = bootstrap
        ds = _repeated(
            ds,
            lambda ex: _bootstrap_counts(tf.zeros([0], tf.int64), decode(ex)["label"], ids, repeat),
            deterministic,
        )

    def load(ex):
        decoded = decode(ex)
        return decoded["image"], decoded["label"]

    return ds, load


def _record_counts(bootstrap):
    """How many times a serialized record appears (bootstrapping)."""
    ids, repeat = bootstrap

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
        return _bootstrap_counts(present, label, ids, repeat)

    return count


def _load_record(serialized):
    parsed = records.parse_example(serialized)
    image = tf.io.decode_image(parsed["image_encoded"], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    # uint8 until the end
    label = tf.io.decode_png(parsed["label_encoded"], channels=1)[:, :, 0]
    records.assert_same_size(image, label, parsed["filename"])
    return image, label


def _record_train_stream(files, *, shuffle_seed, pipeline, bootstrap, deterministic,
                         interleave_cycle_length):
    """(serialized records of ``files``, this ``pipeline`` = (id, count)'s share, shuffled in
    file order and interleaved; the record decoder)."""
    pipeline_id, num_pipelines = pipeline
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
    if bootstrap:
        ds = _repeated(ds, _record_counts(bootstrap), deterministic)
    return ds, _load_record


def read_train_dataset(
    dataset_dir,
    split,
    parser,
    *,
    batch_size,
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
):
    """The training stream of Sec. 4.1: records read, shuffled and repeated forever, each
    example parsed by ``parser.parse_train`` (random scale, pad, crop, flip, normalize), batched.

    Args:
      dataset_dir: directory of shards + dataset.json, or a ``tfds:`` spec (module docstring).
      split: split name ("train", "trainaug", ...; a TFDS split string for tfds:).
      parser: a :class:`Parser` (its ``ignore_label`` None: the dataset's).
      batch_size: global batch size. With ``input_context`` each pipeline yields
        ``input_context.get_per_replica_batch_size(batch_size)`` examples per batch.
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

    Returns:
      tf.data.Dataset of (images float32 [B, crop_h, crop_w, 3] normalized, labels int32 [B, crop_h,
      crop_w]).

    Raises:
      ConfigError: num_classes disagrees with the dataset, bad arguments.
      DataError: missing, incomplete or truncated shards; empty split.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size and crop_size must be positive, got {batch_size}, "
                          f"{parser.crop_size}")
    if bootstrap_repeat < 1:
        raise ConfigError(f"bootstrap_repeat must be >= 1, got {bootstrap_repeat}")
    dataset_dir = os.fspath(dataset_dir)
    info, source = _train_source(dataset_dir, split, label_map, num_classes)
    if parser.ignore_label is None:
        parser = dataclasses.replace(parser, ignore_label=info["ignore_label"])
    bootstrap_ids = datasets_info.resolve_class_ids(bootstrap_classes, info["class_names"])
    bootstrap = (bootstrap_ids, bootstrap_repeat) if bootstrap_ids and bootstrap_repeat > 1 else None
    per_replica_batch = batch_size
    pipeline_id, num_pipelines = 0, 1
    if input_context is not None:
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        num_pipelines = input_context.num_input_pipelines
    # Different pipelines shuffle and augment differently; each is still reproducible.
    base_seed = (_base_seed(seed) + 1_000_003 * pipeline_id) % (2**62)
    shuffle_seed = base_seed % (2**31)
    if source is not None:
        ds, load = _tfds_train_stream(source, split, shuffle_seed=shuffle_seed,
                                      input_context=input_context, bootstrap=bootstrap,
                                      deterministic=deterministic)
    else:
        ds, load = _record_train_stream(
            _record_files(dataset_dir, split, info, verify), shuffle_seed=shuffle_seed,
            pipeline=(pipeline_id, num_pipelines), bootstrap=bootstrap,
            deterministic=deterministic, interleave_cycle_length=interleave_cycle_length)
    ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True).repeat()
    key = tf.constant([base_seed >> 31, base_seed & (2**31 - 1)], tf.int64)

    def transform(index, element):
        image, label = load(element)
        return parser.parse_train(image, label, tf.random.experimental.stateless_fold_in(key, index))

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
                      input_context=None, verify=True, parser=None):
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
      parser: the :class:`Parser` whose ``parse_eval`` finishes each example (default: one
        with the defaults; the eval path uses none of its settings).

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

    ds = ds.map((parser or Parser()).parse_eval, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


__all__ = [
    "Parser",
    "make_train_dataset",
    "read_train_dataset",
    "make_eval_dataset",
    "explain_data_errors",
]
