"""The engine shared by the dataset converters in ``datasets/``: read, check, encode, write shards.

A converter lists its raw examples (:mod:`deeplab.data.raw_datasets`) as :class:`ExampleSpec`
objects and calls :func:`convert_splits`, which reads and checks every example in parallel worker
processes, writes the records through :class:`deeplab.data.records.ShardedWriter` (atomic shards)
and records the counts in dataset.json.

What is checked, per example (each failure names the file and the reason; the converter stops, or
with ``skip_bad`` skips the example and reports it):

- the image and label files exist and decode completely (truncated or corrupt files are caught
  here);
- image: 8-bit RGB. Grayscale (L), palette (P) and CMYK images are converted to RGB and stored as
  PNG, with a note; RGBA / LA images whose alpha is fully opaque are converted the same way,
  translucent ones are rejected (there is no right background to composite on); 16-bit images are
  rejected (their scaling to 8 bits is ambiguous); JPEG and PNG RGB files are stored byte for byte;
- label: one class index per pixel. 8-bit single-channel ("L") PNGs everywhere; palette ("P") PNGs
  only where the palette is the dataset's format (PASCAL VOC SegmentationClass) or when allowed
  explicitly; RGB colour masks and 16-bit masks are rejected;
- image and label have the same size;
- every label value is in [0, num_classes) or the ignore label (after the dataset's id mapping).

This module imports neither TensorFlow nor Keras, so worker processes start fast: they encode labels
with the TF-free :mod:`deeplab.data.tfrecord`; the parent process imports
:mod:`deeplab.data.records` (TensorFlow) when it writes.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time

import numpy as np

from deeplab import _console
from deeplab.common import atomic_io
from deeplab.common.progress import Progress
from deeplab.common.errors import ConfigError, DataError
from deeplab.data import images, tfrecord

log = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------
# Example descriptions (picklable: they travel to worker processes).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PngLabel:
    """A label PNG of class indices.

    Attributes:
      path: the PNG file.
      palette_ok: accept palette ("P") PNGs and read their raw indices (PASCAL VOC's format).
      lut: optional 256-entry tuple raw value -> class (-1 = a value that must not occur).
    """

    path: str
    palette_ok: bool = False
    lut: tuple = None


@dataclasses.dataclass(frozen=True)
class SbdLabel:
    """A Semantic Boundaries Dataset ``cls/*.mat`` file (MATLAB struct ``GTcls.Segmentation``)."""

    path: str


@dataclasses.dataclass(frozen=True)
class CocoLabel:
    """COCO instance annotations of one image, rendered to a VOC-class label map.

    Attributes:
      annotations: tuple of dicts with "segmentation" (polygons or RLE), "category_id", "iscrowd",
        "area".
      height, width: image size from the annotation file.
      category_map: tuple of (coco_category_id, class_index) pairs; other categories are background.
      source: the annotation file (for messages).
    """

    annotations: tuple
    height: int
    width: int
    category_map: tuple
    source: str


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """One raw example: an image file, its label source and the name stored in
    ``image/filename``."""

    image_path: str
    label: object
    filename: str


class BadExample(Exception):
    """An example that cannot be converted; the message names the file and the reason."""


# ---------------------------------------------------------------------------------------------
# Reading and checking (runs in worker processes).
# ---------------------------------------------------------------------------------------------


def _read_bytes(path, what):
    try:
        return images.read_bytes(path, what)
    except images.ImageError as error:
        raise BadExample(str(error)) from None


def _png_bit_depth(data):
    if data[:8] == _PNG_SIGNATURE and len(data) >= 26:
        return data[24]
    return None


def _open_image(data, path, what):
    try:
        return images.open_image(data, path, what)
    except images.ImageError as error:
        raise BadExample(str(error)) from None


def read_image(path):
    """Reads an image file by the rules of :mod:`deeplab.data.images` (the one reader of every
    binary).

    An 8-bit RGB JPEG or PNG with no EXIF orientation to apply is stored as its original bytes;
    anything else (grayscale, palette, alpha, 16-bit, other formats, an EXIF orientation) is
    stored as the lossless PNG of its pixels after the rules, with a note.

    Returns:
      (encoded bytes, "jpeg" | "png", height, width, note or None).

    Raises:
      BadExample: missing, unreadable or corrupt file, a floating-point image.
    """
    data = _read_bytes(path, "image")
    image = _open_image(data, path, "image")
    fmt = (image.format or "").upper()
    orientation = images.exif_orientation(data)
    deep_rgb = _png_bit_depth(data) == 16 and image.mode == "RGB"
    if image.mode == "RGB" and fmt in ("JPEG", "PNG") and not deep_rgb and orientation == 1:
        return data, "jpeg" if fmt == "JPEG" else "png", image.height, image.width, None
    try:
        array, note = images.to_rgb(image, path, orientation)
    except images.ImageError as error:
        raise BadExample(str(error)) from None
    if deep_rgb:  # PIL reads 16-bit RGB as RGB (high bytes): say so, keep any other note
        extra = "16-bit RGB reduced to 8 bits (high byte)"
        note = f"{note}; {extra}" if note else f"{path}: {extra}"
    if orientation != 1:
        note += "; its label is read as stored (labels are never turned): check they align"
    note = note or f"{path}: {fmt or 'image'} converted to RGB PNG"
    return images.encode_png(array), "png", array.shape[0], array.shape[1], note


# Label file formats read by content (PIL's format name); all lossless.
LOSSLESS_LABEL_FORMATS = ("PNG", "BMP", "GIF", "PPM")


def read_png_label(label, expect_palette_hint=""):
    """Reads a :class:`PngLabel` into uint8 [H, W] raw values (before the LUT)."""
    path = label.path
    data = _read_bytes(path, "label")
    image = _open_image(data, path, "label")
    # By content, not by name: a lossy file (a JPEG saved as .png) has changed class ids.
    if image.format not in LOSSLESS_LABEL_FORMATS:
        raise BadExample(f"{path}: label is a {image.format or 'unknown-format'} file whatever its "
                         "name; lossy compression changes class ids: labels must be PNG files of "
                         "class indices")
    depth = _png_bit_depth(data)
    if depth == 16 or image.mode.startswith("I") or image.mode == "F":
        raise BadExample(f"{path}: 16-bit label image (mode {image.mode}); labels must be 8-bit "
                         "PNGs of class indices")
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "P":
        if label.palette_ok:
            return np.asarray(image, dtype=np.uint8)  # the palette indices, not the colours
        raise BadExample(
            f"{path}: label is a palette (colour-mapped) PNG, but this dataset expects 8-bit index "
            f"PNGs (mode L, one class id per pixel){expect_palette_hint}"
        )
    if image.mode in ("RGB", "RGBA"):
        raise BadExample(
            f"{path}: label is an {image.mode} colour image; labels must be single-channel PNGs of "
            f"class indices (map each colour to its class id first)"
        )
    raise BadExample(f"{path}: unsupported label image mode {image.mode}; expected an 8-bit "
                     "single-channel PNG")


def read_sbd_label(label):
    """Reads ``GTcls.Segmentation`` from an SBD ``cls/*.mat`` file as uint8 [H, W]."""
    import scipy.io  # slow to import, and only SBD's .mat labels need it

    path = label.path
    if not os.path.exists(path):
        raise BadExample(f"{path}: label file not found")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for bad files
        raise BadExample(f"{path}: not a readable MATLAB file ({e})") from None
    try:
        segmentation = mat["GTcls"]["Segmentation"][0, 0]
    except (KeyError, ValueError, IndexError, TypeError):
        raise BadExample(f"{path}: no GTcls.Segmentation struct field (not an SBD cls/*.mat "
                         "file?)") from None
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2:
        raise BadExample(f"{path}: GTcls.Segmentation has shape {segmentation.shape}, expected "
                         "[H, W]")
    if segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255):
        raise BadExample(f"{path}: GTcls.Segmentation values outside [0, 255]")
    return segmentation.astype(np.uint8)


def _coco_mask(segmentation, height, width):
    # optional dependency (COCO only): pip install pycocotools
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:  # compressed RLE
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def render_coco_label(label, ignore_label):
    """Paints COCO annotations into a VOC label map (Sec. 4.3).

    Non-crowd annotations of VOC categories are painted largest first (so smaller objects in front
    of larger ones stay visible); annotations of other categories stay background (0); crowd regions
    are painted last with the ignore label.
    """
    category_map = dict(label.category_map)
    out = np.zeros((label.height, label.width), np.uint8)
    regular = [a for a in label.annotations
               if not a.get("iscrowd", 0) and a["category_id"] in category_map]
    crowd = [a for a in label.annotations if a.get("iscrowd", 0)]
    try:
        for ann in sorted(regular, key=lambda a: -float(a.get("area", 0))):
            mask = _coco_mask(ann["segmentation"], label.height, label.width)
            out[mask] = category_map[ann["category_id"]]
        for ann in crowd:
            out[_coco_mask(ann["segmentation"], label.height, label.width)] = ignore_label
    except Exception as e:  # malformed polygons / RLE
        raise BadExample(f"{label.source}: bad segmentation in an annotation of this image "
                         f"({e})") from None
    return out


def load_example(spec, num_classes, ignore_label, palette_hint=""):
    """Reads, checks and encodes one example (in a worker process).

    Returns:
      dict with the fields of ``records.encode_example`` plus "note" (str or None).

    Raises:
      BadExample: with the file and the reason.
    """
    image_bytes, image_format, height, width, note = read_image(spec.image_path)
    label_src = spec.label
    if isinstance(label_src, PngLabel):
        raw = read_png_label(label_src, palette_hint)
        label_file = label_src.path
    elif isinstance(label_src, SbdLabel):
        raw = read_sbd_label(label_src)
        label_file = label_src.path
    elif isinstance(label_src, CocoLabel):
        if (label_src.height, label_src.width) != (height, width):
            raise BadExample(
                f"{spec.image_path}: image is {width}x{height} but {label_src.source} says "
                f"{label_src.width}x{label_src.height}"
            )
        raw = render_coco_label(label_src, ignore_label)
        label_file = label_src.source
    else:
        raise TypeError(f"unknown label source {type(label_src).__name__}")
    if raw.shape != (height, width):
        turned = ""
        if note and "EXIF orientation" in note and raw.shape == (width, height):
            turned = (" as displayed (its EXIF orientation is applied, as everywhere in this "
                      "project; the label matches the stored, unturned pixels: turn the label too, "
                      "or save the image without the orientation tag)")
        raise BadExample(
            f"{label_file}: label is {raw.shape[1]}x{raw.shape[0]} but image {spec.image_path} is "
            f"{width}x{height}{turned}"
        )
    lut = getattr(label_src, "lut", None)
    if lut is not None:
        lut = np.asarray(lut, np.int16)
        values = np.unique(raw)
        unknown = values[lut[values] < 0]
        if unknown.size:
            raise BadExample(f"{label_file}: label values {unknown.tolist()[:10]} are not ids of "
                             "this dataset's label table")
        label = lut[raw].astype(np.uint8)
    else:
        label = raw
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        raise BadExample(
            f"{label_file}: label values {bad.tolist()[:10]} are outside [0, {num_classes}) and "
            f"not the ignore label {ignore_label}"
        )
    return {
        "image_bytes": image_bytes,
        "image_format": image_format,
        "height": height,
        "width": width,
        "label_png": tfrecord.encode_label_png(label),
        "filename": spec.filename,
        "classes_present": [int(v) for v in values if v != ignore_label],
        "note": note,
    }


def _load_batch(specs, num_classes, ignore_label, palette_hint):
    results = []
    for spec in specs:
        try:
            results.append(("ok", load_example(spec, num_classes, ignore_label, palette_hint)))
        except BadExample as e:
            results.append(("bad", str(e)))
    return results


# ---------------------------------------------------------------------------------------------
# Writing splits (parent process).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SplitReport:
    """What happened to one split: examples written, skipped (with reasons) and converted
    (notes)."""

    split: str
    count: int = 0
    run: str = None
    skipped: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    classes: set = dataclasses.field(default_factory=set)  # class ids the written labels hold


def _exit_with_parent(parent_pid, poll_seconds=0.5):
    """Worker initializer: a thread that ends this worker as soon as its parent is gone.

    A converter killed by SIGKILL (or any signal it cannot catch) never tells its pool; the
    workers, blocked on the task queue or on a read, would otherwise live for ever. (Linux's
    parent-death signal is not used: it follows the thread that started the worker, not the
    process.)"""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _ordered_results(specs, num_classes, ignore_label, palette_hint, num_workers, chunk=8):
    """Yields per-example results in input order, from worker processes (or inline with
    num_workers=0)."""
    batches = [specs[i : i + chunk] for i in range(0, len(specs), chunk)]
    if num_workers == 0:
        for batch in batches:
            yield from _load_batch(batch, num_classes, ignore_label, palette_hint)
        return
    # spawn: workers never inherit the parent's TensorFlow threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context,
                                                initializer=_exit_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        pending = collections.deque()
        batch_iter = iter(batches)
        try:
            for batch in batch_iter:
                pending.append(pool.submit(_load_batch, batch, num_classes, ignore_label,
                                           palette_hint))
                if len(pending) >= 4 * num_workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _progress(total, desc, enabled):
    """done / total, rate and ETA on a terminal; one line per split in a log."""
    return Progress(total, f"convert {desc}", unit="img", enabled=enabled)


def convert_split(
    specs,
    output_dir,
    split,
    *,
    num_classes,
    ignore_label,
    num_shards=None,
    num_workers=None,
    skip_bad=False,
    progress=True,
    palette_hint="",
):
    """Converts one split's examples into shards (atomically).

    Args:
      specs: list of :class:`ExampleSpec` in the order to write.
      output_dir: dataset directory.
      split: split name.
      num_classes, ignore_label: the label space the labels are checked against.
      num_shards: shard count (default: ~500 examples per shard).
      num_workers: worker processes (default: CPU count; 0 = in this process).
      skip_bad: skip (and report) bad examples instead of stopping at the first.
      progress: show a progress bar on stderr.
      palette_hint: text appended to the "palette PNG given" error (e.g. the flag that allows them).

    Returns:
      :class:`SplitReport`.

    Raises:
      DataError: a bad example without ``skip_bad`` (nothing of the split is left behind), or an
        empty split.
    """
    # TensorFlow's start-up log lines hidden (TF_CPP_MIN_LOG_LEVEL=2 and standard error captured
    # during its import, as in every binary); imported by the parent process only, to write
    _console.quiet_tensorflow()
    from deeplab.data import records  # TensorFlow: imported by the parent process, to write

    if not specs:
        raise DataError(f"split {split!r}: no examples listed")
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, max(1, len(specs) // 16))
    report = SplitReport(split)
    bar = _progress(len(specs), split, progress)
    run = None
    try:
        # A fresh shard-set tag: the new shards never overwrite the split's current ones
        # (convert_splits switches dataset.json over to them, then removes the old).
        run = tfrecord.new_run_tag()
        writer = records.ShardedWriter(output_dir, split, len(specs), num_shards, run=run)
        with writer, records.explain_write_errors(f"the {split!r} shards in {output_dir}"):
            results = _ordered_results(specs, num_classes, ignore_label, palette_hint, num_workers)
            for index, (status, payload) in enumerate(results):
                bar.update(1)
                if status == "bad":
                    if not skip_bad:
                        raise DataError(f"{payload} (split {split!r}; nothing written for this "
                                        "split; --skip_bad skips such files)")
                    report.skipped.append(payload)
                    continue
                note = payload.pop("note")
                if note:
                    report.notes.append(note)
                report.classes.update(payload["classes_present"])
                writer.write(index, records.encode_example(**payload))
            if writer.count == 0:
                raise DataError(f"split {split!r}: all {len(specs)} examples were bad; nothing "
                                "written")
        report.count = writer.count
        report.run = run
    except BaseException:
        if run is not None:  # shards of this run renamed before the failure: listed nowhere
            with contextlib.suppress(OSError):
                tfrecord.remove_shard_set(output_dir, split, run)
        raise
    finally:
        bar.close()
    return report


def convert_splits(
    split_specs,
    output_dir,
    *,
    dataset,
    num_shards=None,
    num_workers=None,
    skip_bad=False,
    progress=True,
    palette_hint="",
    extra_info=None,
):
    """Converts several splits, then records them in dataset.json.

    Args:
      split_specs: dict split name -> list of :class:`ExampleSpec`.
      output_dir: dataset directory.
      dataset: :class:`deeplab.data.datasets_info.DatasetSpec` (name, classes, ignore label, names,
        palette).
      num_shards, num_workers, skip_bad, progress, palette_hint: see :func:`convert_split`.
      extra_info: dict of extra dataset.json keys.

    Returns:
      dict split -> :class:`SplitReport`.

    Logs one INFO line per split (its count) and a WARNING per skipped example and per image
    converted to RGB (the first 20 of a split).
    """
    atomic_io.ensure_folder(output_dir, "--output_dir")
    reports = {}
    switched = False
    try:
        for split, specs in split_specs.items():
            reports[split] = convert_split(
                specs,
                output_dir,
                split,
                num_classes=dataset.num_classes,
                ignore_label=dataset.ignore_label,
                num_shards=num_shards,
                num_workers=num_workers,
                skip_bad=skip_bad,
                progress=progress,
                palette_hint=palette_hint,
            )
        # One switch for every split: rewriting dataset.json (atomically) moves all of them from
        # their old shard sets to the new ones at once, so a conversion killed or failing at any
        # point leaves the old dataset or the new, never one split of each.
        try:
            tfrecord.write_dataset_info(
                output_dir,
                **dataset.as_dict(),
                splits={split: report.count for split, report in reports.items()},
                shard_runs={split: report.run for split, report in reports.items()},
                label_classes={split: report.classes for split, report in reports.items()},
                **(extra_info or {}),
            )
        except OSError as error:
            raise tfrecord.WriteError(
                f"cannot write {os.path.join(output_dir, tfrecord.DATASET_INFO_FILE)} "
                f"({error.strerror or error})"
            ) from None
        switched = True
    except BaseException as error:
        # The new shard sets of the splits already written are listed nowhere: remove them.
        for report in reports.values():
            with contextlib.suppress(OSError):
                tfrecord.remove_shard_set(output_dir, report.split, report.run)
        if isinstance(error, tfrecord.WriteError) and not switched:
            raise tfrecord.WriteError(f"{error}; {_unchanged(output_dir)}") from None
        raise
    for split, report in reports.items():
        # Only now are the old shard sets unused.
        with contextlib.suppress(OSError):
            tfrecord.remove_stale_shards(output_dir, split, report.run)
        for reason in report.skipped:
            log.warning("skipped: %s", reason)
        for note in report.notes[:20]:
            log.warning("%s", note)
        if len(report.notes) > 20:
            log.warning("... and %d more images converted to RGB", len(report.notes) - 20)
        extra = []
        if report.skipped:
            extra.append(f"{len(report.skipped)} skipped")
        if report.notes:
            extra.append(f"{len(report.notes)} converted to RGB")
        log.info("%s: %d examples%s", split, report.count,
                 f" ({', '.join(extra)})" if extra else "")
    return reports


def _unchanged(output_dir):
    """The end of a failed conversion's message: what the folder holds now."""
    if os.path.exists(os.path.join(output_dir, tfrecord.DATASET_INFO_FILE)):
        return (f"{output_dir} holds the dataset it held before, unchanged (its "
                f"{tfrecord.DATASET_INFO_FILE} and shards)")
    return f"nothing was written to {output_dir}"


# ---------------------------------------------------------------------------------------------
# Command-line helpers for datasets/*.py.
# ---------------------------------------------------------------------------------------------


def make_parser(description, *, input_dir=True):
    """An argparse parser with the flags every converter shares."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if input_dir:
        parser.add_argument("--input_dir", required=True,
                            help="root of the raw dataset, laid out as its authors distribute it")
    parser.add_argument("--output_dir", required=True, help="where the shards and dataset.json go")
    parser.add_argument("--splits", default=None,
                        help="comma-separated splits to convert (default: every split found)")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="shards per split (default: about 500 examples per shard)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="worker processes (default: CPU count, fewer for small splits; 0: no "
                             "workers)")
    parser.add_argument("--skip_bad", action="store_true",
                        help="skip bad examples and report each one, instead of stopping")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def parse_splits(text):
    """'train,val' -> ['train', 'val']; None -> None."""
    if text is None:
        return None
    splits = [s.strip() for s in text.split(",") if s.strip()]
    if not splits:
        raise ConfigError("--splits is empty")
    return splits


def convert_from_args(split_specs, args, dataset, **kwargs):
    """convert_splits with the shared flags of make_parser (output dir, shards, workers, ...);
    kwargs go to convert_splits as they are."""
    return convert_splits(split_specs, args.output_dir, dataset=dataset, num_shards=args.num_shards,
                          num_workers=args.num_workers, skip_bad=args.skip_bad,
                          progress=not args.no_progress, **kwargs)


__all__ = [
    "ExampleSpec",
    "PngLabel",
    "SbdLabel",
    "CocoLabel",
    "BadExample",
    "read_image",
    "read_png_label",
    "read_sbd_label",
    "render_coco_label",
    "load_example",
    "SplitReport",
    "convert_split",
    "convert_from_args",
    "convert_splits",
    "make_parser",
    "parse_splits",
]
