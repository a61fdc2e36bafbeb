r"""Issue 34: the inference rows of the paper's Tables 4 and 6 (OS 8, OS 8 + MS, OS 8 + MS + Flip)
of one checkpoint in one pass over the split.

    python experiments/inference_rows.py --checkpoint=runs/camvid_from_pascal \
        --dataset_dir=data/camvid --output_stride=8 [--pad_to=H,W] [--json=rows.json]

Each image is segmented once per (scale, flip) of the paper's scales {0.5, ..., 1.75}: the
scale-1 unflipped pass alone is the "OS 8" row, the six unflipped passes averaged the "+ MS" row,
all twelve the "+ MS + Flip" row: the same probabilities ``deeplab.evaluate --eval_scales=...
[--eval_flip]`` averages (deeplab.evaluation.inference.predict_probabilities, one pass at a
time), in a third of the time of three separate evaluations. Nothing is written to the run.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset_dir", default="data/camvid")
    parser.add_argument("--split", default="val")
    parser.add_argument("--output_stride", type=int, default=8)
    parser.add_argument("--pad_to", default="", help="H,W: the authors' padded evaluation")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()

    # pylint: disable=import-outside-toplevel
    import numpy as np
    import tensorflow as tf

    from deeplab.common.inference_options import InferenceOptions
    from deeplab.data import input_pipeline
    from deeplab.data import tfrecord
    from deeplab.evaluation import evaluator
    from deeplab.evaluation import inference
    from deeplab.evaluation import metrics
    from deeplab.logdir import checkpoints
    from deeplab.model.preprocessing import pad_pixel

    info = tfrecord.read_dataset_info(args.dataset_dir)
    classes, ignore = info["num_classes"], info["ignore_label"]
    model = checkpoints.load_model(
        args.checkpoint,
        num_classes=classes,
        upsample_logits=True,
        output_stride=args.output_stride,
        fuse_batch_norm=True,
    )
    forward = evaluator.Predictor(model)._forward  # pylint: disable=protected-access
    sizes = tuple(int(v) for v in args.pad_to.split(",") if v.strip())
    pad_to = (sizes * 2 if len(sizes) == 1 else sizes) or None
    pad_value = pad_pixel(model.backbone)
    rows = {"OS": None, "OS + MS": None, "OS + MS + Flip": None}
    confusion = {row: np.zeros((classes, classes), np.int64) for row in rows}
    dataset = input_pipeline.make_eval_dataset(
        args.dataset_dir, args.split, num_classes=classes, limit=args.limit or None
    )
    images_done = 0
    for example in dataset:
        image = example["image"][tf.newaxis]
        label = tf.cast(example["label"], tf.int32)
        height, width = label.shape
        if pad_to:  # padded first, flipped after, as predict_probabilities does with pad_to
            image, _ = inference.pad_for_inference(image, pad_to, pad_value)
        passes = {}
        for flipped in (False, True):
            x = tf.reverse(image, [2]) if flipped else image
            for scale in inference.PAPER_EVAL_SCALES:
                p = inference.predict_probabilities(
                    forward, x, options=InferenceOptions(scales=(scale,))
                )
                passes[(scale, flipped)] = tf.reverse(p, [2]) if flipped else p
        single = passes[(1.0, False)]
        ms = tf.add_n([passes[(s, False)] for s in inference.PAPER_EVAL_SCALES])
        ms_flip = ms + tf.add_n([passes[(s, True)] for s in inference.PAPER_EVAL_SCALES])
        for row, probabilities in zip(rows, (single, ms, ms_flip)):
            probabilities = probabilities[0, :height, :width]
            prediction = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            confusion[row] += np.asarray(
                metrics.confusion_matrix_update(label, prediction, classes, ignore)
            )
        images_done += 1
    for row in rows:
        rows[row] = 100.0 * float(metrics.mean_iou(confusion[row]))
    print(
        f"{args.checkpoint}: {args.split}, {images_done} images, output stride "
        f"{args.output_stride}{', padded to ' + args.pad_to if pad_to else ''}",
        flush=True,
    )
    for row, value in rows.items():
        print(f"  {row.replace('OS', f'OS {args.output_stride}')}: mIOU {value:.2f}%", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"checkpoint": args.checkpoint, "images": images_done, "rows": rows}, f)


if __name__ == "__main__":
    main()
