r"""Segments image files with an exported model (SavedModel or .tflite) or a training checkpoint.

    python -m deeplab.predict --model=exports/quickstart --input=photos/ --output_dir=out/
    python -m deeplab.predict --model=exports/quickstart/deeplab_int8.tflite --input=a.jpg,b.png \
        --output_dir=out/
    python -m deeplab.predict --flagfile=experiments/quickstart.flags --checkpoint=runs/quickstart \
        --input=photos/ --output_dir=out/        # Keras, with --eval_scales / --eval_flip

For every image NAME.EXT it writes into ``--output_dir``:

    NAME.png          class index per pixel (8-bit grayscale PNG; 16-bit if an index > 255)
    NAME_color.png    the class map in the model's palette
    NAME_overlay.png  the photo with the classes found painted over it (``--overlay_alpha``;
                      the dataset's background class left unpainted) and a legend of the
                      classes with their colours and shares of the pixels

It first prints the model card's one-line summary (``model: ...``), then per image a line with
its size and the inference and total times in ms (the first image also pays for graph tracing /
interpreter warm-up) and a line listing the classes found with their share of the pixels.

- ``--input`` takes files and folders (comma-separated, or as extra arguments); a folder
  contributes its image files (not recursive).
- Any size and mode, read by :mod:`deeplab.data.images` (the rules of every binary): EXIF
  orientation applied, grayscale, palette, CMYK and RGBA converted to 8-bit RGB (alpha dropped),
  16-bit reduced to the high byte, each with a note. The map has the (turned) image's size.
- Unreadable or missing files are reported and skipped; the rest are processed, and the exit
  status is 1 when anything was skipped (a summary line names what). So is an image whose
  header declares more than ``--max_image_pixels`` pixels (default 4096 x 4096; an export's own
  cap too), before it is decoded, one whose inference or outputs fail, and, on a full disk,
  the rest (one line says so).
- Exit status: 0 if every image was processed, 1 if any was skipped or a model cannot be read,
  2 on a usage error.
- ``--model`` ending in .tflite (ours or the official DeepLab TFLite models): images are
  letterboxed to the model's fixed input size (see deeplab/export/tflite.py).

The work is done by :mod:`deeplab.export.predictor` (``make_segmenter``, ``predict_files``).
"""

from absl import flags
from absl import logging

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

flags.DEFINE_string(
    "model",
    None,
    "SavedModel folder (deeplab.export_saved_model), .tflite file, or a model "
    "folder of ours (a training logdir, an import of deeplab.import_official: "
    "run with Keras); without it, --checkpoint (or --logdir) is run with Keras.",
)
flags.DEFINE_list("input", [], "Image files and/or folders (more may follow as arguments).")
flags.DEFINE_string("predict_output_dir", None, "Where the PNGs go (alias: --output_dir).")
flags.DEFINE_float(
    "predict_overlay_alpha",
    0.6,
    "Opacity of the class colors in the overlay (the background class, if the dataset has one, "
    "is never painted).",
)
flags.DEFINE_integer("num_threads", 0, "TFLite interpreter threads (0: its default).")
flags.DEFINE_integer(
    "max_image_pixels",
    4096 * 4096,  # deeplab.data.images.DEFAULT_MAX_PIXELS (the library loads after the flags)
    "Most pixels (H x W) of one input image, read from its header before anything is "
    "decoded: a larger image is skipped with a line (an export also applies its own "
    "--serving_max_pixels). 0: no cap.",
    lower_bound=0,
)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(
    sections=("eval",),
    settings=("logdir",),
    arguments=True,  # input files may follow the flags
    recorded_config=lambda: None if FLAGS.model else _console.run_folder(),
)


def main(config, args):
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import loading  # after the flags: fast --help
    from deeplab.export import model_card  # after the flags: fast --help
    from deeplab.export import predictor  # after the flags: fast --help

    evaluation = config.eval
    inputs = list(FLAGS.input) + list(args)
    output_dir = FLAGS.predict_output_dir
    checkpoint = evaluation.checkpoint or config.train.logdir
    if not inputs:
        raise ConfigError(
            "pass --input=FILES_OR_FOLDERS (comma-separated) or list them as arguments"
        )
    if not output_dir:
        raise ConfigError("pass --output_dir=FOLDER for the PNGs")
    if not FLAGS.model and not checkpoint:
        raise ConfigError(
            "pass --model=EXPORT (SavedModel folder or .tflite file) or "
            "--checkpoint=RUN (a training logdir or checkpoint prefix)"
        )
    paths, problems = predictor.collect_inputs(inputs)
    if not paths:  # nothing to do: say why without loading a model
        for path, reason in problems:
            print(f"skipped {path}: {reason}")
        print("processed 0 images")
        return 1
    if FLAGS.model and checkpoint:
        logging.info("--model=%s given: ignoring --checkpoint/--logdir", FLAGS.model)
    segmenter = predictor.make_segmenter(
        model=FLAGS.model,
        checkpoint=checkpoint,
        # --eval_pad_to is evaluate's (predict never padded)
        options=evaluation.inference_options().replace(pad_to=None),
        num_threads=FLAGS.num_threads,
    )
    card = loading.find_card(FLAGS.model or checkpoint, segmenter)
    print(f"model: {model_card.summary(card) if card else 'no model card'}")
    result = predictor.predict_files(
        segmenter,
        inputs,
        output_dir,
        alpha=FLAGS.predict_overlay_alpha,
        max_pixels=FLAGS.max_image_pixels,
    )
    return exit_code(result)


def exit_code(result):
    """0 when every input was segmented; 1 when any was skipped (or none processed)."""
    if result["skipped"]:
        _console.error_line(
            f"{len(result['skipped'])} of "
            f"{len(result['skipped']) + len(result['processed'])} inputs were skipped: "
            + ", ".join(path for path, _ in result["skipped"][:5])
            + (" ..." if len(result["skipped"]) > 5 else "")
        )
        return 1
    return 0 if result["processed"] else 1


if __name__ == "__main__":
    flags.DEFINE_alias("output_dir", "predict_output_dir")
    flags.DEFINE_alias("overlay_alpha", "predict_overlay_alpha")
    _console.run(main, **RUN)
