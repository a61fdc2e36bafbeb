"""A small, learnable synthetic segmentation dataset, written through the project's TFRecord writer.

Each image is a textured background (class 0) with 1-4 shapes (ellipses, rectangles, triangles) of
the other classes drawn over it. A class is recognizable from local evidence alone: every foreground
class has its own hue and its own stripe orientation and period, so a small DeepLab learns it in
minutes on a CPU, while shape, size, position, overlap, brightness and noise vary per image. Like
PASCAL VOC, a 1-pixel band along each boundary between two classes carries the ignore label.

It is the quick-start dataset of the training binary, the fixture of many tests, and (at 500x375
JPEG, :data:`VOC_LIKE`) the input of ``benchmarks/input_pipeline.py``. Output is a function of the
arguments and ``seed`` only. Pure numpy + PIL for the pixels.
"""

import colorsys
import io
import json
import logging
import math
import os
import time

import numpy as np

from deeplab.data import tfrecord
from deeplab.data.datasets_info import IGNORE_LABEL

log = logging.getLogger(__name__)

# Arguments that mimic PASCAL VOC 2012 images for throughput measurements (500 wide, 375 high,
# JPEG).
VOC_LIKE = {"image_size": (375, 500), "num_classes": 21, "image_format": "jpeg"}

_BACKGROUND_RGB = (118, 112, 104)


def class_colors(num_classes):
    """Base RGB colour of each class: a neutral grey-brown background, evenly spaced saturated
    hues."""
    colors = [_BACKGROUND_RGB]
    for c in range(1, num_classes):
        hue = (c - 1) / max(1, num_classes - 1)
        value = 0.95 if c % 2 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def class_names(num_classes):
    """'background', then 'shape_1' ... 'shape_{num_classes-1}'."""
    return ["background"] + [f"shape_{c}" for c in range(1, num_classes)]


def _smooth_noise(rng, height, width, cells):
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    from PIL import Image  # PIL only where pixels are drawn (as in deeplab.data.tfrecord)

    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR))


def _stripes(yy, xx, cls, num_classes):
    angle = math.pi * (cls - 1) / max(1, num_classes - 1)
    period = 4.0 + 3.0 * ((cls - 1) % 3)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    return np.sin(phase)


def _shape_mask(rng, yy, xx, height, width):
    kind = rng.integers(3)
    size = min(height, width)
    cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
    ry, rx = rng.uniform(0.12, 0.35, size=2) * size
    if kind == 0:  # ellipse
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    if kind == 1:  # axis-aligned rectangle
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    # triangle: inside three half-planes around the centre
    angles = rng.uniform(0, 2 * math.pi) + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3])
    r = max(ry, rx)
    py, px = cy + r * np.sin(angles), cx + r * np.cos(angles)
    inside = np.ones_like(yy, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        inside &= cross >= 0
    return inside


def make_example(rng, *, image_size, num_classes, ignore_boundary=True):
    """One synthetic (image, label) pair.

    Args:
      rng: numpy Generator (the only source of randomness).
      image_size: (height, width).
      num_classes: number of classes including background (>= 2).
      ignore_boundary: mark 1-pixel class boundaries with the ignore label.

    Returns:
      (image uint8 [H, W, 3], label uint8 [H, W]).
    """
    height, width = image_size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colors = np.asarray(class_colors(num_classes), np.float32)

    label = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 5)):
        label[_shape_mask(rng, yy, xx, height, width)] = rng.integers(1, num_classes)

    image = colors[label]
    # Background texture: blotches; foreground texture: class-specific stripes.
    blotches = _smooth_noise(rng, height, width, cells=6) * 28.0
    texture = np.where(label == 0, blotches, 0.0)
    for cls in np.unique(label[label > 0]):
        texture = np.where(label == cls, _stripes(yy, xx, int(cls), num_classes) * 30.0, texture)
    image = image + texture[:, :, None]
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0.0, 6.0, size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)

    if ignore_boundary:
        edge = np.zeros_like(label, dtype=bool)
        edge[1:, :] |= label[1:, :] != label[:-1, :]
        edge[:, 1:] |= label[:, 1:] != label[:, :-1]
        label = np.where(edge, np.uint8(IGNORE_LABEL), label)
    return image, label


def _encode_image(image, image_format):
    from PIL import Image  # PIL only where pixels are encoded (as in deeplab.data.tfrecord)

    buf = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def build_synthetic_dataset(
    output_dir,
    *,
    num_train=64,
    num_val=16,
    image_size=(65, 65),
    num_classes=5,
    image_format="png",
    seed=0,
    num_shards=None,
    size_jitter=0.0,
    ignore_boundary=True,
    name="synthetic",
):
    """Writes a synthetic dataset (train and val splits + dataset.json) through the TFRecord writer.

    Args:
      output_dir: dataset directory to create or overwrite.
      num_train, num_val: examples per split (> 0).
      image_size: (height, width) of every image (the largest, with ``size_jitter``).
      num_classes: classes including background, 2..255.
      image_format: "png" (lossless) or "jpeg" (quality 90, as VOC-like records).
      seed: everything written is a function of the arguments and this seed.
      num_shards: shards per split (default: ``tfrecord.default_num_shards``).
      size_jitter: in [0, 1); each image's height and width are drawn uniformly from
        [(1 - size_jitter) * size, size], so evaluation sees images of different sizes.
      ignore_boundary: 1-pixel ignore-label band on class boundaries (as in VOC).
      name: the dataset.json name.

    Returns:
      the dataset.json dict.
    """
    from deeplab.data import records  # TensorFlow: imported only when writing

    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    if not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in [2, 255], got {num_classes}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if not 0.0 <= size_jitter < 1.0:
        raise ValueError(f"size_jitter must be in [0, 1), got {size_jitter}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    counts, classes = {}, {}
    for split_id, (split, num) in enumerate((("train", num_train), ("val", num_val))):
        with records.ShardedWriter(output_dir, split, num, num_shards) as writer:
            for index in range(num):
                rng = np.random.default_rng([seed, split_id, index])
                size = (height, width)
                if size_jitter:
                    size = tuple(int(round(n * rng.uniform(1.0 - size_jitter, 1.0))) for n in size)
                image, label = make_example(rng, image_size=size, num_classes=num_classes,
                                            ignore_boundary=ignore_boundary)
                present = np.unique(label)
                classes.setdefault(split, set()).update(
                    int(c) for c in present if c != IGNORE_LABEL)
                writer.write(
                    index,
                    records.encode_example(
                        image_bytes=_encode_image(image, image_format),
                        image_format=image_format,
                        height=size[0],
                        width=size[1],
                        label_png=tfrecord.encode_label_png(label),
                        filename=f"{split}_{index:06d}",
                        classes_present=present[present != IGNORE_LABEL],
                    ),
                )
        counts[split] = writer.count
    return tfrecord.write_dataset_info(
        output_dir,
        name=name,
        num_classes=num_classes,
        ignore_label=IGNORE_LABEL,
        class_names=class_names(num_classes),
        palette=class_colors(num_classes),
        splits=counts,
        label_classes=classes,
        merge=False,
        source=(f"deeplab.data.synthetic seed={seed} image_size={height}x{width} "
                f"format={image_format}"),
    )


def build_if_missing(data, *, seed=0):
    """--build_synthetic_if_missing: writes the synthetic dataset into ``data.dataset_dir`` once.

    Args:
      data: a ``DataConfig`` (``dataset_dir`` and the ``synthetic_*`` settings).
      seed: the dataset's random seed (the run's).

    An existing dataset is used as it is; if it was built with other ``synthetic_*`` values a
    warning says so (delete the folder to rebuild it).
    """
    size = tuple(data.synthetic_image_size)
    wanted = {"num_classes": data.synthetic_num_classes,
              "splits": {"train": data.synthetic_num_train, "val": data.synthetic_num_val}}
    info_path = os.path.join(data.dataset_dir, tfrecord.DATASET_INFO_FILE)
    if os.path.exists(info_path):
        try:
            with open(info_path, encoding="utf-8") as f:
                existing = json.load(f)
        except (OSError, ValueError):
            return  # the training run reports an unreadable dataset.json
        found = {"num_classes": existing.get("num_classes"), "splits": existing.get("splits")}
        source = str(existing.get("source", ""))
        if found != wanted or (source and f"image_size={size[0]}x{size[1]}" not in source):
            log.warning(f"{data.dataset_dir} already holds a dataset ({found}, "
                        f"{source or 'no source'}) that differs from the --synthetic_* flags "
                        f"({wanted}, {size[0]}x{size[1]}); using it as it is. Delete the folder "
                        "to rebuild it.")
        return
    start = time.time()
    log.info(f"Building the synthetic dataset in {data.dataset_dir} ({data.synthetic_num_train} "
             f"train + {data.synthetic_num_val} val images, {size[0]}x{size[1]}, "
             f"{data.synthetic_num_classes} classes)")
    build_synthetic_dataset(data.dataset_dir, num_train=data.synthetic_num_train,
                            num_val=data.synthetic_num_val, image_size=size,
                            num_classes=data.synthetic_num_classes, seed=seed)
    log.info(f"  done in {time.time() - start:.0f}s")


__all__ = ["VOC_LIKE", "build_synthetic_dataset", "build_if_missing", "make_example",
           "class_colors", "class_names"]
