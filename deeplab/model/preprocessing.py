"""The one place that turns raw RGB pixels into what the backbone expects.

keras.applications ResNet50/101 ImageNet weights were trained on "caffe" style
inputs: RGB -> BGR, then the ImageNet mean pixel subtracted, no scaling. Training,
evaluation, export and predict all call :func:`normalize_image`, so a model never
sees two different normalizations.
"""

from keras import ops

# ImageNet mean pixel, in RGB order (the caffe BGR mean 103.939, 116.779, 123.68 reversed).
MEAN_RGB = (123.68, 116.779, 103.939)


def normalize_image(image):
    """Maps RGB pixel values in [0, 255] (any float or integer dtype) to backbone inputs.

    Works on a single image [H, W, 3] or a batch [N, H, W, 3], eagerly, inside tf.data
    (TensorFlow backend) and inside a Keras model on any backend.

    Args:
      image: RGB pixels in [0, 255].

    Returns:
      float32 tensor of the same shape: BGR channels minus the ImageNet BGR mean. A pixel equal to
      ``MEAN_RGB`` maps to exactly 0, which is why padding with the mean pixel before normalization
      equals padding with zeros after it.
    """
    image = ops.cast(image, "float32")
    mean = ops.convert_to_tensor(MEAN_RGB, dtype="float32")
    return ops.flip(image - mean, axis=-1)


# The pixel training crops are padded with, per backbone (the authors' input_preprocess.py pads
# with the model's mean pixel): the ImageNet mean for ResNet, whose input subtracts it, and 127.5
# for MobileNetV2, whose [-1, 1] input maps it to 0. CONVENTIONS.md, "Padding value".
MOBILENET_PAD_RGB = (127.5, 127.5, 127.5)


def pad_pixel(backbone):
    """The RGB value (in [0, 255]) that pads a training crop of ``backbone``: the value the
    backbone's own input scaling maps to zero."""
    return MOBILENET_PAD_RGB if str(backbone).startswith("mobilenet") else MEAN_RGB


def denormalize_image(normalized):
    """Inverse of :func:`normalize_image`: backbone inputs back to RGB in [0, 255] (float32)."""
    normalized = ops.cast(normalized, "float32")
    mean = ops.convert_to_tensor(MEAN_RGB, dtype="float32")
    return ops.flip(normalized, axis=-1) + mean


__all__ = ["MEAN_RGB", "MOBILENET_PAD_RGB", "pad_pixel", "normalize_image", "denormalize_image"]
