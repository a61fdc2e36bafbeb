"""Tests for deeplab.training.losses against a float64 numpy cross-entropy written here."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.training import losses

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


def _mean_loss(labels, logits, **kwargs):
    """The training step's loss: the per-pixel terms summed over max(#valid pixels, 1)."""
    pixel_losses, valid = losses.pixel_cross_entropy(labels, logits, **kwargs)
    return keras.ops.sum(pixel_losses) / keras.ops.maximum(keras.ops.sum(valid), 1.0)


def test_matches_numpy_with_ignored_pixels():
    labels, logits = _batch(0)
    expected = _numpy_loss(labels, logits)
    assert float(_mean_loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(_mean_loss(labels[..., None], logits)) == pytest.approx(expected, rel=1e-5)
    # The ignored pixels really are excluded: the plain mean over all pixels differs.
    all_pixels = _numpy_loss(np.where(labels == IGNORE, 0, labels), logits)
    assert abs(all_pixels - expected) > 1e-3


def test_class_weights():
    labels, logits = _batch(1)
    weights = [0.5, 2.0, 1.0, 3.0]
    expected = _numpy_loss(labels, logits, weights)
    got = _mean_loss(labels, logits, class_weights=weights)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    per_pixel, valid = losses.pixel_cross_entropy(labels, logits, class_weights=weights)
    per_pixel = keras.ops.convert_to_numpy(per_pixel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(valid), labels != IGNORE)
    assert np.all(per_pixel[labels == IGNORE] == 0.0)
    with pytest.raises(ConfigError, match="one weight per class"):
        losses.pixel_cross_entropy(labels, logits, class_weights=[1.0, 2.0])


def test_all_ignored_batch_is_zero_with_zero_gradient():
    labels = np.full((1, 3, 4), IGNORE, np.int32)
    logits = tf.Variable(np.random.default_rng(2).normal(size=(1, 3, 4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = _mean_loss(labels, logits)
    gradient = tape.gradient(value, logits).numpy()
    assert float(value) == 0.0
    assert np.all(gradient == 0.0)


def test_bfloat16_logits_are_computed_in_float32():
    labels, logits = _batch(3, scale=40.0)  # large logits: bf16 arithmetic would be far off
    logits_bf16 = tf.constant(logits, tf.bfloat16)
    rounded = tf.cast(logits_bf16, tf.float32).numpy()
    expected = _numpy_loss(labels, rounded)
    value = _mean_loss(labels, logits_bf16)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    value16 = _mean_loss(labels, tf.constant(logits, tf.float16))
    assert value16.dtype == tf.float32
    expected16 = _numpy_loss(labels, logits.astype(np.float16).astype(np.float32))
    assert float(value16) == pytest.approx(expected16, rel=1e-5)


def test_out_of_range_label_is_a_clear_error():
    labels, logits = _batch(4)
    labels[0, 0, 0] = 9
    with pytest.raises(DataError, match=r"\[0, 4\).*\[9\]"):
        losses.pixel_cross_entropy(labels, logits)


def _numpy_labels_at_centres(labels, stride):
    """Direct computation: output (i, j) is the label at input pixel (stride * i, stride * j)."""
    n, height, width = labels.shape[:3]
    out_h, out_w = -(-height // stride), -(-width // stride)
    out = np.empty((n, out_h, out_w) + labels.shape[3:], labels.dtype)
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = labels[:, stride * i, stride * j]
    return out


def test_labels_at_feature_centres_against_numpy():
    """Table 8's targets are the labels at the feature centres s * i, at every size."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 21, size=(1, 513, 513)).astype(np.int32)
    out = keras.ops.convert_to_numpy(losses.labels_at_feature_centres(labels, 16))
    assert out.shape == (1, 33, 33)  # the logits' size at output stride 16
    np.testing.assert_array_equal(out, _numpy_labels_at_centres(labels, 16))
    for shape, stride in [
        ((2, 64, 48, 1), 4),
        ((2, 13, 17), 8),
        ((1, 30, 31), 16),
        ((1, 5, 5), 32),
    ]:
        small = rng.choice(np.array([0, 3, 7, IGNORE], np.uint8), size=shape)
        out = keras.ops.convert_to_numpy(losses.labels_at_feature_centres(small, stride))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, _numpy_labels_at_centres(small, stride))
        assert set(np.unique(out)) <= {0, 3, 7, IGNORE}


def test_labels_at_feature_centres_match_the_model_logits_size():
    """The targets have exactly the size of the model's logits (ceil(H / s)) at odd sizes."""
    for stride, size in [(8, (37, 50)), (16, (33, 47)), (32, (65, 64))]:
        model = deeplab.build_model(
            backbone="resnet14_tiny",
            num_classes=3,
            output_stride=stride,
            atrous_rates=(1,),
            image_pooling=False,
            upsample_logits=False,
        )
        logits = model(np.zeros((1,) + size + (3,), np.float32))
        labels = np.zeros((1,) + size, np.int32)
        targets = losses.labels_at_feature_centres(labels, stride)
        assert tuple(targets.shape[1:3]) == tuple(logits.shape[1:3])


def test_labels_at_feature_centres_in_tf_function_with_dynamic_shape():
    fn = tf.function(
        lambda l: losses.labels_at_feature_centres(l, 4),
        input_signature=[tf.TensorSpec([None, None, None], tf.int32)],
    )
    labels = np.arange(2 * 12 * 17, dtype=np.int32).reshape(2, 12, 17)
    np.testing.assert_array_equal(fn(labels).numpy(), labels[:, ::4, ::4])


# The JAX-backend run of this module is part of test_inference.py::test_jax_backend_in_subprocess
# (one subprocess for all four modules keeps the suite fast).


# ----------------------------------------------------------------------------- focal, hard pixels


def _np_softmax_ce(labels, logits):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    safe = np.where(labels == 255, 0, labels)
    return -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0]


def test_focal_loss_matches_numpy():
    from deeplab.training import losses as losses_lib  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 5, 6, 4)).astype("float32")
    labels = rng.integers(0, 4, (2, 5, 6))
    labels[0, 0, :3] = 255
    weights = [0.5, 1.0, 2.0, 3.0]
    for gamma in (0.0, 0.5, 2.0):
        got, valid = losses_lib.focal_pixel_losses(
            labels, logits, gamma=gamma, class_weights=weights
        )
        ce = _np_softmax_ce(labels, logits)
        p_true = np.exp(-ce)
        want = np.asarray(weights)[np.where(labels == 255, 0, labels)] * (1 - p_true) ** gamma * ce
        want[labels == 255] = 0
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(valid), (labels != 255).astype("float32"))
    # gamma = 0 is the weighted cross-entropy.
    plain, _ = losses_lib.pixel_cross_entropy(labels, logits, class_weights=weights)
    focal0, _ = losses_lib.focal_pixel_losses(labels, logits, gamma=0.0, class_weights=weights)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(focal0), rtol=1e-6)


def test_hard_pixel_mining_matches_numpy():
    from deeplab.training import losses as losses_lib  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(1)
    pixel_losses = rng.exponential(1.0, (2, 7, 9)).astype("float32")
    valid = (rng.uniform(size=(2, 7, 9)) > 0.2).astype("float32")
    pixel_losses *= valid
    for fraction in (0.05, 0.25, 0.5, 1.0):
        total, count = losses_lib.hard_pixel_selection(pixel_losses, valid, fraction)
        k = max(int(np.floor(fraction * pixel_losses.size)), 1)
        order = np.argsort(-pixel_losses.ravel(), kind="stable")[:k]
        np.testing.assert_allclose(float(total), pixel_losses.ravel()[order].sum(), rtol=1e-5)
        assert float(count) == valid.ravel()[order].sum()
    # The authors' warm-up: 1.0 at step 0, linear to top_k at the mining step, then top_k.
    fractions = [float(losses_lib.hard_pixel_fraction(s, 0.25, 100)) for s in (0, 50, 100, 400)]
    np.testing.assert_allclose(fractions, [1.0, 0.625, 0.25, 0.25], rtol=1e-6)
    assert float(losses_lib.hard_pixel_fraction(0, 0.25, 0)) == 0.25
