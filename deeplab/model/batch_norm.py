"""BatchNormalization whose training step runs as one fused TensorFlow kernel.

Keras' BatchNormalization upcasts its input to float32, computes the batch moments with separate
reductions and normalizes with elementwise ops. Under ``--mixed_precision=bfloat16`` that is two
full-size casts per layer and direction on top of the normalization itself. On the TensorFlow
backend, in training mode, this layer instead calls ``FusedBatchNormV3`` (and its fused gradient),
which reads bfloat16 activations directly, accumulates the statistics in float32 and returns
bfloat16. Measured on the CamVid recipe (ResNet-50, bfloat16, 176x240, batch 8, 2 cores):
benchmarks/RESULTS.md, "Session 5".

Everything else is Keras' layer, unchanged: the same variables (so checkpoints are unaffected),
inference with the moving statistics, frozen BN (``trainable=False``), synchronized BN, masks,
renorm, other layouts and the JAX backend all take Keras' own path, and so does everything when
the layer is built with ``fused=False`` (``PerformanceOptions(fused_batch_norm=False)`` of
``deeplab.model.options``; the binaries map DEEPLAB_FUSED_BATCH_NORM=0 to it). The two kernels
agree to float rounding (~1e-5 in the gradients), but tiny-batch BN can amplify such differences
over a few steps: a run compared step by step with synchronized BN (which has no fused kernel)
should turn fusion off.
"""

import contextlib

import keras


@contextlib.contextmanager
def recomputing(layers):
    """Context in which the training-mode BN layers among ``layers`` leave their moving
    statistics alone (``deeplab.training.recompute`` re-runs a segment of the forward pass for
    its gradient: the first pass has updated them already).

    Sets :attr:`BatchNormalization.recomputing` on each of those layers and restores the
    previous values on exit; other layers are ignored. While set, a layer whose training step
    would take Keras' kernel (which updates the statistics) raises instead.
    """
    bns = [layer for layer in layers if isinstance(layer, BatchNormalization)]
    previous = [layer.recomputing for layer in bns]
    for layer in bns:
        layer.recomputing = True
    try:
        yield bns
    finally:
        for layer, value in zip(bns, previous):
            layer.recomputing = value


@keras.saving.register_keras_serializable(package="deeplab")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training kernel on TensorFlow (NHWC).

    ``fused=False``: Keras' own kernel in training too (same results to float rounding).

    ``freeze_statistics=True`` (``--freeze_batch_norm``): the layer always normalizes with its
    moving statistics and never updates them, while gamma and beta stay trainable, as the
    authors' code does with ``fine_tune_batch_norm=False`` (slim's ``is_training=False`` BN
    keeps its scale and offset among the trained variables). Keras' ``trainable=False`` would
    freeze gamma and beta as well.

    ``recomputing`` (an attribute, not an argument; see :func:`recomputing`): True while the
    layer's forward pass is re-run for a gradient; the moving statistics are then not updated.
    """

    def __init__(self, *args, freeze_statistics=False, fused=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_statistics = bool(freeze_statistics)
        self.fused = bool(fused)
        self.recomputing = False

    def get_config(self):
        return {
            **super().get_config(),
            "freeze_statistics": self.freeze_statistics,
            "fused": self.fused,
        }

    def _can_fuse(self, inputs, training, mask):
        return (
            self.fused
            and training is True
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16")
        )

    def call(self, inputs, training=None, mask=None):
        if self.freeze_statistics:
            training = False
        if not self._can_fuse(inputs, training, mask):
            if self.recomputing and training is True and self.trainable:
                # Keras' kernel would update the moving statistics a second time.
                raise RuntimeError(
                    f"BatchNormalization {self.name!r} cannot be recomputed: "
                    "its training step does not take the fused kernel"
                )
            return super().call(inputs, training=training, mask=mask)
        # backend-specific: only the TensorFlow backend fuses (_can_fuse), model code stays Keras
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=gamma,
            offset=beta,
            mean=tf.zeros([0], tf.float32),
            variance=tf.zeros([0], tf.float32),
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the batch variance with Bessel's correction (n / (n - 1)); Keras'
        # moving variance averages the plain batch variance, which is also what normalized.
        if not self.recomputing:
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            variance = unbiased_variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        return tf.cast(outputs, self.compute_dtype)
