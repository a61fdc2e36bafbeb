"""Segmenting image files: the model to run and the PNGs written for each image.

:func:`make_segmenter` opens an export (a .tflite file or a SavedModel folder) or rebuilds a
checkpoint with Keras as a callable uint8 [H, W, 3] -> int32 [H, W]; :func:`predict_files` runs
it on files and folders and writes ``NAME.png`` (class indices), ``NAME_color.png`` and
``NAME_overlay.png`` for each image (``python -m deeplab.predict``).
"""

import io
import os
import time

import numpy as np
from PIL import Image

from deeplab.common import atomic_io
from deeplab.common.errors import UserError
from deeplab.data import datasets_info
from deeplab.data import images
from deeplab.evaluation import visualization
from deeplab.export import serving
from deeplab.export import tflite
from deeplab.logdir import checkpoints


def read_image(path):
    """Reads an image file as uint8 RGB by the rules of :mod:`deeplab.data.images` (EXIF orientation
    applied, alpha dropped, 16-bit reduced to its high byte; the same as the converters and the
    SavedModel's encoded-image signature).

    Returns:
      (uint8 [H, W, 3], note): note says what conversion was made, or None for 8-bit RGB.

    Raises:
      deeplab.data.images.ImageError: the file cannot be read as an image (one line naming it).
    """
    array, note = images.read_rgb(path)
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


def output_stems(paths):
    """One output stem per input whose files (stem + each of OUTPUT_SUFFIXES) no other input
    writes: the file's stem, with _2, _3... where a name is taken (``x.jpg`` and ``x_color.jpg``
    would otherwise both write ``x_color.png``)."""
    stems, taken = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
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
    scales=(1.0,),
    flip=False,
    output_stride=0,
    num_threads=0,
    fuse_batch_norm=True,
    tile_size=None,
    tile_overlap=0.25,
):
    """A callable uint8 [H, W, 3] -> int32 [H, W] with ``class_names`` / ``palette`` attributes.

    ``model``: a .tflite file, a SavedModel folder, or a folder with ``model_config.json`` (a
    training logdir or an imported model, taken as ``checkpoint``); else ``checkpoint`` is rebuilt
    with Keras (``scales``, ``flip``, ``output_stride`` apply to it; an export has its own), with
    every BN folded into its convolution unless ``fuse_batch_norm`` is False (deeplab.model.fuse).
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
    info = checkpoints.read_run_info(checkpoint)
    keras_model = checkpoints.load_model(
        info["checkpoint"],
        output_stride=output_stride or None,
        upsample_logits=True,
        fuse_batch_norm=fuse_batch_norm,
    )
    dataset_info = info["dataset_info"] or {}
    segmenter = serving.KerasSegmenter(
        keras_model,
        scales=scales,
        flip=flip,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        class_names=dataset_info.get("class_names"),
        palette=dataset_info.get("palette"),
    )
    segmenter.run_info = info  # what deeplab.load's model card is built from
    return segmenter


def predict_files(segmenter, inputs, output_dir, *, alpha=0.6, log=print):
    """Runs ``segmenter`` on every image of ``inputs`` and writes the PNGs.

    Returns:
      dict: "processed" [(path, index_png)], "skipped" [(path, reason)], "notes"
      [(path, note)], "times_ms" [(inference, total)].

    Raises:
      UserError: an output file would overwrite an input file.
    """
    paths, skipped = collect_inputs(inputs)
    for path, reason in skipped:
        log(f"skipped {path}: {reason}")
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
    result = {"processed": [], "skipped": list(skipped), "notes": [], "times_ms": []}
    palette = getattr(segmenter, "palette", None)
    class_names = getattr(segmenter, "class_names", None)
    for number, (path, stem) in enumerate(zip(paths, stems), start=1):
        start = time.perf_counter()
        try:
            image, note = read_image(path)
        except images.ImageError as error:
            prefix = f"{path}: "
            message = str(error)
            if message.startswith(prefix):
                message = message[len(prefix) :]
            reason = f"unreadable image ({message})"
            log(f"skipped {path}: {reason}")
            result["skipped"].append((path, reason))
            continue
        if note:
            log(f"note: {path}: {note}")
            result["notes"].append((path, note))
        infer_start = time.perf_counter()
        labels = segmenter(image)
        infer_ms = 1000.0 * (time.perf_counter() - infer_start)
        written = write_outputs(
            output_dir, stem, image, labels, palette, alpha, class_names=class_names
        )
        total_ms = 1000.0 * (time.perf_counter() - start)
        result["processed"].append((path, written[0]))
        result["times_ms"].append((infer_ms, total_ms))
        shares = visualization.class_shares(labels, class_names)
        result.setdefault("classes", []).append((path, shares))
        log(
            f"[{number}/{len(paths)}] {path} ({image.shape[0]}x{image.shape[1]}): "
            f"inference {infer_ms:.1f} ms, total {total_ms:.1f} ms -> {written[0]}"
        )
        log(f"    classes: {visualization.format_shares(shares)}")
    if result["times_ms"]:
        times = np.asarray(result["times_ms"])
        steady = times[1:] if len(times) > 1 else times
        log(
            f"processed {len(result['processed'])}, skipped {len(result['skipped'])}; mean "
            f"inference {steady[:, 0].mean():.1f} ms per image"
            f"{' (excluding the first)' if len(times) > 1 else ''}"
        )
    else:
        log(f"processed 0 images, skipped {len(result['skipped'])}")
    return result
