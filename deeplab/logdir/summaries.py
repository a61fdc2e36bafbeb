"""TensorBoard scalar and image summaries written with core TensorFlow alone.

``tf.summary.scalar`` / ``tf.summary.image`` / ``tf.summary.text`` are implemented by the
``tensorboard`` package, which ``tensorflow-cpu`` does not install; training must not fail for want
of a viewer. These functions write the same records (same plugin names and tensor layouts) through
``tf.summary.write``, so TensorBoard shows them as ordinary scalars and images. Use them inside
``writer.as_default()`` like the tf.summary functions.

:func:`read_scalars` reads event files back (tests, scripts) without TensorBoard either.
"""

import glob
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin_name, data_class):
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.data_class = data_class
    return metadata.SerializeToString()


_SCALAR_METADATA = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGE_METADATA = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
_TEXT_METADATA = _metadata("text", summary_pb2.DATA_CLASS_TENSOR)


def scalar(name, value, step):
    """Writes a float32 scalar under ``name`` (what TensorBoard's scalar dashboard reads)."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def text(name, value, step):
    """Writes a (markdown) string under ``name`` (TensorBoard's text dashboard)."""
    return tf.summary.write(name, tf.constant(value, tf.string), step=step, metadata=_TEXT_METADATA)


def image(name, images, step, max_outputs=3):
    """Writes up to ``max_outputs`` uint8 RGB images [N, H, W, 3] as PNGs under ``name``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"summary image {name!r} needs uint8 [N, H, W, C], got {images.dtype} {images.shape}"
        )
    images = images[:max_outputs]
    encoded = [tf.io.encode_png(img) for img in images]
    height, width = images.shape[1:3]
    tensor = tf.stack([tf.as_string(width), tf.as_string(height)] + encoded)
    return tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA)


def read_scalars(logdir):
    """All scalar summaries of the event files directly in ``logdir``.

    Returns:
      {tag: [(step, value), ...]} in file order.
    """
    result = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name not in ("", "scalars"):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    number = float(value.simple_value)
                result.setdefault(value.tag, []).append((event.step, number))
    return result
