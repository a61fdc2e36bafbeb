"""Small Keras layers shared by the heads (keras.ops only: TensorFlow and JAX backends)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deeplab")
class ResizeToMatch(keras.layers.Layer):
    """Resizes ``inputs[0]`` bilinearly to the spatial size of ``inputs[1]`` (NHWC).

    Used to upsample the logits to the input image (Sec. 4.1, "Upsampling logits"). The
    target size is read at run time, so a model built with None x None inputs serves
    images of any size. The output keeps the dtype of ``inputs[0]``.
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        size = (shape[1], shape[2])
        if all(isinstance(s, int) for s in size):
            resized = ops.image.resize(x, size, interpolation=self.interpolation)
        else:
            # A tf.function with dynamic height and width (e.g. a SavedModel signature):
            # keras.ops.image.resize checks ``size > 0`` in Python, which a symbolic size
            # cannot pass. This is the op it calls on the TensorFlow backend (antialias off).
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            resized = tf.image.resize(x, tf.stack(size), method=self.interpolation)
        return ops.cast(resized, x.dtype)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


def _tensorflow_has_native_dilated_cpu_conv():
    """Whether TensorFlow's CPU Conv2D (and its gradients) accept dilations > 1 natively.

    True when TensorFlow runs its oneDNN CPU kernels (the default on x86 Linux; off with
    TF_ENABLE_ONEDNN_OPTS=0). The plain Eigen kernels reject dilated gradients.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


@keras.saving.register_keras_serializable(package="deeplab")
class AtrousConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (same arguments, same variables) for atrous convolutions.

    On every backend but TensorFlow it is exactly Conv2D (JAX convolves with
    ``rhs_dilation`` natively). On TensorFlow, ``keras.ops.conv`` goes through
    ``tf.nn.convolution``, which runs a dilated convolution as SpaceToBatchND -> Conv2D ->
    BatchToSpaceND over an input padded to a multiple of the rate: up to 7x slower on a CPU
    for the ASPP rates at small feature maps (benchmarks/RESULTS.md). When TensorFlow's
    oneDNN CPU kernels are on (its default on x86), this layer calls the same op keras
    calls for an undilated convolution, ``tf.nn.conv2d``, with the ``dilations`` attribute,
    which oneDNN (and cuDNN, and XLA) execute natively, gradients included; float32 and
    bfloat16 only (float16 keeps ``keras.ops.conv``: oneDNN lacks it on some CPUs and the
    Eigen fallback has no dilated gradient).
    """

    def convolution_op(self, inputs, kernel):
        if (max(self.dilation_rate) > 1 and keras.backend.backend() == "tensorflow"
                and self.data_format == "channels_last" and self.groups == 1
                and tuple(self.strides) == (1, 1) and _NATIVE_DILATION[0] is not False
                # oneDNN has no float16 path on every CPU; Eigen's fallback rejects dilations.
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16")):
            if _NATIVE_DILATION[0] is None:
                _NATIVE_DILATION[0] = _tensorflow_has_native_dilated_cpu_conv()
            if _NATIVE_DILATION[0]:
                import tensorflow as tf  # pylint: disable=import-outside-toplevel

                return tf.nn.conv2d(inputs, kernel, strides=1, padding=self.padding.upper(),
                                    dilations=list(self.dilation_rate), data_format="NHWC")
        return super().convolution_op(inputs, kernel)


# Cached answer of _tensorflow_has_native_dilated_cpu_conv (None: not asked yet).
_NATIVE_DILATION = [None]
