r"""Exports a trained DeepLab checkpoint as a SavedModel (and TFLite) that takes raw images.

    python -m deeplab.export_saved_model --checkpoint=runs/quickstart \
        --export_dir=exports/quickstart \
        [--eval_output_stride=8] [--eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --eval_flip] \
        [--tflite [--tflite_input_size=513] [--quantize=int8 --dataset_dir=DATA \
         --calibration_split=train --num_calibration_images=100]] \
        [--evaluate_split=val --dataset_dir=DATA]

The model is rebuilt from the run's model_config.json (the checkpoint decides the
architecture; model flags given on the command line that disagree are reported and ignored)
at ``--eval_output_stride`` (0: the training one), and the export averages ``--eval_scales``
and, with ``--eval_flip``, the flipped inputs inside its graph (Sec. 4.2). Class names and the
palette come from the run's dataset_info.json, else ``--dataset_dir``'s dataset.json, else
``--class_names`` / generic names.

Writes into ``--export_dir``: the SavedModel (signatures ``serving_default``,
``serve_encoded_images``, ``class_info``; see deeplab/export/serving.py and the README) and, with
``--tflite``, ``deeplab_float32.tflite`` (+ ``deeplab_int8.tflite`` with ``--quantize=int8``),
each with a ``.json`` sidecar. ``--evaluate_split`` prints the mIOU of float Keras, float TFLite
and int8 TFLite on that split side by side and writes ``tflite_eval.json``. Every export gets a
model card (``MODEL_CARD.md``, ``model_card.json``; deeplab/export/model_card.py).

The console shows one line per stage (progress with a count, rate and ETA on a terminal);
TensorFlow's and the TFLite converter's own log lines go to ``export.log`` in the folder
(``--verbosity=0`` shows them on the console instead).

The work is done by :func:`deeplab.export.saved_model.run_export`.
"""

import os

from absl import flags
from absl import logging

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

flags.DEFINE_string("export_dir", None, "Folder to write the SavedModel (and .tflite files) into.")
flags.DEFINE_list(
    "class_names",
    [],
    "Class names, index order; only used when neither the run's dataset_info.json "
    "nor --dataset_dir gives them.",
)
flags.DEFINE_boolean("saved_model", True, "Write the SavedModel (--nosaved_model: TFLite only).")
flags.DEFINE_boolean("tflite", False, "Also write deeplab_float32.tflite (static input size).")
flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "int8"],
    "With --tflite: also write a full-integer int8 model, calibrated on "
    "--num_calibration_images images of --calibration_split.",
)
flags.DEFINE_list(
    "tflite_input_size",
    [],
    "TFLite input 'S' or 'H,W'; default --crop_size. Other image sizes are "
    "letterboxed (resized keeping the aspect ratio and padded) by the runner.",
)
flags.DEFINE_string(
    "calibration_split",
    None,
    "Split of --dataset_dir whose images calibrate int8 (default --train_split).",
)
flags.DEFINE_integer("num_calibration_images", 100, "Images used for int8 calibration.")
flags.DEFINE_integer(
    "serving_max_pixels",
    4096 * 4096,
    "Most pixels (N x H x W) one call of the SavedModel may send (a request "
    "above it is refused with a message); 0: no cap.",
    lower_bound=0,
)
flags.DEFINE_enum(
    "serving_dtype",
    "float32",
    ["float32", "bfloat16"],
    "Type the SavedModel stores its weights in and computes in. bfloat16 (BN folded "
    "first, in float32) halves the weights' memory and runs the bfloat16 kernels "
    "of CPUs with AVX512-BF16 or AMX; softmax and outputs stay float32. TFLite "
    "files are float32 / int8 whatever this says.",
)
flags.DEFINE_string(
    "evaluate_split",
    None,
    "After export, evaluate float Keras / float TFLite / int8 TFLite mIOU on this "
    "split of --dataset_dir (limit: --eval_limit).",
)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(sections=("data", "model", "eval"), settings=("logdir",), recorded_config=True)


def _report_ignored_model_flags(model_config):
    """Logs model flags set on the command line that disagree with model_config.json."""
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import saved_model as saved_model_lib  # after the flags: fast --help

    given = {
        name: FLAGS[name].value
        for name in saved_model_lib.ARCHITECTURE_FLAGS
        if FLAGS[name].present
    }
    ignored = saved_model_lib.disagreeing_model_flags(model_config, given)
    if ignored:
        logging.warning(
            "The checkpoint's model_config.json decides the architecture; ignoring %s",
            ", ".join(ignored),
        )
    return ignored


def main(config, args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import tflite as tflite_lib  # after the flags: fast --help
    from deeplab.logdir import checkpoints  # after the flags: fast --help

    checkpoint = config.eval.checkpoint or config.train.logdir
    if not checkpoint:
        raise ConfigError("pass --checkpoint=PATH (a training logdir or a checkpoint prefix)")
    run = checkpoints.read_run_info(checkpoint)  # resolved once: a live logdir may move on
    _report_ignored_model_flags(run["model_config"])
    input_size = tflite_lib.parse_input_size(FLAGS.tflite_input_size or config.data.crop_size)
    with _console.library_output_to_log(os.path.join(FLAGS.export_dir, "export.log")):
        _export(run, input_size, config)


def _export(run, input_size, config):
    """run_export with the flags (TensorFlow's and the converter's lines go to export.log)."""
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.export import saved_model as saved_model_lib  # after the flags: fast --help

    data, evaluation = config.data, config.eval
    export = saved_model_lib.ExportOptions(
        dataset_dir=data.dataset_dir,
        class_names=FLAGS.class_names,
        saved_model=FLAGS.saved_model,
        tflite=FLAGS.tflite,
        quantize=FLAGS.quantize,
        tflite_input_size=input_size,
        calibration_split=FLAGS.calibration_split or data.train_split,
        num_calibration_images=FLAGS.num_calibration_images,
        evaluate_split=FLAGS.evaluate_split,
        eval_limit=evaluation.eval_limit,
        max_pixels=FLAGS.serving_max_pixels,
        serving_dtype=FLAGS.serving_dtype,
    )
    # --eval_pad_to is evaluate's (an export never padded)
    options = evaluation.inference_options().replace(pad_to=None)
    saved_model_lib.run_export(run["checkpoint"], FLAGS.export_dir, export, options)


if __name__ == "__main__":
    flags.mark_flag_as_required("export_dir")
    _console.run(main, **RUN)
