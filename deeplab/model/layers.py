"""Small Keras layers shared by the heads (keras.ops only: TensorFlow and JAX backends)."""

import functools

import keras
from keras import ops

from deeplab import _cpu


def stride_sampling_grid(out_size, in_size, stride, dtype="float32"):
    """Source rows of the stride-aware bilinear sampler (see :class:`StrideUpsample`).

    Output pixel ``x`` reads feature coordinate ``u = min(x / stride, in_size - 1)``:
    rows ``i0 = floor(u)`` and ``i1 = min(i0 + 1, in_size - 1)`` with weight ``u - i0`` on
    ``i1``. Sizes may be Python ints or scalar int tensors (dynamic shapes).

    Returns:
      ``(i0, i1, weight)``: int32 [out_size], int32 [out_size], ``dtype`` [out_size].
    """
    x = ops.cast(ops.arange(out_size, dtype="int32"), "float32")
    last = ops.cast(in_size, "float32") - 1.0
    u = ops.minimum(x / float(stride), ops.maximum(last, 0.0))
    i0 = ops.floor(u)
    i1 = ops.minimum(i0 + 1.0, ops.maximum(last, 0.0))
    return ops.cast(i0, "int32"), ops.cast(i1, "int32"), ops.cast(u - i0, dtype)


def stride_upsample(x, size, stride):
    """Bilinear upsampling of an NHWC feature map of stride ``stride`` to ``size`` = (H, W).

    The geometry of this project (CONVENTIONS.md, "Geometry"): feature ``i`` of a stride-s map
    is centred on input pixel ``s * i`` (every strided layer of the backbone samples
    ``s * i``), so output pixel ``x`` reads feature coordinate ``x / s``. Pixels past the last
    feature centre repeat it. This is exact at every input size and output stride; at sizes
    ``s * k + 1`` (513, 321, 769) it equals the authors' ``align_corners=True`` resize, and it
    differs from the half-pixel resize of ``tf.image.resize``, which would put feature ``i`` at
    ``s * i + (s - 1) / 2``.
    """
    shape = ops.shape(x)
    for axis, out_size in ((1, size[0]), (2, size[1])):
        i0, i1, weight = stride_sampling_grid(out_size, shape[axis], stride, x.dtype)
        weight = ops.reshape(weight, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        low, high = ops.take(x, i0, axis=axis), ops.take(x, i1, axis=axis)
        x = low + (high - low) * weight
    return x


@keras.saving.register_keras_serializable(package="deeplab")
class StrideUpsample(keras.layers.Layer):
    """Upsamples ``inputs[0]`` (features of stride ``stride``) to the size of ``inputs[1]``.

    Used to upsample the logits to the input image (Sec. 4.1, "Upsampling logits") with
    :func:`stride_upsample`'s geometry. The target size is read at run time, so a model built
    with None x None inputs serves images of any size; the output keeps ``inputs[0]``'s dtype.
    Gathers and a blend only: the same on every backend, and converted by TFLite as they are.
    """

    def __init__(self, stride, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return stride_upsample(x, (shape[1], shape[2]), self.stride)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@functools.cache
def _tensorflow_has_native_dilated_cpu_conv():
    """Whether TensorFlow's CPU Conv2D (and its gradients) accept dilations > 1 natively.

    True when TensorFlow runs its oneDNN CPU kernels (the default on x86 Linux; off with
    TF_ENABLE_ONEDNN_OPTS=0). The plain Eigen kernels reject dilated gradients. Asked once per
    process (a fact about the TensorFlow build and its startup environment).
    """
    try:
        # backend-specific: asked only on the TensorFlow backend (model code stays Keras)
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

    Args:
      native_dilation: None (default): the native path where TensorFlow's oneDNN kernels are
        on; False: always ``keras.ops.conv`` (the SpaceToBatchND path); True: the native path
        regardless of that check (dtype and layout rules still apply). Changes no variable
        and, up to float rounding, no result
        (``deeplab.model.options.PerformanceOptions.native_dilation``).
      Every other argument is Conv2D's.
    """

    def __init__(self, *args, native_dilation=None, **kwargs):
        super().__init__(*args, **kwargs)
        if native_dilation is not None and not isinstance(native_dilation, bool):
            raise TypeError(f"native_dilation must be None, True or False, got {native_dilation!r}")
        self.native_dilation = native_dilation

    def get_config(self):
        return {**super().get_config(), "native_dilation": self.native_dilation}

    def uses_native_dilation(self, dtype):
        """Whether a call on inputs of ``dtype`` runs the native dilated ``tf.nn.conv2d``."""
        if not (
            max(self.dilation_rate) > 1
            and keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.strides) == (1, 1)
            and self.native_dilation is not False
            # oneDNN has no float16 path on every CPU, and a bfloat16 one only on CPUs
            # with AVX512_BF16 / AMX; Eigen's fallback rejects dilated gradients.
            and _native_dtype(keras.backend.standardize_dtype(dtype))
        ):
            return False
        return self.native_dilation or _tensorflow_has_native_dilated_cpu_conv()

    def convolution_op(self, inputs, kernel):
        if self.uses_native_dilation(inputs.dtype):
            # backend-specific: only the TensorFlow backend has tf (model code stays Keras)
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            return tf.nn.conv2d(
                inputs,
                kernel,
                strides=1,
                padding=self.padding.upper(),
                dilations=list(self.dilation_rate),
                data_format="NHWC",
            )
        return super().convolution_op(inputs, kernel)


def _native_dtype(dtype):
    """Whether TensorFlow's oneDNN kernels run a dilated convolution in ``dtype`` here."""
    if dtype == "float32":
        return True
    return dtype == "bfloat16" and _cpu.has_native_bfloat16() is not False
