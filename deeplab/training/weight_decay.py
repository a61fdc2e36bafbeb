"""Weight decay added to the gradients late, one variable at a time (TensorFlow training step).

The model's convolutions carry ``keras.regularizers.L2(weight_decay / 2)`` (the original
DeepLab's ``weight_decay * sum(w**2) / 2``), so ``model.losses`` holds one decay term per
kernel. Adding those terms to the loss under the ``GradientTape`` is correct, but the decay
part of every kernel's gradient (``2 * l2 * w``) depends only on the variable, so TensorFlow
computes all of them as soon as the backward pass starts and keeps them until the matching
convolution gradient arrives: one extra copy of every decayed weight (233 MB for ResNet-101)
held at the moment activations peak (benchmarks/RESULTS.md, issue 7).

:func:`add_decay_gradients` gives the same gradients (``d/dw`` of the same sum) with each
variable's decay term computed after that variable's loss gradient exists, and the step
reports the decay value from ``model.losses`` outside the tape. :func:`split_losses` keeps the
losses added during the call (``add_loss``, activity regularizers) on the tape.
"""

import keras
import tensorflow as tf


def decay_coefficients(model):
    """``[l2 or None per trainable variable]``: the coefficient of each variable's
    ``keras.regularizers.L2``. Any other weight regularizer is refused (ValueError): its
    gradient is not ``2 * l2 * w``."""
    coefficients = []
    for variable in model.trainable_variables:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is None:
            coefficients.append(None)
        elif type(regularizer) is keras.regularizers.L2:  # pylint: disable=unidiomatic-typecheck
            coefficients.append(float(regularizer.l2))
        else:
            raise ValueError(
                f"{variable.path}: weight regularizer {regularizer!r} is not "
                "keras.regularizers.L2; deeplab's training step only adds L2 decay"
            )
    return coefficients


def split_losses(model, coefficients):
    """``(call_loss, decay_loss)``: float32 sums of ``model.losses`` after a forward pass.

    Keras lists the losses added during the call (``add_loss``, activity regularizers) first
    and the weight-regularization terms last, one per regularized trainable variable. The
    first sum must be differentiated on the tape; the second is only a value to report, its
    gradient is what :func:`add_decay_gradients` adds.
    """
    losses = [tf.cast(loss, tf.float32) for loss in model.losses]
    count = sum(c is not None for c in coefficients)
    if count > len(losses):
        raise ValueError(f"{count} regularized variables but only {len(losses)} model losses")
    split = len(losses) - count
    return (
        tf.add_n(losses[:split]) if split else tf.constant(0.0),
        tf.add_n(losses[split:]) if count else tf.constant(0.0),
    )


def add_decay_gradients(gradients, variables, coefficients, scale=1.0):
    """``gradients`` plus ``scale * 2 * l2 * w`` for every variable with a coefficient.

    Each variable is read only after its own gradient has been computed (a control
    dependency), so the decay terms never all exist at once. ``scale`` is what the loss was
    multiplied by before differentiation (a loss scale, ``1 / num_replicas``).
    """
    if len(gradients) != len(variables) or len(variables) != len(coefficients):
        raise ValueError(
            f"{len(gradients)} gradients, {len(variables)} variables and "
            f"{len(coefficients)} decay coefficients: they must match"
        )
    result = []
    for gradient, variable, l2 in zip(gradients, variables, coefficients):
        if l2 is None or l2 == 0.0:
            result.append(gradient)
            continue
        if gradient is None:
            value = tf.convert_to_tensor(variable)
            result.append(tf.cast(scale * 2.0 * l2, value.dtype) * value)
            continue
        with tf.control_dependencies([gradient]):
            value = tf.identity(tf.convert_to_tensor(variable))
        result.append(
            gradient + tf.cast(scale * 2.0 * l2, gradient.dtype) * tf.cast(value, gradient.dtype)
        )
    return result
