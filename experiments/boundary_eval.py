"""mIOU near object boundaries (the trimap measure of the DeepLabv3+ paper, Chen et al. 2018):
only pixels within ``--band`` pixels of a label boundary count, where a sharper decoder should
show. Prints, per checkpoint, the whole-image mIOU and the band mIOU per class.

    python experiments/boundary_eval.py --dataset_dir=data/camvid --split=val \
        --checkpoints=runs/l_ce,runs/l_decoder --bands=4,8
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from deeplab.data import input_pipeline
from deeplab.evaluation import metrics
from deeplab.export import serving
from deeplab.logdir import checkpoints  # noqa: E402


def boundary_band(label, width, ignore_label):
    """True where a pixel lies within ``width`` pixels (4-connected steps) of a change between
    two classes in ``label`` (changes to or from the ignore label do not count); ignore pixels
    are never in the band."""
    valid = label != ignore_label
    edge = np.zeros(label.shape, bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        change = (label[tuple(a)] != label[tuple(b)]) & valid[tuple(a)] & valid[tuple(b)]
        edge[tuple(a)] |= change
        edge[tuple(b)] |= change
    band = ndimage.binary_dilation(edge, iterations=width) if width > 0 else edge
    return band & valid


def evaluate(checkpoint, dataset_dir, split, bands, limit=None):
    info = checkpoints.read_run_info(checkpoint)
    model = checkpoints.load_model(info["checkpoint"], upsample_logits=True, fuse_batch_norm=True)
    dataset_info = info["dataset_info"] or {}
    segmenter = serving.KerasSegmenter(model, class_names=dataset_info.get("class_names"))
    num_classes = model.num_classes
    ignore = (dataset_info or {}).get("ignore_label", 255)
    confusions = {band: np.zeros((num_classes, num_classes), np.int64) for band in (None, *bands)}
    for example in input_pipeline.make_eval_dataset(dataset_dir, split, limit=limit):
        label = example["label"].numpy()
        prediction = segmenter(example["raw_image"].numpy())
        valid = label != ignore
        for band in confusions:
            mask = valid if band is None else boundary_band(label, band, ignore)
            confusions[band] += np.bincount(
                num_classes * label[mask].astype(np.int64) + prediction[mask],
                minlength=num_classes**2,
            ).reshape(num_classes, num_classes)
    return dataset_info.get("class_names") or [str(i) for i in range(num_classes)], confusions


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--checkpoints", required=True, help="comma-separated logdirs or checkpoints"
    )
    parser.add_argument("--bands", default="4,8", help="band half-widths in pixels")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    bands = [int(b) for b in args.bands.split(",")]
    for checkpoint in args.checkpoints.split(","):
        names, confusions = evaluate(checkpoint, args.dataset_dir, args.split, bands, args.limit)
        print(f"== {checkpoint}")
        header = "band".ljust(8) + "mIOU".rjust(7) + "".join(n[:10].rjust(11) for n in names)
        print(header)
        for band, confusion in confusions.items():
            iou = 100 * metrics.iou_per_class(confusion)
            label = "whole" if band is None else f"{band} px"
            print(
                label.ljust(8)
                + f"{100 * metrics.mean_iou(confusion):7.2f}"
                + "".join(f"{v:11.2f}" for v in iou),
                flush=True,
            )


if __name__ == "__main__":
    main()
