"""The record format without TensorFlow: schema keys, label PNGs, shard files and ``dataset.json``.

One tf.Example per image, with the keys of the original DeepLab TensorFlow code, so records built
with it load unchanged::

    image/encoded                      JPEG or PNG bytes of the RGB image (kept as the file was,
                                       when possible)
    image/filename                     the image's name without extension
    image/format                       "jpeg" or "png"
    image/height, image/width          int64
    image/channels                     int64, 3
    image/segmentation/class/encoded   PNG (8-bit, one channel) of class indices; ignore label as is
    image/segmentation/class/format    "png"

plus one extra key, ``image/segmentation/class/present`` (int64 list of the classes present,
without the ignore label), which lets hard-image bootstrapping (Sec. 4.3) pick images without
decoding their labels.

Shards are ``{split}-{i:05d}-of-{n:05d}.tfrecord``. A writer fills hidden ``.incomplete-...``
files and renames them only when every shard of the split is written, so an interrupted converter
leaves nothing that looks complete. ``dataset.json`` beside the shards (see CONVENTIONS.md) is
written last, atomically.

This module imports neither TensorFlow nor Keras, so converter worker processes (which encode
labels with :func:`encode_label_png`) and the binaries that only read ``dataset.json`` start
fast. The TensorFlow side of the format, building and parsing the tf.Examples, writing shards and
reading them back in full, is :mod:`deeplab.data.records`.
"""

import difflib
import glob
import io
import json
import os
import re
import secrets
import struct

import numpy as np

from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError, DataError

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"
CLASSES_PRESENT = "image/segmentation/class/present"

DATASET_INFO_FILE = "dataset.json"
SHARD_PATTERN = "{split}-{index:05d}-of-{num_shards:05d}.tfrecord"
# Converters add the run tag of one conversion (8 hex digits) that dataset.json lists.
_SHARD_RE = re.compile(
    r"^(?P<split>.+?)-(?P<index>\d{5})-of-(?P<num>\d{5})(?:-(?P<run>[0-9a-f]{8}))?\.tfrecord$")
INCOMPLETE_PREFIX = ".incomplete-"

# ---------------------------------------------------------------------------------------------
# Label PNGs (converter workers).
# ---------------------------------------------------------------------------------------------


def encode_label_png(label):
    """Encodes a 2-D array of class indices (0..255) as an 8-bit single-channel PNG."""
    from PIL import Image  # local: the pipeline never needs PIL

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D [H, W], got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must be in [0, 255], got [{label.min()}, {label.max()}]")
    buf = io.BytesIO()
    Image.fromarray(label.astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Shards: names, listing and integrity checks (the writer: deeplab.data.records.ShardedWriter).
# ---------------------------------------------------------------------------------------------


def shard_filename(split, index, num_shards, run=None):
    """``{split}-{index:05d}-of-{num_shards:05d}.tfrecord``, or ``...-of-NNNNN-{run}.tfrecord``
    for the shards of one converter run (``run``: 8 hex digits, see
    :class:`deeplab.data.records.ShardedWriter`)."""
    name = SHARD_PATTERN.format(split=split, index=index, num_shards=num_shards)
    return name if run is None else f"{name[:-len('.tfrecord')]}-{run}.tfrecord"


def new_run_tag():
    """A fresh shard-set tag: 8 random hex digits."""
    return secrets.token_hex(4)


def default_num_shards(num_examples):
    """About 500 examples per shard, at least 1: enough files for multi-worker sharding and
    interleaving."""
    return max(1, min(1024, -(-num_examples // 500)))


def shard_files(dataset_dir, split):
    """Every shard file of ``split`` (any run tag), sorted."""
    pattern = os.path.join(glob.escape(os.fspath(dataset_dir)),
                           f"{glob.escape(split)}-[0-9]*-of-[0-9]*.tfrecord")
    return sorted(p for p in glob.glob(pattern)
                  if (m := _SHARD_RE.match(os.path.basename(p))) and m.group("split") == split)


def _listed_runs(dataset_dir, split):
    """(splits listed in dataset.json or None, the split's shard run tag or None), tolerating a
    missing or unreadable dataset.json (read_dataset_info reports those)."""
    try:
        with open(os.path.join(os.fspath(dataset_dir), DATASET_INFO_FILE), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None, None
    if not isinstance(info, dict) or not isinstance(info.get("splits"), dict):
        return None, None
    runs = info.get("shard_runs") if isinstance(info.get("shard_runs"), dict) else {}
    return info["splits"], runs.get(split)


def list_shards(dataset_dir, split):
    """Returns the split's shard paths in order, after checking the set is complete.

    The set read is the one dataset.json lists (its ``shard_runs`` tag for the split; a dataset
    without tags: the untagged shards). A split that dataset.json does not list is refused: its
    shards are left over from an earlier conversion.

    Raises:
      DataError: no shards, a split dataset.json does not list, shards with different ``-of-N``
        counts, or a missing shard index.
    """
    all_paths = shard_files(dataset_dir, split)
    listed, run = _listed_runs(dataset_dir, split)
    if listed is not None and split not in listed and all_paths:
        raise DataError(
            f"{dataset_dir}: split {split!r} is not listed in {DATASET_INFO_FILE} (listed: "
            f"{', '.join(sorted(listed)) or 'none'}); its shards are left over from an earlier "
            f"conversion. Re-run the converter with this split to rebuild it."
        )
    by_run = {}
    for p in all_paths:
        by_run.setdefault(_SHARD_RE.match(os.path.basename(p)).group("run"), []).append(p)
    if run is not None:
        paths = by_run.get(run, [])
        if not paths:
            raise DataError(
                f"{dataset_dir}: {DATASET_INFO_FILE} lists shard set {run} for split {split!r} "
                f"({shard_filename(split, 0, 1, run).replace('00001', 'NNNNN')}), but none of its "
                f"files are there. Re-run the converter."
            )
    elif None in by_run or len(by_run) <= 1:
        paths = by_run.get(None) or next(iter(by_run.values()), [])
    else:
        raise DataError(
            f"{dataset_dir}: split {split!r} holds {len(by_run)} shard sets "
            f"({', '.join(sorted(by_run))}) and {DATASET_INFO_FILE} names none; re-run the "
            f"converter."
        )
    if not paths:
        present = []
        if os.path.isdir(dataset_dir):
            matches = map(_SHARD_RE.match, os.listdir(dataset_dir))
            present = sorted({m.group("split") for m in matches if m})
        raise DataError(
            f"{dataset_dir}: no shards for split {split!r} ({split}-00000-of-NNNNN.tfrecord); "
            f"splits present: {', '.join(present) or 'none'}. Run a converter in datasets/ to "
            f"build it."
        )
    counts = {int(_SHARD_RE.match(os.path.basename(p)).group("num")) for p in paths}
    if len(counts) != 1:
        raise DataError(
            f"{dataset_dir}: split {split!r} mixes shard sets of {sorted(counts)} files; delete "
            f"the stale ones or re-run the converter."
        )
    (num,) = counts
    indices = sorted(int(_SHARD_RE.match(os.path.basename(p)).group("index")) for p in paths)
    if indices != list(range(num)):
        missing = sorted(set(range(num)) - set(indices))
        names = ", ".join(shard_filename(split, i, num, run) for i in missing[:5])
        raise DataError(
            f"{dataset_dir}: split {split!r} is incomplete: missing {names}"
            f"{' ...' if len(missing) > 5 else ''}. Re-run the converter."
        )
    return paths


def remove_stale_shards(dataset_dir, split, run):
    """Deletes the split's shards of every set but ``run`` (call after dataset.json lists it).

    Returns the paths removed."""
    removed = []
    for path in shard_files(dataset_dir, split):
        if _SHARD_RE.match(os.path.basename(path)).group("run") != run:
            os.remove(path)
            removed.append(path)
    return removed


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of ``data``; used on the 8-byte length headers of TFRecord files."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def check_shard_framing(path):
    """Walks a TFRecord file's record headers without reading the payloads.

    Detects truncated files and corrupted length headers in a few milliseconds per thousand records
    (the payload checksums are verified by TensorFlow while reading, or by
    :func:`deeplab.data.records.verify_shards` with ``full=True``).

    Returns:
      the number of records.

    Raises:
      DataError: naming the file and the byte offset of the damaged record.
    """
    try:
        size = os.path.getsize(path)
        count = 0
        offset = 0
        with open(path, "rb") as f:
            while offset < size:
                header = f.read(12)
                if len(header) < 12:
                    raise DataError(f"{path}: truncated TFRecord file (record {count} at byte "
                                    f"{offset} is cut off); re-run the converter.")
                (length,) = struct.unpack("<Q", header[:8])
                (length_crc,) = struct.unpack("<I", header[8:])
                if _masked_crc(header[:8]) != length_crc:
                    raise DataError(f"{path}: corrupt TFRecord file (bad length header of record "
                                    f"{count} at byte {offset}); re-run the converter.")
                offset += 12 + length + 4
                if offset > size:
                    raise DataError(f"{path}: truncated TFRecord file (record {count} needs "
                                    f"{offset} bytes, file has {size}); re-run the converter.")
                f.seek(offset)
                count += 1
    except OSError as e:
        raise DataError(f"{path}: cannot read the shard ({e.strerror}).") from e
    return count


# ---------------------------------------------------------------------------------------------
# dataset.json
# ---------------------------------------------------------------------------------------------

_REQUIRED = ("name", "num_classes", "ignore_label", "class_names", "palette", "splits")


def validate_dataset_info(info, source="dataset.json"):
    """Checks a dataset.json dict; returns it with canonical types.

    Raises:
      DataError: a missing key or a value of the wrong type or length, naming ``source``.
    """
    def bad(msg):
        return DataError(f"{source}: {msg}")

    if not isinstance(info, dict):
        raise bad("must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in info]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    num_classes = info["num_classes"]
    if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
            or not 1 <= num_classes <= 256):
        raise bad(f"num_classes must be an integer in [1, 256], got {num_classes!r}")
    ignore = info["ignore_label"]
    if (not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255
            or ignore < num_classes):
        raise bad(f"ignore_label must be an integer in [num_classes, 255] = [{num_classes}, 255], "
                  f"got {ignore!r}")
    names = info["class_names"]
    if (not isinstance(names, list) or len(names) != num_classes
            or not all(isinstance(n, str) for n in names)):
        raise bad(f"class_names must be a list of {num_classes} strings")
    palette = info["palette"]
    if (
        not isinstance(palette, list)
        or len(palette) != num_classes
        or not all(isinstance(c, list) and len(c) == 3
                   and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)
    ):
        raise bad(f"palette must be a list of {num_classes} [r, g, b] lists of integers in "
                  "[0, 255]")
    splits = info["splits"]
    if not isinstance(splits, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in splits.items()):
        raise bad("splits must map split names to example counts (non-negative integers)")
    runs = info.get("shard_runs", {})
    if not isinstance(runs, dict) or not all(
            k in splits and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{8}", v)
            for k, v in runs.items()):
        raise bad("shard_runs must map listed splits to 8-hex-digit shard-set tags")
    classes = info.get("label_classes", {})
    if not isinstance(classes, dict) or not all(
            k in splits and isinstance(v, list)
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v)
            for k, v in classes.items()):
        raise bad("label_classes must map listed splits to lists of class ids in [0, 255]")
    return info


def check_label_classes(info, split, source="dataset.json"):
    """Checks the class ids a converter recorded for ``split`` against ``num_classes``.

    Returns:
      None, or a note naming classes of ``[0, num_classes)`` that no label of the split holds
      (e.g. a dataset.json claiming 8 classes for 5-class labels, or a split missing a class).

    Raises:
      DataError: labels hold class ids ``>= num_classes`` (besides the ignore label): the loss
        would fail on them mid-run, or a model with too few logits would be trained.
    """
    recorded = (info.get("label_classes") or {}).get(split)
    if recorded is None:
        return None
    num_classes = info["num_classes"]
    beyond = [c for c in recorded if c >= num_classes and c != info["ignore_label"]]
    if beyond:
        raise DataError(f"{source}: num_classes={num_classes}, but the {split!r} labels hold class "
                        f"ids {beyond[:10]} (label_classes, recorded by the converter); fix "
                        "num_classes there or re-run the converter")
    absent = sorted(set(range(num_classes)) - set(recorded))
    if absent:
        names = info["class_names"]
        listed = ", ".join(f"{c} ({names[c]})" for c in absent[:10])
        return (f"{source}: no label of split {split!r} holds class(es) {listed} of its "
                f"num_classes={num_classes}; those logits are only ever pushed down")
    return None


def nearby_datasets(dataset_dir, limit=8):
    """Folders with a dataset.json near ``dataset_dir`` (a path that has none): its parent,
    its siblings and, if it is a folder, its children; most similar names first (a typo)."""
    dataset_dir = os.path.normpath(dataset_dir)
    parent = os.path.dirname(dataset_dir) or "."
    candidates = [parent]
    for folder in (parent, dataset_dir):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        candidates += [os.path.join(folder, n) if folder != "." else n for n in names]
    found = []
    for candidate in candidates:
        if (os.path.normpath(candidate) != dataset_dir and candidate not in found
                and os.path.isfile(os.path.join(candidate, DATASET_INFO_FILE))):
            found.append(candidate)
    name = os.path.basename(dataset_dir)

    def similarity(path):
        return -difflib.SequenceMatcher(None, name, os.path.basename(path)).ratio()

    return sorted(found, key=similarity)[:limit]


def _missing_dataset_message(dataset_dir, path):
    """Why a --dataset_dir has no dataset.json, and the datasets that exist nearby (never a
    suggestion to write at the missing path)."""
    if not os.path.exists(dataset_dir):
        what = f"{path}: not found ({dataset_dir} does not exist)."
    elif not os.path.isdir(dataset_dir):
        what = f"{path}: not found ({dataset_dir} is a file, not a dataset folder)."
    else:
        what = f"{path}: not found ({dataset_dir} is a folder without one)."
    nearby = nearby_datasets(dataset_dir)
    if nearby:
        return (f"{what} Folders with a {DATASET_INFO_FILE} nearby: {', '.join(nearby)}; "
                "point --dataset_dir at one of them.")
    return (f"{what} No folder next to it holds a {DATASET_INFO_FILE}: point --dataset_dir at "
            "a folder a converter in datasets/ wrote (README.md, \"Train on your own data\").")


def read_dataset_info(dataset_dir, *, num_classes=None):
    """Reads and validates ``dataset_dir/dataset.json``.

    Args:
      dataset_dir: a dataset directory, or a ``tfds:NAME...`` spec (see
        :mod:`deeplab.data.input_pipeline`).
      num_classes: if given, must equal the dataset's.

    Returns:
      dict with name, num_classes, ignore_label, class_names, palette, splits (and any extra keys).

    Raises:
      DataError: missing or malformed dataset.json.
      ConfigError: ``num_classes`` disagrees with the dataset.
    """
    dataset_dir = os.fspath(dataset_dir)
    if dataset_dir.startswith("tfds:"):
        # TensorFlow and TensorFlow Datasets are heavy: imported only for tfds: specs.
        from deeplab.data import tfds_source

        info = tfds_source.tfds_dataset_info(dataset_dir)
    else:
        path = os.path.join(dataset_dir, DATASET_INFO_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except FileNotFoundError:
            raise DataError(_missing_dataset_message(dataset_dir, path)) from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e})") from e
        info = validate_dataset_info(info, path)
    if num_classes is not None and int(num_classes) != info["num_classes"]:
        raise ConfigError(
            f"num_classes={num_classes} disagrees with {dataset_dir}/{DATASET_INFO_FILE}, which "
            f"says num_classes={info['num_classes']} ({info['name']}); fix the flag or the "
            f"dataset."
        )
    return info


def write_dataset_info(dataset_dir, *, name, num_classes, ignore_label, class_names, palette,
                       splits, merge=True, shard_runs=None, label_classes=None, **extra):
    """Writes ``dataset.json`` atomically (temporary file + rename).

    Args:
      dataset_dir: dataset directory.
      name, num_classes, ignore_label, class_names, palette: the label space (see CONVENTIONS.md).
      splits: dict split name -> number of examples written.
      merge: keep the counts of other splits already recorded in an existing dataset.json with the
        same name and num_classes (a converter run with --splits adds to the dataset).
      shard_runs: dict split name -> shard-set tag of the shards just written (converters); a split
        written without one loses any tag recorded before.
      label_classes: dict split name -> the class ids its labels hold (converters; checked by
        :func:`check_label_classes` when a run reads the split); like ``shard_runs``, a split
        written without it loses what was recorded before.
      **extra: further JSON-serializable keys (e.g. notes, source).

    Returns:
      the dict written.
    """
    dataset_dir = os.fspath(dataset_dir)
    path = os.path.join(dataset_dir, DATASET_INFO_FILE)
    all_splits, all_runs, all_classes = {}, {}, {}
    if merge and os.path.exists(path):
        try:
            old = read_dataset_info(dataset_dir)
            if old["name"] == name and old["num_classes"] == num_classes:
                all_splits.update(old["splits"])
                all_runs.update(old.get("shard_runs") or {})
                all_classes.update(old.get("label_classes") or {})
        except DataError:
            pass
    all_splits.update({k: int(v) for k, v in splits.items()})
    for k in splits:
        all_runs.pop(k, None)
        all_classes.pop(k, None)
    all_runs.update({k: str(v) for k, v in (shard_runs or {}).items()})
    all_classes.update({k: sorted(int(c) for c in v) for k, v in (label_classes or {}).items()})
    info = {
        "name": name,
        "num_classes": int(num_classes),
        "ignore_label": int(ignore_label),
        "class_names": [str(n) for n in class_names],
        "palette": [[int(v) for v in c] for c in palette],
        "splits": dict(sorted(all_splits.items())),
    }
    if all_runs:
        info["shard_runs"] = dict(sorted(all_runs.items()))
    if all_classes:
        info["label_classes"] = dict(sorted(all_classes.items()))
    info.update(extra)
    validate_dataset_info(info, path)
    atomic_io.write_json(path, info, indent=1, sort_keys=False)
    return info


__all__ = [
    "IMAGE_ENCODED",
    "IMAGE_FILENAME",
    "IMAGE_FORMAT",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "IMAGE_CHANNELS",
    "LABEL_ENCODED",
    "LABEL_FORMAT",
    "CLASSES_PRESENT",
    "DATASET_INFO_FILE",
    "encode_label_png",
    "INCOMPLETE_PREFIX",
    "shard_filename",
    "shard_files",
    "default_num_shards",
    "list_shards",
    "new_run_tag",
    "remove_stale_shards",
    "crc32c",
    "check_shard_framing",
    "validate_dataset_info",
    "read_dataset_info",
    "nearby_datasets",
    "write_dataset_info",
    "check_label_classes",
]
