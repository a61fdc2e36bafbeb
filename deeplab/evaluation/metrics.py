"""Semantic segmentation metrics: a streaming confusion matrix, per-class IOU and mIOU.

The paper reports "mean intersection-over-union (mIOU) averaged across the 21 classes"
(Sec. 4) over a whole split. IOU is not decomposable per image, so evaluation accumulates one
integer confusion matrix over the split and summarizes it at the end:

    cm = np.zeros([num_classes, num_classes], np.int64)
    for images, labels in dataset:                      # or a distributed tf.function step
        predictions = ops.argmax(predict_probabilities(model, images), axis=-1)
        cm += ops.convert_to_numpy(
            confusion_matrix_update(labels, predictions, num_classes, ignore_label))
    print(format_iou_table(cm, class_names))

Two halves:

* Tensor side (keras.ops, runs on TensorFlow and JAX, inside ``tf.function`` and ``jax.jit``):
  :func:`confusion_matrix_update` and :func:`check_labels`.
* Numpy side (summaries of a finished matrix): :func:`iou_per_class`, :func:`mean_iou`,
  :func:`pixel_accuracy`, :func:`format_iou_table`.

Convention everywhere: ``cm[i, j]`` counts pixels whose ground truth is class ``i`` (row) and
whose prediction is class ``j`` (column). Pixels labelled ``ignore_label`` are not counted.

Which classes enter the mean: a class's IOU is ``TP / (TP + FP + FN)``. A class absent from both
the ground truth and the predictions of the whole split has 0 / 0 and is left out of the mean
(its IOU is reported as NaN); a class that is only predicted (never in the ground truth) has IOU 0
and is kept. This is the usual VOC/Cityscapes evaluation rule and the one TensorFlow's
``tf.compat.v1.metrics.mean_iou`` (used by the original DeepLab evaluation) applies. On a full
VOC or Cityscapes val split every class is present, so the choice only matters on small subsets;
no "mean over all classes" variant is offered because 0/0 has no value to average.
"""

import keras
import numpy as np
from keras import ops

from deeplab.common.errors import DataError


def count_dtype():
    """The integer dtype used for pixel counts: int64, or int32 on JAX without ``jax_enable_x64``.

    int32 still holds 2.1e9 pixels per confusion-matrix cell, more than the whole VOC val
    (~2.7e8 pixels) or Cityscapes val (~1.0e9 pixels) split.
    """
    if keras.backend.backend() == "jax":
        import jax  # the JAX backend only

        if not jax.config.jax_enable_x64:
            return "int32"
    return "int64"


def _tracing_mode(x):
    """Returns "tf_graph", "jax_traced" or "eager" for a backend tensor."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # backend-specific: only the TensorFlow backend has tf

        return "eager" if tf.executing_eagerly() else "tf_graph"
    if backend == "jax":
        import jax  # the JAX backend only

        return "jax_traced" if isinstance(x, jax.core.Tracer) else "eager"
    return "eager"


def check_labels(labels, num_classes, ignore_label=255, *, name="labels"):
    """Checks that every value is a class index in [0, num_classes) or the ignore label.

    A label outside that range means the dataset and the ``num_classes`` / ``ignore_label``
    settings disagree (e.g. a VOC border value 255 with ``ignore_label=0``); counting it would
    silently shift the confusion matrix, so it is an error.

    * Eagerly (any backend): raises :class:`deeplab.common.errors.DataError` naming the bad values.
    * Inside a ``tf.function`` / ``tf.data`` graph (TensorFlow backend): adds a
      ``tf.debugging.Assert`` that fails the step with an ``InvalidArgumentError`` carrying the
      same message.
    * Inside ``jax.jit``: values cannot be inspected, so nothing is checked; callers
      (:func:`confusion_matrix_update`) then drop out-of-range pixels as if they were ignored.

    Args:
      labels: integer tensor of any shape.
      num_classes: number of classes C.
      ignore_label: the value that marks "do not count" pixels, or None if there is none.
      name: what ``labels`` are, for the error message ("labels", "predictions").

    Returns:
      ``labels`` (under a TF graph, an identity that depends on the assertion).
    """
    labels = ops.convert_to_tensor(labels)
    in_range = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes))
    if ignore_label is not None:
        in_range = ops.logical_or(in_range, ops.equal(labels, ignore_label))
    message = (
        f"{name} must be class indices in [0, {num_classes})"
        + (f" or the ignore label {ignore_label}" if ignore_label is not None else "")
        + "; check num_classes and ignore_label (dataset.json) against the label files"
    )
    mode = _tracing_mode(labels)
    if mode == "jax_traced":
        return labels
    if mode == "tf_graph":
        import tensorflow as tf  # backend-specific: only the TensorFlow backend has tf

        values = tf.reshape(tf.cast(labels, tf.int64), [-1])
        bad = tf.boolean_mask(values, tf.logical_not(tf.reshape(in_range, [-1])))
        assertion = tf.debugging.Assert(
            tf.reduce_all(in_range), [message + "; offending values:", bad], summarize=5
        )
        with tf.control_dependencies([assertion]):
            return tf.identity(labels)
    ok = ops.convert_to_numpy(in_range)
    if not ok.all():
        bad = np.unique(ops.convert_to_numpy(labels)[~ok])
        raise DataError(f"{message}; found {bad[:10].tolist()} in {int((~ok).sum())} pixels.")
    return labels


def confusion_matrix_update(labels, predictions, num_classes, ignore_label=255):
    """Confusion matrix of one batch, to be summed over a split (Sec. 4, mIOU).

    Built with a segment sum over ``label * C + prediction`` with a fixed number of segments,
    so it has a static [C, C] shape and works eagerly, in ``tf.function`` (including
    per-replica in a ``tf.distribute`` eval step; sum the replicas' matrices) and under
    ``jax.jit``.

    Args:
      labels: integer ground truth of any shape, e.g. [N, H, W] or [N, H, W, 1].
      predictions: integer predicted classes with the same number of elements (e.g. argmax of
        the logits).
      num_classes: number of classes C.
      ignore_label: label value excluded from the counts (255 on VOC), or None.

    Returns:
      [C, C] tensor of dtype :func:`count_dtype` (int64 unless JAX runs without x64):
      ``cm[i, j]`` = number of non-ignored pixels with ground truth i predicted as j.

    Raises:
      DataError: eagerly, when a label is outside [0, C) and not the ignore label, or a
        prediction is outside [0, C) (under ``tf.function`` an ``InvalidArgumentError``; see
        :func:`check_labels`).
      ValueError: when the static element counts of labels and predictions differ.
    """
    labels = ops.convert_to_tensor(labels)
    predictions = ops.convert_to_tensor(predictions)
    if None not in labels.shape and None not in predictions.shape:
        if int(np.prod(labels.shape)) != int(np.prod(predictions.shape)):
            raise ValueError(
                f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} "
                "must have the same number of pixels"
            )
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))
    labels = check_labels(labels, num_classes, ignore_label, name="labels")
    predictions = check_labels(predictions, num_classes, None, name="predictions")

    # Under jax.jit nothing was checked: out-of-range pixels fall into the dropped bin.
    valid = ops.logical_and(
        ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, num_classes)),
        ops.logical_and(ops.greater_equal(predictions, 0), ops.less(predictions, num_classes)),
    )
    dropped_bin = num_classes * num_classes
    index = ops.where(valid, labels * num_classes + predictions, dropped_bin)
    dtype = count_dtype()
    counts = ops.segment_sum(ops.ones_like(index, dtype=dtype), index, num_segments=dropped_bin + 1)
    return ops.reshape(counts[:dropped_bin], (num_classes, num_classes))


def _as_confusion_matrix(cm):
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square [C, C]; got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("a confusion matrix holds pixel counts; found negative entries")
    return cm.astype(np.float64)


def iou_per_class(cm):
    """Intersection over union of every class, ``TP / (TP + FP + FN)``.

    Args:
      cm: confusion matrix [C, C], rows = ground truth, columns = prediction.

    Returns:
      float64 array [C]; NaN for a class absent from both ground truth and predictions.
    """
    cm = _as_confusion_matrix(cm)
    true_positives = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - true_positives
    iou = np.full(cm.shape[0], np.nan)
    present = union > 0
    iou[present] = true_positives[present] / union[present]
    return iou


def mean_iou(cm):
    """Mean IOU over the classes present in the ground truth or the predictions (Sec. 4).

    See the module docstring for why classes absent from both are left out.

    Args:
      cm: confusion matrix [C, C], rows = ground truth, columns = prediction.

    Returns:
      mIOU as a float in [0, 1]; NaN if the matrix is all zeros.
    """
    iou = iou_per_class(cm)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")


def pixel_accuracy(cm):
    """Fraction of non-ignored pixels classified correctly: ``trace(cm) / sum(cm)``.

    Args:
      cm: confusion matrix [C, C].

    Returns:
      a float in [0, 1]; NaN if the matrix is all zeros.
    """
    cm = _as_confusion_matrix(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def format_iou_table(cm, class_names=None):
    """A printable per-class IOU table followed by mIOU and pixel accuracy, in percent.

    Args:
      cm: confusion matrix [C, C], rows = ground truth, columns = prediction.
      class_names: C names in class-index order; defaults to "class_<i>".

    Returns:
      a multi-line string. Classes absent from ground truth and predictions show "absent"
      and are not in the mean.
    """
    cm_float = _as_confusion_matrix(cm)
    num_classes = cm_float.shape[0]
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    class_names = list(class_names)
    if len(class_names) != num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for a {num_classes}-class confusion matrix"
        )
    iou = iou_per_class(cm_float)
    name_width = max([len("class")] + [len(str(n)) for n in class_names])
    header = (
        f"{'id':>3}  {'class':<{name_width}}  {'IOU %':>7}  {'GT pixels':>12}  {'pred pixels':>12}"
    )
    lines = [header, "-" * len(header)]
    gt_pixels = cm_float.sum(axis=1)
    pred_pixels = cm_float.sum(axis=0)
    for i, name in enumerate(class_names):
        value = "absent" if np.isnan(iou[i]) else f"{100 * iou[i]:.2f}"
        lines.append(
            f"{i:>3}  {str(name):<{name_width}}  {value:>7}  {int(gt_pixels[i]):>12d}  "
            f"{int(pred_pixels[i]):>12d}"
        )
    present = int((~np.isnan(iou)).sum())
    lines.append("-" * len(header))
    lines.append(
        f"mIOU over {present}/{num_classes} present classes: {100 * mean_iou(cm_float):.2f}%"
    )
    lines.append(f"pixel accuracy: {100 * pixel_accuracy(cm_float):.2f}%")
    return "\n".join(lines)


__all__ = [
    "check_labels",
    "confusion_matrix_update",
    "count_dtype",
    "format_iou_table",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
]
