"""TensorBoard image summaries of a training run: a few fixed images, their labels and the
model's predictions, colorized with the dataset's palette."""

import numpy as np

from deeplab.data import input_pipeline
from deeplab.evaluation.visualization import colorize_labels
from deeplab.logdir import summaries


class ImageSummaries:
    """``count`` fixed images of the eval split (the training split when the dataset has no eval
    split), each one picture under its own tag ``images/<split>_<i>``: the input, its ground
    truth and the model's prediction side by side."""

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
        colors = (self.palette, self.ignore_label)
        for index, (example, prediction) in enumerate(zip(self.examples, predictions)):
            summaries.image(
                f"images/{self.split}_{index}",
                side_by_side(
                    example["raw_image"],
                    colorize_labels(example["label"], *colors),
                    colorize_labels(prediction, *colors),
                )[np.newaxis],
                step=step,
                max_outputs=1,
            )


def side_by_side(*pictures, gap=4):
    """uint8 RGB pictures [H, W_i, 3] of one height in a row, ``gap`` white pixels apart."""
    height = pictures[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = []
    for picture in pictures:
        row += [np.asarray(picture, np.uint8), spacer]
    return np.concatenate(row[:-1], axis=1)
