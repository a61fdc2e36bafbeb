#!/usr/bin/env python
"""PASCAL VOC 2012 segmentation (+ SBD trainaug) -> TFRecord shards + dataset.json.

Input: --input_dir holding VOCdevkit/VOC2012 (from VOCtrainval_11-May-2012.tar): JPEGImages/,
SegmentationClass/ (palette PNGs, read as raw class indices 0..20 with 255 = boundary, kept as the
ignore label) and ImageSets/Segmentation/{train,val,trainval}.txt (1,464 / 1,449 / 2,913 images).

With --sbd_dir (benchmark_RELEASE from SBD's benchmark.tgz: dataset/cls/*.mat,
dataset/{train,val}.txt) it also writes trainaug = SBD train + SBD val + VOC train - VOC val: 10,582
images on the real data (DeepLabv3 Sec. 4). A trainaug image uses VOC's own label when VOC has one,
else SBD's GTcls.Segmentation.

Example:
  python datasets/build_voc2012.py --input_dir ~/data/VOCdevkit/.. \\
      --sbd_dir ~/data/benchmark_RELEASE --output_dir data/voc2012
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
        "--sbd_dir", default=None, help="SBD benchmark_RELEASE folder; adds the trainaug split"
    )
    args = parser.parse_args(argv)
    split_specs = raw_datasets.voc_examples(
        args.input_dir, convert.parse_splits(args.splits), sbd_dir=args.sbd_dir
    )
    convert.convert_from_args(split_specs, args, datasets_info.pascal_voc())


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
