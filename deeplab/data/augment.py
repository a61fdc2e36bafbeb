"""Per-example training augmentation of Sec. 4.1, as pure functions of (image, label, seed).

The paper's recipe: random scale in [0.5, 2.0], pad to the crop (image with the mean pixel, label
with the ignore label), random 513x513 crop, random left-right flip, then the backbone's
normalization. Every op here is a stateless function: the same (image, label, seed) always gives the
same output, eagerly or inside tf.data, and image and label always get the same geometric transform.
Labels are resized with nearest neighbour only, so no label value is ever interpolated.

Seeds are int32/int64 tensors of shape [2] (the ``tf.random.stateless_*`` convention).
:func:`train_transform` splits its seed with :func:`split_seed` and is tested to equal the
composition ``normalize(random_flip(random_crop(pad_to_size(random_scale(...)))))`` of the single
ops; it only reorders work that commutes (normalize and pad after cropping) so that it touches
crop-sized tensors.
"""

import keras
import tensorflow as tf

from deeplab.common.geometry import resize_bilinear, scaled_size
from deeplab.model import preprocessing

MEAN_RGB = preprocessing.MEAN_RGB


def normalize(image):
    """The backbone normalization of :func:`deeplab.model.preprocessing.normalize_image`, usable in
    tf.data.

    Under the TensorFlow Keras backend this *is* ``normalize_image``. Under another backend (JAX)
    keras.ops cannot run in a tf.data graph, so the same arithmetic (RGB -> BGR minus the ImageNet
    mean, from ``preprocessing.MEAN_RGB``) is written with tf ops; a test checks the two agree
    exactly.
    """
    if keras.backend.backend() == "tensorflow":
        return preprocessing.normalize_image(image)
    return _normalize_tf(image)


def _normalize_tf(image):
    image = tf.cast(image, tf.float32)
    return tf.reverse(image - tf.constant(MEAN_RGB, tf.float32), axis=[-1])


def split_seed(seed, num=3):
    """Splits one stateless seed [2] into ``num`` independent seeds [num, 2]."""
    return tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=num)


def _hw(size):
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def sample_scale(seed, *, min_scale=0.5, max_scale=2.0, scale_step=0.25):
    """Draws the random scale factor of Sec. 4.1.

    Args:
      seed: stateless seed [2].
      min_scale, max_scale: range of the factor (inclusive).
      scale_step: > 0: uniform over {min_scale, min_scale + step, ..., <= max_scale}; 0: continuous
        uniform.

    Returns:
      float32 scalar.
    """
    if min_scale <= 0 or max_scale < min_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    if scale_step < 0:
        raise ValueError(f"scale_step must be >= 0, got {scale_step}")
    if min_scale == max_scale:
        return tf.constant(min_scale, tf.float32)
    if scale_step == 0:
        return tf.random.stateless_uniform([], seed, min_scale, max_scale, dtype=tf.float32)
    num_values = int((max_scale - min_scale) / scale_step + 1e-6) + 1
    k = tf.random.stateless_uniform([], seed, 0, num_values, dtype=tf.int32)
    step = tf.constant(scale_step, tf.float32)
    return tf.constant(min_scale, tf.float32) + tf.cast(k, tf.float32) * step


def scale_image_and_label(image, label, scale):
    """Resizes image (bilinear, float32 output) and label (nearest neighbour, dtype kept) by
    ``scale``.

    Args:
      image: [H, W, 3], any real dtype.
      label: [H, W] integer class indices.
      scale: float scalar.

    Returns:
      (image float32 [h, w, 3], label [h, w]) with (h, w) =
      :func:`deeplab.common.geometry.scaled_size`.
    """
    shape = tf.shape(image)
    new_h, new_w = scaled_size(shape[0], shape[1], scale)
    image = resize_bilinear(image, (new_h, new_w))
    label = tf.image.resize(label[:, :, tf.newaxis], [new_h, new_w], method="nearest")[:, :, 0]
    return image, label


def random_scale(image, label, seed, *, min_scale=0.5, max_scale=2.0, scale_step=0.25):
    """Scales image and label by a factor from :func:`sample_scale` (Sec. 4.1: 0.5 to 2.0)."""
    scale = sample_scale(seed, min_scale=min_scale, max_scale=max_scale, scale_step=scale_step)
    return scale_image_and_label(image, label, scale)


def pad_to_size(image, label, height, width, *, ignore_label=255, pad_value=MEAN_RGB):
    """Pads at the bottom and right to at least ``height`` x ``width``; larger inputs are left
    alone.

    The image is padded with ``pad_value`` (the mean pixel, which normalization maps to 0), the
    label with ``ignore_label``, so padded pixels never count in the loss.

    Returns:
      (image float32, label of the input dtype), each at least height x width.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    padded = [
        tf.pad(image[:, :, c], [[0, pad_h], [0, pad_w]], constant_values=float(pad_value[c]))
        for c in range(3)
    ]
    image = tf.stack(padded, axis=-1)
    label = tf.pad(label, [[0, pad_h], [0, pad_w]],
                   constant_values=tf.cast(ignore_label, label.dtype))
    return image, label


def _crop_offsets(seed, height, width, crop_h, crop_w):
    seeds = split_seed(seed, 2)
    offset_y = tf.random.stateless_uniform([], seeds[0], 0, height - crop_h + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform([], seeds[1], 0, width - crop_w + 1, dtype=tf.int32)
    return offset_y, offset_x


def random_crop(image, label, seed, height, width):
    """Crops the same random ``height`` x ``width`` window from image and label (inputs at least
    that big)."""
    shape = tf.shape(image)
    tf.debugging.assert_greater_equal(
        shape[:2], [height, width], message="random_crop: input smaller than the crop; pad first")
    offset_y, offset_x = _crop_offsets(seed, shape[0], shape[1], height, width)
    image = image[offset_y : offset_y + height, offset_x : offset_x + width]
    label = label[offset_y : offset_y + height, offset_x : offset_x + width]
    return image, label


def random_flip(image, label, seed, probability=0.5):
    """Flips image and label left-right together with the given probability."""
    do_flip = tf.random.stateless_uniform([], seed) < probability
    image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(do_flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def train_transform(
    image,
    label,
    seed,
    *,
    crop_size=513,
    min_scale=0.5,
    max_scale=2.0,
    scale_step=0.25,
    flip=True,
    ignore_label=255,
    pad_value=MEAN_RGB,
):
    """The whole training augmentation of Sec. 4.1 for one example.

    Equal (tested) to::

        s_scale, s_crop, s_flip = split_seed(seed, 3)
        image, label = random_scale(image, label, s_scale, ...)
        image, label = pad_to_size(image, label, crop_h, crop_w, ignore_label=ignore_label,
                                   pad_value=pad_value)
        image, label = random_crop(image, label, s_crop, crop_h, crop_w)
        if flip: image, label = random_flip(image, label, s_flip)
        image = normalize(image)

    but crops before padding and normalizing, and computes the label's nearest-neighbour resize for
    the crop window only, so that work is done on crop-sized tensors.

    Args:
      image: [H, W, 3] RGB in [0, 255] (uint8 or float).
      label: [H, W] integer class indices (uint8 or int32; dtype kept until the final cast).
      seed: stateless seed [2].
      crop_size: int or (height, width); 513 in the paper (769 for Cityscapes).
      min_scale, max_scale, scale_step: see :func:`sample_scale`. min_scale = max_scale = 1 disables
        scaling.
      flip: random left-right flip.
      ignore_label: label of padded pixels.
      pad_value: RGB value of padded image pixels, before normalization
        (``deeplab.model.preprocessing.pad_pixel``: the mean pixel for ResNet, 127.5 for
        MobileNetV2).

    Returns:
      (image float32 [crop_h, crop_w, 3] normalized, label int32 [crop_h, crop_w]).
    """
    crop_h, crop_w = _hw(crop_size)
    s_scale, s_crop, s_flip = tf.unstack(split_seed(seed, 3))
    scale = sample_scale(s_scale, min_scale=min_scale, max_scale=max_scale, scale_step=scale_step)
    shape = tf.shape(image)
    new_h, new_w = scaled_size(shape[0], shape[1], scale)
    image = resize_bilinear(image, (new_h, new_w))
    offset_y, offset_x = _crop_offsets(s_crop, tf.maximum(new_h, crop_h), tf.maximum(new_w, crop_w),
                                       crop_h, crop_w)
    # The window keeps only real pixels (slicing past the end clips); the rest of the crop is
    # padding.
    window_h = tf.minimum(crop_h, new_h - offset_y)
    window_w = tf.minimum(crop_w, new_w - offset_x)
    image = normalize(image[offset_y : offset_y + window_h, offset_x : offset_x + window_w])
    # The label's nearest-neighbour resize is computed for the window only (same indices as
    # tf.image.resize).
    rows = _nearest_source_indices(shape[0], new_h, offset_y, window_h)
    cols = _nearest_source_indices(shape[1], new_w, offset_x, window_w)
    label = tf.gather(tf.gather(label, rows, axis=0), cols, axis=1)
    pad = [[0, crop_h - window_h], [0, crop_w - window_w]]
    image = _pad_normalized(image, pad, pad_value)
    label = tf.pad(label, pad, constant_values=tf.cast(ignore_label, label.dtype))
    if flip:
        image, label = random_flip(image, label, s_flip)
    image = tf.ensure_shape(image, [crop_h, crop_w, 3])
    label = tf.ensure_shape(tf.cast(label, tf.int32), [crop_h, crop_w])
    return image, label


def _pad_normalized(image, pad, pad_value):
    """Pads a normalized [h, w, 3] image with the normalized ``pad_value``, channel by channel
    (exact: real pixels are not touched)."""
    fill = normalize(tf.constant([[list(pad_value)]], tf.float32))[0, 0]
    channels = [
        tf.pad(image[:, :, c], pad, constant_values=fill[c]) for c in range(3)
    ]
    return tf.stack(channels, axis=-1)


def _nearest_source_indices(in_size, out_size, start, count):
    """Source rows (or columns) of output rows [start, start + count) of a nearest-neighbour resize.

    The arithmetic of TensorFlow's ResizeNearestNeighbor with half-pixel centres, in float32:
    ``min(floor((i + 0.5) * (in_size / out_size)), in_size - 1)``; a test checks equality with
    ``tf.image.resize(..., method="nearest")``.
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    out = tf.cast(tf.range(start, start + count), tf.float32)
    return tf.minimum(tf.cast(tf.floor((out + 0.5) * scale), tf.int32), in_size - 1)


def eval_transform(image, label):
    """Evaluation (Sec. 4.1): the whole image at its own size, normalized; the label untouched
    (int32)."""
    return normalize(image), tf.cast(label, tf.int32)


__all__ = [
    "MEAN_RGB",
    "normalize",
    "split_seed",
    "sample_scale",
    "scale_image_and_label",
    "random_scale",
    "pad_to_size",
    "random_crop",
    "random_flip",
    "train_transform",
    "eval_transform",
]
