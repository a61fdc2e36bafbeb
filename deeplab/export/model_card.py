"""The model card that travels with every export and import: what the model is and how it did.

Every folder ``deeplab.export_saved_model`` or ``deeplab.import_official`` writes holds
``model_card.json`` (read by :func:`read_card` and ``deeplab.load``) and ``MODEL_CARD.md`` (the
same, for a person). A training run has no card file; :func:`card_for_run` builds one from its
recorded files when it is loaded.

The card says:

- architecture: backbone, output stride, head, parameters, forward GFLOPs at a stated size;
- classes: index, name and colour, the ignore label and the background class (if any);
- provenance: the run's checkpoint and step and its recorded ``config.json``, or the imported
  file's name and SHA-256;
- evaluation: the one the export ran (dataset, split, images, mIOU, per-class IoU), else
  ``null`` ("not evaluated"): a card never quotes a figure that was not measured on this model;
- input: uint8 RGB, any size (TFLite: letterboxed to its fixed size), the EXIF rule, the pixel
  cap;
- variants: each file (SavedModel float32 / bfloat16, TFLite float32 / int8) with its
  agreement with the float model and its mIOU where the export measured them;
- limits: what a user should know before trusting it.
"""

import hashlib
import json
import os
import time

import deeplab
from deeplab.common import atomic_io
from deeplab.data import datasets_info
from deeplab.evaluation import metrics
from deeplab.evaluation import visualization
from deeplab.logdir import run_record
from deeplab.model import description

CARD_JSON = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
FORMAT = "deeplab-model-card/1"

INPUT_CONTRACT = {
    "dtype": "uint8",
    "channels": "RGB",
    "size": "any height and width",
    "exif": (
        "EXIF orientation applied (JPEG APP1 / PNG eXIf), alpha dropped, 16-bit reduced to the "
        "high byte, grayscale / palette / CMYK converted to RGB (deeplab/data/images.py)"
    ),
}


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def architecture(model, model_config=None, gflops_size=None, batch_norm_folded=False):
    """The architecture section of ``model`` (a DeepLabV3): backbone, output stride, head,
    parameters and, with ``gflops_size`` (H, W), forward conv GFLOPs at that size.
    ``model_config``: the run's model_config.json (a BN-folded model has no config of its own).
    """
    config = model_config or model.get_config()
    section = {
        "backbone": config.get("backbone"),
        "output_stride": int(model.output_stride),
        "head": config.get("head", "aspp"),
        "atrous_rates": list(config.get("atrous_rates") or []),
        "image_pooling": bool(config.get("image_pooling", True)),
        "decoder_output_stride": config.get("decoder_output_stride") or None,
        "num_classes": int(model.num_classes),
        "parameters": int(model.count_params()),
        # Folding removes each BN's four vectors and adds a bias: fewer parameters, same model.
        "batch_norm_folded": bool(batch_norm_folded),
    }
    if gflops_size:
        flops, _ = description.conv_flops(model, int(gflops_size[0]), int(gflops_size[1]))
        section["gflops"] = round(flops / 1e9, 2)
        section["gflops_input"] = [int(gflops_size[0]), int(gflops_size[1])]
    return section


def classes(class_names, palette, ignore_label=255):
    """The classes section: names with colours, the ignore label and the background class."""
    return {
        "classes": [
            {"index": i, "name": str(name), "color": [int(c) for c in palette[i]]}
            for i, name in enumerate(class_names)
        ],
        "ignore_label": int(ignore_label),
        "background": visualization.background_class(class_names),
    }


def evaluation_section(dataset, split, results, class_names, reference="float Keras"):
    """The evaluation section from :func:`deeplab.export.tflite.evaluate_segmenters` results:
    the reference model's mIOU and per-class IoU, and every segmenter's row."""
    first = results[reference]
    per_class = [float(v) for v in metrics.iou_per_class(first["confusion_matrix"])]
    return {
        "dataset": dataset,
        "split": split,
        "images": int(first["images"]),
        "miou": float(first["miou"]),
        "pixel_accuracy": float(first["pixel_accuracy"]),
        "per_class_iou": {str(n): iou for n, iou in zip(class_names, per_class)},
        "models": {
            name: {
                "miou": float(r["miou"]),
                "pixel_accuracy": float(r["pixel_accuracy"]),
                "agreement_with_float": float(r["agreement"]),
            }
            for name, r in results.items()
        },
    }


def make_card(
    *,
    name,
    kind,
    architecture_section,
    classes_section,
    provenance,
    evaluation=None,
    input_section=None,
    variants=(),
    limits=(),
):
    """A card as a dict (the model_card.json content)."""
    return {
        "format": FORMAT,
        "name": name,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "deeplab_version": deeplab.__version__,
        "architecture": architecture_section,
        **classes_section,
        "provenance": provenance,
        "evaluation": evaluation,
        "input": {**INPUT_CONTRACT, **(input_section or {})},
        "variants": list(variants),
        "limits": list(limits),
    }


def summary(card):
    """One line: name, architecture, classes, and the evaluation or "not evaluated"."""
    arch = card.get("architecture", {})
    parts = [
        f"{card.get('name', 'model')}: {arch.get('backbone')} OS {arch.get('output_stride')}",
        f"{len(card.get('classes', []))} classes",
    ]
    if arch.get("parameters"):
        folded = " (BN folded)" if arch.get("batch_norm_folded") else ""
        parts.append(f"{arch['parameters'] / 1e6:.2f} M parameters{folded}")
    evaluation = card.get("evaluation")
    if evaluation:
        parts.append(
            f"mIOU {100 * evaluation['miou']:.2f}% on {evaluation.get('dataset') or '?'}:"
            f"{evaluation.get('split')} ({evaluation.get('images')} images)"
        )
    else:
        parts.append("not evaluated")
    return ", ".join(parts)


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def markdown(card):
    """MODEL_CARD.md: the card for a person."""
    arch = card["architecture"]
    lines = [f"# Model card: {card['name']}", "", summary(card), "", "## Architecture", ""]
    lines.append(f"- Backbone: {arch.get('backbone')}, output stride {arch.get('output_stride')}")
    head = arch.get("head")
    if arch.get("atrous_rates"):
        head += f", atrous rates {arch['atrous_rates']}"
    head += ", image pooling" if arch.get("image_pooling") else ""
    lines.append(f"- Head: {head}")
    if arch.get("decoder_output_stride"):
        lines.append(f"- Decoder at output stride {arch['decoder_output_stride']}")
    folded = " (batch norm folded into the convolutions)" if arch.get("batch_norm_folded") else ""
    lines.append(f"- Parameters: {arch.get('parameters'):,}{folded}")
    if arch.get("gflops") is not None:
        h, w = arch["gflops_input"]
        lines.append(f"- Forward GFLOPs at {h}x{w}: {arch['gflops']}")
    lines += ["", "## Classes", "", "| index | name | colour |", "|---|---|---|"]
    for entry in card["classes"]:
        color = "#{:02x}{:02x}{:02x}".format(*entry["color"])
        note = " (left unpainted in overlays)" if entry["index"] == card.get("background") else ""
        lines.append(f"| {entry['index']} | {entry['name']}{note} | `{color}` |")
    lines.append(f"\nIgnore label: {card.get('ignore_label')}.")
    lines += ["", "## Provenance", ""]
    for key, value in card["provenance"].items():
        if key == "config":
            continue
        lines.append(f"- {key}: {value}")
    if card["provenance"].get("config"):
        lines.append(
            "- The run's recorded configuration is in model_card.json (provenance.config)."
        )
    lines += ["", "## Evaluation", ""]
    evaluation = card.get("evaluation")
    if not evaluation:
        lines.append("Not evaluated: no figure was measured on this model when it was written.")
    else:
        lines.append(
            f"{evaluation.get('dataset')}, split {evaluation['split']}, {evaluation['images']} "
            f"images: mIOU {_pct(evaluation['miou'])}, pixel accuracy "
            f"{_pct(evaluation.get('pixel_accuracy'))}."
        )
        lines += ["", "| class | IoU |", "|---|---|"]
        lines += [f"| {n} | {_pct(v)} |" for n, v in evaluation["per_class_iou"].items()]
    lines += ["", "## Input", ""]
    lines += [f"- {key}: {value}" for key, value in card["input"].items()]
    lines += ["", "## Variants", ""]
    if card["variants"]:
        lines += ["| file | precision | mIOU | same class as float |", "|---|---|---|---|"]
        for v in card["variants"]:
            lines.append(
                f"| {v['file']} | {v['precision']} | {_pct(v.get('miou'))} | "
                f"{_pct(v.get('agreement_with_float'))} |"
            )
    else:
        lines.append("One variant: the model as stored.")
    if card["limits"]:
        lines += ["", "## Known limits", ""]
        lines += [f"- {limit}" for limit in card["limits"]]
    return "\n".join(lines) + "\n"


def write_card(folder, card):
    """Writes model_card.json and MODEL_CARD.md into ``folder`` (each atomically)."""
    atomic_io.write_json(os.path.join(folder, CARD_JSON), card)
    atomic_io.write_text(os.path.join(folder, CARD_MARKDOWN), markdown(card))
    return os.path.join(folder, CARD_JSON)


def read_card(folder):
    """The card in ``folder`` as a dict, or None when there is none (or it is unreadable)."""
    path = os.path.join(folder, CARD_JSON)
    try:
        with open(path, encoding="utf-8") as handle:
            card = json.load(handle)
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def card_for_run(run_info, model, batch_norm_folded=True):
    """A card for a training run's checkpoint (built when it is loaded; runs write none):
    provenance from its recorded files, the newest evaluation it recorded if any."""
    info = run_info.get("dataset_info") or {}
    names = list(info.get("class_names") or [f"class_{i}" for i in range(model.num_classes)])
    palette = info.get("palette") or datasets_info.color_map(len(names))
    config = None
    try:
        config = run_record.read_config(run_info["logdir"])
    except (OSError, ValueError):
        config = None
    return make_card(
        name=os.path.basename(os.path.normpath(run_info["logdir"])),
        kind="training_run",
        architecture_section=architecture(
            model, run_info.get("model_config"), batch_norm_folded=batch_norm_folded
        ),
        classes_section=classes(names, palette, info.get("ignore_label", 255)),
        provenance={
            "checkpoint": os.path.abspath(run_info["checkpoint"]),
            "step": run_info.get("step"),
            "dataset": info.get("name"),
            "config": config,
        },
        limits=["A training checkpoint, loaded as it is: run deeplab.evaluate for its figures."],
    )


__all__ = [
    "CARD_JSON",
    "CARD_MARKDOWN",
    "architecture",
    "card_for_run",
    "classes",
    "evaluation_section",
    "make_card",
    "markdown",
    "read_card",
    "sha256_of",
    "summary",
    "write_card",
]
