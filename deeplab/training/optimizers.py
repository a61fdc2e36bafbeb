"""SGD with momentum whose per-variable update is one fused TensorFlow kernel.

Keras 3's ``SGD.update_step`` writes the momentum update as separate tensor ops:
``m = m * momentum - lr * g`` and ``var += m``. Inside the training ``tf.function`` the first
product, ``m * momentum``, depends on nothing the step computes, so TensorFlow's executor runs it
for every variable as soon as the step starts and keeps the results until each gradient arrives
at the end of the backward pass: one extra copy of all trainable weights (222 MiB for ResNet-101
DeepLabv3) held through the step's peak, plus three more full-size temporaries per variable.

``SGD`` below computes the same update with ``ResourceApplyKerasMomentum``, which reads the
gradient, the momentum slot and the variable and updates both in place, so nothing of that size is
allocated and nothing of the update can run before its gradient. Measured in benchmarks/RESULTS.md
("Session 6").

It is Keras' SGD in every other respect: the same slot variables (checkpoints written with either
class restore into the other), schedules, ``LossScaleOptimizer`` wrapping, serialization (the
class is registered). The fused kernel is used on the TensorFlow backend for dense gradients of
floating-point variables with momentum; everything else (no momentum, ``tf.IndexedSlices``
gradients, the JAX backend, ``SGD(..., fused_update=False)``) takes Keras' own ``update_step``.
The library reads no environment variable: binaries that honour DEEPLAB_FUSED_MOMENTUM=0 pass
``fused_update=fused_update_from_environment()``.
"""

import keras

from deeplab.model.options import environment_switch

FUSED_MOMENTUM_VARIABLE = "DEEPLAB_FUSED_MOMENTUM"


def fused_update_from_environment(environ=None, default=True):
    """``SGD``'s ``fused_update`` with the environment's override: DEEPLAB_FUSED_MOMENTUM=0 ->
    False, any other non-empty value -> True, unset -> ``default``. For the binaries.

    Args:
      environ: a mapping to read instead of ``os.environ``.
      default: the value when the variable is unset.
    """
    return environment_switch(FUSED_MOMENTUM_VARIABLE, bool(default), environ)


@keras.saving.register_keras_serializable(package="deeplab")
class SGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` whose momentum update is ``ResourceApplyKerasMomentum`` on TF.

    Args:
      fused_update: use the fused kernel where it applies (default); False: Keras' own update
        everywhere (the same values to float rounding). Keras' SGD's other arguments follow.
    """

    def __init__(self, *args, fused_update=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_update = bool(fused_update)

    def get_config(self):
        return {**super().get_config(), "fused_update": self.fused_update}

    def _fused_slot(self, gradient, variable):
        """The momentum slot to update in place, or None where Keras' own update must run."""
        if not self.fused_update or self.momentum == 0 or keras.backend.backend() != "tensorflow":
            return None
        # backend-specific: only the TensorFlow backend has tf (JAX returned above)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        if isinstance(gradient, tf.IndexedSlices) or not tf.as_dtype(variable.dtype).is_floating:
            return None
        slot = self.momentums[self._get_variable_index(variable)]
        slot = slot.value if isinstance(slot, keras.Variable) else slot
        if not hasattr(variable, "handle") or not hasattr(slot, "handle"):
            return None
        return slot

    def update_step(self, gradient, variable, learning_rate):
        slot = self._fused_slot(gradient, variable)
        if slot is None:
            return super().update_step(gradient, variable, learning_rate)
        # backend-specific: only the TensorFlow backend has tf (JAX returned above)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        dtype = variable.dtype
        # Keras' formula, in one kernel: accum = accum * momentum - lr * grad; then
        # var += accum, or with Nesterov var += accum * momentum - lr * grad.
        return tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=slot.handle,
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_locking=False,
            use_nesterov=bool(self.nesterov),
        )
