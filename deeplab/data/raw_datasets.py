"""Finding the examples of each raw dataset, laid out as its authors distribute it.

Each ``*_examples`` function returns ``{split: [ExampleSpec, ...]}`` for
:func:`deeplab.data.convert.convert_splits`. They only list files (reading is done, in parallel, by
the converter's workers), so they are fast and their errors are about layout: a missing folder or
list file, an unknown split.
"""

import glob
import json
import os
from pathlib import Path

from deeplab.data import datasets_info
from deeplab.data import images
from deeplab.data.convert import CocoLabel, ExampleSpec, PngLabel, SbdLabel
from deeplab.common.errors import ConfigError, DataError


def _read_list(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.split() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read list file ({e.strerror})") from e


def _select(found, requested, where):
    """Keeps the requested splits (all found ones when ``requested`` is None); unknown ones are
    errors."""
    if requested is None:
        if not found:
            raise DataError(f"{where}: no splits found")
        return list(found)
    missing = [s for s in requested if s not in found]
    if missing:
        raise DataError(f"{where}: split(s) {', '.join(missing)} not found; available: "
                        f"{', '.join(found) or 'none'}")
    return list(requested)


# ---------------------------------------------------------------------------------------------
# PASCAL VOC 2012 (+ SBD for trainaug).
# ---------------------------------------------------------------------------------------------

VOC_SPLITS = ("train", "val", "trainval")


def find_voc_root(input_dir):
    """The VOC2012 folder: ``input_dir`` itself, ``input_dir/VOC2012`` or
    ``input_dir/VOCdevkit/VOC2012``."""
    root = Path(input_dir)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if ((candidate / "JPEGImages").is_dir()
                and (candidate / "ImageSets" / "Segmentation").is_dir()):
            return candidate
    raise DataError(
        f"{input_dir}: not a PASCAL VOC 2012 folder (expected VOCdevkit/VOC2012/JPEGImages and "
        f"ImageSets/Segmentation, as in VOCtrainval_11-May-2012.tar)"
    )


def find_sbd_root(sbd_dir):
    """The SBD ``dataset`` folder (holding cls/, train.txt, val.txt) under ``sbd_dir``."""
    root = Path(sbd_dir)
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
            return candidate
    raise DataError(
        f"{sbd_dir}: not an SBD folder (expected benchmark_RELEASE/dataset/cls/*.mat and "
        f"train.txt, val.txt, as in benchmark.tgz)"
    )


def _voc_list(voc, split):
    return [row[0] for row in _read_list(voc / "ImageSets" / "Segmentation" / f"{split}.txt")]


def voc_examples(input_dir, splits=None, sbd_dir=None):
    """PASCAL VOC 2012 segmentation splits, plus ``trainaug`` when ``sbd_dir`` is given.

    Labels are the SegmentationClass palette PNGs read as raw indices (0..20, 255 = boundary /
    ignore). ``trainaug`` (Sec. 4) = SBD train + SBD val + VOC train, minus every VOC val image:
    10,582 images on the real data. Its labels come from VOC's SegmentationClass when VOC has one
    for the image (finer, with ignore boundaries), otherwise from SBD's ``cls/<name>.mat``; images
    from VOC's JPEGImages (SBD's ``img/`` as a fallback).
    """
    voc = find_voc_root(input_dir)
    found = [s for s in VOC_SPLITS if (voc / "ImageSets" / "Segmentation" / f"{s}.txt").is_file()]
    if sbd_dir is not None:
        found.append("trainaug")
    if splits is not None and "trainaug" in splits and sbd_dir is None:
        raise ConfigError("split trainaug needs --sbd_dir (the SBD benchmark_RELEASE folder)")
    chosen = _select(found, splits, voc / "ImageSets" / "Segmentation")

    def spec(name, label):
        image = voc / "JPEGImages" / f"{name}.jpg"
        return ExampleSpec(str(image), label, name)

    def voc_label(name):
        return PngLabel(str(voc / "SegmentationClass" / f"{name}.png"), palette_ok=True)

    out = {}
    for split in chosen:
        if split != "trainaug":
            out[split] = [spec(name, voc_label(name)) for name in _voc_list(voc, split)]
            continue
        sbd = find_sbd_root(sbd_dir)
        names = set(_voc_list(voc, "train"))
        for sbd_split in ("train", "val"):
            if (sbd / f"{sbd_split}.txt").is_file():
                names |= {row[0] for row in _read_list(sbd / f"{sbd_split}.txt")}
        names -= set(_voc_list(voc, "val"))
        specs = []
        for name in sorted(names):
            voc_png = voc / "SegmentationClass" / f"{name}.png"
            if voc_png.is_file():
                label = voc_label(name)
            else:
                label = SbdLabel(str(sbd / "cls" / f"{name}.mat"))
            image = voc / "JPEGImages" / f"{name}.jpg"
            if not image.is_file() and (sbd / "img" / f"{name}.jpg").is_file():
                image = sbd / "img" / f"{name}.jpg"
            specs.append(ExampleSpec(str(image), label, name))
        out[split] = specs
    return out


# ---------------------------------------------------------------------------------------------
# Cityscapes.
# ---------------------------------------------------------------------------------------------

# split -> (annotation folder, annotation suffix)
CITYSCAPES_SPLITS = {
    "train": ("gtFine", "gtFine"),
    "val": ("gtFine", "gtFine"),
    "train_extra": ("gtCoarse", "gtCoarse"),
}


# Splits made of other splits; written only when asked for by name (they repeat the others' images).
CITYSCAPES_COMBINED = {
    "trainval": ("train", "val"),
    "trainval_coarse": ("train", "val", "train_extra"),  # Table 13: 3,475 fine + 19,998 coarse
}


def cityscapes_examples(input_dir, splits=None):
    """Cityscapes splits: train, val (gtFine) and train_extra (gtCoarse); the test split has no
    labels.

    Labels are the ``*_labelIds.png`` files, mapped to the 19 train ids (everything else -> 255).
    The combined splits ``trainval`` (train + val) and ``trainval_coarse`` (train + val +
    train_extra, the training set of the paper's test-server model, Table 13) are written only when
    named in ``splits``.
    """
    root = Path(input_dir)
    if not (root / "leftImg8bit").is_dir():
        raise DataError(f"{input_dir}: not a Cityscapes folder (expected leftImg8bit/ and gtFine/, "
                        "from leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)")
    found = [s for s, (gt, _) in CITYSCAPES_SPLITS.items()
             if (root / "leftImg8bit" / s).is_dir() and (root / gt / s).is_dir()]
    combined = [name for name, parts in CITYSCAPES_COMBINED.items()
                if all(p in found for p in parts)]
    if splits is None:
        chosen = _select(found, None, root)
    else:
        chosen = _select(found + combined, splits, root)
    lut = tuple(int(v) for v in datasets_info.cityscapes_label_id_to_train_id())

    def base_split(split):
        gt_dir, suffix = CITYSCAPES_SPLITS[split]
        images = sorted(glob.glob(str(root / "leftImg8bit" / split / "*" / "*_leftImg8bit.png")))
        specs = []
        for image in images:
            stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
            city = os.path.basename(os.path.dirname(image))
            label = root / gt_dir / split / city / f"{stem}_{suffix}_labelIds.png"
            specs.append(ExampleSpec(image, PngLabel(str(label), lut=lut), stem))
        if not specs:
            raise DataError(f"{root / 'leftImg8bit' / split}: no */*_leftImg8bit.png images")
        return specs

    out = {}
    for split in chosen:
        parts = CITYSCAPES_COMBINED.get(split, (split,))
        out[split] = [spec for part in parts for spec in base_split(part)]
    return out


# ---------------------------------------------------------------------------------------------
# COCO -> VOC classes (Sec. 4.3).
# ---------------------------------------------------------------------------------------------

MIN_REGION_AREA = 1000


def _coco_image_dir(root, split):
    for name in (split, split.replace("valminusminival", "val").replace("minival", "val")):
        for candidate in (root / name, root / "images" / name):
            if candidate.is_dir():
                return candidate
    return None


def coco_examples(input_dir, splits=None, min_area=MIN_REGION_AREA):
    """COCO images that contain a VOC class, with VOC-class labels (Sec. 4.3).

    Splits are the ``annotations/instances_<split>.json`` files found (train2017, val2017,
    train2014, valminusminival2014, ...). COCO 2017 train equals the paper's trainval_minus_minival
    (2014 train + valminusminival).

    Selection rule: keep an image iff it has at least one non-crowd annotation of a VOC category
    whose ``area`` (pixels, as stored in the annotation file) is larger than ``min_area`` (1,000).
    The paper reports about 60K images for its COCO set; this rule was not run on the real COCO
    here, so the count it gives is printed by the converter rather than promised.
    Labels: VOC classes painted from polygons / RLE, every other category background, crowd regions
    the ignore label (see :func:`deeplab.data.convert.render_coco_label`).
    """
    root = Path(input_dir)
    files = sorted(glob.glob(str(root / "annotations" / "instances_*.json")))
    found = {os.path.basename(f)[len("instances_") : -len(".json")]: f for f in files}
    if not found:
        raise DataError(f"{input_dir}: no annotations/instances_*.json (COCO instance annotations)")
    chosen = _select(list(found), splits, root / "annotations")
    category_map = tuple(sorted(datasets_info.coco_to_voc().items()))
    voc_ids = dict(category_map)
    out = {}
    for split in chosen:
        path = found[split]
        image_dir = _coco_image_dir(root, split)
        if image_dir is None:
            raise DataError(f"{root}: no image folder for {os.path.basename(path)} (expected "
                            f"{root / split}/)")
        try:
            with open(path, encoding="utf-8") as f:
                coco = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable annotation file ({e})") from e
        by_image = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        specs = []
        for image in sorted(coco.get("images", []), key=lambda im: im["file_name"]):
            anns = by_image.get(image["id"], [])
            if not any(not a.get("iscrowd", 0) and a["category_id"] in voc_ids
                       and a.get("area", 0) > min_area for a in anns):
                continue
            keep = tuple(
                {k: a[k] for k in ("segmentation", "category_id", "iscrowd", "area") if k in a}
                for a in anns
                if a.get("iscrowd", 0) or a["category_id"] in voc_ids
            )
            label = CocoLabel(keep, int(image["height"]), int(image["width"]), category_map,
                              str(path))
            specs.append(ExampleSpec(str(image_dir / image["file_name"]), label,
                                     Path(image["file_name"]).stem))
        if not specs:
            raise DataError(f"{path}: no image has a VOC-class region larger than {min_area} "
                            "pixels")
        out[split] = specs
    return out


# ---------------------------------------------------------------------------------------------
# CamVid (SegNet tutorial layout).
# ---------------------------------------------------------------------------------------------


def check_inside_root(root, path, where, listed=None, allow_outside=False):
    """Returns ``path`` if it lies inside ``root`` once links and ``..`` are resolved (or
    ``allow_outside``); else a DataError naming the list file and the entry."""
    if allow_outside:
        return path
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DataError(
            f"{where}: {listed if listed is not None else path!r} resolves to {real}, outside the "
            f"dataset root {real_root}; pass --allow_outside_root to read files there"
        )
    return path


def resolve_listed_path(root, listed, where="list file", allow_outside=False):
    """Resolves a path from a list file written on another machine against the dataset root.

    A relative path is taken under ``root``. An absolute one is tried as ever shorter tails under
    ``root`` first ("/SegNet/CamVid/train/a.png" -> root/SegNet/CamVid/train/a.png,
    root/CamVid/train/a.png, root/train/a.png, root/a.png), then as given. When none exists, returns
    root/<parent>/<file> so that the error names a plausible path. The result must lie inside
    ``root`` (symbolic links and ``..`` resolved) unless ``allow_outside``: a DataError naming
    ``where`` and the entry otherwise.
    """
    path = Path(listed)
    if not path.is_absolute():
        return check_inside_root(root, str(Path(root) / path), where, listed, allow_outside)
    parts = [p for p in path.parts if p not in ("/", "")]
    for start in range(len(parts)):
        candidate = Path(root).joinpath(*parts[start:])
        if candidate.exists():
            return check_inside_root(root, str(candidate), where, listed, allow_outside)
    if path.exists():
        return check_inside_root(root, str(path), where, listed, allow_outside)
    return str(Path(root).joinpath(*parts[-2:]))


def _check_no_duplicates(specs, list_file):
    """A list naming one image twice would write it twice (and weigh it double): an error."""
    seen = {}
    for line, spec in enumerate(specs, start=1):
        key = os.path.realpath(spec.image_path)
        if key in seen:
            raise DataError(f"{list_file}: entry {line} repeats entry {seen[key]} "
                            f"({spec.image_path}); remove the duplicate")
        seen[key] = line


def camvid_examples(input_dir, splits=None, *, allow_outside_root=False):
    """CamVid in the SegNet layout: ``{train,val,test}.txt`` listing "image label" path pairs.

    11 classes; index 11 (Unlabelled) becomes the ignore label; labels must be 8-bit index PNGs.
    Listed paths must resolve inside ``input_dir`` unless ``allow_outside_root``; an image listed
    twice is an error.
    """
    root = Path(input_dir)
    found = [s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()]
    if not found:
        raise DataError(f"{input_dir}: no train.txt / val.txt / test.txt list files (SegNet "
                        "CamVid layout)")
    chosen = _select(found, splits, root)
    lut = tuple(int(v) for v in datasets_info.camvid_label_lut())
    out = {}
    for split in chosen:
        specs = []
        list_file = root / f"{split}.txt"
        for row in _read_list(list_file):
            if len(row) != 2:
                raise DataError(f"{list_file}: expected 'image label' per line, got "
                                f"{' '.join(row)!r}")
            image = resolve_listed_path(root, row[0], list_file, allow_outside_root)
            label = resolve_listed_path(root, row[1], list_file, allow_outside_root)
            specs.append(ExampleSpec(image, PngLabel(label, lut=lut), Path(image).stem))
        if not specs:
            raise DataError(f"{list_file}: empty list")
        _check_no_duplicates(specs, list_file)
        out[split] = specs
    return out


# ---------------------------------------------------------------------------------------------
# A plain folder.
# ---------------------------------------------------------------------------------------------

def folder_examples(input_dir, splits=None, *, image_dir="images", label_dir="labels",
                    list_dir=None, palette_masks=False, allow_outside_root=False):
    """A plain folder: images, index-PNG masks, and one list file per split.

    ``{list_dir}/{split}.txt`` (list_dir defaults to input_dir) holds one example per line: either a
    name (image ``image_dir/NAME.{jpg,jpeg,png}``, label ``label_dir/NAME.png``) or two paths "image
    label" relative to input_dir. Without ``splits``, train.txt / val.txt / test.txt are used if
    present. Every file must resolve inside input_dir unless ``allow_outside_root``; an image listed
    twice is an error.
    """
    root = Path(input_dir)
    lists = Path(list_dir) if list_dir else root
    if splits is None:
        found = [s for s in ("train", "val", "test", "trainval") if (lists / f"{s}.txt").is_file()]
        if not found:
            raise DataError(f"{lists}: no train.txt / val.txt / test.txt; pass --splits naming "
                            "your list files")
        splits = found
    out = {}
    for split in splits:
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: list file of split {split!r} not found")
        specs = []
        for row in _read_list(list_file):
            if len(row) == 1:
                name = row[0]
                image = (images.find_image_file(root / image_dir, name)
                         or root / image_dir / f"{name}.jpg")
                label = root / label_dir / f"{name}.png"
                image = check_inside_root(root, str(image), list_file, name, allow_outside_root)
                label = check_inside_root(root, str(label), list_file, name, allow_outside_root)
            elif len(row) == 2:
                image = resolve_listed_path(root, row[0], list_file, allow_outside_root)
                label = resolve_listed_path(root, row[1], list_file, allow_outside_root)
                name = Path(image).stem
            else:
                raise DataError(f"{list_file}: expected 'name' or 'image label' per line, got "
                                f"{' '.join(row)!r}")
            specs.append(ExampleSpec(str(image), PngLabel(str(label), palette_ok=palette_masks),
                                     name))
        if not specs:
            raise DataError(f"{list_file}: empty list (split {split!r} has no examples)")
        _check_no_duplicates(specs, list_file)
        out[split] = specs
    return out


__all__ = [
    "voc_examples",
    "find_voc_root",
    "find_sbd_root",
    "cityscapes_examples",
    "coco_examples",
    "camvid_examples",
    "folder_examples",
    "resolve_listed_path",
    "MIN_REGION_AREA",
]
