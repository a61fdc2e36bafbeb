"""deeplab.model.batch_norm.BatchNormalization: the fused training kernel computes what Keras' layer
computes (outputs, gradients, moving statistics), is the kernel actually run, and every other
case takes Keras' own path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.model import batch_norm
from deeplab.model.batch_norm import BatchNormalization


def _pair(channels=6, momentum=0.9, epsilon=1.001e-5, dtype=None):
    """Keras' layer and ours, built and given the same random weights and moving statistics."""
    rng = np.random.default_rng(0)
    ours = BatchNormalization(momentum=momentum, epsilon=epsilon, dtype=dtype)
    reference = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, dtype=dtype)
    weights = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels),
               rng.normal(0, 0.3, channels), rng.uniform(0.5, 2.0, channels)]
    for layer in (ours, reference):
        layer.build((None, None, None, channels))
        layer.set_weights([w.astype("float32") for w in weights])
    return ours, reference


def _inputs(shape=(3, 5, 7, 6)):
    rng = np.random.default_rng(1)
    return tf.constant((rng.normal(0.4, 2.0, shape)).astype("float32"))


def _train_call(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, grads


def test_training_step_matches_keras_in_float32():
    ours, reference = _pair()
    x = _inputs()
    upstream = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    y_ours, g_ours = _train_call(ours, x, upstream)
    y_ref, g_ref = _train_call(reference, x, upstream)
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), atol=2e-5)
    for name, a, b in zip(("input", "gamma", "beta"), g_ours, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    # The moving statistics take the biased batch variance, as Keras' do.
    np.testing.assert_allclose(ours.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.moving_variance.numpy(), reference.moving_variance.numpy(),
                               rtol=1e-5)
    # Inference uses the moving statistics, through Keras' own path.
    np.testing.assert_allclose(ours(x, training=False).numpy(),
                               reference(x, training=False).numpy(), atol=1e-5)


def test_bfloat16_training_matches_keras_within_bfloat16_rounding():
    ours, reference = _pair(dtype="mixed_bfloat16")
    x = tf.cast(_inputs(), tf.bfloat16)
    upstream = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    y_ours, g_ours = _train_call(ours, x, upstream)
    y_ref, g_ref = _train_call(reference, x, upstream)
    assert y_ours.dtype == tf.bfloat16 and ours.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y_ours, tf.float32).numpy(),
                               tf.cast(y_ref, tf.float32).numpy(), atol=0.05)
    for name, a, b in zip(("gamma", "beta"), g_ours[1:], g_ref[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0.02, atol=0.05, err_msg=name)
    np.testing.assert_allclose(ours.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-2,
                               atol=1e-3)
    np.testing.assert_allclose(ours.moving_variance.numpy(), reference.moving_variance.numpy(),
                               rtol=1e-2)


def test_fused_kernel_runs_in_training_only():
    ours, _ = _pair()
    x = _inputs()

    def ops_of(training):
        graph = tf.function(lambda t: ours(t, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in ops_of(True)
    assert "FusedBatchNormV3" not in ops_of(False)


def test_other_cases_take_the_keras_path(monkeypatch):
    x = _inputs()
    ours, _ = _pair()
    assert ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(x, False, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(x, None, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(tf.zeros((4, 6)), True, None)  # pylint: disable=protected-access
    monkeypatch.setattr(batch_norm, "FUSED_TRAINING", False)  # DEEPLAB_FUSED_BATCH_NORM=0
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    monkeypatch.undo()
    ours.synchronized = True
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    ours.synchronized = False
    ours.trainable = False  # frozen BN (--freeze_batch_norm): moving statistics, no update
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    before = ours.moving_mean.numpy().copy()
    ours(x, training=True)
    np.testing.assert_array_equal(ours.moving_mean.numpy(), before)


def test_models_use_it_and_serialize():
    model = deeplab.build_model(backbone="resnet14_tiny", num_classes=3, output_stride=16,
                                atrous_rates=(1, 2, 3), image_pooling=True, aspp_filters=8)
    bns = [layer for layer in deeplab.model.deeplabv3.iter_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(layer, BatchNormalization) for layer in bns)
    clone = keras.layers.deserialize(keras.layers.serialize(bns[0]))
    assert type(clone) is BatchNormalization and clone.epsilon == pytest.approx(bns[0].epsilon)
