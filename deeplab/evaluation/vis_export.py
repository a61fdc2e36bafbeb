"""Colour PNGs, overlays, panels and evaluation-server files of a checkpoint's predictions.

:func:`visualize` predicts the images of a split of a dataset (with groundtruth) or of a glob of
raw image files (the test sets: no groundtruth) with the evaluation settings (an
``InferenceOptions``: output stride, scales, flip, tiles; Sec. 4.2), and writes for the first
``vis_num_images`` images ``<name>_prediction.png``, ``<name>_overlay.png``,
``<name>_groundtruth.png`` and ``<name>_panel.png`` and, with ``save_raw_predictions``, every
prediction in the format of the dataset's evaluation server
(:func:`deeplab.evaluation.visualization.save_raw_prediction`).
``python -m deeplab.visualize`` and ``deeplab.reproduce`` (test-set rows) run it.
"""

import glob
import logging
import os
import time

import numpy as np

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import datasets_info
from deeplab.data import images
from deeplab.data import input_pipeline
from deeplab.data import tfrecord
from deeplab.evaluation import evaluator
from deeplab.evaluation import metrics
from deeplab.evaluation import visualization
from deeplab.logdir import checkpoints
from deeplab.model.preprocessing import normalize_image

log = logging.getLogger(__name__)


def _list_input_images(pattern, list_file):
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise DataError(f"--vis_images={pattern}: no file matches")
    if list_file:
        try:
            with open(list_file, encoding="utf-8") as f:
                wanted = [line.split()[0] for line in f if line.strip()]
        except OSError as error:
            raise DataError(
                f"--vis_image_list={list_file}: cannot read it ({error.strerror})"
            ) from error
        by_name = {}
        for path in paths:
            by_name.setdefault(os.path.splitext(os.path.basename(path))[0], path)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise DataError(
                f"--vis_image_list={list_file}: {len(missing)} listed images are not "
                f"among --vis_images (e.g. {missing[0]}); check both paths"
            )
        paths = [by_name[name] for name in wanted]
    return paths


def _raw_image_examples(paths):
    """Examples with "raw_image" uint8 [H, W, 3], "image" normalized, "filename"; no label."""
    for path in paths:
        rgb, note = images.read_rgb(path)  # the rules of every binary; ImageError is one line
        if note:
            log.info("note: %s", note)
        yield {
            "raw_image": rgb,
            "image": normalize_image(rgb),
            "filename": os.path.splitext(os.path.basename(path))[0],
        }


def _as_text(value):
    value = value.numpy() if hasattr(value, "numpy") else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _safe_name(name, index):
    name = os.path.basename(name.strip()) or f"image_{index:05d}"
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def _source(run, *, dataset_dir, split, input_images, input_list, num_classes):
    """(dataset info, examples, source name) of what :func:`visualize` predicts."""
    if input_images:
        info = run["dataset_info"]
        if info is None:
            if not dataset_dir:
                raise ConfigError(
                    f"{run['logdir']} has no dataset_info.json: pass --dataset_dir "
                    "so that class names and palette are known"
                )
            info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes or None)
        return info, _raw_image_examples(_list_input_images(input_images, input_list)), "images"
    if not dataset_dir:
        raise ConfigError("pass --dataset_dir (with --eval_split) or --vis_images")
    info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes or None)
    examples = input_pipeline.make_eval_dataset(dataset_dir, split, num_classes=info["num_classes"])
    return info, examples, split


def _write_pictures(vis_dir, name, example, prediction, info, palette, alpha):
    """``<name>_prediction.png``, ``_overlay.png``, ``_panel.png`` and, with a label,
    ``_groundtruth.png``."""
    ignore_label = info.get("ignore_label", 255)
    raw = np.asarray(example["raw_image"], np.uint8)
    colored = visualization.colorize_labels(prediction, palette, ignore_label)
    visualization.save_rgb_png(os.path.join(vis_dir, f"{name}_prediction.png"), colored)
    visualization.save_rgb_png(
        os.path.join(vis_dir, f"{name}_overlay.png"), visualization.overlay(raw, colored, alpha)
    )
    label = None
    title = name
    if "label" in example:
        label = np.asarray(example["label"], np.int32)
        visualization.save_rgb_png(
            os.path.join(vis_dir, f"{name}_groundtruth.png"),
            visualization.colorize_labels(label, palette, ignore_label),
        )
        cm = metrics.confusion_matrix_update(label, prediction, info["num_classes"], ignore_label)
        title = f"{name}: mIOU {100 * metrics.mean_iou(np.asarray(cm)):.2f}%"
    visualization.save_rgb_png(
        os.path.join(vis_dir, f"{name}_panel.png"),
        visualization.panel(
            raw,
            prediction,
            palette,
            label=label,
            class_names=info.get("class_names"),
            ignore_label=ignore_label,
            title=title,
            alpha=alpha,
        ),
    )


def visualize(
    checkpoint,
    *,
    vis_dir=None,
    dataset_dir=None,
    split="val",
    input_images=None,
    input_list=None,
    num_classes=None,
    options=None,
    limit=None,
    vis_num_images=20,
    save_raw_predictions=False,
    competition="comp6",
    alpha=0.5,
):
    """Writes colour PNGs, panels and (optionally) server-format predictions for a checkpoint.

    Args:
      checkpoint: checkpoint prefix or training logdir.
      vis_dir: output folder (default ``<checkpoint folder>/vis/<split or "images">``).
      dataset_dir: dataset with ``split`` (used unless ``input_images`` is given; its
        dataset.json gives class names and palette).
      split: split to visualize.
      input_images: glob of raw images (no groundtruth); class names and palette then come from
        the checkpoint's dataset_info.json.
      input_list: optional list file of image names to keep (first word per line).
      num_classes: expected classes (None: the dataset's).
      options: the :class:`~deeplab.common.inference_options.InferenceOptions` (output stride,
        scales, flip, windows, padding; Sec. 4.2). Default: one scale, no flip, whole images.
      limit: stop after this many images (None: all of them when saving raw predictions,
        else ``vis_num_images``).
      vis_num_images: images that get colour PNGs and a panel.
      save_raw_predictions: write every prediction in the evaluation server's format.
      competition: VOC "comp5" or "comp6".
      alpha: overlay opacity.

    Returns:
      dict with "vis_dir", "num_images", "num_raw" (server files written), "server_format".
    """
    options = options or InferenceOptions()
    run = checkpoints.read_run_info(checkpoint)
    info, examples, source = _source(
        run,
        dataset_dir=dataset_dir,
        split=split,
        input_images=input_images,
        input_list=input_list,
        num_classes=num_classes,
    )
    model = checkpoints.load_model(
        run["checkpoint"],
        output_stride=options.output_stride,
        num_classes=info["num_classes"],
        upsample_logits=True,
    )
    predictor = evaluator.Predictor(model, options)
    vis_dir = vis_dir or os.path.join(run["logdir"], "vis", source)
    atomic_io.ensure_folder(vis_dir, "--vis_dir")
    palette = info.get("palette") or [list(c) for c in datasets_info.color_map(info["num_classes"])]
    kind = visualization.server_format(info.get("name"))
    if limit is None:
        limit = None if save_raw_predictions else vis_num_images
    count = num_raw = 0
    start = time.time()
    for example in examples:
        if limit is not None and count >= limit:
            break
        name = _safe_name(_as_text(example["filename"]), count)
        prediction = predictor.labels(example["image"]).numpy().astype(np.int32)
        if count < vis_num_images:
            _write_pictures(vis_dir, name, example, prediction, info, palette, alpha)
        if save_raw_predictions:
            visualization.save_raw_prediction(
                vis_dir,
                name,
                prediction,
                dataset_name=info.get("name"),
                palette=palette,
                competition=competition,
            )
            num_raw += 1
        count += 1
        if count % 100 == 0:
            log.debug("%d images (%.0f s)", count, time.time() - start)
    return {"vis_dir": vis_dir, "num_images": count, "num_raw": num_raw, "server_format": kind}
