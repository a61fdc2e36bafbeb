r"""Segments image files with an exported model (SavedModel or .tflite) or a training checkpoint.

    python -m deeplab.predict --model=exports/quickstart --input=photos/ --output_dir=out/
    python -m deeplab.predict --model=exports/quickstart/deeplab_int8.tflite --input=a.jpg,b.png \
        --output_dir=out/
    python -m deeplab.predict --flagfile=experiments/quickstart.flags --checkpoint=runs/quickstart \
        --input=photos/ --output_dir=out/        # Keras, with --eval_scales / --eval_flip

For every image NAME.EXT it writes into ``--output_dir``:

    NAME.png          class index per pixel (8-bit grayscale PNG; 16-bit if an index > 255)
    NAME_color.png    the class map in the model's palette
    NAME_overlay.png  the image blended with the colorized map (``--overlay_alpha``)

and prints one line per image with its size and the inference and total times in ms (the
first image also pays for graph tracing / interpreter warm-up).

- ``--input`` takes files and folders (comma-separated, or as extra arguments); a folder
  contributes its image files (not recursive).
- Any size and mode, read by :mod:`deeplab.data.images` (the rules of every binary): EXIF
  orientation applied, grayscale, palette, CMYK and RGBA converted to 8-bit RGB (alpha dropped),
  16-bit reduced to the high byte, each with a note. The map has the (turned) image's size.
- Unreadable or missing files are reported and skipped; the rest are processed, and the exit
  status is 1 when anything was skipped (a summary line names what).
- Exit status: 0 if at least one image was processed, 1 if none was, 2 on a usage error.
- ``--model`` ending in .tflite (ours or the official DeepLab TFLite models): images are
  letterboxed to the model's fixed input size (see deeplab/export/tflite.py).
"""

from deeplab import _console  # noqa: E402  (first: before anything imports TensorFlow)

_console.quiet_tensorflow()

import io
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image

from deeplab.config import flags as experiment_flags  # noqa: F401  (shared experiment flags)
from deeplab.common import atomic_io
from deeplab.data import images
from deeplab.common.errors import UserError

flags.DEFINE_string("model", None,
                    "SavedModel folder (deeplab.export_saved_model), .tflite file, or a model "
                    "folder of ours (a training logdir, an import of deeplab.import_official: "
                    "run with Keras); without it, --checkpoint (or --logdir) is run with Keras.")
flags.DEFINE_list("input", [], "Image files and/or folders (more may follow as arguments).")
flags.DEFINE_string("predict_output_dir", None, "Where the PNGs go (alias: --output_dir).")
flags.DEFINE_float("predict_overlay_alpha", 0.5, "Opacity of the class colors in the overlay.")
flags.DEFINE_integer("num_threads", 0, "TFLite interpreter threads (0: its default).")

FLAGS = flags.FLAGS
# --help lists the shared experiment flags this binary reads, not only its own.
flags.adopt_module_key_flags(experiment_flags)

IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS


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
    return array, (note[len(prefix):] if note and note.startswith(prefix) else note)


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
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if not name.startswith(".")
                           and name.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(item, name)))
            if not found:
                problems.append((item, "folder holds no image files "
                                       f"({', '.join(IMAGE_EXTENSIONS)})"))
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            problems.append((item, "no such file or folder"))
    return paths, problems


OUTPUT_SUFFIXES = (".png", "_color.png", "_overlay.png")


def _output_stems(paths):
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


def write_outputs(output_dir, stem, image, labels, palette, alpha=0.5):
    """Writes NAME.png (indices), NAME_color.png and NAME_overlay.png; returns their paths."""
    from deeplab.common import atomic_io  # pylint: disable=import-outside-toplevel
    from deeplab.data.datasets_info import color_map  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation.visualization import (  # pylint: disable=import-outside-toplevel
        colorize_labels, overlay, save_index_png, save_rgb_png)

    labels = np.asarray(labels)
    index_path = os.path.join(output_dir, stem + ".png")
    if labels.max(initial=0) <= 255 and labels.min(initial=0) >= 0:
        save_index_png(index_path, labels)
    else:  # more than 256 classes: a 16-bit greyscale PNG
        buffer = io.BytesIO()
        Image.fromarray(labels.astype(np.uint16)).save(buffer, format="PNG")
        atomic_io.write_bytes(index_path, buffer.getvalue())
    if palette is None or labels.max(initial=0) >= len(palette):
        palette = color_map(256)
    colored = colorize_labels(labels, palette)
    color_path = os.path.join(output_dir, stem + "_color.png")
    overlay_path = os.path.join(output_dir, stem + "_overlay.png")
    save_rgb_png(color_path, colored)
    save_rgb_png(overlay_path, overlay(image, colored, alpha))
    return index_path, color_path, overlay_path


def make_segmenter(*, model=None, checkpoint=None, scales=(1.0,), flip=False, output_stride=0,
                   num_threads=0, fuse_batch_norm=True, tile_size=None, tile_overlap=0.25):
    """A callable uint8 [H, W, 3] -> int32 [H, W] with ``class_names`` / ``palette`` attributes.

    ``model``: a .tflite file, a SavedModel folder, or a folder with ``model_config.json`` (a
    training logdir or an imported model, taken as ``checkpoint``); else ``checkpoint`` is rebuilt with
    Keras (``scales``, ``flip``, ``output_stride`` apply to it; an export has its own), with
    every BN folded into its convolution unless ``fuse_batch_norm`` is False (deeplab.model.fuse).
    """
    if model and os.path.isdir(model) and not os.path.exists(os.path.join(model, "saved_model.pb")) \
            and os.path.exists(os.path.join(model, "model_config.json")):
        # A training logdir or an imported model (deeplab.import_official): run it with Keras.
        model, checkpoint = None, model
    if model:
        if model.endswith(".tflite") or os.path.isfile(model):
            from deeplab.export.tflite import TFLiteSegmenter  # pylint: disable=import-outside-toplevel

            return TFLiteSegmenter(model, num_threads=num_threads or None)
        if os.path.isdir(model):
            from deeplab.export.serving import SavedModelSegmenter  # pylint: disable=import-outside-toplevel

            return SavedModelSegmenter(model)
        raise UserError(f"--model={model}: neither a .tflite file nor a SavedModel folder")
    if not checkpoint:
        raise UserError("pass --model=EXPORT (SavedModel folder or .tflite file) or "
                        "--checkpoint=RUN (a training logdir or checkpoint prefix)")
    from deeplab.training import checkpoints  # pylint: disable=import-outside-toplevel
    from deeplab.export.serving import KerasSegmenter  # pylint: disable=import-outside-toplevel

    info = checkpoints.read_run_info(checkpoint)
    keras_model = checkpoints.load_model(info["checkpoint"], output_stride=output_stride or None,
                                         upsample_logits=True, fuse_batch_norm=fuse_batch_norm)
    dataset_info = info["dataset_info"] or {}
    return KerasSegmenter(keras_model, scales=scales, flip=flip, tile_size=tile_size,
                          tile_overlap=tile_overlap,
                          class_names=dataset_info.get("class_names"),
                          palette=dataset_info.get("palette"))


def predict_files(segmenter, inputs, output_dir, *, alpha=0.5, log=print):
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
    stems = _output_stems(paths)
    inputs_real = {os.path.realpath(p) for p in paths}
    for stem in stems:
        for suffix in OUTPUT_SUFFIXES:
            target = os.path.realpath(os.path.join(output_dir, stem + suffix))
            if target in inputs_real:
                raise UserError(f"--output_dir={output_dir}: writing {target} would overwrite an "
                                "input image; choose another output folder")
    result = {"processed": [], "skipped": list(skipped), "notes": [], "times_ms": []}
    palette = getattr(segmenter, "palette", None)
    for number, (path, stem) in enumerate(zip(paths, stems), start=1):
        start = time.perf_counter()
        try:
            image, note = read_image(path)
        except images.ImageError as error:
            prefix = f"{path}: "
            reason = "unreadable image (" + (str(error)[len(prefix):] if str(error).startswith(prefix)
                                             else str(error)) + ")"
            log(f"skipped {path}: {reason}")
            result["skipped"].append((path, reason))
            continue
        if note:
            log(f"note: {path}: {note}")
            result["notes"].append((path, note))
        infer_start = time.perf_counter()
        labels = segmenter(image)
        infer_ms = 1000.0 * (time.perf_counter() - infer_start)
        written = write_outputs(output_dir, stem, image, labels, palette, alpha)
        total_ms = 1000.0 * (time.perf_counter() - start)
        result["processed"].append((path, written[0]))
        result["times_ms"].append((infer_ms, total_ms))
        log(f"[{number}/{len(paths)}] {path} ({image.shape[0]}x{image.shape[1]}): "
            f"inference {infer_ms:.1f} ms, total {total_ms:.1f} ms -> {written[0]}")
    if result["times_ms"]:
        times = np.asarray(result["times_ms"])
        steady = times[1:] if len(times) > 1 else times
        log(f"processed {len(result['processed'])}, skipped {len(result['skipped'])}; mean "
            f"inference {steady[:, 0].mean():.1f} ms per image"
            f"{' (excluding the first)' if len(times) > 1 else ''}")
    else:
        log(f"processed 0 images, skipped {len(result['skipped'])}")
    return result


def main(argv):
    _console.quiet_absl()
    inputs = list(FLAGS.input) + list(argv[1:])
    output_dir = FLAGS.predict_output_dir
    try:
        if not inputs:
            raise UserError("pass --input=FILES_OR_FOLDERS (comma-separated) or list them as "
                            "arguments")
        if not output_dir:
            raise UserError("pass --output_dir=FOLDER for the PNGs")
        paths, problems = collect_inputs(inputs)
        if not paths:  # nothing to do: say why without loading a model
            for path, reason in problems:
                print(f"skipped {path}: {reason}")
            print("processed 0 images")
            sys.exit(1)
        if FLAGS.model and (FLAGS.checkpoint or FLAGS.logdir):
            logging.info("--model=%s given: ignoring --checkpoint/--logdir", FLAGS.model)
        segmenter = make_segmenter(
            model=FLAGS.model, checkpoint=FLAGS.checkpoint or FLAGS.logdir,
            scales=experiment_flags.eval_scales(), flip=FLAGS.eval_flip,
            output_stride=FLAGS.eval_output_stride, num_threads=FLAGS.num_threads,
            tile_size=experiment_flags.eval_tile_size(), tile_overlap=FLAGS.eval_tile_overlap)
        result = predict_files(segmenter, inputs, output_dir, alpha=FLAGS.predict_overlay_alpha)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_code(result))


def exit_code(result):
    """0 when every input was segmented; 1 when any was skipped (or none processed)."""
    if result["skipped"]:
        print(f"error: {len(result['skipped'])} of "
              f"{len(result['skipped']) + len(result['processed'])} inputs were skipped: "
              + ", ".join(path for path, _ in result["skipped"][:5])
              + (" ..." if len(result["skipped"]) > 5 else ""), file=sys.stderr)
        return 1
    return 0 if result["processed"] else 1


if __name__ == "__main__":
    flags.DEFINE_alias("output_dir", "predict_output_dir")
    flags.DEFINE_alias("overlay_alpha", "predict_overlay_alpha")
    app.run(main)
