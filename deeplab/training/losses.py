"""Per-pixel softmax cross-entropy with an ignore label (Sec. 4.1), and label downsampling.

The training loss is the mean, over the pixels that are not ``ignore_label``, of the softmax
cross-entropy between the logits and the ground truth, optionally weighted per class:

    loss = sum_{valid p} class_weight[y_p] * (-log softmax(logits_p)[y_p]) / #valid pixels

This module gives the per-pixel terms and the valid mask (:func:`pixel_cross_entropy`,
:func:`focal_pixel_losses`); the training step (``deeplab.training.step``) sums them and divides
by ``max(#valid pixels, 1)``. The normalizer is the number of valid pixels (not the sum of the
class weights), so with all weights 1 this is the plain mean. A batch with no valid pixel (all
``ignore_label``, which happens with small crops of padded images) gives 0 and zero gradients,
not NaN (``max(count, 1)`` rather than a masked 0/0, whose gradient is NaN under JAX). Logits
are cast to float32 first, so a bfloat16/float16 model (mixed precision) still gets a float32
loss.

Everything is written in ``keras.ops`` and runs on the TensorFlow and JAX backends.

Table 8 ablation ("no upsampling of logits"): instead of upsampling logits to the label size, the
ground truth is downsampled to the logits' size with :func:`downsample_labels`, which picks
label values (nearest neighbour) and never interpolates them.
"""

from keras import ops

from deeplab.common.errors import ConfigError
from deeplab.evaluation.metrics import check_labels


def _squeeze_labels(labels):
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    return ops.cast(labels, "int32")


def pixel_cross_entropy(labels, logits, *, ignore_label=255, class_weights=None):
    """Per-pixel weighted cross-entropy and the valid-pixel mask, in float32.

    Args:
      labels: integer ground truth [N, H, W] or [N, H, W, 1], values in [0, C) or
        ``ignore_label`` (checked: see :func:`deeplab.evaluation.metrics.check_labels`).
      logits: [N, H, W, C] logits of any float dtype (cast to float32).
      ignore_label: label value that contributes nothing, or None.
      class_weights: optional sequence of C per-class loss weights.

    Returns:
      ``(losses, valid)``: float32 [N, H, W] tensors. ``losses`` is
      ``class_weight[label] * -log softmax(logits)[label]`` and exactly 0 at ignored pixels;
      ``valid`` is 1 where the label is not ``ignore_label``.
    """
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("the class axis of the logits must have a static size")
    labels = check_labels(_squeeze_labels(labels), num_classes, ignore_label)
    if ignore_label is None:
        valid = ops.ones_like(labels, dtype="bool")
    else:
        valid = ops.not_equal(labels, ignore_label)
    # Ignored pixels look up class 0 and are then zeroed; the loss stays finite everywhere, so
    # no NaN leaks into the gradients through the mask.
    safe_labels = ops.where(valid, labels, 0)
    log_probs = ops.log_softmax(logits, axis=-1)
    losses = -ops.squeeze(
        ops.take_along_axis(log_probs, ops.expand_dims(safe_labels, -1), axis=-1), axis=-1
    )
    if class_weights is not None:
        losses = losses * _pixel_weights(class_weights, safe_labels, num_classes)
    valid = ops.cast(valid, "float32")
    return losses * valid, valid


def _pixel_weights(class_weights, safe_labels, num_classes):
    """``class_weights[label]`` per pixel; one weight per class or a ConfigError."""
    weights = ops.convert_to_tensor(class_weights, dtype="float32")
    if weights.shape != (num_classes,):
        raise ConfigError(
            f"class_weights has shape {tuple(weights.shape)} but the logits have "
            f"{num_classes} classes; give one weight per class"
        )
    return ops.take(weights, safe_labels)


def focal_pixel_losses(labels, logits, *, gamma, ignore_label=255, class_weights=None):
    """Per-pixel focal loss (Lin et al. 2017) and the valid mask, float32 [N, H, W] each.

    ``class_weight[y] * (1 - p_y) ** gamma * -log p_y`` with ``p_y = softmax(logits)[y]``:
    well-classified pixels (p_y near 1) are down-weighted, hard ones keep their cross-entropy.
    ``gamma = 0`` is :func:`pixel_cross_entropy`. The class weights play the role of the
    paper's alpha. Ignored pixels are exactly 0.
    """
    losses, valid = pixel_cross_entropy(
        labels, logits, ignore_label=ignore_label, class_weights=None
    )
    if gamma:
        # -log p_y is the unweighted loss: p_y = exp(-loss). The modulating factor is part of
        # the gradient path, as in the paper.
        modulation = ops.power(ops.maximum(1.0 - ops.exp(-losses), 0.0), float(gamma))
        losses = losses * modulation
    if class_weights is not None:
        safe = ops.where(ops.cast(valid, "bool"), _squeeze_labels(labels), 0)
        losses = losses * _pixel_weights(class_weights, safe, logits.shape[-1])
    return losses * valid, valid


def hard_pixel_fraction(step, top_k_percent_pixels, warmup_steps):
    """Share of the pixels kept by hard-pixel mining at ``step`` (the authors' schedule).

    Starts at 1 (every pixel) and falls linearly to ``top_k_percent_pixels`` over
    ``warmup_steps`` (their ``hard_example_mining_step``); with no warm-up it is
    ``top_k_percent_pixels`` from the start.
    """
    top_k = ops.cast(top_k_percent_pixels, "float32")
    if not warmup_steps:
        return top_k
    ratio = ops.minimum(1.0, ops.cast(step, "float32") / float(warmup_steps))
    return ratio * top_k + (1.0 - ratio)


def hard_pixel_selection(pixel_losses, valid, fraction):
    """(sum, count) of the ``fraction`` hardest pixels of a batch (hard-pixel mining).

    The authors' ``top_k_percent_pixels``: the pixels of the whole batch are ranked by their
    (weighted) loss and only the top ``k = floor(fraction * #pixels)`` enter the loss; #pixels
    counts ignored pixels too (their loss is 0, so they rank last), as in their code. The
    caller divides the sum by the count of *valid* pixels among the selected (theirs counts
    non-zero losses: the same but for a valid pixel of loss exactly 0).

    Args:
      pixel_losses: float32 [N, H, W] weighted per-pixel losses, 0 at ignored pixels.
      valid: float32 [N, H, W] mask.
      fraction: scalar in (0, 1].

    Returns:
      (sum of the selected losses, number of valid pixels among them), float32 scalars.
    """
    flat_losses = ops.reshape(pixel_losses, (-1,))
    flat_valid = ops.reshape(valid, (-1,))
    num_pixels = ops.shape(flat_losses)[0]
    k = ops.maximum(ops.cast(ops.floor(fraction * ops.cast(num_pixels, "float32")), "int32"), 1)
    # Sort descending by loss; a full sort keeps k dynamic (top_k needs a static k under XLA).
    order = ops.flip(ops.argsort(flat_losses), axis=0)
    rank = ops.scatter(
        ops.expand_dims(order, -1), ops.arange(num_pixels, dtype="int32"), ops.shape(order)
    )
    selected = ops.cast(ops.less(rank, k), "float32")
    return ops.sum(flat_losses * selected), ops.sum(flat_valid * selected)


def labels_at_feature_centres(labels, stride):
    """The labels at the pixels a stride-``stride`` feature map is centred on (Table 8).

    For the "groundtruth downsampled" rows of Table 8 the loss is taken at feature resolution.
    Feature ``i`` of a stride-s map is centred on input pixel ``s * i`` (CONVENTIONS.md,
    "Geometry"), so its label is ``labels[s * i]``: ``labels[:, ::s, ::s]``, which has the
    feature map's size ``ceil(H / s)`` at every H (the authors' code takes the same pixels on its
    513 = 32 * 16 + 1 crops). Labels are copied, never interpolated.

    Args:
      labels: integer label maps [N, H, W] or [N, H, W, 1]; H, W may be dynamic.
      stride: the logits' output stride.

    Returns:
      labels of the same dtype and rank, spatial size (ceil(H / s), ceil(W / s)).
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) not in (3, 4):
        raise ValueError(f"labels must be [N, H, W] or [N, H, W, 1], got {labels.shape}")
    stride = int(stride)
    return labels[:, ::stride, ::stride]


__all__ = [
    "focal_pixel_losses",
    "hard_pixel_fraction",
    "hard_pixel_selection",
    "labels_at_feature_centres",
    "pixel_cross_entropy",
]
