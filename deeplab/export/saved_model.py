"""Exporting a checkpoint: the SavedModel that takes raw images and the TFLite files.

:func:`run_export` rebuilds the run's model from its model_config.json (BN folded, logits
upsampled; optionally at another output stride and in bfloat16), writes the SavedModel
(:mod:`deeplab.export.serving`) and the float32 / int8 TFLite files with their sidecars
(:mod:`deeplab.export.tflite`), and can compare their mIOU on a split; :func:`class_metadata`
finds the class names and palette the export carries. ``python -m deeplab.export_saved_model``
maps its flags one to one onto :func:`run_export`.
"""

import errno
import os
import shutil
import time

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError, UserError
from deeplab.data import datasets_info
from deeplab.data import tfrecord
from deeplab.export import model_card
from deeplab.export import serving
from deeplab.export import tflite as tflite_lib
from deeplab.model import fuse
from deeplab.logdir import checkpoints
from deeplab.logdir import run_record


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


def run_export(*, export_dir, log=print, **options):
    """Does the export (:func:`_write_export`, the binary's flags map one to one onto its
    arguments) into a folder beside ``export_dir`` that is renamed into place when complete:
    a failure leaves an earlier export in ``export_dir`` intact and no partial folder, and a
    folder holding anything an export does not write (:data:`EXPORT_ENTRIES`) is refused
    before any work. What an earlier export holds and this one does not write (its SavedModel,
    for a TFLite-only export) is kept.

    Returns:
      see :func:`_write_export` (paths inside ``export_dir``).
    """
    if not export_dir:
        raise UserError("pass --export_dir=FOLDER for the SavedModel / TFLite files")
    atomic_io.check_directory_target(export_dir, "--export_dir", _not_an_export)
    staging = atomic_io.staging_directory(export_dir)
    final = os.path.realpath(export_dir) if "://" not in export_dir else export_dir

    def shown(text):  # messages name the export's place, not the staging folder's
        return str(text).replace(staging, final)

    try:
        result = _write_export(
            export_dir=staging, final_dir=final, log=lambda m: log(shown(m)), **options
        )
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


def _write_export(
    *,
    checkpoint,
    export_dir,
    output_stride=0,
    scales=(1.0,),
    flip=False,
    dataset_dir=None,
    class_names=None,
    saved_model=True,
    tflite=False,
    quantize="none",
    tflite_input_size=(513, 513),
    calibration_split="train",
    num_calibration_images=100,
    evaluate_split=None,
    eval_limit=0,
    log=print,
    fuse_batch_norm=True,
    tile_size=None,
    tile_overlap=0.25,
    max_pixels=None,
    serving_dtype="float32",
    final_dir=None,
):
    """Does the export; the binary's flags map one to one onto these arguments (``final_dir``:
    where :func:`run_export` renames ``export_dir`` to, which names the model card).

    ``fuse_batch_norm`` folds every BN into its convolution before export
    (:mod:`deeplab.model.fuse`: the same logits to ~1e-5, fewer ops in the SavedModel and the
    .tflite files).
    ``serving_dtype="bfloat16"`` stores and runs the SavedModel's model in bfloat16
    (:func:`deeplab.model.fuse.cast_model`, after the folding); the TFLite files stay float32 /
    int8.
    ``tile_size`` / ``tile_overlap`` put sliding-window inference inside the SavedModel's graph
    (images larger than the tile are segmented in windows); the TFLite files have a static
    input size and take the whole (letterboxed) image.

    Returns:
      dict: "saved_model" (path or None), "tflite" {quantization: path}, "evaluation"
      (results of :func:`deeplab.export.tflite.evaluate_segmenters`, or None).
    """
    if not export_dir:
        raise UserError("pass --export_dir=FOLDER for the SavedModel / TFLite files")
    if quantize not in tflite_lib.QUANTIZATIONS:
        raise ConfigError(f"--quantize={quantize!r}: choose one of {tflite_lib.QUANTIZATIONS}")
    if quantize != "none" and not tflite:
        raise ConfigError("--quantize=int8 needs --tflite")
    if quantize == "int8" and not dataset_dir:
        raise ConfigError(
            "--quantize=int8 needs --dataset_dir (its --calibration_split images "
            "calibrate the quantization)"
        )
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
    model = checkpoints.load_model(
        info["checkpoint"],
        output_stride=output_stride or None,
        upsample_logits=True,
        fuse_batch_norm=fuse_batch_norm,
    )
    names, palette, ignore_label, dataset_name = class_metadata(
        info["dataset_info"], model.num_classes, dataset_dir=dataset_dir, class_names=class_names
    )
    export_info = {
        "checkpoint": os.path.abspath(info["checkpoint"]),
        "step": info["step"],
        "dataset": dataset_name,
        "ignore_label": ignore_label,
        "output_stride": model.output_stride,
        "model_config": info["model_config"],
    }
    result = {"saved_model": None, "tflite": {}, "evaluation": None}
    if saved_model:
        start = time.perf_counter()
        served = model
        if serving_dtype != "float32":
            served = fuse.cast_model(model, serving_dtype)
            export_info["serving_dtype"] = serving_dtype
        serving.export_saved_model(
            served,
            export_dir,
            class_names=names,
            palette=palette,
            scales=scales,
            flip=flip,
            export_info=export_info,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            max_pixels=(serving.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels),
        )
        result["saved_model"] = export_dir
        log(
            f"SavedModel: {export_dir} ({time.perf_counter() - start:.1f} s; scales "
            f"{list(scales)}, flip {flip}, output stride {model.output_stride}, "
            f"{model.num_classes} classes, {serving_dtype}"
            f"{f', windows {tile_size} overlapping {tile_overlap}' if tile_size else ''})"
        )
    if tflite:
        extra = {k: export_info[k] for k in ("checkpoint", "step", "dataset", "output_stride")}
        start = time.perf_counter()
        content = tflite_lib.convert_float(model, tflite_input_size, scales=scales, flip=flip)
        path = tflite_lib.write_tflite(
            os.path.join(export_dir, "deeplab_float32.tflite"),
            content,
            tflite_lib.make_metadata(
                input_size=tflite_input_size,
                quantization="none",
                class_names=names,
                palette=palette,
                scales=scales,
                flip=flip,
                ignore_label=ignore_label,
                extra=extra,
            ),
        )
        result["tflite"]["none"] = path
        log(
            f"TFLite float32: {path} ({len(content) / 1e6:.2f} MB, input "
            f"{tflite_input_size[0]}x{tflite_input_size[1]}, {time.perf_counter() - start:.1f} s)"
        )
        if quantize == "int8":
            start = time.perf_counter()
            images = tflite_lib.calibration_images(
                dataset_dir, calibration_split, num_calibration_images, tflite_input_size
            )
            content = tflite_lib.convert_int8(
                model, tflite_input_size, images, scales=scales, flip=flip
            )
            path = tflite_lib.write_tflite(
                os.path.join(export_dir, "deeplab_int8.tflite"),
                content,
                tflite_lib.make_metadata(
                    input_size=tflite_input_size,
                    quantization="int8",
                    class_names=names,
                    palette=palette,
                    scales=scales,
                    flip=flip,
                    ignore_label=ignore_label,
                    extra={
                        **extra,
                        "calibration": f"{len(images)} images of {dataset_dir}:{calibration_split}",
                    },
                ),
            )
            result["tflite"]["int8"] = path
            log(
                f"TFLite int8: {path} ({len(content) / 1e6:.2f} MB, calibrated on {len(images)} "
                f"images of {calibration_split}, {time.perf_counter() - start:.1f} s)"
            )
    if evaluate_split:
        keras_segmenter = serving.KerasSegmenter(model, scales=scales, flip=flip)
        segmenters = {"float Keras": keras_segmenter}
        segmenters["float Keras, letterboxed"] = tflite_lib.LetterboxedSegmenter(
            keras_segmenter, tflite_input_size, tflite_lib.model_pad_value()
        )
        labels = {"none": "float32 TFLite", "int8": "int8 TFLite"}
        for key, path in result["tflite"].items():
            segmenters[labels[key]] = tflite_lib.TFLiteSegmenter(path)
        evaluation = tflite_lib.evaluate_segmenters(
            segmenters, dataset_dir, evaluate_split, limit=eval_limit or None
        )
        result["evaluation"] = evaluation
        log(
            f"mIOU on {dataset_dir}:{evaluate_split} (TFLite input {tflite_input_size[0]}x"
            f"{tflite_input_size[1]}; 'letterboxed' = the Keras model fed what TFLite is fed):"
        )
        log(tflite_lib.format_comparison(evaluation))
        summary = {
            name: {k: v for k, v in r.items() if k != "confusion_matrix"}
            for name, r in evaluation.items()
        }
        atomic_io.write_json(
            os.path.join(export_dir, "tflite_eval.json"),
            {
                "dataset_dir": dataset_dir,
                "split": evaluate_split,
                "tflite_input_size": list(tflite_input_size),
                "results": summary,
            },
        )
    card = export_card(
        model,
        info,
        final_dir or export_dir,
        names=names,
        palette=palette,
        ignore_label=ignore_label,
        dataset_name=dataset_name,
        result=result,
        scales=scales,
        flip=flip,
        tile_size=tile_size,
        max_pixels=serving.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        serving_dtype=serving_dtype,
        tflite_input_size=tflite_input_size,
        evaluate_split=evaluate_split,
        batch_norm_folded=fuse_batch_norm,
    )
    result["model_card"] = model_card.write_card(export_dir, card)
    card_path = os.path.join(export_dir, model_card.CARD_MARKDOWN)
    log(f"model card: {card_path}: {model_card.summary(card)}")
    return result


def export_card(
    model,
    info,
    export_dir,
    *,
    names,
    palette,
    ignore_label,
    dataset_name,
    result,
    scales,
    flip,
    tile_size,
    max_pixels,
    serving_dtype,
    tflite_input_size,
    evaluate_split,
    batch_norm_folded,
):
    """The model card of an export (:mod:`deeplab.export.model_card`): what run_export wrote
    and, when it evaluated, the figures it measured."""
    evaluation = result.get("evaluation")
    measured = {}
    if evaluation:
        section = model_card.evaluation_section(dataset_name, evaluate_split, evaluation, names)
        measured = section["models"]
    else:
        section = None
    variants = []
    if result["saved_model"]:
        variants.append(
            {
                "file": "saved_model.pb (SavedModel)",
                "precision": serving_dtype,
                "miou": (measured.get("float Keras") or {}).get("miou")
                if serving_dtype == "float32"
                else None,
                "agreement_with_float": 1.0 if serving_dtype == "float32" else None,
            }
        )
    labels = {"none": ("float32 TFLite", "float32"), "int8": ("int8 TFLite", "int8")}
    for key, path in result["tflite"].items():
        row = measured.get(labels[key][0]) or {}
        variants.append(
            {
                "file": os.path.basename(path),
                "precision": labels[key][1],
                "input_size": list(tflite_input_size),
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
            gflops_size=tflite_input_size,
            batch_norm_folded=batch_norm_folded,
        ),
        classes_section=model_card.classes(names, palette, ignore_label),
        provenance={
            "checkpoint": os.path.abspath(info["checkpoint"]),
            "step": info["step"],
            "dataset": dataset_name,
            "config": _recorded_config(info["logdir"]),
        },
        evaluation=section,
        input_section={
            "max_pixels": int(max_pixels),
            "scales": list(scales),
            "flip": bool(flip),
            "tile_size": tile_size,
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
