"""Per-class pixel counts of a split's labels, and loss weights computed from them.

``--class_weights`` takes a list of numbers (one per class) or the name of a rule; the trainer
resolves a rule once at the start of a run, from one pass over the training split's labels
(:func:`count_split`: label PNGs only, decoded as the input pipeline decodes them), prints the
weights and records them in the run's config.json. Both rules start from SegNet's class
frequency (Badrinarayanan et al. 2017, Sec. 3.4 / Eigen & Fergus 2015)::

    freq(c) = pixels of class c / all pixels of the images in which c appears

(the denominator counts every pixel of those images, ignored ones included, as SegNet's
definition says; with it the rule reproduces, to the third decimal, the CamVid weights
``experiments/camvid.flags`` had copied by hand), over the classes that occur in the split:

``median_frequency``
    ``w(c) = median(freq) / freq(c)``: the median class weighs 1, a class ten times rarer 10.
    SegNet's CamVid recipe; strong: on a fine-tuned model it made the rare classes
    over-predicted (experiments/RESULTS.md, issue 21).
``inverse_sqrt``
    ``w(c) = sqrt(median(freq) / freq(c))`` = ``1 / sqrt(freq(c))`` scaled so that the median
    class weighs 1: the square root of ``median_frequency``, so the same order of classes with
    a tenth as rare class weighing ~3.2 instead of 10.

A class that never occurs in the split gets weight 1 (no pixel of the split is labelled with
it, so its weight changes nothing there); :func:`compute_weights` reports it.
"""

import dataclasses

import numpy as np

from deeplab.common.errors import ConfigError, DataError
from deeplab.data import tfrecord

RULES = ("median_frequency", "inverse_sqrt")


@dataclasses.dataclass
class ClassCounts:
    """Pixel statistics of one split's labels.

    Attributes:
      pixels: int64 [num_classes], pixels of each class.
      image_pixels: int64 [num_classes], all pixels (ignored ones included) of the images in
        which the class appears (SegNet's denominator).
      images: int64 [num_classes], images in which the class appears.
      num_images: images counted.
      ignored: pixels with the ignore label.
      beyond: {value: pixels} of values outside [0, num_classes) that are not the ignore label.
    """

    pixels: np.ndarray
    image_pixels: np.ndarray
    images: np.ndarray
    num_images: int = 0
    ignored: int = 0
    beyond: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def empty(cls, num_classes):
        zeros = np.zeros(num_classes, np.int64)
        return cls(zeros.copy(), zeros.copy(), zeros.copy())

    def add(self, histogram, ignore_label):
        """Adds one label's 256-bin value histogram."""
        histogram = np.asarray(histogram, np.int64)
        num_classes = len(self.pixels)
        inside = histogram[:num_classes]
        present = inside > 0
        self.pixels += inside
        self.image_pixels += np.where(present, histogram.sum(), 0)
        self.images += present
        self.num_images += 1
        self.ignored += int(histogram[ignore_label]) if ignore_label < len(histogram) else 0
        for value in np.nonzero(histogram[num_classes:])[0] + num_classes:
            if value != ignore_label:
                self.beyond[int(value)] = self.beyond.get(int(value), 0) + int(histogram[value])

    def frequencies(self):
        """SegNet's freq(c) (NaN for classes that do not occur)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pixels > 0, self.pixels / np.maximum(self.image_pixels, 1), np.nan)


def median_frequency_weights(counts):
    """``median(freq) / freq(c)`` (see the module docstring); 1 for absent classes."""
    freq = counts.frequencies()
    present = ~np.isnan(freq)
    if not present.any():
        raise DataError("no labelled pixel of any class: class weights cannot be computed")
    median = float(np.median(freq[present]))
    return np.where(present, median / np.where(present, freq, 1.0), 1.0)


def inverse_sqrt_weights(counts):
    """``sqrt(median(freq) / freq(c))``: 1 / sqrt(freq) with the median class at 1."""
    return np.sqrt(median_frequency_weights(counts))


def compute_weights(rule, counts):
    """The weights of ``rule`` ("median_frequency" | "inverse_sqrt") as a tuple of floats
    (rounded to 6 digits), and a note naming the absent classes (or None)."""
    if rule == "median_frequency":
        weights = median_frequency_weights(counts)
    elif rule == "inverse_sqrt":
        weights = inverse_sqrt_weights(counts)
    else:
        raise ConfigError(
            f"--class_weights={rule}: not a rule; use one of {', '.join(RULES)} "
            "or one number per class"
        )
    absent = [int(c) for c in np.nonzero(counts.pixels == 0)[0]]
    note = f"class(es) {absent} never occur: weight 1" if absent else None
    return tuple(round(float(w), 6) for w in weights), note


def label_histograms(dataset_dir, split):
    """Yields the 256-bin value histogram of every label of a converted split, decoded as the
    input pipeline decodes it (``records.decode_label``)."""
    # TensorFlow: only the passes over records need it (the rules above are plain numpy)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    # records imports TensorFlow at module level: imported with it
    from deeplab.data import records  # pylint: disable=import-outside-toplevel

    paths = tfrecord.list_shards(dataset_dir, split)

    def histogram(serialized):
        label = records.decode_label(records.parse_example(serialized)["label_encoded"])
        return tf.math.bincount(
            tf.reshape(label, [-1]), minlength=256, maxlength=256, dtype=tf.int64
        )

    dataset = tf.data.TFRecordDataset(paths).map(histogram, num_parallel_calls=tf.data.AUTOTUNE)
    yield from dataset.as_numpy_iterator()


def count_split(dataset_dir, split, num_classes, ignore_label):
    """:class:`ClassCounts` of a converted split (one pass over its label PNGs)."""
    counts = ClassCounts.empty(num_classes)
    for histogram in label_histograms(dataset_dir, split):
        counts.add(histogram, ignore_label)
    return counts


def is_rule(values):
    """Whether a ``--class_weights`` value names a rule (one string of :data:`RULES`)."""
    return len(values) == 1 and isinstance(values[0], str) and values[0] in RULES


__all__ = [
    "RULES",
    "ClassCounts",
    "median_frequency_weights",
    "inverse_sqrt_weights",
    "compute_weights",
    "label_histograms",
    "count_split",
    "is_rule",
]
