r"""Prints a DeepLabv3 configuration: parameters, forward GFLOPs, atrous plan, feature size.

    python -m deeplab.describe --flagfile=experiments/table5.flags --crop_size=513
    python -m deeplab.describe --backbone=resnet50 --output_stride=8

GFLOPs count every convolution as 2 x k x k x Cin x Cout x Hout x Wout (the convention of
the paper's tables; README.md lists it for the paper's models), read from the traced TensorFlow
graph of the model at batch 1 and the given crop, so what is counted is exactly what runs
(:mod:`deeplab.model.description`).
"""

from absl import flags

from deeplab import _console
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(sections=("model",), settings=("num_classes", "crop_size"))
flags.DEFINE_integer(
    "describe_num_classes", 21, "Classes to describe when --num_classes is 0 (PASCAL VOC: 21)."
)


def main(config, args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.model import description  # after the flags: fast --help

    num_classes = config.data.num_classes or FLAGS.describe_num_classes
    print(description.describe(config.model.build_kwargs(num_classes), config.data.crop_size))


if __name__ == "__main__":
    # --help lists the experiment flags this binary reads (the model's and --crop_size).
    _console.run(main, **RUN)
