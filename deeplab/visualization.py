"""Colorized label maps and overlays (numpy; used by train summaries, visualize and predict)."""

import numpy as np


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
        raise ValueError(f"label values {labels[valid].min()}..{labels[valid].max()} do not fit a "
                         f"palette of {len(palette)} colors")
    table[ignore_label] = ignore_color
    return table[np.where(valid, labels, ignore_label)]


def overlay(image, colored, alpha=0.5):
    """Blends an RGB image [H, W, 3] with a colorized label map: (1 - alpha) * image + alpha * colored."""
    blend = (1.0 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(colored, np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)
