"""Tests for deeplab.evaluation.metrics: confusion matrix, IOU, mIOU.

Expected values come from per-pixel loops and boolean masks written here, never from the
module under test.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.common.errors import DataError
from deeplab.evaluation import metrics

IGNORE = 255


def _random_batch(seed, shape=(3, 11, 13), num_classes=5, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape).astype(np.int32)
    labels[rng.random(shape) < ignore_fraction] = IGNORE
    predictions = rng.integers(0, num_classes, size=shape).astype(np.int32)
    return labels, predictions


def _loop_confusion_matrix(labels, predictions, num_classes):
    cm = np.zeros((num_classes, num_classes), np.int64)
    for gt, pred in zip(labels.ravel().tolist(), predictions.ravel().tolist()):
        if gt != IGNORE:
            cm[gt, pred] += 1
    return cm


def _mask_iou(labels, predictions, c):
    valid = labels != IGNORE
    inter = np.sum((labels == c) & (predictions == c) & valid)
    union = np.sum(((labels == c) | (predictions == c)) & valid)
    return inter, union


def test_confusion_matrix_matches_pixel_loop():
    labels, predictions = _random_batch(0)
    cm = metrics.confusion_matrix_update(labels, predictions, 5, IGNORE)
    assert tuple(cm.shape) == (5, 5)
    assert keras.backend.standardize_dtype(cm.dtype) == "int64"
    expected = _loop_confusion_matrix(labels, predictions, 5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cm), expected)
    assert expected.sum() == np.sum(labels != IGNORE)  # the ignored pixels really were dropped


def test_hand_computed_example():
    labels = np.array([[0, 0, 1], [1, IGNORE, 2]])
    predictions = np.array([[0, 1, 1], [2, 0, 2]])
    cm = keras.ops.convert_to_numpy(metrics.confusion_matrix_update(labels, predictions, 3))
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(metrics.iou_per_class(cm), [1 / 2, 1 / 3, 1 / 2])
    assert metrics.mean_iou(cm) == pytest.approx(4 / 9)
    assert metrics.pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_streaming_sum_over_batches_and_iou_from_masks():
    num_classes = 6  # class 5 never occurs anywhere: excluded from the mean
    batches = [_random_batch(seed, num_classes=5) for seed in range(1, 4)]
    # Class 4 appears only in predictions: IOU 0, and it counts in the mean.
    batches = [(np.where(l == 4, 3, l), p) for l, p in batches]
    total = np.zeros((num_classes, num_classes), np.int64)
    for labels, predictions in batches:
        total += keras.ops.convert_to_numpy(
            metrics.confusion_matrix_update(labels, predictions, num_classes, IGNORE)
        )
    all_labels = np.concatenate([b[0] for b in batches])
    all_predictions = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(total, _loop_confusion_matrix(all_labels, all_predictions, 6))

    expected = []
    for c in range(num_classes):
        inter, union = _mask_iou(all_labels, all_predictions, c)
        expected.append(inter / union if union else np.nan)
    iou = metrics.iou_per_class(total)
    np.testing.assert_allclose(iou, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(iou[5]) and iou[4] == 0.0
    assert metrics.mean_iou(total) == pytest.approx(np.mean(expected[:5]), rel=1e-12)
    valid = all_labels != IGNORE
    assert metrics.pixel_accuracy(total) == pytest.approx(
        np.sum((all_labels == all_predictions) & valid) / np.sum(valid), rel=1e-12
    )


def test_empty_matrix_gives_nan():
    cm = np.zeros((3, 3), np.int64)
    assert np.isnan(metrics.mean_iou(cm)) and np.isnan(metrics.pixel_accuracy(cm))
    assert np.isnan(metrics.iou_per_class(cm)).all()


def test_out_of_range_label_raises_eagerly():
    labels = np.array([[0, 7, IGNORE]])
    predictions = np.array([[0, 1, 1]])
    with pytest.raises(DataError, match=r"\[0, 5\).*\[7\]"):
        metrics.confusion_matrix_update(labels, predictions, 5, IGNORE)
    # Without an ignore label, 255 is out of range too.
    with pytest.raises(DataError):
        metrics.confusion_matrix_update(np.array([[0, IGNORE]]), np.array([[0, 0]]), 5, None)
    with pytest.raises(DataError, match="predictions"):
        metrics.confusion_matrix_update(np.array([[0, 1]]), np.array([[0, 5]]), 5)
    with pytest.raises(ValueError, match="same number of pixels"):
        metrics.confusion_matrix_update(np.zeros((2, 3)), np.zeros((2, 4)), 5)


def test_inside_tf_function_with_dynamic_shape():
    spec = tf.TensorSpec([None, None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def step(labels, predictions):
        return metrics.confusion_matrix_update(labels, predictions, 5, IGNORE)

    for seed, shape in [(5, (2, 7, 9)), (6, (1, 4, 3))]:
        labels, predictions = _random_batch(seed, shape)
        np.testing.assert_array_equal(
            step(labels, predictions).numpy(), _loop_confusion_matrix(labels, predictions, 5)
        )
    bad = np.array([[[0, 9]]], np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class indices in"):
        step(bad, np.zeros_like(bad))


def test_format_iou_table():
    labels = np.array([[0, 0, 1], [1, IGNORE, 1]])
    predictions = np.array([[0, 1, 1], [1, 0, 1]])
    cm = keras.ops.convert_to_numpy(metrics.confusion_matrix_update(labels, predictions, 3))
    table = metrics.format_iou_table(cm, ["background", "cat", "dog"])
    lines = table.splitlines()
    # background: TP 1, GT 2, pred 1 -> 50.00; cat: TP 3, GT 3, pred 4 -> 75.00; dog absent.
    assert lines[2].split() == ["0", "background", "50.00", "2", "1"]
    assert lines[3].split() == ["1", "cat", "75.00", "3", "4"]
    assert lines[4].split() == ["2", "dog", "absent", "0", "0"]
    assert "mIOU over 2/3 present classes: 62.50" in table
    assert "pixel accuracy: 80.00" in table
    with pytest.raises(ValueError, match="2 class names"):
        metrics.format_iou_table(cm, ["a", "b"])


# The JAX-backend run of this module is part of test_inference.py::test_jax_backend_in_subprocess
# (one subprocess for all four modules keeps the suite fast).
