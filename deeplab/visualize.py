r"""Colorized predictions, overlays, panels and evaluation-server files:
``python -m deeplab.visualize``.

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

The work is done by :func:`deeplab.evaluation.vis_export.visualize`.
"""

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(sections=("data", "eval"), settings=("logdir",), recorded_config=True)
flags.DEFINE_string("vis_dir", None, "Output folder; default <checkpoint folder>/vis/<split>.")
flags.DEFINE_integer(
    "vis_num_images",
    20,
    "Images that get colour PNGs and a panel (0: none, e.g. only the raw predictions).",
)
flags.DEFINE_boolean(
    "save_raw_predictions",
    False,
    "Also write every image's prediction in its evaluation server's format "
    "(VOC: comp6_test_cls index PNGs; Cityscapes: *_pred_labelIds.png).",
)
flags.DEFINE_string(
    "vis_images",
    None,
    "Glob of raw RGB images to predict instead of --eval_split (test sets have no groundtruth).",
)
flags.DEFINE_string(
    "vis_image_list",
    None,
    "With --vis_images: keep only images whose name (file stem) is the first "
    "word of a line of this file (e.g. VOC ImageSets/Segmentation/test.txt).",
)
flags.DEFINE_enum(
    "voc_competition",
    "comp6",
    ["comp5", "comp6"],
    "VOC results folder: comp5 = VOC training data only, comp6 = other data too "
    "(ImageNet/COCO pretraining).",
)
flags.DEFINE_float("vis_overlay_alpha", 0.5, "Opacity of the prediction in overlays.")


def main(config, args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.evaluation import vis_export  # after the flags: fast --help

    data, evaluation = config.data, config.eval
    checkpoint = evaluation.checkpoint or config.train.logdir
    if not checkpoint:
        raise ConfigError(
            "pass --checkpoint (a checkpoint prefix or a training logdir) or --logdir"
        )
    result = vis_export.visualize(
        checkpoint,
        vis_dir=FLAGS.vis_dir,
        dataset_dir=data.dataset_dir,
        split=evaluation.eval_split,
        input_images=FLAGS.vis_images,
        input_list=FLAGS.vis_image_list,
        num_classes=data.num_classes or None,
        # --eval_pad_to is evaluate's (visualize never padded)
        options=evaluation.inference_options().replace(pad_to=None),
        limit=evaluation.eval_limit or None,
        vis_num_images=FLAGS.vis_num_images,
        save_raw_predictions=FLAGS.save_raw_predictions,
        competition=FLAGS.voc_competition,
        alpha=FLAGS.vis_overlay_alpha,
    )
    print(
        f"Wrote {min(result['num_images'], FLAGS.vis_num_images)} visualizations"
        + (
            f" and {result['num_raw']} raw predictions ({result['server_format'] or 'index PNGs'})"
            if FLAGS.save_raw_predictions
            else ""
        )
        + f" to {result['vis_dir']}",
        flush=True,
    )


if __name__ == "__main__":
    _console.run(main, **RUN)
