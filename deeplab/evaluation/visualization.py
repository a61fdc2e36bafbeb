"""Colorized label maps, overlays, panels and evaluation-server files (used by train summaries,
visualize and predict).

numpy for the pixels, PIL for PNG files and matplotlib (Agg, imported only by :func:`panel`) for
the image x groundtruth x prediction panels. No TensorFlow.
"""

import io
import os

import numpy as np

from deeplab.common import atomic_io
from deeplab.data import datasets_info


def colorize_labels(labels, palette, ignore_label=255, ignore_color=(255, 255, 255)):
    """Maps class indices to RGB colors.

    Args:
      labels: integer array [..., H, W] of class indices.
      palette: sequence of [r, g, b] per class (dataset.json "palette").
      ignore_label: label drawn in ``ignore_color``.
      ignore_color: RGB of ignored pixels.

    Returns:
      uint8 array [..., H, W, 3]. Indices outside the palette (other than the ignore label)
      raise ValueError, so a wrong palette is never drawn silently.
    """
    labels = np.asarray(labels)
    table = np.zeros((256 if ignore_label < 256 else ignore_label + 1, 3), np.uint8)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    table[: len(palette)] = palette
    valid = labels != ignore_label
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= len(palette)):
        raise ValueError(
            f"label values {labels[valid].min()}..{labels[valid].max()} do not fit a "
            f"palette of {len(palette)} colors"
        )
    table[ignore_label] = ignore_color
    return table[np.where(valid, labels, ignore_label)]


def overlay(image, colored, alpha=0.5):
    """Blends an RGB image [H, W, 3] with a colorized label map: (1 - alpha) * image + alpha *
    colored."""
    blend = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(colored, np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


BACKGROUND_NAMES = ("background", "_background_", "bg")


def background_class(class_names):
    """Index of the dataset's background class (class 0 named "background", as PASCAL VOC's
    is), or None when the dataset has none (CamVid, Cityscapes: every class is a thing to see).
    """
    if class_names and str(class_names[0]).strip().lower() in BACKGROUND_NAMES:
        return 0
    return None


def class_shares(labels, class_names=None, ignore_label=255):
    """The classes found in a label map, most pixels first.

    Returns:
      list of dicts {"index", "name", "share"}: ``share`` is the fraction of the map's pixels
      (the ignore label, if present, is not a class and is left out).
    """
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    total = max(int(labels.size), 1)
    found = []
    for value, count in sorted(zip(values.tolist(), counts.tolist()), key=lambda vc: -vc[1]):
        if value == ignore_label:
            continue
        name = (
            str(class_names[value])
            if class_names is not None and 0 <= value < len(class_names)
            else f"class_{value}"
        )
        found.append({"index": int(value), "name": name, "share": count / total})
    return found


def format_shares(shares, limit=8):
    """One line of :func:`class_shares`: ``road 41.2%, sky 20.3%, ...``."""
    parts = [f"{s['name']} {100 * s['share']:.1f}%" for s in shares[:limit]]
    if len(shares) > limit:
        parts.append(f"+{len(shares) - limit} more")
    return ", ".join(parts) if parts else "no class"


def _legend_font(size):
    # PIL: only the picture writers need it (colorizing is numpy only)
    from PIL import ImageFont  # pylint: disable=import-outside-toplevel

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def legend_overlay(
    image, labels, palette, class_names=None, *, ignore_label=255, background=None, alpha=0.6
):
    """The photo with the classes found painted over it and a legend below: a picture to read.

    Pixels of ``background`` (see :func:`background_class`) and of the ignore label are left as
    the photo shows them; every other class is blended in its palette colour at ``alpha`` and
    outlined where it meets another class, so a grey class on a grey car still shows. The
    legend lists each class found with its colour and share of the pixels, most first.

    Returns:
      uint8 RGB [H + legend height, max(W, 320), 3].
    """
    # PIL: only the picture writers need it (colorizing is numpy only)
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from PIL import ImageDraw  # PIL, as above  # pylint: disable=import-outside-toplevel

    image = np.asarray(image, np.uint8)
    labels = np.asarray(labels)
    height, width = labels.shape
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    paint = labels != ignore_label
    if background is not None:
        paint &= labels != background
    safe = np.where(paint, labels, 0).clip(0, len(palette) - 1)
    colors = palette[safe].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    out = np.where(paint[..., None], np.rint(blended), image).astype(np.uint8)
    # Class boundaries drawn 2 px wide in a dark shade of the class colour, so a class whose
    # colour is close to the photo's (PASCAL's grey car on a silver car) still shows its shape.
    edge = np.zeros_like(paint)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    edge &= paint
    out[edge] = (palette[safe[edge]].astype(np.float32) * 0.45).astype(np.uint8)

    shares = class_shares(labels, class_names, ignore_label)
    font_size = int(np.clip(width / 40, 11, 22))
    font = _legend_font(font_size)
    canvas_width = max(width, 320)
    row, pad, swatch = font_size + 8, 6, font_size
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries, x, rows = [], pad, 1
    for share in shares:
        text = f"{share['name']} {100 * share['share']:.1f}%"
        if share["index"] == background:
            text += " (unpainted)"
        item_width = swatch + 4 + int(measure.textlength(text, font=font)) + 14
        if x + item_width > canvas_width - pad and x > pad:
            x, rows = pad, rows + 1
        entries.append((x, (rows - 1) * row + pad, share["index"], text))
        x += item_width
    legend_height = rows * row + 2 * pad
    canvas = Image.new("RGB", (canvas_width, height + legend_height), (255, 255, 255))
    canvas.paste(Image.fromarray(out), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for x, y, index, text in entries:
        y += height
        color = tuple(int(c) for c in palette[min(max(index, 0), len(palette) - 1)])
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=color, outline=(0, 0, 0))
        draw.text((x + swatch + 4, y + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, np.uint8)


# ------------------------------------------------------------------------------------------------
# PNG files, the image x groundtruth x prediction panel, and evaluation-server formats.
# ------------------------------------------------------------------------------------------------

# The PASCAL VOC development kit reads segmentation results from
# results/VOC2012/Segmentation/<competition>_<testset>_cls/<image id>.png (VOCopts.seg.clsrespath):
# indexed PNGs whose pixel values are class indices (it writes them with the VOC colour map).
# comp5 admits VOC training data only; comp6 any data (ImageNet / COCO / JFT pretraining).
VOC_RESULTS_DIR = os.path.join("results", "VOC2012", "Segmentation")
VOC_COMPETITIONS = ("comp5", "comp6")
# Dataset names (dataset.json "name", deeplab.data.datasets_info) with an evaluation-server format.
VOC_DATASETS = ("pascal_voc_seg", "coco_voc")
CITYSCAPES_DATASETS = ("cityscapes",)
# Cityscapes' evaluation script finds the prediction of <city>_<seq>_<frame> as the one file
# matching "<city>_<seq>_<frame>*.png" anywhere under the results folder, holding label ids.
CITYSCAPES_RESULTS_DIR = "cityscapes_results"
CITYSCAPES_PREDICTION_SUFFIX = "_pred_labelIds.png"
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_rgb_png(path, rgb):
    """Writes a uint8 RGB array [H, W, 3] as a PNG (atomically)."""
    # PIL: only the PNG writers need it (colorizing is numpy only)
    from PIL import Image  # pylint: disable=import-outside-toplevel

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
    atomic_io.write_bytes(path, _png_bytes(Image.fromarray(rgb, mode="RGB")))


def save_index_png(path, labels, palette=None):
    """Writes class indices [H, W] (0..255) as an 8-bit PNG whose pixel values are the indices.

    With ``palette`` the PNG is a palette ("P") image that viewers show in colour while every
    reader that takes raw pixel values (VOC devkit ``imread``, PIL, ``tf.io.decode_png``) still
    gets the indices; without it a greyscale ("L") image.
    """
    # PIL: only the PNG writers need it (colorizing is numpy only)
    from PIL import Image  # pylint: disable=import-outside-toplevel

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected labels [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"index PNG values must be in 0..255, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="L")
    if palette is not None:
        colors = np.zeros((256, 3), np.uint8)
        palette = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
        colors[: len(palette)] = palette
        image = image.convert("P")
        image.putpalette(colors.reshape(-1).tolist())
    atomic_io.write_bytes(path, _png_bytes(image))


def panel(
    image,
    prediction,
    palette,
    *,
    label=None,
    class_names=None,
    ignore_label=255,
    title=None,
    alpha=0.5,
):
    """A matplotlib figure image x groundtruth x prediction (and overlay), as a uint8 RGB array.

    Args:
      image: uint8 RGB [H, W, 3].
      prediction: predicted class indices [H, W].
      palette: one [r, g, b] per class.
      label: groundtruth indices [H, W] (ignore label drawn white), or None (test images).
      class_names: names for a legend of the classes present in groundtruth or prediction.
      ignore_label: the ignore label of ``label``.
      title: figure title (e.g. the image name and its mIOU).
      alpha: opacity of the prediction in the overlay.

    Returns:
      uint8 array [h, w, 3] of the rendered figure.
    """
    # pylint: disable=import-outside-toplevel
    # matplotlib is slow to import, and its other modules load after the Agg backend is chosen
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # after use("Agg")
    from matplotlib.figure import Figure  # after use("Agg")
    from matplotlib.patches import Patch  # after use("Agg")

    image = np.asarray(image, np.uint8)
    prediction = np.asarray(prediction)
    colored = colorize_labels(prediction, palette, ignore_label)
    tiles = [("image", image)]
    if label is not None:
        tiles.append(("groundtruth", colorize_labels(label, palette, ignore_label)))
    tiles += [("prediction", colored), ("overlay", overlay(image, colored, alpha))]
    height, width = image.shape[:2]
    tile_inches = 3.0
    figure = Figure(figsize=(tile_inches * len(tiles), tile_inches * height / width + 0.9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(tiles))
    for axis, (name, tile) in zip(np.atleast_1d(axes), tiles):
        axis.imshow(tile, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    present = set(np.unique(prediction).tolist())
    if label is not None:
        present |= set(np.unique(label[label != ignore_label]).tolist())
    if class_names is not None and present:
        handles = [
            Patch(color=np.asarray(palette[c]) / 255.0, label=str(class_names[c]))
            for c in sorted(present)
            if 0 <= c < len(class_names)
        ]
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 8),
            fontsize=7,
            frameon=False,
        )
    if title:
        figure.suptitle(title, fontsize=9)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def normalized_confusion_rows(confusion_matrix):
    """Each row (groundtruth class) divided by its pixel count; rows of absent classes stay 0."""
    matrix = np.asarray(confusion_matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_matrix_image(confusion_matrix, class_names):
    """The confusion matrix as a uint8 RGB picture: rows (groundtruth) normalized to 1, class
    names on both axes, each cell's percentage written in it (up to 25 classes)."""
    # pylint: disable=import-outside-toplevel
    # matplotlib is slow to import, and its other modules load after the Agg backend is chosen
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # after use("Agg")
    from matplotlib.figure import Figure  # after use("Agg")

    rows = normalized_confusion_rows(confusion_matrix)
    count = rows.shape[0]
    names = [str(n) for n in (class_names or range(count))][:count]
    side = min(12.0, 2.0 + 0.45 * count)
    figure = Figure(figsize=(side + 1.0, side), dpi=80)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    shown = axis.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_xticks(range(count), names, rotation=90, fontsize=7)
    axis.set_yticks(range(count), names, fontsize=7)
    axis.set_xlabel("prediction")
    axis.set_ylabel("groundtruth (rows sum to 100%)")
    if count <= 25:
        for i in range(count):
            for j in range(count):
                axis.text(
                    j,
                    i,
                    f"{100 * rows[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if rows[i, j] > 0.5 else "black",
                )
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def cityscapes_train_id_to_label_id():
    """Lookup table uint8 [256]: Cityscapes train id (0..18) -> label id of the *_labelIds.png
    files.

    The Cityscapes server scores label ids, not the 19 train ids the model predicts. Built from
    the label table in third_party/cityscapes_labels.csv (``deeplab.data.datasets_info``). Entries
    of values that are not train ids (19..255) map to 0 ("unlabeled").
    """
    lut = np.zeros(256, np.uint8)
    seen = set()
    for row in datasets_info.cityscapes_label_table():
        train_id = row["train_id"]
        if 0 <= train_id < datasets_info.IGNORE_LABEL:
            if train_id in seen:
                raise ValueError(f"train id {train_id} has two label ids in the Cityscapes table")
            seen.add(train_id)
            lut[train_id] = row["id"]
    return lut


def server_format(dataset_name):
    """The evaluation-server layout for a dataset name: "voc", "cityscapes" or None (plain)."""
    if dataset_name in VOC_DATASETS:
        return "voc"
    if dataset_name in CITYSCAPES_DATASETS:
        return "cityscapes"
    return None


def save_raw_prediction(
    output_dir, name, prediction, *, dataset_name, palette=None, competition="comp6", testset="test"
):
    """Writes one prediction as the dataset's evaluation server expects it.

    * PASCAL VOC (Table 7): ``results/VOC2012/Segmentation/<competition>_<testset>_cls/<id>.png``,
      an indexed PNG of class indices with the VOC colour map.
    * Cityscapes (Table 13): ``cityscapes_results/<city>_<seq>_<frame>_pred_labelIds.png``, an
      8-bit PNG of Cityscapes label ids (train ids mapped back), one file per image.
    * Anything else: ``raw/<name>.png``, an indexed PNG of class indices.

    Args:
      output_dir: the folder under which the layout above is created.
      name: the image's name: VOC id ("2008_000001"), Cityscapes stem (with or without
        "_leftImg8bit"), or any file stem.
      prediction: class indices [H, W] at the image's original size.
      dataset_name: dataset.json "name" ("pascal_voc_seg", "coco_voc", "cityscapes", ...).
      palette: colours of the classes (VOC and plain formats).
      competition: VOC competition, "comp5" (VOC data only) or "comp6" (other data too).
      testset: the VOC image set the predictions are for.

    Returns:
      the path written.
    """
    prediction = np.asarray(prediction)
    name = os.path.basename(str(name))
    kind = server_format(dataset_name)
    if kind == "voc":
        if competition not in VOC_COMPETITIONS:
            raise ValueError(
                f"VOC competition must be one of {VOC_COMPETITIONS}, got {competition!r}"
            )
        path = os.path.join(
            output_dir, VOC_RESULTS_DIR, f"{competition}_{testset}_cls", f"{name}.png"
        )
        save_index_png(path, prediction, palette)
    elif kind == "cityscapes":
        if name.endswith(CITYSCAPES_IMAGE_SUFFIX):
            name = name[: -len(CITYSCAPES_IMAGE_SUFFIX)]
        if prediction.size and (prediction.min() < 0 or prediction.max() > 18):
            raise ValueError(
                "Cityscapes predictions must be train ids 0..18, got "
                f"{prediction.min()}..{prediction.max()}"
            )
        path = os.path.join(output_dir, CITYSCAPES_RESULTS_DIR, name + CITYSCAPES_PREDICTION_SUFFIX)
        save_index_png(path, cityscapes_train_id_to_label_id()[prediction.astype(np.int64)])
    else:
        path = os.path.join(output_dir, "raw", f"{name}.png")
        save_index_png(path, prediction, palette)
    return path
