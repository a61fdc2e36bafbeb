"""Evaluation on a whole split: mIOU, per-class IOU and pixel accuracy (Sec. 4, Tables 1-10, 12).

The paper reports "the mean intersection-over-union (mIOU) averaged across the classes" over the
whole split. IOU is not a per-image average, so one confusion matrix is accumulated over every
image of the split (ignore-label pixels excluded) and summarized at the end
(:mod:`deeplab.evaluation.metrics`).

Every image is evaluated whole, at its own size, with no cropping (Appendix C: "whole image
inference"), one image at a time. With several ``scales`` and/or ``flip`` the prediction is the
argmax of the softmax probabilities averaged over every scale and the flipped input, at the
original resolution (Sec. 4.2; :func:`deeplab.evaluation.inference.predict_probabilities`).
Evaluating at another output stride than the training one (Tables 4, 6, 10) is a matter of the model
passed in: :func:`evaluate_checkpoint` rebuilds the checkpoint's model at ``output_stride``.

    options = InferenceOptions(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    results = evaluate(model, input_pipeline.make_eval_dataset(d, "val"), num_classes=21,
                       ignore_label=255, options=options)
    print(format_results(results))

Library code: nothing here reads flags.
"""

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time

import numpy as np
import tensorflow as tf

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import input_pipeline
from deeplab.data import tfrecord
from deeplab.evaluation import inference
from deeplab.evaluation import metrics
from deeplab.logdir import checkpoints
from deeplab.model.preprocessing import pad_pixel

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
CONFUSION_MATRIX_NPY = "confusion_matrix.npy"
CONFUSION_MATRIX_CSV = "confusion_matrix.csv"


class Predictor:
    """Whole-image prediction of one image at a time, multi-scale and flip averaged (Sec. 4.2).

    The network's forward pass is one ``tf.function`` whose inputs have a dynamic height and
    width, traced once and reused for every image size and every (scale, flip) pass; the
    cheap glue of :func:`deeplab.evaluation.inference.predict_probabilities` (resizing, softmax,
    flips, averaging) runs eagerly around it. Tracing the whole multi-scale average instead would
    trace the network once per pass (12 times with 6 scales and flips). A model that cannot be
    traced with unknown image sizes runs eagerly, with a warning.

    Args:
      model: a Keras model from normalized images [N, h, w, 3] to logits [N, h, w, C]
        (:class:`deeplab.model.deeplabv3.DeepLabV3`, built at the evaluation output stride).
      options: :class:`~deeplab.common.inference_options.InferenceOptions`: scales and flips
        averaged, sliding windows, the authors' padding (``inference.predict_probabilities``;
        its ``output_stride`` is the model's, as built). Default: one scale, no flip.
    """

    def __init__(self, model, options=None):
        self.model = model
        self.options = options or InferenceOptions()
        self.pad_value = pad_pixel(getattr(model, "backbone", ""))
        # None: not tried yet; True: the dynamic-shape graph works; False: eager.
        self.graph_mode = None
        self._forward_graph = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )

    def _forward(self, images, training=False):
        del training  # always inference
        if self.graph_mode is not False:
            try:
                logits = self._forward_graph(images)
                self.graph_mode = True
                return logits
            except (TypeError, ValueError) as error:  # raised while tracing, not at run time
                if self.graph_mode:
                    raise
                log.warning(
                    "The model cannot be traced for images of unknown size (%s); "
                    "evaluating eagerly.",
                    _first_line(str(error)),
                )
                self.graph_mode = False
        return self.model(images, training=False)

    def _average(self, image):
        """[1, H, W, C] probabilities: a tensor, or the NumPy accumulator of tiled inference."""
        return inference.predict_probabilities(
            self._forward,
            _single_image(image)[tf.newaxis],
            self.options,
            pad_value=self.pad_value,
        )

    def probabilities(self, image):
        """Averaged class probabilities of one normalized image [H, W, 3]: float32 [H, W, C]."""
        return tf.convert_to_tensor(self._average(image))[0]

    def labels(self, image):
        """Predicted classes of one normalized image [H, W, 3]: int32 [H, W]."""
        probabilities = self._average(image)
        if isinstance(probabilities, np.ndarray):  # tiled: no [H, W, C] tensor copy
            return tf.convert_to_tensor(np.argmax(probabilities[0], axis=-1).astype(np.int32))
        return tf.argmax(probabilities[0], axis=-1, output_type=tf.int32)

    def confusion_matrix(self, image, label, num_classes, ignore_label):
        """Confusion matrix [C, C] (int64 numpy) of one image against its label [H, W].

        Raises:
          DataError: a label value that is neither a class index nor the ignore label.
        """
        label = tf.convert_to_tensor(label)
        if label.shape.rank == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        counts = metrics.confusion_matrix_update(
            tf.cast(label, tf.int32), self.labels(image), int(num_classes), ignore_label
        )
        return np.asarray(counts, np.int64)


def _single_image(image):
    image = tf.convert_to_tensor(image, dtype=tf.float32)
    if image.shape.rank == 4:
        if image.shape[0] != 1:
            raise ValueError(
                f"evaluation takes one image at a time, got a batch of shape {image.shape}"
            )
        image = image[0]
    if image.shape.rank != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one normalized RGB image [H, W, 3], got shape {image.shape}")
    return image


def _first_line(message):
    return message.strip().splitlines()[0] if message and message.strip() else "invalid label"


def _as_text(value):
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def evaluate(
    model,
    dataset,
    *,
    num_classes,
    ignore_label,
    options=None,
    limit=None,
    class_names=None,
    progress=None,
):
    """Evaluates ``model`` on every image of ``dataset``: one confusion matrix over the split.

    Args:
      model: a Keras model from normalized images [N, h, w, 3] to logits [N, h, w, C] (built at
        the evaluation output stride; see :func:`evaluate_checkpoint`).
      dataset: un-batched examples, each a dict with "image" (normalized float32 [H, W, 3]) and
        "label" (int32 [H, W]), and optionally "filename": the output of
        ``deeplab.data.input_pipeline.make_eval_dataset``, or any iterable of such dicts.
      num_classes: number of classes C (must equal the model's logits channels).
      ignore_label: label value excluded from the metric (255 on VOC and Cityscapes), or None.
      options: :class:`~deeplab.common.inference_options.InferenceOptions`: input scales and
        flips averaged (Sec. 4.2), windows, the authors' padding (:class:`Predictor`).
      limit: evaluate only the first ``limit`` images (None or 0: all).
      class_names: C names for the per-class table; default "class_<i>".
      progress: optional callable ``progress(num_images_done)`` called after every image.

    Returns:
      dict with
        "miou": mean IOU over the classes present in groundtruth or predictions, in [0, 1];
        "per_class_iou": {class name: IOU in [0, 1], NaN for a class absent from both};
        "pixel_accuracy": correctly classified non-ignored pixels / non-ignored pixels;
        "confusion_matrix": int64 [C, C], rows groundtruth, columns prediction;
        "num_images", "num_pixels" (non-ignored), "class_names", "scales", "flip",
        "seconds" (wall time).

    Raises:
      ConfigError: ``num_classes`` differs from the model's, or ``class_names`` has another length.
      DataError: a label value outside [0, C) that is not the ignore label (names the image).
    """
    num_classes = int(num_classes)
    model_classes = getattr(model, "num_classes", None)
    if model_classes is not None and int(model_classes) != num_classes:
        raise ConfigError(
            f"the model predicts {model_classes} classes but the dataset has "
            f"{num_classes}; check --num_classes and --dataset_dir"
        )
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise ConfigError(f"got {len(class_names)} class names for {num_classes} classes")
    predictor = Predictor(model, options)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    num_images = 0
    start = time.perf_counter()
    for example in dataset:
        if limit and num_images >= limit:
            break
        try:
            confusion += predictor.confusion_matrix(
                example["image"], example["label"], num_classes, ignore_label
            )
        except DataError as error:
            name = _as_text(example.get("filename", f"#{num_images}"))
            raise DataError(f"image {name!r} (example {num_images}): {error}") from error
        num_images += 1
        if progress is not None:
            progress(num_images)
    results = summarize(confusion, class_names)
    results.update(
        num_images=num_images,
        scales=list(predictor.options.scales),
        flip=predictor.options.flip,
        seconds=time.perf_counter() - start,
    )
    return results


def summarize(confusion, class_names=None):
    """mIOU, per-class IOU and pixel accuracy of an accumulated confusion matrix.

    Args:
      confusion: int [C, C], rows groundtruth, columns prediction.
      class_names: C names; default "class_<i>".

    Returns:
      dict with "miou", "per_class_iou", "pixel_accuracy", "confusion_matrix" (int64),
      "num_pixels" and "class_names" (see :func:`evaluate`).
    """
    confusion = np.asarray(confusion, np.int64)
    num_classes = confusion.shape[0]
    class_names = (
        list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    )
    iou = metrics.iou_per_class(confusion)
    return {
        "miou": metrics.mean_iou(confusion),
        "per_class_iou": {name: float(value) for name, value in zip(class_names, iou)},
        "pixel_accuracy": metrics.pixel_accuracy(confusion),
        "confusion_matrix": confusion,
        "num_pixels": int(confusion.sum()),
        "class_names": class_names,
    }


def evaluate_checkpoint(
    checkpoint,
    dataset_dir,
    *,
    split="val",
    num_classes=None,
    options=None,
    limit=None,
    progress=None,
    fuse_batch_norm=True,
):
    """Evaluates a training checkpoint on a dataset split (what ``deeplab.evaluate`` runs).

    The model is rebuilt from the model_config.json beside the checkpoint
    (:func:`deeplab.logdir.checkpoints.load_model`), at ``options.output_stride`` if given
    (train at 16, evaluate at 8: Tables 4, 6, 10), always with logits upsampled to the image: a
    model trained against downsampled groundtruth (Table 8) is still scored at full resolution.

    Args:
      checkpoint: a checkpoint prefix or a training logdir (its latest checkpoint).
      dataset_dir: dataset directory (shards + dataset.json) or a ``tfds:`` spec.
      split: split to evaluate.
      num_classes: expected number of classes; None or 0 takes dataset.json's. A value that
        disagrees with dataset.json or with the checkpoint is a ConfigError.
      options: :class:`~deeplab.common.inference_options.InferenceOptions`, as in
        :func:`evaluate`; its ``output_stride`` (None: the training one) builds the model.
      limit, progress: as in :func:`evaluate`.
      fuse_batch_norm: fold every BN into its convolution first (:mod:`deeplab.model.fuse`; the
        same logits to ~1e-5, faster); False evaluates the model as restored.

    Returns:
      the dict of :func:`evaluate` plus "checkpoint" (resolved prefix), "step", "output_stride",
      "train_output_stride", "split", "dataset_dir" and "dataset".

    Raises:
      UserError: missing checkpoint or dataset, wrong ``num_classes``, bad labels.
    """
    info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes or None)
    run = checkpoints.read_run_info(checkpoint)
    options = options or InferenceOptions()
    model = checkpoints.load_model(
        run["checkpoint"],
        output_stride=options.output_stride,
        num_classes=info["num_classes"],
        upsample_logits=True,
        fuse_batch_norm=fuse_batch_norm,
    )
    dataset = input_pipeline.make_eval_dataset(
        dataset_dir, split, num_classes=info["num_classes"], limit=limit or None
    )
    with input_pipeline.explain_data_errors(dataset_dir, split):
        results = evaluate(
            model,
            dataset,
            num_classes=info["num_classes"],
            ignore_label=info["ignore_label"],
            options=options,
            class_names=info["class_names"],
            progress=progress,
        )
    results.update(
        checkpoint=run["checkpoint"],
        step=run["step"],
        output_stride=int(model.output_stride),
        train_output_stride=int(run["model_config"]["output_stride"]),
        split=split,
        dataset_dir=os.fspath(dataset_dir),
        dataset=info["name"],
        tile_size=options.tile_size,
        tile_overlap=options.tile_overlap if options.tile_size else None,
        pad_to=list(options.pad_to) if options.pad_to else None,
    )
    return results


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What a checkpoint is evaluated on and how: :func:`evaluate_checkpoint`'s arguments
    other than the checkpoint, as one object (``deeplab.evaluate``, ``--watch``, the
    evaluator task and ``deeplab.train --eval_after_training`` pass it on whole).

    Attributes:
      dataset_dir: dataset directory (shards + dataset.json) or a ``tfds:`` spec.
      split: the split evaluated.
      num_classes: expected number of classes (None: dataset.json's).
      limit: evaluate only the first ``limit`` images (None: all).
      options: the :class:`~deeplab.common.inference_options.InferenceOptions`.
    """

    dataset_dir: str
    split: str = "val"
    num_classes: int = None
    limit: int = None
    options: InferenceOptions = InferenceOptions()

    @classmethod
    def from_config(cls, config, *, num_classes=None):
        """The settings of an ``ExperimentConfig``'s data and eval sections
        (``EvalConfig.evaluate_kwargs``)."""
        return cls(**config.eval.evaluate_kwargs(config.data, num_classes=num_classes))

    def run(self, checkpoint, *, progress=None):
        """:func:`evaluate_checkpoint` of ``checkpoint`` with these settings."""
        return evaluate_checkpoint(
            checkpoint,
            self.dataset_dir,
            split=self.split,
            num_classes=self.num_classes,
            options=self.options,
            limit=self.limit,
            progress=progress,
        )


def results_options(results):
    """The :class:`~deeplab.common.inference_options.InferenceOptions` a results dict of
    :func:`evaluate_checkpoint` (or its results.json) was evaluated with."""
    return InferenceOptions(
        scales=results["scales"],
        flip=results["flip"],
        tile_size=results.get("tile_size"),
        tile_overlap=0.25 if results.get("tile_overlap") is None else results["tile_overlap"],
        output_stride=results.get("output_stride"),
        pad_to=results.get("pad_to"),
    )


def results_tag(split, options):
    """A folder name for one evaluation setting, e.g. "val-os8-ms0.5_0.75_1_1.25_1.5_1.75-flip"
    (with "-tile513x513" when windows were used, "-pad513x513" when images were padded);
    ``options.output_stride`` is the stride the model ran at."""
    tag = f"{split}-os{options.output_stride}"
    if options.scales != (1.0,):
        tag += "-ms" + "_".join(f"{s:g}" for s in options.scales)
    tag += "-flip" if options.flip else ""
    if options.tile_size:
        tag += f"-tile{options.tile_size[0]}x{options.tile_size[1]}"
    if options.pad_to:
        tag += f"-pad{options.pad_to[0]}x{options.pad_to[1]}"
    return tag


def format_results(results):
    """The per-class IOU table, mIOU and pixel accuracy (percent) as printable text."""
    header = []
    if results.get("checkpoint"):
        header.append(
            f"checkpoint {results['checkpoint']} (step {results.get('step')}), "
            f"output stride {results.get('output_stride')}"
        )
    if results.get("split"):
        header.append(
            f"{results.get('dataset', '')} {results['split']}: "
            f"{results['num_images']} images, scales {results['scales']}, "
            f"flip {results['flip']}"
        )
    table = metrics.format_iou_table(results["confusion_matrix"], results["class_names"])
    return "\n".join(header + [table])


def _json_value(value):
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: an absent class's IOU is null
    return value


def write_results(results_dir, results):
    """Writes results.json, confusion_matrix.npy and confusion_matrix.csv into ``results_dir``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    In results.json IOUs are fractions in [0, 1] and an absent class's IOU is null; the
    confusion matrix is in the .npy (int64) and .csv (with class names) files.

    Returns:
      the path of results.json.
    """
    summary = {k: v for k, v in results.items() if k != "confusion_matrix"}
    summary["miou_percent"] = (
        round(100.0 * results["miou"], 2) if math.isfinite(results["miou"]) else None
    )
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(results["confusion_matrix"], np.int64))
    atomic_io.write_bytes(os.path.join(results_dir, CONFUSION_MATRIX_NPY), buffer.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["groundtruth \\ prediction"] + list(results["class_names"]))
    for name, row in zip(results["class_names"], np.asarray(results["confusion_matrix"])):
        writer.writerow([name] + [int(v) for v in row])
    atomic_io.write_text(os.path.join(results_dir, CONFUSION_MATRIX_CSV), text.getvalue())
    path = os.path.join(results_dir, RESULTS_FILE)
    atomic_io.write_json(path, _json_value(summary))
    log.debug("Wrote %s", path)
    return path


def read_results(results_dir):
    """Reads back what :func:`write_results` wrote (confusion matrix from the .npy file)."""
    with open(os.path.join(results_dir, RESULTS_FILE), encoding="utf-8") as f:
        results = json.load(f)
    results["confusion_matrix"] = np.load(os.path.join(results_dir, CONFUSION_MATRIX_NPY))
    results["per_class_iou"] = {
        k: float("nan") if v is None else v for k, v in results["per_class_iou"].items()
    }
    return results


__all__ = [
    "EvalSettings",
    "Predictor",
    "evaluate",
    "evaluate_checkpoint",
    "format_results",
    "read_results",
    "results_options",
    "results_tag",
    "summarize",
    "write_results",
]
