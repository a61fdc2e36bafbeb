#!/usr/bin/env python
"""A plain folder of images + index-PNG masks -> TFRecord shards + dataset.json.

Input layout (names configurable):
  <input_dir>/images/NAME.jpg|.jpeg|.png     RGB images
  <input_dir>/labels/NAME.png                8-bit single-channel PNGs, one class index per pixel
  <input_dir>/train.txt, val.txt, ...        one split per list file: "NAME" per line, or
                                             "images/a.jpg labels/a.png" (paths relative to
                                             input_dir)
Label values must be in [0, --num_classes) or --ignore_label. Colour (RGB) masks are rejected;
palette PNGs are rejected unless --palette_masks says their palette indices are the class ids.

Example:
  python datasets/build_folder.py --input_dir ~/data/mine --num_classes 3 --class_names bg,cat,dog \
      --output_dir data/mine
"""

import os
import sys

# Run from a checkout: the repository root first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab import _console  # noqa: E402
from deeplab.common.errors import ConfigError
from deeplab.data import convert  # (TensorFlow is imported only to write)
from deeplab.data import datasets_info
from deeplab.data import raw_datasets


def main(argv=None):
    parser = convert.make_parser(__doc__)
    parser.add_argument(
        "--num_classes", type=int, required=True, help="number of classes (label values 0..N-1)"
    )
    parser.add_argument(
        "--ignore_label",
        type=int,
        default=255,
        help="label value excluded from training and metrics",
    )
    parser.add_argument(
        "--class_names",
        default=None,
        help="comma-separated class names (default class_0, class_1, ...)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="dataset name for dataset.json (default: the input folder's name)",
    )
    parser.add_argument(
        "--image_dir", default="images", help="image folder, relative to --input_dir"
    )
    parser.add_argument(
        "--label_dir", default="labels", help="label folder, relative to --input_dir"
    )
    parser.add_argument(
        "--list_dir",
        default=None,
        help="folder of the {split}.txt list files (default: --input_dir)",
    )
    parser.add_argument(
        "--palette_masks",
        action="store_true",
        help="accept palette PNG masks, reading their palette indices as class ids",
    )
    parser.add_argument(
        "--allow_outside_root",
        action="store_true",
        help="read listed files outside --input_dir (default: an error)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.num_classes <= 255:
        raise ConfigError(f"--num_classes must be in [1, 255], got {args.num_classes}")
    if not args.num_classes <= args.ignore_label <= 255:
        raise ConfigError(f"--ignore_label must be in [num_classes, 255], got {args.ignore_label}")
    if args.class_names:
        names = args.class_names.split(",")
    else:
        names = [f"class_{i}" for i in range(args.num_classes)]
    if len(names) != args.num_classes:
        raise ConfigError(
            f"--class_names has {len(names)} names but --num_classes is {args.num_classes}"
        )
    dataset = datasets_info.DatasetSpec(
        name=args.name or os.path.basename(os.path.normpath(args.input_dir)),
        num_classes=args.num_classes,
        ignore_label=args.ignore_label,
        class_names=tuple(names),
        palette=datasets_info.color_map(args.num_classes),
    )
    split_specs = raw_datasets.folder_examples(
        args.input_dir,
        convert.parse_splits(args.splits),
        image_dir=args.image_dir,
        label_dir=args.label_dir,
        list_dir=args.list_dir,
        palette_masks=args.palette_masks,
        allow_outside_root=args.allow_outside_root,
    )
    convert.convert_from_args(
        split_specs,
        args,
        dataset,
        palette_hint="; pass --palette_masks if its palette indices are the class ids",
    )


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
