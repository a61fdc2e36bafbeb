"""The training-memory changes of issue 7: the weight decay gradients added per variable, and
the import guard that keeps JAX out of TensorFlow processes. Each must give exactly what it
replaces."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
import harness
from deeplab.training import weight_decay


def _tiny_model():
    keras.utils.set_random_seed(3)
    return deeplab.build_model(
        backbone="resnet14_tiny",
        num_classes=4,
        output_stride=16,
        aspp_filters=8,
        image_pooling=True,
        weight_decay=0.05,
    )


@pytest.mark.slow
def test_decay_gradients_equal_the_gradients_of_the_regularized_loss():
    model = _tiny_model()
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 33, 33, 3)).astype("float32"))
    y = tf.constant(np.random.default_rng(5).integers(0, 4, (2, 33, 33)).astype("int32"))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    coefficients = weight_decay.decay_coefficients(model)
    decayed = [c for c in coefficients if c is not None]
    assert len(decayed) == len(model.losses) > 10 and set(decayed) == {0.025}

    @tf.function
    def on_tape():
        with tf.GradientTape() as tape:
            loss = 3.0 * (loss_fn(y, model(x, training=False)) + tf.add_n(model.losses))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def late():
        with tf.GradientTape() as tape:
            loss = 3.0 * loss_fn(y, model(x, training=False))
        grads = tape.gradient(loss, model.trainable_variables)
        return weight_decay.add_decay_gradients(
            grads, model.trainable_variables, coefficients, scale=3.0
        )

    expected, got = on_tape(), late()
    assert len(expected) == len(got)
    for a, b, v in zip(expected, got, model.trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7, err_msg=v.path)
    # and the decay part is really there: without it the kernels' gradients differ
    with tf.GradientTape() as tape:
        loss = 3.0 * loss_fn(y, model(x, training=False))
    bare = tape.gradient(loss, model.trainable_variables)
    kernel = [i for i, c in enumerate(coefficients) if c is not None][0]
    assert not np.allclose(bare[kernel].numpy(), got[kernel].numpy())


def test_decay_coefficients_and_the_losses_kept_on_the_tape():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L1(0.1))
    with pytest.raises(ValueError, match="not keras.regularizers.L2"):
        weight_decay.decay_coefficients(keras.Model(inputs, dense(inputs)))
    both = keras.layers.Dense(
        3,
        kernel_regularizer=keras.regularizers.L2(0.1),
        activity_regularizer=keras.regularizers.L2(0.5),
    )
    model = keras.Model(inputs, both(inputs))
    coefficients = weight_decay.decay_coefficients(model)
    assert coefficients == [0.1, None]
    y = model(tf.ones((2, 4)))
    call_loss, decay_loss = weight_decay.split_losses(model, coefficients)
    # the activity term (added by the call; Keras divides it by the batch) is the part to keep
    # on the tape, the kernel's L2 term the part whose gradient is added late
    np.testing.assert_allclose(
        float(call_loss), 0.5 * float(tf.reduce_sum(tf.square(y))) / 2, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(decay_loss), 0.1 * float(tf.reduce_sum(tf.square(both.kernel))), rtol=1e-5
    )
    with pytest.raises(ValueError, match="must match"):
        weight_decay.add_decay_gradients([None], [], [0.1])


def _run(code, **env):
    """The last line ``code`` prints (``env`` on top; DEEPLAB_TFLITE_JAX unset unless given)."""
    environment = {
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": "tensorflow",
        "DEEPLAB_TFLITE_JAX": None,
        **env,
    }
    out = harness.run("-c", code, env=environment)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_deeplab_keeps_jax_out_of_tensorflow_processes():
    pytest.importorskip("jax")
    code = (
        "import sys, deeplab, tensorflow, keras; a = 'jax' in sys.modules; "
        "import jax; print(a, jax.numpy.ones(3).sum() == 3)"
    )
    assert _run(code) == "False True"  # not imported as a side effect; still importable
    assert _run(code, DEEPLAB_TFLITE_JAX="1") == "True True"  # the opt-out
    # On the JAX backend nothing changes: Keras imports JAX first.
    assert (
        _run(
            "import sys, deeplab, keras; print(keras.backend.backend(), 'jax' in sys.modules)",
            KERAS_BACKEND="jax",
        )
        == "jax True"
    )
