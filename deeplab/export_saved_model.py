r"""Exports a trained DeepLab checkpoint as a SavedModel (and TFLite) that takes raw images.

    python -m deeplab.export_saved_model --checkpoint=runs/quickstart --export_dir=exports/quickstart \
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
and int8 TFLite on that split side by side and writes ``tflite_eval.json``.
"""

from deeplab import _console  # noqa: E402  (first: before anything imports TensorFlow)

_console.quiet_tensorflow()

import os
import sys
import time

from absl import app, flags, logging

from deeplab.common import atomic_io  # noqa: F401  (shared experiment flags)
from deeplab.config import flags as experiment_flags
from deeplab.common.errors import ConfigError, UserError

flags.DEFINE_string("export_dir", None, "Folder to write the SavedModel (and .tflite files) into.")
flags.DEFINE_list("class_names", [],
                  "Class names, index order; only used when neither the run's dataset_info.json "
                  "nor --dataset_dir gives them.")
flags.DEFINE_boolean("saved_model", True, "Write the SavedModel (--nosaved_model: TFLite only).")
flags.DEFINE_boolean("tflite", False, "Also write deeplab_float32.tflite (static input size).")
flags.DEFINE_enum("quantize", "none", ["none", "int8"],
                  "With --tflite: also write a full-integer int8 model, calibrated on "
                  "--num_calibration_images images of --calibration_split.")
flags.DEFINE_list("tflite_input_size", [],
                  "TFLite input 'S' or 'H,W'; default --crop_size. Other image sizes are "
                  "letterboxed (resized keeping the aspect ratio and padded) by the runner.")
flags.DEFINE_string("calibration_split", None,
                    "Split of --dataset_dir whose images calibrate int8 (default --train_split).")
flags.DEFINE_integer("num_calibration_images", 100, "Images used for int8 calibration.")
flags.DEFINE_integer("serving_max_pixels", 4096 * 4096,
                     "Most pixels (N x H x W) one call of the SavedModel may send (a request "
                     "above it is refused with a message); 0: no cap.", lower_bound=0)
flags.DEFINE_enum("serving_dtype", "float32", ["float32", "bfloat16"],
                  "Type the SavedModel stores its weights in and computes in. bfloat16 (BN folded "
                  "first, in float32) halves the weights' memory and runs the bfloat16 kernels "
                  "of CPUs with AVX512-BF16 or AMX; softmax and outputs stay float32. TFLite "
                  "files are float32 / int8 whatever this says.")
flags.DEFINE_string("evaluate_split", None,
                    "After export, evaluate float Keras / float TFLite / int8 TFLite mIOU on this "
                    "split of --dataset_dir (limit: --eval_limit).")

FLAGS = flags.FLAGS
# --help lists the shared experiment flags this binary reads, not only its own.
flags.adopt_module_key_flags(experiment_flags)

# Model flags that change the architecture; the checkpoint's model_config.json decides them.
_ARCHITECTURE_FLAGS = ("backbone", "num_classes", "head", "num_cascaded_blocks", "aspp_filters",
                       "image_pooling", "atrous_rates", "multi_grid")


def _report_ignored_model_flags(model_config):
    """Logs model flags set on the command line that disagree with model_config.json."""
    ignored = []
    for name in _ARCHITECTURE_FLAGS:
        if not FLAGS[name].present:
            continue
        value = FLAGS[name].value
        if name in ("atrous_rates", "multi_grid"):
            value = [int(v) for v in value]
        saved = model_config.get(name)
        if isinstance(saved, (list, tuple)):
            saved = [int(v) for v in saved]
        if name == "num_classes" and value == 0:
            continue
        if value != saved:
            ignored.append(f"--{name}={value} (checkpoint: {saved})")
    if ignored:
        logging.warning("The checkpoint's model_config.json decides the architecture; ignoring %s",
                        ", ".join(ignored))
    return ignored


def class_metadata(dataset_info, num_classes, *, dataset_dir=None, class_names=None):
    """(class_names, palette, ignore_label, dataset name) for the export.

    Order of sources: the run's dataset_info.json, ``dataset_dir``'s dataset.json, the
    ``class_names`` list, generic ``class_<i>`` names.

    Raises:
      ConfigError: a source whose class count differs from the model's.
    """
    from deeplab.data.datasets_info import color_map  # pylint: disable=import-outside-toplevel

    source = "the run's dataset_info.json"
    info = dataset_info
    if info is None and dataset_dir:
        from deeplab.data import tfrecord  # pylint: disable=import-outside-toplevel

        info = tfrecord.read_dataset_info(dataset_dir)
        source = f"--dataset_dir={dataset_dir}"
    if info is not None:
        if int(info["num_classes"]) != num_classes:
            raise ConfigError(f"{source} has {info['num_classes']} classes but the checkpoint's "
                              f"model has {num_classes}")
        names = list(info.get("class_names") or [f"class_{i}" for i in range(num_classes)])
        palette = info.get("palette") or color_map(num_classes)
        return names, palette, int(info.get("ignore_label", 255)), info.get("name")
    if class_names:
        if len(class_names) != num_classes:
            raise ConfigError(f"--class_names has {len(class_names)} names for {num_classes} "
                              "classes")
        return list(class_names), color_map(num_classes), 255, None
    return [f"class_{i}" for i in range(num_classes)], color_map(num_classes), 255, None


def run_export(*, checkpoint, export_dir, output_stride=0, scales=(1.0,), flip=False,
               dataset_dir=None, class_names=None, saved_model=True, tflite=False,
               quantize="none", tflite_input_size=(513, 513), calibration_split="train",
               num_calibration_images=100, evaluate_split=None, eval_limit=0, log=print,
               fuse_batch_norm=True, tile_size=None, tile_overlap=0.25,
               max_pixels=None, serving_dtype="float32"):
    """Does the export; the binary's flags map one to one onto these arguments.

    ``fuse_batch_norm`` folds every BN into its convolution before export (:mod:`deeplab.model.fuse`:
    the same logits to ~1e-5, fewer ops in the SavedModel and the .tflite files).
    ``serving_dtype="bfloat16"`` stores and runs the SavedModel's model in bfloat16
    (:func:`deeplab.model.fuse.cast_model`, after the folding); the TFLite files stay float32 / int8.
    ``tile_size`` / ``tile_overlap`` put sliding-window inference inside the SavedModel's graph
    (images larger than the tile are segmented in windows); the TFLite files have a static
    input size and take the whole (letterboxed) image.

    Returns:
      dict: "saved_model" (path or None), "tflite" {quantization: path}, "evaluation"
      (results of :func:`deeplab.export.tflite.evaluate_segmenters`, or None).
    """
    from deeplab.training import checkpoints  # pylint: disable=import-outside-toplevel
    from deeplab.export import serving
    from deeplab.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel

    if not export_dir:
        raise UserError("pass --export_dir=FOLDER for the SavedModel / TFLite files")
    if quantize not in tflite_lib.QUANTIZATIONS:
        raise ConfigError(f"--quantize={quantize!r}: choose one of {tflite_lib.QUANTIZATIONS}")
    if quantize != "none" and not tflite:
        raise ConfigError("--quantize=int8 needs --tflite")
    if quantize == "int8" and not dataset_dir:
        raise ConfigError("--quantize=int8 needs --dataset_dir (its --calibration_split images "
                          "calibrate the quantization)")
    if evaluate_split and not (dataset_dir and tflite):
        raise ConfigError("--evaluate_split needs --tflite and --dataset_dir")
    if not saved_model and not tflite:
        raise ConfigError("--nosaved_model without --tflite exports nothing")
    if serving_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--serving_dtype={serving_dtype!r}: choose float32 or bfloat16")
    if serving_dtype != "float32" and not saved_model:
        raise ConfigError("--serving_dtype applies to the SavedModel; drop --nosaved_model")
    info = checkpoints.read_run_info(checkpoint)
    atomic_io.ensure_folder(export_dir, "--export_dir")
    # Logits are always upsampled to the input inside an export (a Table 8 run trained
    # without upsampling still serves full-resolution maps); no variable depends on it.
    # The checkpoint read_run_info resolved (a logdir still being trained may get a newer one).
    model = checkpoints.load_model(info["checkpoint"], output_stride=output_stride or None,
                                   upsample_logits=True, fuse_batch_norm=fuse_batch_norm)
    names, palette, ignore_label, dataset_name = class_metadata(
        info["dataset_info"], model.num_classes, dataset_dir=dataset_dir, class_names=class_names)
    export_info = {"checkpoint": os.path.abspath(info["checkpoint"]), "step": info["step"],
                   "dataset": dataset_name, "ignore_label": ignore_label,
                   "output_stride": model.output_stride, "model_config": info["model_config"]}
    result = {"saved_model": None, "tflite": {}, "evaluation": None}
    if saved_model:
        start = time.perf_counter()
        served = model
        if serving_dtype != "float32":
            from deeplab.model import fuse  # pylint: disable=import-outside-toplevel
            served = fuse.cast_model(model, serving_dtype)
            export_info["serving_dtype"] = serving_dtype
        serving.export_saved_model(served, export_dir, class_names=names, palette=palette,
                                   scales=scales, flip=flip, export_info=export_info,
                                   tile_size=tile_size, tile_overlap=tile_overlap,
                                   max_pixels=(serving.DEFAULT_MAX_PIXELS if max_pixels is None
                                               else max_pixels))
        result["saved_model"] = export_dir
        log(f"SavedModel: {export_dir} ({time.perf_counter() - start:.1f} s; scales {list(scales)}, "
            f"flip {flip}, output stride {model.output_stride}, {model.num_classes} classes, "
            f"{serving_dtype}"
            f"{f', windows {tile_size} overlapping {tile_overlap}' if tile_size else ''})")
    if tflite:
        extra = {k: export_info[k] for k in ("checkpoint", "step", "dataset", "output_stride")}
        start = time.perf_counter()
        content = tflite_lib.convert_float(model, tflite_input_size, scales=scales, flip=flip)
        path = tflite_lib.write_tflite(
            os.path.join(export_dir, "deeplab_float32.tflite"), content,
            tflite_lib.make_metadata(input_size=tflite_input_size, quantization="none",
                                     class_names=names, palette=palette, scales=scales, flip=flip,
                                     ignore_label=ignore_label, extra=extra))
        result["tflite"]["none"] = path
        log(f"TFLite float32: {path} ({len(content) / 1e6:.2f} MB, input "
            f"{tflite_input_size[0]}x{tflite_input_size[1]}, {time.perf_counter() - start:.1f} s)")
        if quantize == "int8":
            start = time.perf_counter()
            images = tflite_lib.calibration_images(dataset_dir, calibration_split,
                                                   num_calibration_images, tflite_input_size)
            content = tflite_lib.convert_int8(model, tflite_input_size, images, scales=scales,
                                              flip=flip)
            path = tflite_lib.write_tflite(
                os.path.join(export_dir, "deeplab_int8.tflite"), content,
                tflite_lib.make_metadata(
                    input_size=tflite_input_size, quantization="int8", class_names=names,
                    palette=palette, scales=scales, flip=flip, ignore_label=ignore_label,
                    extra={**extra, "calibration": f"{len(images)} images of "
                                                   f"{dataset_dir}:{calibration_split}"}))
            result["tflite"]["int8"] = path
            log(f"TFLite int8: {path} ({len(content) / 1e6:.2f} MB, calibrated on {len(images)} "
                f"images of {calibration_split}, {time.perf_counter() - start:.1f} s)")
    if evaluate_split:
        keras_segmenter = serving.KerasSegmenter(model, scales=scales, flip=flip)
        segmenters = {"float Keras": keras_segmenter}
        segmenters["float Keras, letterboxed"] = tflite_lib.LetterboxedSegmenter(
            keras_segmenter, tflite_input_size, tflite_lib.model_pad_value())
        labels = {"none": "float32 TFLite", "int8": "int8 TFLite"}
        for key, path in result["tflite"].items():
            segmenters[labels[key]] = tflite_lib.TFLiteSegmenter(path)
        evaluation = tflite_lib.evaluate_segmenters(segmenters, dataset_dir, evaluate_split,
                                                    limit=eval_limit or None)
        result["evaluation"] = evaluation
        log(f"mIOU on {dataset_dir}:{evaluate_split} (TFLite input {tflite_input_size[0]}x"
            f"{tflite_input_size[1]}; 'letterboxed' = the Keras model fed what TFLite is fed):")
        log(tflite_lib.format_comparison(evaluation))
        summary = {name: {k: v for k, v in r.items() if k != "confusion_matrix"}
                   for name, r in evaluation.items()}
        atomic_io.write_json(os.path.join(export_dir, "tflite_eval.json"),
                             {"dataset_dir": dataset_dir, "split": evaluate_split,
                              "tflite_input_size": list(tflite_input_size), "results": summary})
    return result


def main(argv):
    _console.quiet_absl()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        checkpoint = FLAGS.checkpoint or FLAGS.logdir
        if not checkpoint:
            raise UserError("pass --checkpoint=PATH (a training logdir or a checkpoint prefix)")
        from deeplab.training import checkpoints  # pylint: disable=import-outside-toplevel

        run = checkpoints.read_run_info(checkpoint)  # resolved once: a live logdir may move on
        _report_ignored_model_flags(run["model_config"])
        from deeplab.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel

        input_size = tflite_lib.parse_input_size(FLAGS.tflite_input_size or FLAGS.crop_size)
        run_export(
            checkpoint=run["checkpoint"], export_dir=FLAGS.export_dir,
            output_stride=FLAGS.eval_output_stride, scales=experiment_flags.eval_scales(),
            flip=FLAGS.eval_flip, dataset_dir=FLAGS.dataset_dir, class_names=FLAGS.class_names,
            saved_model=FLAGS.saved_model, tflite=FLAGS.tflite, quantize=FLAGS.quantize,
            tflite_input_size=input_size,
            calibration_split=FLAGS.calibration_split or FLAGS.train_split,
            num_calibration_images=FLAGS.num_calibration_images,
            evaluate_split=FLAGS.evaluate_split, eval_limit=FLAGS.eval_limit,
            tile_size=experiment_flags.eval_tile_size(), tile_overlap=FLAGS.eval_tile_overlap,
            max_pixels=FLAGS.serving_max_pixels, serving_dtype=FLAGS.serving_dtype)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flag_as_required("export_dir")
    app.run(main)
