"""The one place where an output stride becomes per-layer strides and atrous rates.

Every backbone of this project (ResNet-v1, MobileNetV2) lists the nominal stride of each
of its downsampling points, in order. :func:`convert_strides` walks that list: each point
keeps its stride until the product reaches the target output stride (Eq. 1 of the paper,
Sec. 3.1); from then on the stride becomes 1 and the atrous rate of every later 3x3
convolution is multiplied by the stride removed instead. The backbones differ only in which
rate a converted point's own 3x3 convolution gets:

- ResNet-v1 in the keras.applications layout strides in the 1x1 convolution *before* the
  3x3, so the 3x3 of a converted unit already sees the finer grid: ``rate_after``.
- MobileNetV2 strides in the depthwise 3x3 itself, as the authors' code does, so a converted
  depthwise keeps the rate of the grid it reads: ``rate_before`` (the authors' DeepLab
  MobileNetV2 at output stride 16 has rate 1 in ``expanded_conv_13`` and 2 in 14..16).
"""

import collections

StridePoint = collections.namedtuple(
    "StridePoint", ["stride", "rate_before", "rate_after", "output_stride"]
)
StridePoint.__doc__ = """One downsampling point of a backbone after conversion.

stride: the stride it applies (its nominal stride, or 1 once the target is reached).
rate_before: the atrous rate of the grid it reads. rate_after: the rate of every later 3x3.
output_stride: input resolution / resolution after this point.
"""


def convert_strides(nominal_strides, output_stride, initial_stride=1):
    """Per-point strides and rates that reach ``output_stride`` (see the module docstring).

    Args:
      nominal_strides: the stride of each point, in order (1 where a point does not stride).
      output_stride: the target input / output resolution; the product of the kept strides
        never exceeds it.
      initial_stride: the stride already applied before the first point.

    Returns:
      A list of :data:`StridePoint`, one per nominal stride.
    """
    points = []
    current, rate = int(initial_stride), 1
    for nominal in nominal_strides:
        nominal = int(nominal)
        if current * nominal > output_stride:
            points.append(StridePoint(1, rate, rate * nominal, current))
            rate *= nominal
        else:
            current *= nominal
            points.append(StridePoint(nominal, rate, rate, current))
    return points


__all__ = ["StridePoint", "convert_strides"]
