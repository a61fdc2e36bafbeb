#!/usr/bin/env python
"""Writes the synthetic segmentation dataset (deeplab/data/synthetic.py) as TFRecord shards +
dataset.json.

Textured shapes of several classes on a textured background, train and val splits: the quick-start
dataset and the tests' fixture. --preset voc_like makes 500x375 JPEG images with 21 classes, the
input of benchmarks/input_pipeline.py.

Examples:
  python datasets/make_synthetic.py --output_dir data/synthetic
  python datasets/make_synthetic.py --preset voc_like --num_train 256 --num_val 16 \\
      --output_dir data/voc_like
"""

import argparse
import os
import sys

# Run from a checkout: the repository root first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab import _console  # noqa: E402
from deeplab.common.errors import ConfigError
from deeplab.data import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="where the shards and dataset.json go")
    parser.add_argument(
        "--preset",
        choices=["default", "voc_like"],
        default="default",
        help="voc_like: 375x500 JPEG, 21 classes",
    )
    parser.add_argument("--num_train", type=int, default=64)
    parser.add_argument("--num_val", type=int, default=16)
    parser.add_argument(
        "--height", type=int, default=None, help="image height (default 65; voc_like 375)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="image width (default 65; voc_like 500)"
    )
    parser.add_argument(
        "--num_classes",
        type=int,
        default=None,
        help="classes incl. background (default 5; voc_like 21)",
    )
    parser.add_argument(
        "--image_format", choices=["png", "jpeg"], default=None, help="default png; voc_like jpeg"
    )
    parser.add_argument(
        "--size_jitter",
        type=float,
        default=0.0,
        help="shrink each image side by up to this fraction",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_shards", type=int, default=None, help="shards per split")
    args = parser.parse_args(argv)
    if args.preset == "voc_like":
        base = dict(synthetic.VOC_LIKE)
    else:
        base = {"image_size": (65, 65), "num_classes": 5, "image_format": "png"}
    height, width = base["image_size"]
    # 0 is a value, not "unset": only a missing flag takes the preset's.
    args.height = height if args.height is None else args.height
    args.width = width if args.width is None else args.width
    args.num_classes = base["num_classes"] if args.num_classes is None else args.num_classes
    for flag in ("height", "width", "num_classes", "num_train", "num_val"):
        if getattr(args, flag) < (2 if flag == "num_classes" else 1):
            raise ConfigError(
                f"--{flag} must be at least {2 if flag == 'num_classes' else 1}, "
                f"got {getattr(args, flag)}"
            )
    if args.num_classes > 255:
        raise ConfigError(f"--num_classes must be at most 255, got {args.num_classes}")
    if not 0.0 <= args.size_jitter < 1.0:
        raise ConfigError(f"--size_jitter must be in [0, 1), got {args.size_jitter}")
    info = synthetic.build_synthetic_dataset(
        args.output_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=(args.height, args.width),
        num_classes=args.num_classes,
        image_format=args.image_format or base["image_format"],
        seed=args.seed,
        num_shards=args.num_shards,
        size_jitter=args.size_jitter,
    )
    for split, count in info["splits"].items():
        print(f"{split}: {count} examples")


if __name__ == "__main__":
    sys.exit(_console.run_script(main))
