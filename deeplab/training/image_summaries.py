"""TensorBoard image summaries of a training run: a few fixed images, their labels and the
model's predictions, colorized with the dataset's palette."""

import numpy as np

from deeplab.data import input_pipeline
from deeplab.evaluation.visualization import colorize_labels
from deeplab.logdir import summaries


def padded_batch(arrays, fill):
    """Stacks arrays [H_i, W_i, ...] into one batch, padding to the largest size with ``fill``."""
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    out = np.full((len(arrays), height, width) + arrays[0].shape[2:], fill, arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


class ImageSummaries:
    """Input, ground truth and prediction of ``count`` images of the eval split (the training
    split when the dataset has no eval split)."""

    def __init__(self, data, eval_split, info, num_classes, count):
        self.palette = info["palette"]
        self.ignore_label = info["ignore_label"]
        splits = info.get("splits", {})
        split = eval_split if eval_split in splits else data.train_split
        dataset = input_pipeline.make_eval_dataset(
            data.dataset_dir, split, num_classes=num_classes, limit=count, verify=False
        )
        self.examples = [{k: v.numpy() for k, v in ex.items() if k != "filename"} for ex in dataset]
        self.split = split

    def write(self, model, step):
        if not self.examples:
            return
        predictions = []
        for example in self.examples:
            logits = model(example["image"][np.newaxis], training=False)
            predictions.append(np.argmax(np.asarray(logits)[0], axis=-1))
        images = padded_batch([e["raw_image"] for e in self.examples], 0)
        labels = padded_batch([e["label"] for e in self.examples], self.ignore_label)
        predictions = padded_batch(predictions, self.ignore_label)
        n = len(self.examples)
        colors = (self.palette, self.ignore_label)
        summaries.image(f"images/{self.split}_input", images, step=step, max_outputs=n)
        summaries.image(
            f"images/{self.split}_ground_truth",
            colorize_labels(labels, *colors),
            step=step,
            max_outputs=n,
        )
        summaries.image(
            f"images/{self.split}_prediction",
            colorize_labels(predictions, *colors),
            step=step,
            max_outputs=n,
        )
