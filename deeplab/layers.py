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
