r"""Colorized predictions, overlays, panels and evaluation-server files: ``python -m deeplab.visualize``.

    python -m deeplab.visualize --flagfile=experiments/table5.flags --vis_num_images=20
    # Table 7: the VOC test images, in the layout of the VOC evaluation server
    python -m deeplab.visualize --flagfile=experiments/table7.flags --save_raw_predictions \
        --vis_images='raw/VOCdevkit/VOC2012/JPEGImages/*.jpg' \
        --vis_image_list=raw/VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt
    # Table 13: the Cityscapes test images, as label ids for the Cityscapes server
    python -m deeplab.visualize --flagfile=experiments/table13.flags --save_raw_predictions \
        --vis_images='raw/cityscapes/leftImg8bit/test/*/*_leftImg8bit.png'

Images come from --eval_split of --dataset_dir (with groundtruth), or from --vis_images
(a glob of raw RGB files, optionally filtered by the ids of --vis_image_list; no groundtruth: the
test sets). Predictions use the evaluation settings: --eval_output_stride, --eval_scales and
--eval_flip (softmax probabilities averaged over scales and flips at the original resolution,
Sec. 4.2), whole images at their own size (Appendix C).

For the first --vis_num_images images, --vis_dir receives ``<name>_prediction.png`` (colours of
the dataset's palette: PASCAL, Cityscapes, CamVid, ...), ``<name>_overlay.png``,
``<name>_groundtruth.png`` and ``<name>_panel.png`` (image x groundtruth x prediction x overlay).
With --save_raw_predictions every image's prediction is also written in the format of the
dataset's evaluation server (``deeplab.evaluation.visualization.save_raw_prediction``):
``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` for PASCAL VOC (Table 7),
``cityscapes_results/<city>_<seq>_<frame>_pred_labelIds.png`` for Cityscapes (Table 13), and
``raw/<name>.png`` index PNGs otherwise.
"""

from deeplab import _console  # noqa: E402  (first: before anything imports TensorFlow)

_console.quiet_tensorflow()

import glob
import os
import sys
import time

from absl import app, flags, logging

from deeplab.common import atomic_io
from deeplab.config import flags as experiment_flags
from deeplab.common.errors import ConfigError, DataError, UserError

FLAGS = flags.FLAGS
# --help lists the shared experiment flags this binary reads, not only its own.
flags.adopt_module_key_flags(experiment_flags)
flags.DEFINE_string("vis_dir", None, "Output folder; default <checkpoint folder>/vis/<split>.")
flags.DEFINE_integer("vis_num_images", 20,
                     "Images that get colour PNGs and a panel (0: none, e.g. only the raw "
                     "predictions).")
flags.DEFINE_boolean("save_raw_predictions", False,
                     "Also write every image's prediction in its evaluation server's format "
                     "(VOC: comp6_test_cls index PNGs; Cityscapes: *_pred_labelIds.png).")
flags.DEFINE_string("vis_images", None,
                    "Glob of raw RGB images to predict instead of --eval_split (test sets have "
                    "no groundtruth).")
flags.DEFINE_string("vis_image_list", None,
                    "With --vis_images: keep only images whose name (file stem) is the first "
                    "word of a line of this file (e.g. VOC ImageSets/Segmentation/test.txt).")
flags.DEFINE_enum("voc_competition", "comp6", ["comp5", "comp6"],
                  "VOC results folder: comp5 = VOC training data only, comp6 = other data too "
                  "(ImageNet/COCO pretraining).")
flags.DEFINE_float("vis_overlay_alpha", 0.5, "Opacity of the prediction in overlays.")


def _list_input_images(pattern, list_file):
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise DataError(f"--vis_images={pattern}: no file matches")
    if list_file:
        try:
            with open(list_file, encoding="utf-8") as f:
                wanted = [line.split()[0] for line in f if line.strip()]
        except OSError as error:
            raise DataError(f"--vis_image_list={list_file}: cannot read it ({error.strerror})") from error
        by_name = {}
        for path in paths:
            by_name.setdefault(os.path.splitext(os.path.basename(path))[0], path)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise DataError(f"--vis_image_list={list_file}: {len(missing)} listed images are not among "
                            f"--vis_images (e.g. {missing[0]}); check both paths")
        paths = [by_name[name] for name in wanted]
    return paths


def _raw_image_examples(paths):
    """Examples with "raw_image" uint8 [H, W, 3], "image" normalized, "filename"; no label."""
    from deeplab.data import images  # pylint: disable=import-outside-toplevel
    from deeplab.model.preprocessing import normalize_image  # pylint: disable=import-outside-toplevel

    for path in paths:
        rgb, note = images.read_rgb(path)  # the rules of every binary; ImageError is one line
        if note:
            print(f"note: {note}", flush=True)
        yield {"raw_image": rgb, "image": normalize_image(rgb),
               "filename": os.path.splitext(os.path.basename(path))[0]}


def _as_text(value):
    value = value.numpy() if hasattr(value, "numpy") else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _safe_name(name, index):
    name = os.path.basename(name.strip()) or f"image_{index:05d}"
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def visualize(checkpoint, *, vis_dir=None, dataset_dir=None, split="val", input_images=None,
              input_list=None, num_classes=None, output_stride=None, scales=(1.0,), flip=False,
              limit=None, vis_num_images=20, save_raw_predictions=False, competition="comp6",
              alpha=0.5, tile_size=None, tile_overlap=0.25):
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
      output_stride, scales, flip: evaluation settings (Sec. 4.2).
      limit: stop after this many images (None: all of them when saving raw predictions,
        else ``vis_num_images``).
      vis_num_images: images that get colour PNGs and a panel.
      save_raw_predictions: write every prediction in the evaluation server's format.
      competition: VOC "comp5" or "comp6".
      alpha: overlay opacity.

    Returns:
      dict with "vis_dir", "num_images", "num_raw" (server files written), "server_format".
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    # pylint: disable=import-outside-toplevel
    from deeplab.training import checkpoints
    from deeplab.evaluation import evaluator as evaluation
    from deeplab.data import input_pipeline
    from deeplab.evaluation import metrics
    from deeplab.data import tfrecord
    from deeplab.evaluation import visualization

    run = checkpoints.read_run_info(checkpoint)
    if input_images:
        info = run["dataset_info"]
        if info is None:
            if not dataset_dir:
                raise ConfigError(f"{run['logdir']} has no dataset_info.json: pass --dataset_dir "
                                  "so that class names and palette are known")
            info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes or None)
        examples = _raw_image_examples(_list_input_images(input_images, input_list))
        source = "images"
    else:
        if not dataset_dir:
            raise ConfigError("pass --dataset_dir (with --eval_split) or --vis_images")
        info = tfrecord.read_dataset_info(dataset_dir, num_classes=num_classes or None)
        examples = input_pipeline.make_eval_dataset(dataset_dir, split, num_classes=info["num_classes"])
        source = split
    model = checkpoints.load_model(run["checkpoint"], output_stride=output_stride or None,
                                   num_classes=info["num_classes"], upsample_logits=True)
    predictor = evaluation.Predictor(model, scales=scales, flip=flip, tile_size=tile_size,
                                     tile_overlap=tile_overlap)
    vis_dir = vis_dir or os.path.join(run["logdir"], "vis", source)
    atomic_io.ensure_folder(vis_dir, "--vis_dir")
    palette = info.get("palette") or [list(c) for c in _default_palette(info["num_classes"])]
    class_names = info.get("class_names")
    ignore_label = info.get("ignore_label", 255)
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
            raw = np.asarray(example["raw_image"], np.uint8)
            colored = visualization.colorize_labels(prediction, palette, ignore_label)
            visualization.save_rgb_png(os.path.join(vis_dir, f"{name}_prediction.png"), colored)
            visualization.save_rgb_png(os.path.join(vis_dir, f"{name}_overlay.png"),
                                       visualization.overlay(raw, colored, alpha))
            label = None
            title = name
            if "label" in example:
                label = np.asarray(example["label"], np.int32)
                visualization.save_rgb_png(
                    os.path.join(vis_dir, f"{name}_groundtruth.png"),
                    visualization.colorize_labels(label, palette, ignore_label))
                cm = metrics.confusion_matrix_update(label, prediction, info["num_classes"],
                                                     ignore_label)
                title = f"{name}: mIOU {100 * metrics.mean_iou(np.asarray(cm)):.2f}%"
            visualization.save_rgb_png(
                os.path.join(vis_dir, f"{name}_panel.png"),
                visualization.panel(raw, prediction, palette, label=label, class_names=class_names,
                                    ignore_label=ignore_label, title=title, alpha=alpha))
        if save_raw_predictions:
            visualization.save_raw_prediction(vis_dir, name, prediction,
                                              dataset_name=info.get("name"), palette=palette,
                                              competition=competition)
            num_raw += 1
        count += 1
        if count % 100 == 0:
            logging.info("%d images (%.0f s)", count, time.time() - start)
    return {"vis_dir": vis_dir, "num_images": count, "num_raw": num_raw, "server_format": kind}


def _default_palette(num_classes):
    from deeplab.data import datasets_info  # pylint: disable=import-outside-toplevel

    return datasets_info.color_map(num_classes)


def main(argv):
    _console.quiet_absl()
    if len(argv) > 1:
        print(f"deeplab.visualize: error: unexpected arguments {argv[1:]} (flags need --name=value)",
              file=sys.stderr)
        sys.exit(1)
    try:
        checkpoint = FLAGS.checkpoint or FLAGS.logdir
        if not checkpoint:
            raise UserError("pass --checkpoint (a checkpoint prefix or a training logdir) or --logdir")
        result = visualize(
            checkpoint, vis_dir=FLAGS.vis_dir, dataset_dir=FLAGS.dataset_dir,
            split=FLAGS.eval_split, input_images=FLAGS.vis_images, input_list=FLAGS.vis_image_list,
            num_classes=FLAGS.num_classes or None, output_stride=FLAGS.eval_output_stride or None,
            scales=experiment_flags.eval_scales(), flip=FLAGS.eval_flip,
            limit=FLAGS.eval_limit or None, vis_num_images=FLAGS.vis_num_images,
            save_raw_predictions=FLAGS.save_raw_predictions, competition=FLAGS.voc_competition,
            alpha=FLAGS.vis_overlay_alpha, tile_size=experiment_flags.eval_tile_size(),
            tile_overlap=FLAGS.eval_tile_overlap)
        print(f"Wrote {min(result['num_images'], FLAGS.vis_num_images)} visualizations"
              + (f" and {result['num_raw']} raw predictions "
                 f"({result['server_format'] or 'index PNGs'})" if FLAGS.save_raw_predictions else "")
              + f" to {result['vis_dir']}", flush=True)
    except (UserError, flags.ValidationError) as error:
        print(f"deeplab.visualize: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
