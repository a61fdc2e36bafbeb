r"""Prints a DeepLabv3 configuration: parameters, forward GFLOPs, atrous plan, feature size.

    python -m deeplab.describe --flagfile=experiments/table5.flags --crop_size=513
    python -m deeplab.describe --backbone=resnet50 --output_stride=8

GFLOPs count every convolution as 2 x k x k x Cin x Cout x Hout x Wout (the convention of
the paper's tables; README.md lists it for the paper's models), read from the traced TensorFlow
graph of the model at batch 1 and the given crop, so what is counted is exactly what runs
(:mod:`deeplab.model.description`).
"""

import sys

from absl import flags

from deeplab import _console
from deeplab.common.errors import UserError
from deeplab.config import flags as experiment_flags

FLAGS = flags.FLAGS
# --help lists the experiment flags this binary reads (the model's and --crop_size).
for _name in experiment_flags.MODEL_FLAGS + ("crop_size",):
    flags.declare_key_flag(_name)
flags.DEFINE_integer(
    "describe_num_classes", 21, "Classes to describe when --num_classes is 0 (PASCAL VOC: 21)."
)


def main(argv):
    _console.quiet_tensorflow()
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.model import description  # after the flags: fast --help

    _console.quiet_absl()
    del argv
    try:
        num_classes = FLAGS.num_classes or FLAGS.describe_num_classes
        print(
            description.describe(
                experiment_flags.model_kwargs(num_classes), experiment_flags.crop_size()
            )
        )
    except (UserError, flags.ValidationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    _console.run(main)
