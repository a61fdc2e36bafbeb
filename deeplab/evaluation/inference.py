"""Evaluation-time inference: multi-scale inputs and left-right flips (Sec. 4.2, Tables 4 and 6).

"During inference, we apply multi-scale inputs (with scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75})
... the final result is computed by averaging the probabilities from each scale", and adding
"left-right flipped inputs" averages those too. One pass, for a scale s and a flip f:

1. flip the (already normalized) images left-right if f;
2. resize them bilinearly to ``(floor(s * H + 0.5), floor(s * W + 0.5))``: s * H rounded to the
   nearest integer, halves up (so 0.5 * 65 -> 33; Python's ``round`` would give 32), at least 1;
   scale 1.0 is not resized;
3. run the model (normalized images [N, h, w, 3] -> logits, at any resolution);
4. softmax in float32 at that resolution;
5. resize the probabilities bilinearly back to (H, W) and flip them back if f.

The result is the plain mean of the passes. Probabilities, not logits, are resized: a bilinear
resize is a convex combination, so every pass and their mean stay distributions over classes.
(The original TF1 DeepLab code resized logits and then took the softmax; the two differ only by
interpolation near label boundaries.) Resizing between scales uses ``keras.ops.image.resize``'s
half-pixel bilinear convention without antialiasing. That is not the model's own logit
upsampling, which puts feature ``i`` of stride ``s`` at pixel ``s * i``
(``deeplab.model.layers.stride_upsample``); a scaled pass is resized as an image, whose pixel
centres the half-pixel convention keeps in place.

Everything runs on the TensorFlow and JAX backends and eagerly. Under the TensorFlow backend it
also works inside a ``tf.function`` whose images have dynamic height and width (sizes and
resizes: :mod:`deeplab.common.geometry`, shared with the training augmentation).
"""

import numpy as np
from keras import ops

from deeplab.common.errors import ConfigError
from deeplab.common.geometry import is_static
from deeplab.common.geometry import resize_bilinear
from deeplab.common.geometry import scaled_size
from deeplab.common.inference_options import InferenceOptions
from deeplab.model.preprocessing import normalize_image
from deeplab.model.preprocessing import pad_pixel

# Sec. 4.2 (VOC val, Tables 4 and 6).
PAPER_EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# Sec. 4.3 (Cityscapes test submission).
CITYSCAPES_TEST_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def _spatial_size(x):
    """(H, W) of an NHWC tensor: Python ints where static, scalar tensors where dynamic."""
    dynamic = ops.shape(x)
    static = x.shape
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in (1, 2))


def _softmax(model, images):
    return ops.softmax(ops.cast(model(images, training=False), "float32"), axis=-1)


def tile_starts(length, tile, overlap):
    """Start offsets of the windows covering ``length`` pixels with ``tile``-pixel windows.

    Consecutive windows overlap by ``overlap`` of a tile (stride ``max(1, round(tile * (1 -
    overlap)))``); the last window ends on the border (it may overlap its neighbour more).
    A side no longer than ``tile`` is one window: the whole side, never padded.
    """
    if length <= tile:
        return [0]
    return list(range(0, length - tile, _tile_stride(tile, overlap))) + [length - tile]


def _tile_stride(tile, overlap):
    return max(1, int(round(tile * (1.0 - overlap))))


def _tile_starts_dynamic(length, tile, overlap):
    """:func:`tile_starts` for a scalar int32 tensor ``length`` (TensorFlow graphs)."""
    # backend-specific: only TensorFlow graphs have dynamic sizes (this module runs on JAX too)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    stride = _tile_stride(tile, overlap)
    extra = tf.maximum(length - tile, 0)
    count = (extra + stride - 1) // stride + 1
    return tf.minimum(tf.range(count) * stride, extra)


# An image tiled into windows may cost up to this many times its whole-image inference (in
# feature cells the network computes); more is an absurd tiling (1-pixel windows, 99% overlap):
# many times slower for no gain, and windows far below the network's receptive field score far
# worse. Refused with one line.
MAX_TILING_WORK = 16.0


def tiling_work(height, width, tile, overlap, stride):
    """The network's work on an ``height`` x ``width`` image tiled into ``tile`` = (h, w)
    windows with ``overlap``, over its work on the whole image: every window costs at least
    one feature cell of ``stride`` x ``stride`` pixels per row and column."""
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    windows = len(tile_starts(height, tile[0], overlap)) * len(tile_starts(width, tile[1], overlap))
    cells = -(-tile_h // stride) * -(-tile_w // stride)
    return windows * cells / (-(-height // stride) * -(-width // stride))


def _network_stride(model):
    """The output stride of ``model`` (a DeepLabV3, or a bound method of an object whose
    ``model`` is one, as the evaluator's forward pass), or None where it does not say."""
    for candidate in (model, getattr(getattr(model, "__self__", None), "model", None)):
        stride = getattr(candidate, "output_stride", None)
        if isinstance(stride, int) and stride > 0:
            return stride
    return None


def check_tiling(height, width, tile, overlap, stride):
    """Refuses a tiling of more than :data:`MAX_TILING_WORK` x the whole image's work.

    ``stride``: the network's output stride (None: unknown, counted as 8, the smallest the
    project trains with, which refuses the fewest tilings).

    Raises:
      ConfigError: one line naming --eval_tile_size / --eval_tile_overlap and the factor.
    """
    known = stride
    stride = stride or 8
    work = tiling_work(height, width, tile, overlap, stride)
    if work > MAX_TILING_WORK:
        windows = len(tile_starts(height, tile[0], overlap)) * len(
            tile_starts(width, tile[1], overlap)
        )
        raise ConfigError(
            f"--eval_tile_size={tile[0]},{tile[1]} with --eval_tile_overlap={overlap:g}: "
            f"{windows} windows do {work:.0f}x the work of the whole {height}x{width} image "
            f"(at most {MAX_TILING_WORK:g}x is accepted); use larger windows (at least the "
            f"network's output stride{f', {known}' if known else ''}, and usually the training "
            "crop) or less overlap, or no --eval_tile_size"
        )


def tiled_probabilities(model, images, options):
    """Sliding-window probabilities [N, H, W, C]: windows of ``options.tile_size`` averaged.

    Each window is segmented as an image of its own (softmax of the model's logits at the
    window's size) and the probabilities of overlapping windows (``options.tile_overlap``) are
    averaged per pixel. An image no larger than the tile is one window, i.e. exactly
    whole-image inference. Memory is that of one window's forward pass plus an [H, W, C]
    accumulator, so images far larger than the training crop (a 4000x3000 photo) can be
    segmented on a CPU (benchmarks/tiling.py).

    Static sizes (eager evaluation and prediction) loop in Python and accumulate in NumPy;
    dynamic sizes (inside an exported SavedModel) use a ``tf.while_loop``.
    """
    (tile_h, tile_w), overlap = options.tile_size, options.tile_overlap
    height, width = _spatial_size(images)
    if is_static(height) and is_static(width):
        if height <= tile_h and width <= tile_w:
            return _softmax(model, images)
        check_tiling(height, width, (tile_h, tile_w), overlap, _network_stride(model))
        total = count = None
        for top in tile_starts(height, tile_h, overlap):
            for left in tile_starts(width, tile_w, overlap):
                window = images[:, top : top + tile_h, left : left + tile_w, :]
                probabilities = ops.convert_to_numpy(_softmax(model, window))
                if total is None:
                    total = np.zeros(
                        (probabilities.shape[0], height, width, probabilities.shape[-1]), np.float32
                    )
                    count = np.zeros((1, height, width, 1), np.float32)
                rows, cols = probabilities.shape[1], probabilities.shape[2]
                total[:, top : top + rows, left : left + cols] += probabilities
                count[:, top : top + rows, left : left + cols] += 1.0
        # In place: an [N, H, W, C] float32 array is the largest thing here (1 GiB for a
        # 12-megapixel image and 21 classes); no second copy is made.
        total /= count
        return total
    return _tiled_dynamic(model, images, (tile_h, tile_w), overlap)


def _tiled_dynamic(model, images, tile, overlap):
    # backend-specific: only TensorFlow graphs have dynamic sizes (this module runs on JAX too)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    tops = _tile_starts_dynamic(height, tile[0], overlap)
    lefts = _tile_starts_dynamic(width, tile[1], overlap)
    num_left = tf.size(lefts)
    first = _softmax(model, images[:, : tile[0], : tile[1], :])
    classes = first.shape[-1]

    def place(probabilities, top, left):
        rows, cols = tf.shape(probabilities)[1], tf.shape(probabilities)[2]
        paddings = [[0, 0], [top, height - top - rows], [left, width - left - cols], [0, 0]]
        return (tf.pad(probabilities, paddings), tf.pad(tf.ones([1, rows, cols, 1]), paddings))

    total, count = place(first, 0, 0)

    def body(index, total, count):
        top, left = tops[index // num_left], lefts[index % num_left]
        window = images[:, top : top + tile[0], left : left + tile[1], :]
        probabilities, ones = place(_softmax(model, window), top, left)
        return index + 1, total + probabilities, count + ones

    _, total, count = tf.while_loop(
        lambda index, *_: index < tf.size(tops) * num_left,
        body,
        (tf.constant(1), total, count),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None, None, None, classes]),
            tf.TensorShape([1, None, None, 1]),
        ),
    )
    return total / count


def _one_pass(model, images, scale, flipped, options):
    """Probabilities [N, H, W, C] of one (scale, flip) pass, at the images' size (in windows
    when ``options.tile_size`` is set: :func:`tiled_probabilities`)."""
    size = _spatial_size(images)
    x = ops.flip(images, axis=2) if flipped else images
    if scale != 1.0:
        x = resize_bilinear(x, scaled_size(size[0], size[1], scale))
    if options.tile_size:
        probabilities = tiled_probabilities(model, x, options)
    else:
        probabilities = _softmax(model, x)
    probabilities = resize_bilinear(probabilities, size)
    return ops.flip(probabilities, axis=2) if flipped else probabilities


def _sum_passes(model, images, options, flipped):
    """Sum of the passes at ``options.scales``."""
    total = None
    for scale in options.scales:
        probabilities = _one_pass(model, images, scale, flipped, options)
        total = probabilities if total is None else total + probabilities
    return total


def pad_for_inference(images, pad_to, pad_value):
    """The authors' whole-image inference: normalized ``images`` [N, H, W, 3] padded at the
    bottom and right to at least ``pad_to`` (h, w) with the normalized ``pad_value`` (an RGB
    pixel). Returns (padded images, (H, W)) ; larger images are left as they are."""
    height, width = _spatial_size(images)
    target_h, target_w = (int(p) for p in pad_to)
    extra_h = ops.maximum(target_h - height, 0)
    extra_w = ops.maximum(target_w - width, 0)
    fill = normalize_image(ops.convert_to_tensor([[[list(pad_value)]]], dtype="float32"))
    shifted = images - fill
    padded = ops.pad(shifted, [[0, 0], [0, extra_h], [0, extra_w], [0, 0]]) + fill
    # real pixels unchanged to float rounding of (x - f) + f; exact where fill is 0
    return padded, (height, width)


def predict_probabilities(model, images, options=None, *, pad_value=None):
    """Class probabilities averaged over input scales and, optionally, left-right flips.

    Sec. 4.2: "averaging the probabilities from each scale"; with ``options.flip`` the flipped
    input of every scale is added to the average (``len(scales) * 2`` passes).

    Args:
      model: a Keras model (or callable accepting ``training=False``) mapping normalized
        images [N, h, w, 3] to logits [N, h', w', C], normally h' = h.
      images: normalized images [N, H, W, 3] (``deeplab.model.preprocessing.normalize_image``).
      options: :class:`~deeplab.common.inference_options.InferenceOptions` (default: one
        scale, no flip, whole images): ``scales`` and ``flip`` averaged; ``tile_size`` /
        ``tile_overlap``: every pass larger than the tile is segmented in overlapping windows
        (:func:`tiled_probabilities`); ``pad_to``: the authors' evaluation (their
        eval_crop_size, 513 on VOC): the image is padded at the bottom and right to at least
        h x w before every pass (so image pooling averages over the padding too), and the
        probabilities are cropped back. ``output_stride`` is the model's business (whoever
        built ``model`` used it).
      pad_value: the RGB pixel ``pad_to`` padding is made of (default: the model's
        ``preprocessing.pad_pixel(model.backbone)``, the mean pixel without one).

    Returns:
      float32 probabilities [N, H, W, C].
    """
    options = options or InferenceOptions()
    images = ops.convert_to_tensor(images, dtype="float32")
    if options.pad_to:
        if pad_value is None:
            pad_value = pad_pixel(getattr(model, "backbone", ""))
        padded, (height, width) = pad_for_inference(images, options.pad_to, pad_value)
        probabilities = predict_probabilities(model, padded, options.replace(pad_to=None))
        return probabilities[:, :height, :width]
    total = _sum_passes(model, images, options, flipped=False)
    count = len(options.scales)
    if options.flip:
        flipped_total = _sum_passes(model, images, options, flipped=True)
        total = total + flipped_total
        count *= 2
    return total if count == 1 else total / float(count)


__all__ = [
    "CITYSCAPES_TEST_SCALES",
    "InferenceOptions",
    "PAPER_EVAL_SCALES",
    "pad_for_inference",
    "predict_probabilities",
    "tile_starts",
    "tiled_probabilities",
    "tiling_work",
    "check_tiling",
]
