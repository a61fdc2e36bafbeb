"""The TensorFlow side of the record format of :mod:`deeplab.data.tfrecord`.

Building and parsing the tf.Examples (:func:`encode_example`, :func:`decode_example`), writing a
split's shards atomically (:class:`ShardedWriter`) and reading them back in full
(:func:`verify_shards`). Converters encode and write here in their parent process; the input
pipeline decodes. Converter worker processes never import this module (nor TensorFlow): they
need only :func:`deeplab.data.tfrecord.encode_label_png`.
"""

import contextlib
import glob
import os
import re

import tensorflow as tf

from deeplab.common.errors import ConfigError, DataError
from deeplab.data import tfrecord
from deeplab.data.tfrecord import (CLASSES_PRESENT, IMAGE_CHANNELS, IMAGE_ENCODED, IMAGE_FILENAME,
                                   IMAGE_FORMAT, IMAGE_HEIGHT, IMAGE_WIDTH, LABEL_ENCODED,
                                   LABEL_FORMAT)

# ---------------------------------------------------------------------------------------------
# Encode (converters) and decode (input pipeline).
# ---------------------------------------------------------------------------------------------


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def encode_example(*, image_bytes, image_format, height, width, label_png, filename,
                   classes_present=None):
    """Builds one serialized tf.Example in the DeepLab schema.

    Args:
      image_bytes: encoded RGB image (JPEG or PNG bytes).
      image_format: "jpeg" or "png".
      height, width: image size in pixels (equal to the label's).
      label_png: PNG bytes of the class-index label
        (see :func:`deeplab.data.tfrecord.encode_label_png`).
      filename: image name without extension (str).
      classes_present: optional iterable of the class indices in the label (ignore label
        excluded).

    Returns:
      bytes of the serialized tf.train.Example.
    """
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    feature = {
        IMAGE_ENCODED: _bytes([image_bytes]),
        IMAGE_FILENAME: _bytes([filename.encode("utf-8")]),
        IMAGE_FORMAT: _bytes([image_format.encode("ascii")]),
        IMAGE_HEIGHT: _ints([height]),
        IMAGE_WIDTH: _ints([width]),
        IMAGE_CHANNELS: _ints([3]),
        LABEL_ENCODED: _bytes([label_png]),
        LABEL_FORMAT: _bytes([b"png"]),
    }
    if classes_present is not None:
        feature[CLASSES_PRESENT] = _ints(sorted(int(c) for c in classes_present))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _features():
    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        LABEL_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
        CLASSES_PRESENT: tf.io.VarLenFeature(tf.int64),
    }


def parse_example(serialized):
    """Parses a serialized example without decoding pixels: dict of the schema's raw tensors.

    ``classes_present`` is a dense int64 vector (empty for records without the key).
    """
    parsed = tf.io.parse_single_example(serialized, _features())
    return {
        "image_encoded": parsed[IMAGE_ENCODED],
        "label_encoded": parsed[LABEL_ENCODED],
        "filename": parsed[IMAGE_FILENAME],
        "format": parsed[IMAGE_FORMAT],
        "height": parsed[IMAGE_HEIGHT],
        "width": parsed[IMAGE_WIDTH],
        "classes_present": tf.sparse.to_dense(parsed[CLASSES_PRESENT]),
    }


def decode_label(label_encoded):
    """Decodes a class-index PNG into int32 [H, W] (values kept exactly)."""
    label = tf.io.decode_png(label_encoded, channels=1, dtype=tf.uint8)
    return tf.cast(label[:, :, 0], tf.int32)


def assert_same_size(image, label, filename, what="record"):
    """Fails (InvalidArgumentError printing ``filename``) when image [H, W, 3] and label [H, W]
    differ in size."""
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label)[:2]))
    tf.debugging.Assert(same, [f"image and label sizes differ in {what}", filename,
                               tf.shape(image), tf.shape(label)])


def decode_example(serialized):
    """Decodes one record: the inverse of :func:`encode_example`.

    Args:
      serialized: scalar tf.string, a serialized tf.Example.

    Returns:
      dict with "image" uint8 [H, W, 3], "label" int32 [H, W], "filename" tf.string and
      "classes_present" int64 [K]. Raises InvalidArgumentError (naming the record's filename)
      when the image and label sizes differ.
    """
    parsed = parse_example(serialized)
    image = tf.io.decode_image(parsed["image_encoded"], channels=3, dtype=tf.uint8,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    label = decode_label(parsed["label_encoded"])
    assert_same_size(image, label, parsed["filename"])
    return {
        "image": image,
        "label": label,
        "filename": parsed["filename"],
        "classes_present": parsed["classes_present"],
    }


# ---------------------------------------------------------------------------------------------
# Shards: atomic writing and the full check.
# ---------------------------------------------------------------------------------------------


class ShardedWriter:
    """Writes one split's examples into ``num_shards`` shards, atomically.

    Example ``i`` of ``num_examples`` goes to shard ``i * num_shards // num_examples``
    (contiguous blocks, so reading the shards in order gives back the input order). Shards are
    written under hidden temporary names and renamed by :meth:`commit`; :meth:`abort` (or
    leaving the ``with`` block by an exception) deletes them.

    Without ``run``, old shards of the same split are replaced and removed on commit. With
    ``run`` (converters), the shards are named with that tag, so they never overwrite the split's
    current shards: the conversion takes effect when dataset.json lists the tag
    (``write_dataset_info(shard_runs=...)``), after which
    :func:`deeplab.data.tfrecord.remove_stale_shards` deletes the old ones. A conversion killed
    at any point leaves the old dataset or the new, never a mixture.

    Args:
      output_dir: directory of the dataset (created if needed).
      split: split name.
      num_examples: number of example slots (indices passed to :meth:`write` are in
        [0, num_examples)).
      num_shards: number of shard files (default
        :func:`deeplab.data.tfrecord.default_num_shards`).
      run: shard-set tag (:func:`deeplab.data.tfrecord.new_run_tag`) or None.
    """

    def __init__(self, output_dir, split, num_examples, num_shards=None, run=None):
        if not re.fullmatch(r"[A-Za-z0-9_.\[\]%:+]+", split):
            raise ConfigError(f"split name {split!r} may only contain letters, digits and "
                              "_ . : + % [ ]")
        self.output_dir = os.fspath(output_dir)
        self.split = split
        self.num_examples = int(num_examples)
        self.num_shards = int(num_shards or tfrecord.default_num_shards(self.num_examples))
        if run is not None and not re.fullmatch(r"[0-9a-f]{8}", run):
            raise ConfigError(f"shard run tag must be 8 hex digits, got {run!r}")
        self.run = run
        if self.num_shards < 1:
            raise ConfigError(f"num_shards must be >= 1, got {self.num_shards}")
        os.makedirs(self.output_dir, exist_ok=True)
        stale_pattern = f"{tfrecord.INCOMPLETE_PREFIX}{glob.escape(split)}-*"
        for stale in glob.glob(os.path.join(glob.escape(self.output_dir), stale_pattern)):
            os.remove(stale)
        self._current = -1
        self._writer = None
        self._last_index = -1
        self.count = 0
        self._finished = False

    def _shard_name(self, shard):
        return tfrecord.shard_filename(self.split, shard, self.num_shards, self.run)

    def _final_path(self, shard):
        return os.path.join(self.output_dir, self._shard_name(shard))

    def _temp_path(self, shard):
        return os.path.join(self.output_dir, tfrecord.INCOMPLETE_PREFIX + self._shard_name(shard))

    def _open_through(self, shard):
        while self._current < shard:
            if self._writer is not None:
                self._writer.close()
            self._current += 1
            self._writer = tf.io.TFRecordWriter(self._temp_path(self._current))

    def write(self, index, serialized):
        """Writes the serialized example of slot ``index`` (indices must increase)."""
        if not self._last_index < index < self.num_examples:
            raise ValueError(f"example index {index} out of order or range "
                             f"(last {self._last_index})")
        self._last_index = index
        self._open_through(index * self.num_shards // self.num_examples)
        self._writer.write(serialized)
        self.count += 1

    def commit(self):
        """Closes all shards and gives them their final names. Returns the number of examples
        written."""
        try:
            self._open_through(self.num_shards - 1)
            self._writer.close()
            self._writer = None
            for shard in range(self.num_shards):
                os.replace(self._temp_path(shard), self._final_path(shard))
        except BaseException:
            self.abort()  # the temporaries; shards already renamed are the caller's (run tag)
            raise
        if self.run is None:
            keep = {tfrecord.shard_filename(self.split, s, self.num_shards)
                    for s in range(self.num_shards)}
            for path in tfrecord.shard_files(self.output_dir, self.split):
                if os.path.basename(path) not in keep:
                    os.remove(path)
        self._finished = True
        return self.count

    def abort(self):
        """Deletes the temporary shards; the split's previous shards, if any, are left as they
        were."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for shard in range(self.num_shards):
            if os.path.exists(self._temp_path(shard)):
                os.remove(self._temp_path(shard))
        self._finished = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._finished:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        return False


@contextlib.contextmanager
def explain_write_errors(what):
    """Turns a failed write of ``what`` (a full disk: TensorFlow's ResourceExhaustedError, an
    OSError) into one line: :class:`deeplab.data.tfrecord.WriteError`."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
        else:
            reason = (error.message or type(error).__name__).strip().splitlines()[0]
        raise tfrecord.WriteError(f"cannot write {what} ({reason[:200]})") from None


def verify_shards(dataset_dir, split, *, full=False):
    """Checks every shard of a split; returns the total number of records.

    Args:
      dataset_dir: dataset directory.
      split: split name.
      full: also read every record through TensorFlow (payload CRCs), which reads the whole
        split; otherwise only the record headers
        (:func:`deeplab.data.tfrecord.check_shard_framing`).

    Raises:
      DataError: naming the first damaged shard.
    """
    total = 0
    for path in tfrecord.list_shards(dataset_dir, split):
        total += tfrecord.check_shard_framing(path)
        if full:
            try:
                for _ in tf.data.TFRecordDataset(path):
                    pass
            except tf.errors.DataLossError as e:
                reason = e.message.split("[")[0].strip()
                raise DataError(f"{path}: corrupt TFRecord file ({reason}); re-run the "
                                "converter.") from e
    return total


__all__ = [
    "ShardedWriter",
    "assert_same_size",
    "decode_example",
    "decode_label",
    "encode_example",
    "explain_write_errors",
    "parse_example",
    "verify_shards",
]
