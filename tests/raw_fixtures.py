"""Tiny raw datasets in their authors' layouts, built inside the tests (no data files in the
repository)."""

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    """Imports datasets/<name>.py by path (``datasets`` is deliberately not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"_converter_{name}", REPO / "datasets" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rgb(height, width, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path, array, mode=None, **kwargs):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **kwargs)
    return path


def voc_palette_png(path, indices):
    """A SegmentationClass-style palette PNG: mode P, the VOC colour map, pixel values = class
    indices."""
    from deeplab.data import datasets_info

    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    palette = [v for c in datasets_info.color_map(256) for v in c]
    image.putpalette(palette)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def sbd_mat(path, segmentation):
    """An SBD cls/*.mat file in the real struct layout: GTcls with Boundaries (20x1 cell of sparse
    matrices), Segmentation (uint8 HxW) and CategoriesPresent."""
    height, width = segmentation.shape
    boundaries = np.empty((20, 1), dtype=object)
    for i in range(20):
        boundaries[i, 0] = scipy.sparse.csc_matrix((height, width), dtype=np.float64)
    cats = (
        np.unique(segmentation[(segmentation > 0) & (segmentation < 255)])
        .astype(np.uint8)
        .reshape(-1, 1)
    )
    gt = np.empty(
        (1, 1), dtype=[("Boundaries", "O"), ("Segmentation", "O"), ("CategoriesPresent", "O")]
    )
    gt[0, 0] = (boundaries, segmentation.astype(np.uint8), cats)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"GTcls": gt})
    return path


def voc_label(seed, height=12, width=16):
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    cls = int(rng.integers(1, 21))
    label[3:9, 4:12] = cls
    label[2, 3:13] = 255  # boundary band
    return label


VOC_TRAIN = ["2007_000001", "2007_000002", "2007_000003"]
VOC_VAL = ["2007_000010", "2007_000011"]
SBD_TRAIN = ["2008_000100", "2008_000101", "2007_000010", "2007_000001"]
SBD_VAL = ["2008_000102", "2007_000011"]


def make_voc(root):
    """VOCdevkit/VOC2012 + benchmark_RELEASE/dataset; returns (voc_root, sbd_root, labels by
    name)."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    labels = {}
    for i, name in enumerate(VOC_TRAIN + VOC_VAL):
        save(voc / "JPEGImages" / f"{name}.jpg", rgb(12, 16, i), quality=95)
        labels[name] = voc_label(i)
        voc_palette_png(voc / "SegmentationClass" / f"{name}.png", labels[name])
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (sets / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    sbd = Path(root) / "benchmark_RELEASE" / "dataset"
    sbd_labels = {}
    for i, name in enumerate(sorted(set(SBD_TRAIN + SBD_VAL))):
        seg = np.zeros((12, 16), np.uint8)
        seg[1:5, 1:9] = (i % 20) + 1
        sbd_labels[name] = seg
        sbd_mat(sbd / "cls" / f"{name}.mat", seg)
        if not (voc / "JPEGImages" / f"{name}.jpg").exists():
            folder = (
                sbd / "img" if name == "2008_000102" else voc / "JPEGImages"
            )  # one image only in SBD's img/
            save(folder / f"{name}.jpg", rgb(12, 16, 100 + i), quality=95)
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, Path(root) / "benchmark_RELEASE", labels, sbd_labels


CITYSCAPES_IDS = np.array([[0, 4, 7, 7], [24, 26, 33, 21], [8, 8, 23, 23]], np.uint8)


def make_cityscapes(root):
    """leftImg8bit + gtFine (train, val) + gtCoarse (train_extra) with Cityscapes file names."""
    root = Path(root)
    layout = {
        "train": ("gtFine", ["aachen", "bochum"]),
        "val": ("gtFine", ["frankfurt"]),
        "train_extra": ("gtCoarse", ["augsburg"]),
    }
    count = 0
    for split, (gt, cities) in layout.items():
        for city in cities:
            for frame in range(2):
                stem = f"{city}_{frame:06d}_{19 + frame:06d}"
                save(
                    root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    rgb(3, 4, count),
                )
                save(root / gt / split / city / f"{stem}_{gt}_labelIds.png", CITYSCAPES_IDS)
                save(
                    root / gt / split / city / f"{stem}_{gt}_color.png", rgb(3, 4, 99)
                )  # must be ignored
                count += 1
    return root


def _rle_uncompressed(mask):
    """COCO uncompressed RLE: run lengths over the column-major flattened mask, starting with
    zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def make_coco(root):
    """annotations/instances_train2017.json with polygons, uncompressed and compressed RLE, a crowd
    region, a non-VOC category, an image with only small VOC regions and one with only non-VOC
    objects."""
    from pycocotools import mask as mask_utils

    root = Path(root)
    h, w = 60, 80
    images = [
        {"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i in (1, 2, 3, 4)
    ]
    for image in images:
        save(root / "train2017" / image["file_name"], rgb(h, w, image["id"]), quality=95)
    person = [[5.0, 5.0, 45.0, 5.0, 45.0, 45.0, 5.0, 45.0]]  # 40x40 square polygon, area 1600
    truck = [[50.0, 10.0, 75.0, 10.0, 75.0, 30.0, 50.0, 30.0]]
    crowd = np.zeros((h, w), np.uint8)
    crowd[48:58, 5:30] = 1
    car = np.zeros((h, w), np.uint8)
    car[20:55, 40:78] = 1
    car_rle = mask_utils.encode(np.asfortranarray(car))
    car_rle["counts"] = car_rle["counts"].decode("ascii")
    small = [[1.0, 1.0, 20.0, 1.0, 20.0, 20.0, 1.0, 20.0]]  # area 361
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": person,
            "area": 1600.0,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 8,
            "segmentation": truck,
            "area": 500.0,
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "segmentation": _rle_uncompressed(crowd),
            "area": 250.0,
            "iscrowd": 1,
        },
        {
            "id": 4,
            "image_id": 2,
            "category_id": 3,
            "segmentation": car_rle,
            "area": float(car.sum()),
            "iscrowd": 0,
        },
        {
            "id": 5,
            "image_id": 3,
            "category_id": 18,
            "segmentation": small,
            "area": 361.0,
            "iscrowd": 0,
        },
        {
            "id": 6,
            "image_id": 4,
            "category_id": 8,
            "segmentation": truck,
            "area": 5000.0,
            "iscrowd": 0,
        },
    ]
    categories = [
        {"id": 1, "name": "person"},
        {"id": 3, "name": "car"},
        {"id": 8, "name": "truck"},
        {"id": 18, "name": "dog"},
    ]
    (root / "annotations").mkdir(parents=True)
    with open(root / "annotations" / "instances_train2017.json", "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": categories}, f)
    return root, car


CAMVID_LABEL = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], np.uint8)


def make_camvid(root, names=("0001TP_006690", "0001TP_006720"), splits=("train", "val")):
    """SegNet CamVid layout with list files holding absolute /SegNet/CamVid/... paths."""
    root = Path(root)
    for s, split in enumerate(splits):
        lines = []
        for i, name in enumerate(names):
            save(root / split / f"{name}.png", rgb(3, 4, 10 * s + i))
            save(root / f"{split}annot" / f"{name}.png", CAMVID_LABEL)
            lines.append(
                f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png"
            )
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_folder(root, n=3, size=(6, 8), num_classes=3):
    """images/*.jpg|png + labels/*.png + train.txt (names) + val.txt ("image label" pairs)."""
    root = Path(root)
    names = [f"img{i}" for i in range(n)]
    for i, name in enumerate(names):
        save(root / "images" / f"{name}.png", rgb(*size, i))
        save(
            root / "labels" / f"{name}.png",
            (np.arange(size[0] * size[1]).reshape(size) % num_classes).astype(np.uint8),
        )
    (root / "train.txt").write_text("\n".join(names) + "\n")
    (root / "val.txt").write_text(f"images/{names[0]}.png labels/{names[0]}.png\n")
    return root


def shard_names(directory):
    """The shard files of a dataset folder, with the converters' run tag (-xxxxxxxx) taken off."""
    return sorted(
        re.sub(r"-[0-9a-f]{8}\.tfrecord$", ".tfrecord", n)
        for n in os.listdir(directory)
        if n.endswith(".tfrecord")
    )
