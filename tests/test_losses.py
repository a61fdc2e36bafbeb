"""Tests for deeplab.losses against a float64 numpy cross-entropy written here."""

import json

import numpy as np
import pytest
import tensorflow as tf
import keras

from deeplab import losses
from deeplab.errors import ConfigError, DataError

IGNORE = 255


def _numpy_loss(labels, logits, class_weights=None):
    """Mean over non-ignored pixels of w[y] * (logsumexp(z) - z[y]), in float64."""
    logits = np.asarray(logits, np.float64)
    total, count = 0.0, 0
    for index in np.ndindex(labels.shape):
        y = int(labels[index])
        if y == IGNORE:
            continue
        z = logits[index]
        m = z.max()
        ce = m + np.log(np.exp(z - m).sum()) - z[y]
        total += ce * (1.0 if class_weights is None else class_weights[y])
        count += 1
    return total / count if count else 0.0


def _batch(seed, shape=(2, 5, 6), num_classes=4, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=shape + (num_classes,))).astype(np.float32)
    labels = rng.integers(0, num_classes, size=shape).astype(np.int32)
    labels[rng.random(shape) < 0.3] = IGNORE
    return labels, logits


def test_matches_numpy_with_ignored_pixels():
    labels, logits = _batch(0)
    expected = _numpy_loss(labels, logits)
    assert float(losses.masked_cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-5)
    loss = losses.SegmentationCrossEntropy()
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(labels[..., None], logits)) == pytest.approx(expected, rel=1e-5)
    # The ignored pixels really are excluded: the plain mean over all pixels differs.
    all_pixels = _numpy_loss(np.where(labels == IGNORE, 0, labels), logits)
    assert abs(all_pixels - expected) > 1e-3


def test_class_weights():
    labels, logits = _batch(1)
    weights = [0.5, 2.0, 1.0, 3.0]
    expected = _numpy_loss(labels, logits, weights)
    got = losses.SegmentationCrossEntropy(class_weights=weights)(labels, logits)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(losses.masked_cross_entropy(labels, logits, class_weights=weights)) == (
        pytest.approx(expected, rel=1e-5)
    )
    per_pixel, valid = losses.pixel_cross_entropy(labels, logits, class_weights=weights)
    per_pixel = keras.ops.convert_to_numpy(per_pixel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(valid), labels != IGNORE)
    assert np.all(per_pixel[labels == IGNORE] == 0.0)
    with pytest.raises(ConfigError, match="one weight per class"):
        losses.masked_cross_entropy(labels, logits, class_weights=[1.0, 2.0])


def test_all_ignored_batch_is_zero_with_zero_gradient():
    labels = np.full((1, 3, 4), IGNORE, np.int32)
    logits = tf.Variable(np.random.default_rng(2).normal(size=(1, 3, 4, 3)).astype(np.float32))
    loss_fn = losses.SegmentationCrossEntropy()
    with tf.GradientTape() as tape:
        value = loss_fn(labels, logits)
    gradient = tape.gradient(value, logits).numpy()
    assert float(value) == 0.0
    assert np.all(gradient == 0.0)
    assert float(losses.masked_cross_entropy(labels, logits)) == 0.0


def test_bfloat16_logits_are_computed_in_float32():
    labels, logits = _batch(3, scale=40.0)  # large logits: bf16 arithmetic would be far off
    logits_bf16 = tf.constant(logits, tf.bfloat16)
    rounded = tf.cast(logits_bf16, tf.float32).numpy()
    expected = _numpy_loss(labels, rounded)
    value = losses.SegmentationCrossEntropy()(labels, logits_bf16)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    value16 = losses.masked_cross_entropy(labels, tf.constant(logits, tf.float16))
    assert value16.dtype == tf.float32
    expected16 = _numpy_loss(labels, logits.astype(np.float16).astype(np.float32))
    assert float(value16) == pytest.approx(expected16, rel=1e-5)


def test_out_of_range_label_is_a_clear_error():
    labels, logits = _batch(4)
    labels[0, 0, 0] = 9
    with pytest.raises(DataError, match=r"\[0, 4\).*\[9\]"):
        losses.masked_cross_entropy(labels, logits)


def test_serialization_and_keras_evaluate():
    loss = losses.SegmentationCrossEntropy(ignore_label=IGNORE, class_weights=[1.0, 2.0, 0.5])
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    )
    assert isinstance(restored, losses.SegmentationCrossEntropy)
    assert restored.get_config() == loss.get_config()

    # Through Keras' own reduction (model.evaluate): still the mean over valid pixels.
    inputs = keras.Input((4, 5, 2))
    outputs = keras.layers.Conv2D(
        3, 1, kernel_initializer=keras.initializers.GlorotUniform(seed=0)
    )(inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4, 5)).astype(np.int32)
    labels[0] = IGNORE  # one image entirely ignored: must not dilute the mean
    model.compile(loss=restored)
    got = model.evaluate(x, labels, batch_size=2, verbose=0)
    expected = _numpy_loss(labels, model.predict(x, verbose=0), [1.0, 2.0, 0.5])
    assert got == pytest.approx(expected, rel=1e-5)


def test_downsample_labels_golden_grids():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 21, size=(1, 513, 513)).astype(np.int32)
    out = keras.ops.convert_to_numpy(losses.downsample_labels(labels, (33, 33), align_corners=True))
    np.testing.assert_array_equal(out, labels[:, ::16, ::16])
    small = rng.integers(0, 21, size=(2, 64, 48, 1)).astype(np.uint8)
    out = keras.ops.convert_to_numpy(losses.downsample_labels(small, (16, 12)))
    assert out.dtype == np.uint8 and out.shape == (2, 16, 12, 1)
    np.testing.assert_array_equal(out, small[:, 2::4, 2::4])


def test_downsample_labels_matches_tf_nearest_and_never_interpolates():
    rng = np.random.default_rng(7)
    labels = rng.choice(np.array([0, 3, 7, IGNORE], np.int32), size=(2, 13, 17))
    for size in [(5, 7), (4, 9), (13, 17), (1, 1)]:
        got = keras.ops.convert_to_numpy(losses.downsample_labels(labels, size))
        reference = tf.image.resize(labels[..., None], size, method="nearest")[..., 0].numpy()
        np.testing.assert_array_equal(got, reference)
        assert set(np.unique(got)) <= {0, 3, 7, IGNORE}
    # align_corners: output i reads round(i * 12 / 4) = 0, 3, 6, 9, 12 (rows); the corners map.
    got = keras.ops.convert_to_numpy(losses.downsample_labels(labels, (5, 3), align_corners=True))
    np.testing.assert_array_equal(got, labels[:, [0, 3, 6, 9, 12]][:, :, [0, 8, 16]])


def test_downsample_labels_in_tf_function_with_dynamic_shape():
    fn = tf.function(lambda l: losses.downsample_labels(l, (3, 4)),
                     input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    labels = np.arange(2 * 12 * 16, dtype=np.int32).reshape(2, 12, 16)
    np.testing.assert_array_equal(fn(labels).numpy(), labels[:, 2::4, 2::4])


# The JAX-backend run of this module is part of test_inference.py::test_jax_backend_in_subprocess
# (one subprocess for all four modules keeps the suite fast).
