#!/usr/bin/env python
"""Cityscapes -> TFRecord shards + dataset.json (19 train ids, everything else the ignore label
255).

Input: --input_dir holding leftImg8bit/{train,val,train_extra}/<city>/*_leftImg8bit.png and
gtFine/{train,val}/<city>/*_gtFine_labelIds.png (leftImg8bit_trainvaltest.zip,
gtFine_trainvaltest.zip); gtCoarse/train_extra/<city>/*_gtCoarse_labelIds.png (gtCoarse.zip,
leftImg8bit_trainextra.zip) for train_extra. labelIds are mapped to train ids with
third_party/cityscapes_labels.csv (from cityscapesScripts). The test split is skipped: its labels
are not public. The combined splits trainval (train + val) and trainval_coarse (train + val +
train_extra: 3,475 fine + 19,998 coarse images, the training set of DeepLabv3's Cityscapes
test-server model, Table 13) are written only when named in --splits.

Example:
  python datasets/build_cityscapes.py --input_dir ~/data/cityscapes --output_dir data/cityscapes
  python datasets/build_cityscapes.py --input_dir ~/data/cityscapes --splits trainval_coarse \\
      --output_dir data/cityscapes
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
    args = parser.parse_args(argv)
    split_specs = raw_datasets.cityscapes_examples(
        args.input_dir, convert.parse_splits(args.splits)
    )
    convert.convert_from_args(split_specs, args, datasets_info.cityscapes())


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
