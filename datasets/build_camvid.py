#!/usr/bin/env python
"""CamVid in the SegNet tutorial layout -> TFRecord shards + dataset.json (11 classes).

Input: --input_dir holding train.txt / val.txt / test.txt ("image label" per line, with absolute
paths from the machine that wrote them, e.g. /SegNet/CamVid/train/0001TP_006690.png: they are
resolved against --input_dir) and the train/, trainannot/, val/, valannot/, ... folders. Labels are
8-bit index PNGs; class 11 (Unlabelled) becomes the ignore label 255. Real data: 367 train, 101 val,
233 test.

Example:
  python datasets/build_camvid.py --input_dir ../shared/data/camvid --output_dir data/camvid
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
        "--allow_outside_root",
        action="store_true",
        help="read listed files outside --input_dir (default: an error)",
    )
    args = parser.parse_args(argv)
    split_specs = raw_datasets.camvid_examples(
        args.input_dir,
        convert.parse_splits(args.splits),
        allow_outside_root=args.allow_outside_root,
    )
    convert.convert_from_args(split_specs, args, datasets_info.camvid())


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
