"""Segmenting image files: the model to run and the PNGs written for each image.

:func:`make_segmenter` opens an export (a .tflite file or a SavedModel folder) or rebuilds a
checkpoint with Keras as a callable uint8 [H, W, 3] -> int32 [H, W]; :func:`predict_files` runs
it on files and folders and writes ``NAME.png`` (class indices), ``NAME_color.png`` and
``NAME_overlay.png`` for each image (``python -m deeplab.predict``).
"""

import contextlib
import errno
import io
import logging
import os
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab.common import atomic_io
from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import datasets_info
from deeplab.data import images
from deeplab.evaluation import visualization
from deeplab.export import serving
from deeplab.export import tflite
from deeplab.logdir import checkpoints

log = logging.getLogger(__name__)


def read_image(path, max_pixels=None, hint=""):
    """Reads an image file as uint8 RGB by the rules of :mod:`deeplab.data.images` (EXIF orientation
    applied, alpha dropped, 16-bit reduced to its high byte; the same as the converters and the
    SavedModel's encoded-image signature).

    Returns:
      (uint8 [H, W, 3], note): note says what conversion was made, or None for 8-bit RGB.

    Raises:
      deeplab.data.images.ImageError: the file cannot be read as an image, or its header
        declares more than ``max_pixels`` pixels (nothing decoded; one line naming it).
    """
    array, note = images.read_rgb(path, max_pixels=max_pixels, hint=hint)
    # The notes name the file; predict prints them after the file's name already.
    prefix = f"{path}: "
    return array, (note[len(prefix) :] if note and note.startswith(prefix) else note)


def collect_inputs(inputs):
    """Expands files and folders into (list of image paths, list of (path, problem)).

    A folder contributes its files with an image extension, sorted; a named file is tried
    whatever its extension; a path that does not exist is a problem.
    """
    paths, problems = [], []
    for item in inputs:
        if not item:
            continue
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name)
                for name in os.listdir(item)
                if not name.startswith(".")
                and images.has_image_extension(name)
                and os.path.isfile(os.path.join(item, name))
            )
            if not found:
                problems.append(
                    (item, f"folder holds no image files ({', '.join(images.IMAGE_EXTENSIONS)})")
                )
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            problems.append((item, "no such file or folder"))
    return paths, problems


OUTPUT_SUFFIXES = (".png", "_color.png", "_overlay.png")


def _fitting_stem(stem):
    """``stem`` shortened (its start and a hash of the whole) where the longest output name
    built from it would pass the file system's limit on a name (255 bytes)."""
    room = atomic_io.NAME_MAX - max(len(suffix) for suffix in OUTPUT_SUFFIXES) - 8  # + "_NN"
    return atomic_io.short_name(stem, room)


def output_stems(paths):
    """One output stem per input whose files (stem + each of OUTPUT_SUFFIXES) no other input
    writes: the file's stem, with _2, _3... where a name is taken (``x.jpg`` and ``x_color.jpg``
    would otherwise both write ``x_color.png``); a stem too long for a file name is shortened
    to its start and a hash of the whole."""
    stems, taken = [], set()
    for path in paths:
        stem = _fitting_stem(os.path.splitext(os.path.basename(path))[0])
        name, k = stem, 2
        while any((name + suffix).lower() in taken for suffix in OUTPUT_SUFFIXES):
            name, k = f"{stem}_{k}", k + 1
        taken.update((name + suffix).lower() for suffix in OUTPUT_SUFFIXES)
        stems.append(name)
    return stems


def write_outputs(
    output_dir, stem, image, labels, palette, alpha=0.6, class_names=None, ignore_label=255
):
    """Writes NAME.png (indices), NAME_color.png and NAME_overlay.png; returns their paths.

    The overlay is :func:`deeplab.evaluation.visualization.legend_overlay`: the classes found
    painted over the photo (the background class, if the dataset has one, left as it is) with
    a legend of names, colours and pixel shares.
    """
    labels = np.asarray(labels)
    index_path = os.path.join(output_dir, stem + ".png")
    if labels.max(initial=0) <= 255 and labels.min(initial=0) >= 0:
        visualization.save_index_png(index_path, labels)
    else:  # more than 256 classes: a 16-bit greyscale PNG
        buffer = io.BytesIO()
        Image.fromarray(labels.astype(np.uint16)).save(buffer, format="PNG")
        atomic_io.write_bytes(index_path, buffer.getvalue())
    if palette is None or labels.max(initial=0) >= len(palette):
        palette = datasets_info.color_map(256)
    colored = visualization.colorize_labels(labels, palette)
    color_path = os.path.join(output_dir, stem + "_color.png")
    overlay_path = os.path.join(output_dir, stem + "_overlay.png")
    visualization.save_rgb_png(color_path, colored)
    picture = visualization.legend_overlay(
        image,
        labels,
        palette,
        class_names,
        ignore_label=ignore_label,
        background=visualization.background_class(class_names),
        alpha=alpha,
    )
    visualization.save_rgb_png(overlay_path, picture)
    return index_path, color_path, overlay_path


def make_segmenter(
    *,
    model=None,
    checkpoint=None,
    options=None,
    num_threads=0,
    fuse_batch_norm=True,
):
    """A callable uint8 [H, W, 3] -> int32 [H, W] with ``class_names`` / ``palette`` attributes.

    ``model``: a .tflite file, a SavedModel folder, or a folder with ``model_config.json`` (a
    training logdir or an imported model, taken as ``checkpoint``); else ``checkpoint`` is rebuilt
    with Keras at ``options.output_stride`` and run with ``options`` (an
    :class:`~deeplab.common.inference_options.InferenceOptions`: scales, flip, windows; an export
    has its own), with every BN folded into its convolution unless ``fuse_batch_norm`` is False
    (deeplab.model.fuse).
    """
    if (
        model
        and os.path.isdir(model)
        and not os.path.exists(os.path.join(model, "saved_model.pb"))
        and os.path.exists(os.path.join(model, "model_config.json"))
    ):
        # A training logdir or an imported model (deeplab.import_official): run it with Keras.
        model, checkpoint = None, model
    if model:
        if model.endswith(".tflite") or os.path.isfile(model):
            return tflite.TFLiteSegmenter(model, num_threads=num_threads or None)
        if os.path.isdir(model):
            return serving.SavedModelSegmenter(model)
        raise UserError(f"--model={model}: neither a .tflite file nor a SavedModel folder")
    if not checkpoint:
        raise UserError(
            "pass --model=EXPORT (SavedModel folder or .tflite file) or "
            "--checkpoint=RUN (a training logdir or checkpoint prefix)"
        )
    options = options or InferenceOptions()
    info = checkpoints.read_run_info(checkpoint)
    keras_model = checkpoints.load_model(
        info["checkpoint"],
        output_stride=options.output_stride,
        upsample_logits=True,
        fuse_batch_norm=fuse_batch_norm,
    )
    dataset_info = info["dataset_info"] or {}
    segmenter = serving.KerasSegmenter(
        keras_model,
        options,
        class_names=dataset_info.get("class_names"),
        palette=dataset_info.get("palette"),
    )
    segmenter.run_info = info  # what deeplab.load's model card is built from
    return segmenter


def input_cap(segmenter, max_pixels):
    """(cap, hint) for reading one image for ``segmenter``: the smaller of ``max_pixels``
    (``--max_image_pixels``; 0: none) and the cap an export was written with, and the end of
    the message that says which to change."""
    own = getattr(segmenter, "max_pixels", 0) or 0
    if own and (not max_pixels or own < max_pixels):
        return own, "; the export refuses more per call (--serving_max_pixels at export)"
    return max_pixels, "; pass a larger --max_image_pixels (0: no cap) or shrink the image"


# Failures of one image's inference that leave the model usable (the next image is tried).
INFERENCE_ERRORS = (MemoryError, tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError)
# A write that fails for want of space: every later image would fail the same way.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _first_line(error):
    text = str(getattr(error, "message", None) or error).strip()
    return (text.splitlines() or [type(error).__name__])[0][-200:]


def _write_or_clean(output_dir, stem, image, labels, palette, alpha, **options):
    """write_outputs, removing what it wrote for this image if a write fails (no partial set;
    files of an earlier run that were not rewritten are kept)."""
    paths = [os.path.join(output_dir, stem + suffix) for suffix in OUTPUT_SUFFIXES]

    def stamp(path):
        with contextlib.suppress(OSError):
            status = os.stat(path)
            return status.st_ino, status.st_mtime_ns
        return None

    before = [stamp(path) for path in paths]
    try:
        return write_outputs(output_dir, stem, image, labels, palette, alpha, **options)
    except OSError:
        for path, old in zip(paths, before):
            if stamp(path) not in (None, old):
                with contextlib.suppress(OSError):
                    os.remove(path)
        raise


def predict_files(
    segmenter, inputs, output_dir, *, alpha=0.6, max_pixels=images.DEFAULT_MAX_PIXELS
):
    """Runs ``segmenter`` on every image of ``inputs`` and writes the PNGs, logging a line per
    image (INFO: processed, skipped or noted) and a summary line.

    An image whose header declares more than ``max_pixels`` pixels (or the export's own cap)
    is skipped with a line before it is decoded; one whose inference or writing fails is
    skipped with a line; a full disk stops the loop with a line (every later image would fail).

    Returns:
      dict: "processed" [(path, index_png)], "skipped" [(path, reason)], "notes"
      [(path, note)], "times_ms" [(inference, total)], "classes" [(path, the classes found
      with their pixel shares, as visualization.class_shares gives them)].

    Raises:
      UserError: an output file would overwrite an input file.
    """
    paths, skipped = collect_inputs(inputs)
    for path, reason in skipped:
        log.info(f"skipped {path}: {reason}")
    atomic_io.ensure_folder(output_dir, "--output_dir")
    stems = output_stems(paths)
    inputs_real = {os.path.realpath(p) for p in paths}
    for stem in stems:
        for suffix in OUTPUT_SUFFIXES:
            target = os.path.realpath(os.path.join(output_dir, stem + suffix))
            if target in inputs_real:
                raise UserError(
                    f"--output_dir={output_dir}: writing {target} would overwrite an "
                    "input image; choose another output folder"
                )
    result = {
        "processed": [],
        "skipped": list(skipped),
        "notes": [],
        "times_ms": [],
        "classes": [],
    }
    palette = getattr(segmenter, "palette", None)
    class_names = getattr(segmenter, "class_names", None)
    cap, hint = input_cap(segmenter, max_pixels)
    for number, (path, stem) in enumerate(zip(paths, stems), start=1):
        start = time.perf_counter()
        try:
            image, note = read_image(path, cap, hint)
        except images.ImageError as error:
            prefix = f"{path}: "
            message = str(error)
            if message.startswith(prefix):
                message = message[len(prefix) :]
            too_large = isinstance(error, images.ImageTooLargeError)
            reason = message if too_large else f"unreadable image ({message})"
            log.info(f"skipped {path}: {reason}")
            result["skipped"].append((path, reason))
            continue
        if note:
            log.info(f"note: {path}: {note}")
            result["notes"].append((path, note))
        infer_start = time.perf_counter()
        try:
            labels = segmenter(image)
        except INFERENCE_ERRORS as error:
            reason = f"inference failed ({_first_line(error)})"
            log.info(f"skipped {path}: {reason}")
            result["skipped"].append((path, reason))
            continue
        infer_ms = 1000.0 * (time.perf_counter() - infer_start)
        try:
            written = _write_or_clean(
                output_dir, stem, image, labels, palette, alpha, class_names=class_names
            )
        except OSError as error:
            target = os.path.join(output_dir, stem)
            reason = f"cannot write its outputs {target}*.png ({error.strerror or error})"
            log.info(f"skipped {path}: {reason}")
            result["skipped"].append((path, reason))
            if error.errno in _NO_SPACE:
                rest = list(paths[number:])
                result["skipped"].extend(
                    (p, "not processed: the output disk is full") for p in rest
                )
                log.info(
                    f"stopped: --output_dir={output_dir} is full; {len(rest)} more image(s) not "
                    "processed: free space and run the same command again"
                )
                break
            continue
        total_ms = 1000.0 * (time.perf_counter() - start)
        result["processed"].append((path, written[0]))
        result["times_ms"].append((infer_ms, total_ms))
        shares = visualization.class_shares(labels, class_names)
        result["classes"].append((path, shares))
        log.info(
            f"[{number}/{len(paths)}] {path} ({image.shape[0]}x{image.shape[1]}): "
            f"inference {infer_ms:.1f} ms, total {total_ms:.1f} ms -> {written[0]}"
        )
        log.info(f"    classes: {visualization.format_shares(shares)}")
    if result["times_ms"]:
        times = np.asarray(result["times_ms"])
        steady = times[1:] if len(times) > 1 else times
        log.info(
            f"processed {len(result['processed'])}, skipped {len(result['skipped'])}; mean "
            f"inference {steady[:, 0].mean():.1f} ms per image"
            f"{' (excluding the first)' if len(times) > 1 else ''}"
        )
    else:
        log.info(f"processed 0 images, skipped {len(result['skipped'])}")
    return result
