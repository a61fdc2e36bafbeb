#!/usr/bin/env python
"""COCO restricted to the 20 PASCAL VOC classes, for pretraining (DeepLabv3 Sec. 4.3) -> TFRecords.

Input: --input_dir holding annotations/instances_<split>.json and the image folders (<split>/ or
images/<split>/), e.g. train2017/ + annotations/instances_train2017.json. Every instances_*.json
found is a split; COCO 2017 train is the paper's "trainval_minus_minival".

Selection rule: an image is kept iff at least one non-crowd annotation of a VOC category has an area
(as stored in the annotation file, in pixels) larger than --min_area (1,000). The paper reports
about 60K images for its selection; the count per split is printed at the end.
Labels: VOC categories painted from polygons / RLE (largest first), other COCO categories background
(0), crowd regions the ignore label 255. Category mapping: third_party/coco_to_voc.csv. Needs
pycocotools.

Example:
  python datasets/build_coco_voc.py --input_dir ~/data/coco --splits train2017 \\
      --output_dir data/coco_voc
"""

import os
import sys

# Run from a checkout: the repository root first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab import _console  # noqa: E402
from deeplab.data import convert  # (TensorFlow is imported only to write)
from deeplab.data import datasets_info
from deeplab.data import raw_datasets


def main(argv=None):
    parser = convert.make_parser(__doc__)
    parser.add_argument(
        "--min_area",
        type=float,
        default=raw_datasets.MIN_REGION_AREA,
        help="keep images with a VOC-class region larger than this many pixels",
    )
    args = parser.parse_args(argv)
    split_specs = raw_datasets.coco_examples(
        args.input_dir, convert.parse_splits(args.splits), min_area=args.min_area
    )
    convert.convert_from_args(
        split_specs,
        args,
        datasets_info.coco_voc(),
        extra_info={
            "selection": f"images with a non-crowd VOC-class annotation of area > "
            f"{args.min_area:g} px"
        },
    )


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
