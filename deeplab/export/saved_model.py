"""Exporting a checkpoint: the SavedModel that takes raw images and the TFLite files.

:func:`run_export` (an :class:`ExportOptions` of what to write and an ``InferenceOptions`` of
how the model runs) rebuilds the run's model from its model_config.json (BN folded, logits
upsampled; optionally at another output stride and in bfloat16), writes the SavedModel
(:mod:`deeplab.export.serving`) and the float32 / int8 TFLite files with their sidecars
(:mod:`deeplab.export.tflite`), and can compare their mIOU on a split; :func:`class_metadata`
finds the class names and palette the export carries. ``python -m deeplab.export_saved_model``
builds the two objects from its flags.
"""

import dataclasses
import errno
import logging
import os
import shutil
import time
import typing

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import datasets_info
from deeplab.data import tfrecord
from deeplab.export import model_card
from deeplab.export import serving
from deeplab.export import tflite as tflite_lib
from deeplab.logdir import checkpoints
from deeplab.logdir import run_record
from deeplab.model import fuse

log = logging.getLogger(__name__)

# Model flags that change the architecture; the checkpoint's model_config.json decides them.
ARCHITECTURE_FLAGS = (
    "backbone",
    "num_classes",
    "head",
    "num_cascaded_blocks",
    "aspp_filters",
    "image_pooling",
    "atrous_rates",
    "multi_grid",
)


def disagreeing_model_flags(model_config, given):
    """The architecture flags of ``given`` (name -> value, as on the command line) that differ
    from the checkpoint's ``model_config``, as ``--name=value (checkpoint: saved)`` strings
    (``num_classes=0`` means "the dataset's" and never disagrees)."""
    ignored = []
    for name in ARCHITECTURE_FLAGS:
        if name not in given:
            continue
        value = given[name]
        if name in ("atrous_rates", "multi_grid"):
            value = [int(v) for v in value]
        saved = model_config.get(name)
        if isinstance(saved, (list, tuple)):
            saved = [int(v) for v in saved]
        if name == "num_classes" and value == 0:
            continue
        if value != saved:
            ignored.append(f"--{name}={value} (checkpoint: {saved})")
    return ignored


def class_metadata(dataset_info, num_classes, *, dataset_dir=None, class_names=None):
    """(class_names, palette, ignore_label, dataset name) for the export.

    Order of sources: the run's dataset_info.json, ``dataset_dir``'s dataset.json, the
    ``class_names`` list, generic ``class_<i>`` names.

    Raises:
      ConfigError: a source whose class count differs from the model's.
    """
    source = "the run's dataset_info.json"
    info = dataset_info
    if info is None and dataset_dir:
        info = tfrecord.read_dataset_info(dataset_dir)
        source = f"--dataset_dir={dataset_dir}"
    if info is not None:
        if int(info["num_classes"]) != num_classes:
            raise ConfigError(
                f"{source} has {info['num_classes']} classes but the checkpoint's "
                f"model has {num_classes}"
            )
        names = list(info.get("class_names") or [f"class_{i}" for i in range(num_classes)])
        palette = info.get("palette") or datasets_info.color_map(num_classes)
        return names, palette, int(info.get("ignore_label", 255)), info.get("name")
    if class_names:
        if len(class_names) != num_classes:
            raise ConfigError(
                f"--class_names has {len(class_names)} names for {num_classes} classes"
            )
        return list(class_names), datasets_info.color_map(num_classes), 255, None
    names = [f"class_{i}" for i in range(num_classes)]
    return names, datasets_info.color_map(num_classes), 255, None


# What an export folder holds (names of its entries); a folder holding anything else is not
# replaced by an export (deeplab.common.atomic_io.check_directory_target). Add the name of any
# new file an export writes.
EXPORT_ENTRIES = (
    "saved_model.pb",
    "fingerprint.pb",
    "variables",
    "assets",
    "deeplab_float32.tflite",
    "deeplab_float32.json",
    "deeplab_int8.tflite",
    "deeplab_int8.json",
    "tflite_eval.json",
    "MODEL_CARD.md",  # deeplab.export.model_card
    "model_card.json",
    "export.log",  # deeplab.export_saved_model: TensorFlow's and the converter's lines
)


def _not_an_export(entries):
    """Why an existing folder with these entries must not be replaced by an export, or None."""
    others = [name for name in entries if name not in EXPORT_ENTRIES]
    if not others:
        return None
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (
        f"holds {listed}, which an export does not write (an export owns its folder): "
        "choose a new or empty folder, or an earlier export"
    )


# errno values of a write that failed for want of space or permission, not for a bug.
_WRITE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.EIO,
)
_WRITE_WORDS = (
    "No space left on device",
    "Disk quota",
    "Read-only file system",
    "Permission denied",
    "File too large",
    "Input/output error",
)


def export_write_error(error, export_dir, staging=None):
    """A UserError for a write that failed while the export was assembled (a full disk, a
    read-only folder, a quota), or None when ``error`` is not one."""
    # TensorFlow: raises its own error types for failed file writes (SavedModel, TFLite)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        reason = error.strerror or str(error)
    elif isinstance(error, tf.errors.OpError) and (
        any(word in str(error.message) for word in _WRITE_WORDS)
        or (staging and staging in str(error.message))
    ):
        lines = [line for line in str(error.message).strip().splitlines() if line.strip()]
        reason = next((w for w in _WRITE_WORDS if w in lines[0]), lines[0][-200:])
    else:
        return None
    return UserError(
        f"--export_dir={export_dir}: cannot write the export ({reason}); nothing was "
        "changed there (an earlier export is intact): free space or choose another folder"
    )


def _link_or_copy(source, target):
    try:
        os.link(source, target)  # no space needed; the old folder is removed after the swap
    except OSError:
        shutil.copy2(source, target)


def _keep_unwritten(export_dir, staging):
    """Carries into the new export what the earlier one in ``export_dir`` holds and this one
    did not write (a ``--nosaved_model --tflite`` export keeps the SavedModel beside it), as
    exporting into the folder always did."""
    if staging == export_dir or not os.path.isdir(export_dir):
        return
    for name in os.listdir(export_dir):
        source, target = os.path.join(export_dir, name), os.path.join(staging, name)
        if os.path.lexists(target):
            continue
        if os.path.isdir(source):
            shutil.copytree(source, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What an export writes and checks (``deeplab.export_saved_model``'s own flags); the
    inference settings it bakes in are an :class:`InferenceOptions` beside it. Checked once,
    when made.

    Attributes:
      dataset_dir: dataset whose dataset.json names the classes (when the run recorded none),
        whose images calibrate int8 and on which ``evaluate_split`` is measured.
      class_names: names when neither the run nor ``dataset_dir`` gives them.
      saved_model: write the SavedModel.
      tflite: write ``deeplab_float32.tflite`` (static ``tflite_input_size``).
      quantize: "none", or "int8" (also ``deeplab_int8.tflite``, calibrated on
        ``num_calibration_images`` images of ``calibration_split``).
      evaluate_split: after export, compare float Keras / TFLite mIOU on this split (the first
        ``eval_limit`` images; 0: all).
      fuse_batch_norm: fold every BN into its convolution first (:mod:`deeplab.model.fuse`:
        the same logits to ~1e-5, fewer ops in the SavedModel and the .tflite files).
      max_pixels: most pixels per SavedModel call (None: ``serving.DEFAULT_MAX_PIXELS``; 0: no
        cap).
      serving_dtype: "float32", or "bfloat16" (the SavedModel's model stored and run in
        bfloat16, :func:`deeplab.model.fuse.cast_model`, after the folding; the TFLite files
        stay float32 / int8).

    Raises:
      ConfigError: settings that contradict each other (named by their flags).
    """

    dataset_dir: str = None
    class_names: tuple = ()
    saved_model: bool = True
    tflite: bool = False
    quantize: str = "none"
    tflite_input_size: tuple = (513, 513)
    calibration_split: str = "train"
    num_calibration_images: int = 100
    evaluate_split: str = None
    eval_limit: int = 0
    fuse_batch_norm: bool = True
    max_pixels: int = None
    serving_dtype: str = "float32"

    def __post_init__(self):
        if self.quantize not in tflite_lib.QUANTIZATIONS:
            raise ConfigError(
                f"--quantize={self.quantize!r}: choose one of {tflite_lib.QUANTIZATIONS}"
            )
        if self.quantize != "none" and not self.tflite:
            raise ConfigError("--quantize=int8 needs --tflite")
        if self.evaluate_split and not (self.dataset_dir and self.tflite):
            raise ConfigError("--evaluate_split needs --tflite and --dataset_dir")
        if not self.saved_model and not self.tflite:
            raise ConfigError("--nosaved_model without --tflite exports nothing")
        if self.serving_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--serving_dtype={self.serving_dtype!r}: choose float32 or bfloat16")
        if self.serving_dtype != "float32" and not self.saved_model:
            raise ConfigError("--serving_dtype applies to the SavedModel; drop --nosaved_model")
        cap = serving.DEFAULT_MAX_PIXELS if self.max_pixels is None else int(self.max_pixels)
        object.__setattr__(self, "max_pixels", cap)
        object.__setattr__(self, "class_names", tuple(self.class_names or ()))
        object.__setattr__(self, "tflite_input_size", tuple(self.tflite_input_size))


def run_export(checkpoint, export_dir, export=None, options=None):
    """Exports ``checkpoint`` into ``export_dir`` (``python -m deeplab.export_saved_model``).

    The work (:func:`_write_export`) is done in a folder beside ``export_dir`` that is renamed
    into place when complete: a failure leaves an earlier export in ``export_dir`` intact and
    no partial folder, and a folder holding anything an export does not write
    (:data:`EXPORT_ENTRIES`) is refused before any work. What an earlier export holds and this
    one does not write (its SavedModel, for a TFLite-only export) is kept.

    Args:
      checkpoint: a training logdir, a checkpoint prefix or an imported model's folder.
      export_dir: the export's folder.
      export: :class:`ExportOptions` (default: the SavedModel only).
      options: :class:`InferenceOptions` baked into the SavedModel (scales, flip, windows) and
        the TFLite files (scales and flip; they take the whole letterboxed image); its
        ``output_stride`` builds the model (None: the training one). No ``pad_to``: an export
        segments images at their own size.

    Logs one line per stage (INFO), naming ``export_dir`` (never the staging folder).

    Returns:
      dict: "saved_model" (path or None), "tflite" {quantization: path}, "evaluation"
      (results of :func:`deeplab.export.tflite.evaluate_segmenters`, or None), "model_card";
      paths inside ``export_dir``.
    """
    if not export_dir:
        raise UserError("pass --export_dir=FOLDER for the SavedModel / TFLite files")
    export = export or ExportOptions()
    options = options or InferenceOptions()
    if options.pad_to:
        raise ConfigError(
            "--eval_pad_to is evaluate's: an export segments images at their own size"
        )
    atomic_io.check_directory_target(export_dir, "--export_dir", _not_an_export)
    staging = atomic_io.staging_directory(export_dir)
    final = os.path.realpath(export_dir) if "://" not in export_dir else export_dir

    def shown(text):  # messages name the export's place, not the staging folder's
        return str(text).replace(staging, final)

    def say(text):
        log.info(shown(text))

    try:
        result = _write_export(checkpoint, staging, export, options, final_dir=final, say=say)
        _keep_unwritten(export_dir, staging)
        atomic_io.replace_directory(staging, export_dir)
    except BaseException as error:
        if staging != export_dir:
            shutil.rmtree(staging, ignore_errors=True)
        clear = export_write_error(error, export_dir, staging)
        if clear is not None:
            raise clear from None
        raise
    result["saved_model"] = result["saved_model"] and final
    result["tflite"] = {key: shown(path) for key, path in result["tflite"].items()}
    if result.get("model_card"):
        result["model_card"] = shown(result["model_card"])
    return result


class _Classes(typing.NamedTuple):
    """The class metadata an export carries (:func:`class_metadata`)."""

    names: list
    palette: list
    ignore_label: int
    dataset: str


def _write_export(checkpoint, export_dir, export, options, *, say, final_dir=None):
    """Does the export into ``export_dir`` (see :func:`run_export`; ``final_dir``: where
    run_export renames ``export_dir`` to, which names the model card; ``say``: logs one line
    of a stage, with the staging folder's name replaced)."""
    info = checkpoints.read_run_info(checkpoint)
    quantize_aware = bool((info.get("model_config") or {}).get("quantize_aware"))
    if export.quantize == "int8" and not quantize_aware and not export.dataset_dir:
        raise ConfigError(
            "--quantize=int8 needs --dataset_dir (its --calibration_split images calibrate "
            "the quantization) unless the model was trained --quantize_aware"
        )
    atomic_io.ensure_folder(export_dir, "--export_dir")
    # Logits are always upsampled to the input inside an export (a Table 8 run trained
    # without upsampling still serves full-resolution maps); no variable depends on it.
    # The checkpoint read_run_info resolved (a logdir still being trained may get a newer one).
    model = checkpoints.load_model(
        info["checkpoint"],
        output_stride=options.output_stride,
        upsample_logits=True,
        fuse_batch_norm=export.fuse_batch_norm,
    )
    classes = _Classes(
        *class_metadata(
            info["dataset_info"],
            model.num_classes,
            dataset_dir=export.dataset_dir,
            class_names=export.class_names,
        )
    )
    export_info = {
        "checkpoint": os.path.abspath(info["checkpoint"]),
        "step": info["step"],
        "dataset": classes.dataset,
        "ignore_label": classes.ignore_label,
        "output_stride": model.output_stride,
        "model_config": info["model_config"],
    }
    result = {"saved_model": None, "tflite": {}, "evaluation": None}
    if export.saved_model:
        result["saved_model"] = _write_saved_model(
            model, export_dir, export, options, classes, export_info, say
        )
    if export.tflite:
        extra = {k: export_info[k] for k in ("checkpoint", "step", "dataset", "output_stride")}
        result["tflite"] = _write_tflite_files(
            model, export_dir, export, options, classes, extra, say
        )
    if export.evaluate_split:
        result["evaluation"] = _evaluate_exports(
            model, export_dir, export, options, result["tflite"], say
        )
    card = export_card(
        model,
        info,
        final_dir or export_dir,
        classes=classes,
        result=result,
        export=export,
        options=options,
    )
    result["model_card"] = model_card.write_card(export_dir, card)
    card_path = os.path.join(export_dir, model_card.CARD_MARKDOWN)
    say(f"model card: {card_path}: {model_card.summary(card)}")
    return result


def _write_saved_model(model, export_dir, export, options, classes, export_info, say):
    """The SavedModel (in ``export.serving_dtype``); returns its folder."""
    start = time.perf_counter()
    served = model
    if export.serving_dtype != "float32":
        served = fuse.cast_model(model, export.serving_dtype)
        export_info["serving_dtype"] = export.serving_dtype
    serving.export_saved_model(
        served,
        export_dir,
        class_names=classes.names,
        palette=classes.palette,
        options=options,
        export_info=export_info,
        max_pixels=export.max_pixels,
    )
    tile = options.tile_size
    say(
        f"SavedModel: {export_dir} ({time.perf_counter() - start:.1f} s; scales "
        f"{list(options.scales)}, flip {options.flip}, output stride {model.output_stride}, "
        f"{model.num_classes} classes, {export.serving_dtype}"
        f"{f', windows {tile} overlapping {options.tile_overlap}' if tile else ''})"
    )
    return export_dir


def _write_tflite_files(model, export_dir, export, options, classes, extra, say):
    """``deeplab_float32.tflite`` and, with int8 quantization, ``deeplab_int8.tflite``, with
    their sidecars; returns {quantization: path}."""
    # A TFLite file takes the whole (letterboxed) image at a static size: scales and flip only.
    options = options.replace(tile_size=None, pad_to=None)
    size = export.tflite_input_size
    written = {}
    start = time.perf_counter()
    content = tflite_lib.convert_float(model, size, options)
    written["none"] = tflite_lib.write_tflite(
        os.path.join(export_dir, "deeplab_float32.tflite"),
        content,
        _tflite_metadata(size, "none", classes, options, extra),
    )
    say(
        f"TFLite float32: {written['none']} ({len(content) / 1e6:.2f} MB, input "
        f"{size[0]}x{size[1]}, {time.perf_counter() - start:.1f} s)"
    )
    if export.quantize == "int8":
        start = time.perf_counter()
        split = export.calibration_split
        if getattr(model, "quantize_aware", False):
            # Its ranges are the ones it trained with (deeplab.model.quantize).
            images = None
            calibration = "none: ranges from quantization-aware training"
        else:  # _write_export checked --dataset_dir
            images = tflite_lib.calibration_images(
                export.dataset_dir, split, export.num_calibration_images, size
            )
            calibration = f"{len(images)} images of {export.dataset_dir}:{split}"
        content = tflite_lib.convert_int8(model, size, images, options)
        written["int8"] = tflite_lib.write_tflite(
            os.path.join(export_dir, "deeplab_int8.tflite"),
            content,
            _tflite_metadata(size, "int8", classes, options, {**extra, "calibration": calibration}),
        )
        say(
            f"TFLite int8: {written['int8']} ({len(content) / 1e6:.2f} MB, calibration: "
            f"{calibration}, {time.perf_counter() - start:.1f} s)"
        )
    return written


def _tflite_metadata(size, quantization, classes, options, extra):
    return tflite_lib.make_metadata(
        input_size=size,
        quantization=quantization,
        class_names=classes.names,
        palette=classes.palette,
        options=options,
        ignore_label=classes.ignore_label,
        extra=extra,
    )


def _evaluate_exports(model, export_dir, export, options, tflite_paths, say):
    """mIOU of float Keras (whole and letterboxed) and of each TFLite file on
    ``export.evaluate_split``, logged and written to ``tflite_eval.json``; returns them."""
    size = export.tflite_input_size
    keras_segmenter = serving.KerasSegmenter(model, options.replace(tile_size=None))
    segmenters = {"float Keras": keras_segmenter}
    segmenters["float Keras, letterboxed"] = tflite_lib.LetterboxedSegmenter(
        keras_segmenter, size, tflite_lib.model_pad_value()
    )
    labels = {"none": "float32 TFLite", "int8": "int8 TFLite"}
    for key, path in tflite_paths.items():
        segmenters[labels[key]] = tflite_lib.TFLiteSegmenter(path)
    evaluation = tflite_lib.evaluate_segmenters(
        segmenters, export.dataset_dir, export.evaluate_split, limit=export.eval_limit or None
    )
    say(
        f"mIOU on {export.dataset_dir}:{export.evaluate_split} (TFLite input {size[0]}x"
        f"{size[1]}; 'letterboxed' = the Keras model fed what TFLite is fed):"
    )
    say(tflite_lib.format_comparison(evaluation))
    summary = {
        name: {k: v for k, v in r.items() if k != "confusion_matrix"}
        for name, r in evaluation.items()
    }
    atomic_io.write_json(
        os.path.join(export_dir, "tflite_eval.json"),
        {
            "dataset_dir": export.dataset_dir,
            "split": export.evaluate_split,
            "tflite_input_size": list(size),
            "results": summary,
        },
    )
    return evaluation


def export_card(model, info, export_dir, *, classes, result, export, options):
    """The model card of an export (:mod:`deeplab.export.model_card`): what run_export wrote
    and, when it evaluated, the figures it measured."""
    evaluation = result.get("evaluation")
    names, dtype, size = classes.names, export.serving_dtype, export.tflite_input_size
    measured = {}
    if evaluation:
        section = model_card.evaluation_section(
            classes.dataset, export.evaluate_split, evaluation, names
        )
        measured = section["models"]
    else:
        section = None
    variants = []
    if result["saved_model"]:
        variants.append(
            {
                "file": "saved_model.pb (SavedModel)",
                "precision": dtype,
                "miou": (measured.get("float Keras") or {}).get("miou")
                if dtype == "float32"
                else None,
                "agreement_with_float": 1.0 if dtype == "float32" else None,
            }
        )
    labels = {"none": ("float32 TFLite", "float32"), "int8": ("int8 TFLite", "int8")}
    for key, path in result["tflite"].items():
        row = measured.get(labels[key][0]) or {}
        variants.append(
            {
                "file": os.path.basename(path),
                "precision": labels[key][1],
                "input_size": list(size),
                "miou": row.get("miou"),
                "agreement_with_float": row.get("agreement_with_float"),
            }
        )
    limits = [
        "Trained on the classes above only: anything else is labelled as the nearest of them.",
        "The TFLite files take a fixed input size; other sizes are letterboxed (resized keeping "
        "the aspect ratio, padded), so small details of large photos are lost.",
    ]
    if not evaluation:
        limits.append(
            "Not evaluated at export: run deeplab.export_saved_model with "
            "--evaluate_split and --dataset_dir to measure it."
        )
    return model_card.make_card(
        name=os.path.basename(os.path.normpath(export_dir)),
        kind="export",
        architecture_section=model_card.architecture(
            model,
            info["model_config"],
            gflops_size=size,
            batch_norm_folded=export.fuse_batch_norm,
        ),
        classes_section=model_card.classes(names, classes.palette, classes.ignore_label),
        provenance={
            "checkpoint": os.path.abspath(info["checkpoint"]),
            "step": info["step"],
            "dataset": classes.dataset,
            "config": _recorded_config(info["logdir"]),
        },
        evaluation=section,
        input_section={
            "max_pixels": int(export.max_pixels),
            "scales": list(options.scales),
            "flip": bool(options.flip),
            "tile_size": list(options.tile_size) if options.tile_size else None,
        },
        variants=variants,
        limits=limits,
    )


def _recorded_config(logdir):
    """The run's config.json, or None (runs from before it, imports)."""
    try:
        return run_record.read_config(logdir)
    except (OSError, ValueError):
        return None
