"""Class names, colour palettes and ignore labels of the datasets the paper uses.

The tables live in ``third_party/*.csv`` (each names its source and licence; see
third_party/README.md) and are read here, so converters, the input pipeline and the visualizer share
one copy. This module needs only numpy: the converters' worker processes import it without
TensorFlow.
"""

import csv
import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from deeplab.common.errors import ConfigError, DataError

def _third_party_dir():
    """The label tables: $DEEPLAB_THIRD_PARTY_DIR, the checkout's third_party/, or the installed
    copy."""
    if os.environ.get("DEEPLAB_THIRD_PARTY_DIR"):
        return Path(os.environ["DEEPLAB_THIRD_PARTY_DIR"])
    package = Path(__file__).resolve().parents[1]  # deeplab/
    checkout = package.parent / "third_party"
    return checkout if checkout.is_dir() else package / "third_party"


THIRD_PARTY_DIR = _third_party_dir()

IGNORE_LABEL = 255

# Sec. 4.3 (test-set model): images containing these "hard" classes are duplicated in the training
# stream.
VOC_BOOTSTRAP_CLASSES = ("bicycle", "chair", "diningtable", "pottedplant", "sofa")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What ``dataset.json`` records about a dataset's label space.

    Attributes:
      name: short dataset name (also the ``name`` field of dataset.json).
      num_classes: number of trained classes; labels are in [0, num_classes) or the ignore label.
      ignore_label: label value excluded from loss and metrics.
      class_names: one name per class index.
      palette: one [r, g, b] colour per class index, for visualization.
    """

    name: str
    num_classes: int
    ignore_label: int
    class_names: tuple
    palette: tuple

    def as_dict(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
        }


def read_table(filename):
    """Reads one ``third_party`` CSV table (``#`` comment lines, then a header row) as a list of
    dicts."""
    path = THIRD_PARTY_DIR / filename
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [line for line in f if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise DataError(
            f"{path}: cannot read the label table ({e.strerror}); the repository's third_party/ "
            f"folder must sit next to the deeplab package, or set DEEPLAB_THIRD_PARTY_DIR to its "
            f"location."
        ) from e
    return list(csv.DictReader(rows))


def _rgb(row):
    return (int(row["r"]), int(row["g"]), int(row["b"]))


@functools.lru_cache(maxsize=None)
def pascal_voc():
    """PASCAL VOC 2012: 21 classes (background + 20), ignore label 255 (object boundaries)."""
    rows = read_table("pascal_voc_classes.csv")
    return DatasetSpec(
        name="pascal_voc_seg",
        num_classes=len(rows),
        ignore_label=IGNORE_LABEL,
        class_names=tuple(r["name"] for r in rows),
        palette=tuple(_rgb(r) for r in rows),
    )


@functools.lru_cache(maxsize=None)
def coco_voc():
    """COCO restricted to the VOC classes (Sec. 4.3 pretraining): VOC's label space under another
    name."""
    return dataclasses.replace(pascal_voc(), name="coco_voc")


@functools.lru_cache(maxsize=None)
def cityscapes_label_table():
    """All rows of the Cityscapes label table (name, id, train_id, category, ...) as dicts with int
    ids."""
    rows = read_table("cityscapes_labels.csv")
    for r in rows:
        r["id"] = int(r["id"])
        r["train_id"] = int(r["train_id"])
    return tuple(rows)


@functools.lru_cache(maxsize=None)
def cityscapes():
    """Cityscapes: the 19 evaluated train ids, ignore label 255."""
    rows = [r for r in cityscapes_label_table() if r["train_id"] != IGNORE_LABEL]
    rows.sort(key=lambda r: r["train_id"])
    if [r["train_id"] for r in rows] != list(range(len(rows))):
        raise DataError(f"{THIRD_PARTY_DIR / 'cityscapes_labels.csv'}: train ids are not 0..N-1")
    return DatasetSpec(
        name="cityscapes",
        num_classes=len(rows),
        ignore_label=IGNORE_LABEL,
        class_names=tuple(r["name"] for r in rows),
        palette=tuple(_rgb(r) for r in rows),
    )


def cityscapes_label_id_to_train_id():
    """Lookup table of 256 entries: Cityscapes labelId -> train id (255 for ids not evaluated).

    Entries for values that are not Cityscapes label ids at all (34..254) are -1, so a converter can
    tell "not evaluated" (-> ignore) from "not a Cityscapes labelIds image" (-> error). 255 maps to
    255.
    """
    lut = np.full(256, -1, dtype=np.int16)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    for r in cityscapes_label_table():
        lut[r["id"]] = r["train_id"]
    return lut


@functools.lru_cache(maxsize=None)
def camvid():
    """CamVid (SegNet tutorial layout): 11 classes; index 11 'Unlabelled' becomes the ignore
    label."""
    rows = read_table("camvid_classes.csv")
    rows = [r for r in rows if r["name"] != "Unlabelled"]
    return DatasetSpec(
        name="camvid",
        num_classes=len(rows),
        ignore_label=IGNORE_LABEL,
        class_names=tuple(r["name"] for r in rows),
        palette=tuple(_rgb(r) for r in rows),
    )


CAMVID_VOID_INDEX = 11


def camvid_label_lut():
    """256-entry lookup table for SegNet CamVid annotations: 0..10 kept, 11 -> 255, everything else
    -1."""
    lut = np.full(256, -1, dtype=np.int16)
    lut[: camvid().num_classes] = np.arange(camvid().num_classes)
    lut[CAMVID_VOID_INDEX] = IGNORE_LABEL
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return lut


@functools.lru_cache(maxsize=None)
def coco_to_voc():
    """COCO category id -> VOC class index for the 20 VOC classes; other categories are background
    (0)."""
    rows = read_table("coco_to_voc.csv")
    voc_names = pascal_voc().class_names
    mapping = {}
    for r in rows:
        voc_index = int(r["voc_index"])
        if voc_names[voc_index] != r["voc_name"]:
            raise DataError(f"{THIRD_PARTY_DIR / 'coco_to_voc.csv'}: VOC index {voc_index} is "
                            f"not {r['voc_name']!r}")
        mapping[int(r["coco_id"])] = voc_index
    return mapping


def color_map(num_colors):
    """The PASCAL VOC colour map extended to ``num_colors`` entries (bits of the index spread over
    RGB).

    Used for datasets that bring no palette of their own (synthetic, plain folders). Its first 21
    entries equal the VOC table in third_party/ (tested).
    """
    colors = []
    for index in range(num_colors):
        rgb = [0, 0, 0]
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        colors.append(tuple(rgb))
    return tuple(colors)


def resolve_class_ids(classes, class_names):
    """Turns class names and/or indices into sorted unique indices.

    Args:
      classes: iterable of class indices (int or digit strings) or names from ``class_names``.
      class_names: the dataset's class names (dataset.json ``class_names``).

    Returns:
      tuple of int class indices.

    Raises:
      ConfigError: a name that is not a class, or an index out of range.
    """
    ids = set()
    for c in classes:
        if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.strip().isdigit()):
            index = int(c)
            if not 0 <= index < len(class_names):
                raise ConfigError(f"class index {index} is outside [0, {len(class_names)})")
            ids.add(index)
        else:
            try:
                ids.add(list(class_names).index(str(c).strip()))
            except ValueError:
                raise ConfigError(
                    f"class {c!r} is not one of this dataset's classes: {', '.join(class_names)}"
                ) from None
    return tuple(sorted(ids))


__all__ = [
    "DatasetSpec",
    "IGNORE_LABEL",
    "VOC_BOOTSTRAP_CLASSES",
    "THIRD_PARTY_DIR",
    "read_table",
    "pascal_voc",
    "coco_voc",
    "cityscapes",
    "cityscapes_label_table",
    "cityscapes_label_id_to_train_id",
    "camvid",
    "camvid_label_lut",
    "CAMVID_VOID_INDEX",
    "coco_to_voc",
    "color_map",
    "resolve_class_ids",
]
