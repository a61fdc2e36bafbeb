"""Issue 33's table: a float model, its calibrated int8 export and its quantization-aware int8
export on one split (mIOU, IoU per class, share of pixels in the float model's class).

    python experiments/qat_table.py --dataset_dir=data/camvid --split=val \
        --float_checkpoint=runs/camvid_from_pascal \
        --calibrated_tflite=runs/camvid_int8_export/deeplab_int8.tflite \
        --qat_checkpoint=runs/camvid_qat \
        --qat_tflite=runs/camvid_qat_export/deeplab_int8.tflite \
        --output=runs/camvid_qat_table.json

Rows: the float Keras model (the reference of the agreement column); its int8 TFLite export
calibrated on images (today's path); the quantization-aware run's weights run in float
(``quantize_aware`` off: what fine-tuning did to the float model); the quantization-aware Keras
model (its forward rounds as the int8 graph); its int8 TFLite export (ranges from training, no
calibration). Keras rows see the whole image; the TFLite files take their input size (CamVid's
360x480 frames are fed unchanged when exported at 360,480).
"""

# isort: split
import deeplab  # noqa: F401  # before TensorFlow (CONVENTIONS.md)

# isort: split
import argparse
import json

import numpy as np

from deeplab.data import tfrecord
from deeplab.evaluation import metrics
from deeplab.export import serving
from deeplab.export import tflite
from deeplab.logdir import checkpoints


def _keras(checkpoint, **overrides):
    model = checkpoints.load_model(checkpoint, fuse_batch_norm=True, **overrides)
    return serving.KerasSegmenter(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--float_checkpoint", required=True)
    parser.add_argument("--calibrated_tflite", required=True)
    parser.add_argument("--qat_checkpoint", required=True)
    parser.add_argument("--qat_tflite", required=True)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    segmenters = {
        "float Keras": _keras(args.float_checkpoint),
        "int8 TFLite, calibrated": tflite.TFLiteSegmenter(args.calibrated_tflite),
        "QAT weights, float": _keras(args.qat_checkpoint, quantize_aware=False),
        "QAT Keras (int8 simulated)": _keras(args.qat_checkpoint),
        "int8 TFLite, QAT": tflite.TFLiteSegmenter(args.qat_tflite),
    }
    results = tflite.evaluate_segmenters(
        segmenters, args.dataset_dir, args.split, limit=args.limit or None
    )
    print(tflite.format_comparison(results))
    names = tfrecord.read_dataset_info(args.dataset_dir).get("class_names") or []
    table = {}
    for name, result in results.items():
        per_class = np.asarray(metrics.iou_per_class(result["confusion_matrix"]), np.float64)
        table[name] = {
            "miou": 100 * float(result["miou"]),
            "pixel_accuracy": 100 * float(result["pixel_accuracy"]),
            "same_class_as_float": 100 * float(result["agreement"]),
            "iou_per_class": {
                (names[i] if i < len(names) else str(i)): 100 * float(v)
                for i, v in enumerate(per_class)
            },
            "images": int(result["images"]),
        }
    classes = list(next(iter(table.values()))["iou_per_class"])
    print("IoU per class %: " + " | ".join(["class"] + list(table)))
    for cls in classes:
        print(f"{cls}: " + " | ".join(f"{table[n]['iou_per_class'][cls]:.2f}" for n in table))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
