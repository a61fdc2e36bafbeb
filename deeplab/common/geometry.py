"""Image-size arithmetic shared by training augmentation and inference.

:func:`scaled_size` is the one rounding of a scaled image size (the random scales of Sec. 4.1
and the multi-scale inputs of Sec. 4.2), and :func:`resize_bilinear` the one bilinear resize
that accepts a target size known only at run time.

Sizes are Python ints (static shapes: eager code, JAX, fixed-size graphs) or scalar int
tensors (dynamic shapes, which only TensorFlow graphs have: tf.data, a ``tf.function`` or an
exported SavedModel with None x None inputs). TensorFlow is imported for the dynamic case only.
"""

import math

from keras import ops


def is_static(size):
    """Whether ``size`` (one side) is a Python int rather than a tensor."""
    return isinstance(size, int)


def scaled_size(height, width, scale):
    """The size of an image scaled by ``scale``: each side ``floor(scale * side + 0.5)``, at least
    1.

    Halves round up (0.5 * 65 -> 33; Python's ``round`` would give 32).

    Args:
      height, width: Python ints, or scalar int tensors (dynamic shapes of a TensorFlow graph).
      scale: positive float (a float32 scalar tensor with tensor sides).

    Returns:
      ``(h, w)``: Python ints when the inputs are ints, else int32 scalar tensors. The two
      paths agree for the paper's scales, which are exact in binary floating point.
    """

    def one(side):
        if is_static(side):
            return max(1, int(math.floor(scale * side + 0.5)))
        # backend-specific: only TensorFlow graphs have tensor sizes (JAX never gets here)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        value = tf.floor(tf.cast(side, tf.float32) * scale + 0.5)
        return tf.cast(tf.maximum(value, 1.0), tf.int32)

    return one(height), one(width)


def resize_bilinear(images, size):
    """Bilinear resize (half-pixel centres, no antialiasing) of [H, W, C] or [N, H, W, C] to
    ``size`` = (h, w); the input itself when it already has that size.

    Static sizes go through ``keras.ops.image.resize`` (every backend). A dynamic size cannot:
    keras validates ``size`` with Python comparisons, which a symbolic tensor cannot pass, so
    it goes through ``tf.image.resize``, the op keras calls on the TensorFlow backend (the same
    result).
    """
    height, width = size
    if is_static(height) and is_static(width):
        if tuple(images.shape[-3:-1]) == (height, width):
            return images
        return ops.image.resize(images, (height, width), interpolation="bilinear", antialias=False)
    # backend-specific: only TensorFlow graphs have tensor sizes (JAX never gets here)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.image.resize(images, tf.stack([height, width]), method="bilinear")


__all__ = ["is_static", "resize_bilinear", "scaled_size"]
