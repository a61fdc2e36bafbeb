"""deeplab.model.batch_norm.BatchNormalization: the fused training kernel computes what Keras' layer
computes (outputs, gradients, moving statistics), is the kernel actually run, and every other
case takes Keras' own path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.options import PerformanceOptions


def _pair(channels=6, momentum=0.9, epsilon=1.001e-5, dtype=None):
    """Keras' layer and ours, built and given the same random weights and moving statistics."""
    rng = np.random.default_rng(0)
    ours = BatchNormalization(momentum=momentum, epsilon=epsilon, dtype=dtype)
    reference = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, dtype=dtype)
    weights = [
        rng.uniform(0.5, 1.5, channels),
        rng.normal(0, 0.3, channels),
        rng.normal(0, 0.3, channels),
        rng.uniform(0.5, 2.0, channels),
    ]
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
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5
    )
    # Inference uses the moving statistics, through Keras' own path.
    np.testing.assert_allclose(
        ours(x, training=False).numpy(), reference(x, training=False).numpy(), atol=1e-5
    )


def test_bfloat16_training_matches_keras_within_bfloat16_rounding():
    ours, reference = _pair(dtype="mixed_bfloat16")
    x = tf.cast(_inputs(), tf.bfloat16)
    upstream = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    y_ours, g_ours = _train_call(ours, x, upstream)
    y_ref, g_ref = _train_call(reference, x, upstream)
    assert y_ours.dtype == tf.bfloat16 and ours.moving_mean.dtype == "float32"
    np.testing.assert_allclose(
        tf.cast(y_ours, tf.float32).numpy(), tf.cast(y_ref, tf.float32).numpy(), atol=0.05
    )
    for name, a, b in zip(("gamma", "beta"), g_ours[1:], g_ref[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0.02, atol=0.05, err_msg=name)
    np.testing.assert_allclose(
        ours.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-2, atol=1e-3
    )
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-2
    )


def test_fused_kernel_runs_in_training_only():
    ours, _ = _pair()
    x = _inputs()

    def ops_of(training):
        graph = tf.function(lambda t: ours(t, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in ops_of(True)
    assert "FusedBatchNormV3" not in ops_of(False)


def test_other_cases_take_the_keras_path():
    x = _inputs()
    ours, _ = _pair()
    assert ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(x, False, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(x, None, None)  # pylint: disable=protected-access
    assert not ours._can_fuse(tf.zeros((4, 6)), True, None)  # pylint: disable=protected-access
    ours.fused = False  # BatchNormalization(fused=False); DEEPLAB_FUSED_BATCH_NORM=0 maps to it
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    ours.fused = True
    ours.synchronized = True
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    ours.synchronized = False
    ours.trainable = False  # frozen BN (--freeze_batch_norm): moving statistics, no update
    assert not ours._can_fuse(x, True, None)  # pylint: disable=protected-access
    before = ours.moving_mean.numpy().copy()
    ours(x, training=True)
    np.testing.assert_array_equal(ours.moving_mean.numpy(), before)


def test_unfused_layer_trains_with_keras_kernel_and_the_same_results():
    ours, reference = _pair()
    ours.fused = False
    x = _inputs()
    graph = tf.function(lambda t: ours(t, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    upstream = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    y_ours, g_ours = _train_call(ours, x, upstream)
    y_ref, g_ref = _train_call(reference, x, upstream)
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), rtol=1e-6, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6
    )


def _model_bns(**kwargs):
    config = dict(
        backbone="resnet14_tiny",
        num_classes=3,
        output_stride=16,
        atrous_rates=(1, 2, 3),
        image_pooling=True,
        aspp_filters=8,
    )
    model = deeplab.build_model(**dict(config, **kwargs))
    return model, [
        layer
        for layer in deeplab.model.deeplabv3.iter_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_models_use_it_and_serialize():
    _, bns = _model_bns()
    assert bns and all(isinstance(layer, BatchNormalization) for layer in bns)
    assert all(layer.fused for layer in bns)
    clone = keras.layers.deserialize(keras.layers.serialize(bns[0]))
    assert type(clone) is BatchNormalization and clone.epsilon == pytest.approx(bns[0].epsilon)
    assert clone.fused
    unfused = BatchNormalization(fused=False)
    assert not keras.layers.deserialize(keras.layers.serialize(unfused)).fused
    # a layer config written before the argument existed
    config = keras.layers.serialize(unfused)
    del config["config"]["fused"]
    assert keras.layers.deserialize(config).fused


@pytest.mark.parametrize("backbone, decoder", [("resnet14_tiny", 0), ("mobilenet_v2_dm05", 8)])
@pytest.mark.slow
def test_performance_option_reaches_every_batch_norm_and_stays_out_of_the_config(backbone, decoder):
    kwargs = dict(backbone=backbone, decoder_output_stride=decoder)
    if backbone.startswith("mobilenet"):
        kwargs.update(multi_grid=(1, 1, 1), atrous_rates=())
    model, bns = _model_bns(performance=PerformanceOptions(fused_batch_norm=False), **kwargs)
    assert bns and not any(layer.fused for layer in bns)
    assert model.performance == PerformanceOptions(fused_batch_norm=False)
    assert "performance" not in model.get_config()
    # rebuilt from its config (model_config.json): today's defaults unless told otherwise
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.performance == PerformanceOptions()
    # rebuilt at another output stride: the options it is given, by default the model's
    again = deeplab.model.deeplabv3.rebuild_with_output_stride(model, 8)
    assert again.performance == model.performance
    assert not any(
        l.fused
        for l in deeplab.model.deeplabv3.iter_layers(again)
        if isinstance(l, BatchNormalization)
    )
    fused = deeplab.model.deeplabv3.rebuild_with_output_stride(
        model, 8, performance=PerformanceOptions()
    )
    assert all(
        l.fused
        for l in deeplab.model.deeplabv3.iter_layers(fused)
        if isinstance(l, BatchNormalization)
    )


def test_environment_overrides_map_to_the_options(monkeypatch):
    monkeypatch.delenv("DEEPLAB_FUSED_BATCH_NORM", raising=False)
    assert PerformanceOptions.from_environment() == PerformanceOptions()
    monkeypatch.setenv("DEEPLAB_FUSED_BATCH_NORM", "0")
    assert PerformanceOptions.from_environment() == PerformanceOptions(fused_batch_norm=False)
    # overrides apply on top of what the caller chose; the other options are kept
    base = PerformanceOptions(native_dilation=False)
    assert PerformanceOptions.from_environment(base=base) == PerformanceOptions(
        fused_batch_norm=False, native_dilation=False
    )
    monkeypatch.setenv("DEEPLAB_FUSED_BATCH_NORM", "1")
    assert PerformanceOptions.from_environment(
        base=PerformanceOptions(fused_batch_norm=False)
    ).fused_batch_norm
    assert not PerformanceOptions.from_environment(
        {"DEEPLAB_FUSED_BATCH_NORM": "0"}
    ).fused_batch_norm
    assert PerformanceOptions.from_environment({}) == PerformanceOptions()
    assert PerformanceOptions.coerce({"fused_batch_norm": False}) == PerformanceOptions(
        fused_batch_norm=False
    )
    with pytest.raises(TypeError):
        PerformanceOptions(fused_batch_norm="0")
