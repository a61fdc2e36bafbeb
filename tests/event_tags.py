"""Test helper: which TensorBoard plugin wrote each summary tag of a folder's event files."""

import glob
import os

import tensorflow as tf


def read_tags(logdir):
    """{tag: plugin name} of every summary in the event files directly in ``logdir``."""
    tags = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                tags[value.tag] = value.metadata.plugin_data.plugin_name
    return tags
