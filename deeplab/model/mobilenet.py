"""Atrous MobileNetV2 backbone: the one of the authors' released DeepLab v3 mobile models.

The variables are laid out like ``keras.applications.MobileNetV2(include_top=False)``
(same layer names, order and shapes, up to ``block_16_project_BN``; the final 1x1 ``Conv_1``
to 1280 channels is not part of DeepLab's backbone), so an ImageNet MobileNetV2 weight file
loads one-to-one with ``deeplab.load_imagenet_backbone``. The authors' slim names map onto
these layers in ``deeplab.import_official``.

Conventions (CONVENTIONS.md, "MobileNetV2"):

- Input: the model takes this project's normalized images (``deeplab.model.preprocessing``:
  mean-subtracted BGR) and its first layer, :class:`UnitRangeInput`, turns them into the
  MobileNetV2 range, ``2 * rgb / 255 - 1`` (the authors' and keras.applications'
  preprocessing), so every pipeline, export and binary works unchanged.
- Padding of the stride-2 3x3 layers (``padding`` argument): "symmetric" (default) pads one
  pixel on every side, so output ``i`` is centred on input pixel ``2 * i`` at every size, the
  geometry of the whole project (CONVENTIONS.md, "Geometry"), like the authors'
  ``use_explicit_padding`` / ``conv2d_same``. "same" is TensorFlow's (the authors' released
  graphs, keras.applications): one pixel before only on odd sizes, so on even sizes each
  strided layer moves its output half a stride (+15 px at output stride 16 on CamVid's 480
  width, +7 px at 8). The two are the same function at odd sizes such as the authors' 513
  crops, so their weights are exact in both; stride-1 layers are "same" (symmetric) in both.
- Output stride: :func:`deeplab.model.stride_plan.convert_strides`; a converted strided depthwise
  keeps the rate of the grid it reads, later layers get the doubled rate.
- Weight decay: on the 1x1 and stem convolution kernels only, not on depthwise kernels
  (the authors' ``regularize_depthwise=False``).
"""

import keras
from keras import layers
from keras import ops

from deeplab.model import stride_plan
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.options import PerformanceOptions
from deeplab.model.preprocessing import MEAN_RGB

# (expansion, output channels, nominal stride) of the inverted residual blocks 0..16.
BLOCKS = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
)
STEM_FILTERS = 32
STEM_STRIDE = 2
# Endpoint name -> index of the block whose output it is (output strides 2, 4, 8, 16, 32 when
# nothing is converted). "block1" is the stride-4 map a DeepLabv3+ decoder reads.
ENDPOINTS = {"stem": 0, "block1": 2, "block2": 5, "block3": 12, "block4": 16}
VALID_OUTPUT_STRIDES = (4, 8, 16, 32)
# keras.applications MobileNetV2 BN epsilon (the authors' slim default is 1e-3 too).
BN_EPSILON = 1e-3


def make_divisible(value, divisor=8):
    """Channels rounded to a multiple of ``divisor``, never more than 10% below ``value``.

    The rule of the MobileNetV2 reference code (and keras.applications).
    """
    if divisor == 1:
        return max(1, int(value + 0.5))
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def block_prefix(block_index):
    """keras.applications layer-name prefix of inverted residual block ``block_index``."""
    return "expanded_conv_" if block_index == 0 else f"block_{block_index}_"


def mobilenet_plan(output_stride):
    """Per-block (stride, depthwise rate) for ``output_stride`` (4, 8, 16 or 32).

    Returns:
      A list of 17 ``(stride, rate)`` pairs for blocks 0..16; the stem keeps its stride 2.
    """
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride={output_stride} is not available for MobileNetV2: "
            f"choose one of {VALID_OUTPUT_STRIDES}"
        )
    points = stride_plan.convert_strides(
        [s for _, _, s in BLOCKS], output_stride, initial_stride=STEM_STRIDE
    )
    return [(p.stride, p.rate_before) for p in points]


@keras.saving.register_keras_serializable(package="deeplab")
class UnitRangeInput(keras.layers.Layer):
    """This project's normalized images (mean-subtracted BGR) -> RGB in [-1, 1].

    ``2 * rgb / 255 - 1``: the MobileNetV2 input of the authors' code and keras.applications.
    No variables.
    """

    def call(self, images):
        rgb = ops.flip(ops.cast(images, self.compute_dtype), axis=-1)
        mean = ops.convert_to_tensor(MEAN_RGB, dtype=self.compute_dtype)
        return (rgb + mean) * (2.0 / 255.0) - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape


PADDINGS = ("symmetric", "same")


def _inverted_residual(
    x, *, expansion, filters, stride, rate, index, conv_kwargs, bn_kwargs, padding
):
    prefix = block_prefix(index)
    in_channels = x.shape[-1]
    inputs = x
    if index:
        x = layers.Conv2D(
            expansion * in_channels, 1, use_bias=False, name=prefix + "expand", **conv_kwargs
        )(x)
        x = BatchNormalization(name=prefix + "expand_BN", **bn_kwargs)(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    if stride > 1 and padding == "symmetric":
        x = layers.ZeroPadding2D(rate, name=prefix + "pad")(x)
    x = layers.DepthwiseConv2D(
        3,
        strides=stride,
        dilation_rate=rate,
        padding="valid" if stride > 1 and padding == "symmetric" else "same",
        use_bias=False,
        name=prefix + "depthwise",
    )(x)
    x = BatchNormalization(name=prefix + "depthwise_BN", **bn_kwargs)(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=prefix + "project", **conv_kwargs)(x)
    x = BatchNormalization(name=prefix + "project_BN", **bn_kwargs)(x)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=prefix + "add")([inputs, x])
    return x


def build_mobilenet_v2(
    *,
    depth_multiplier=1.0,
    divisible_by=8,
    output_stride=16,
    batch_norm_momentum=0.9997,
    weight_decay=0.0,
    input_shape=(None, None, 3),
    padding="symmetric",
    name="mobilenet_v2",
    performance=None,
):
    """Builds the atrous MobileNetV2 backbone as a functional keras.Model.

    Args:
      depth_multiplier: channel multiplier (keras.applications' ``alpha``; the authors' models:
        1.0 and 0.5).
      divisible_by: channels are rounded to a multiple of it. 8 is keras.applications' rule
        (and the authors' at depth 1.0); the authors' DeepLab builds other depth multipliers
        with 1 (e.g. 12 channels, not 16, after block 1 at 0.5), so their dm 0.5 model is not
        keras.applications' ``alpha=0.5``.
      output_stride: 4, 8, 16 or 32 (see :func:`mobilenet_plan`).
      batch_norm_momentum: BN moving-average decay.
      weight_decay: L2 decay on (non-depthwise) conv kernels, ``weight_decay * sum(w**2) / 2``.
      input_shape: shape of one normalized input image; spatial dims may be None.
      padding: "symmetric" or "same" for the stride-2 layers (see the module docstring).
      name: model name.
      performance: a ``deeplab.model.options.PerformanceOptions`` (None: the defaults); only
        ``fused_batch_norm`` applies (the depthwise convolutions are Keras' own). Changes no
        variable or result.

    Returns:
      keras.Model from normalized images to a dict of endpoints "stem", "block1".."block4"
      (see ``ENDPOINTS``) and "features" (block 16's 320 * depth_multiplier channels).
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: choose one of {PADDINGS}")
    plan = mobilenet_plan(output_stride)
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    conv_kwargs = {"kernel_regularizer": regularizer}
    bn_kwargs = {
        "momentum": batch_norm_momentum,
        "epsilon": BN_EPSILON,
        "fused": PerformanceOptions.coerce(performance).fused_batch_norm,
    }

    inputs = keras.Input(shape=input_shape, name="image")
    x = UnitRangeInput(name="unit_range_input")(inputs)
    if padding == "symmetric":
        x = layers.ZeroPadding2D(1, name="Conv1_pad")(x)
    x = layers.Conv2D(
        make_divisible(STEM_FILTERS * depth_multiplier, divisible_by),
        3,
        strides=STEM_STRIDE,
        padding="valid" if padding == "symmetric" else "same",
        use_bias=False,
        name="Conv1",
        **conv_kwargs,
    )(x)
    x = BatchNormalization(name="bn_Conv1", **bn_kwargs)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    endpoints = {}
    names = {index: name for name, index in ENDPOINTS.items()}
    for index, ((expansion, filters, _), (stride, rate)) in enumerate(zip(BLOCKS, plan)):
        x = _inverted_residual(
            x,
            expansion=expansion,
            filters=make_divisible(int(filters * depth_multiplier), divisible_by),
            stride=stride,
            rate=rate,
            index=index,
            conv_kwargs=conv_kwargs,
            bn_kwargs=bn_kwargs,
            padding=padding,
        )
        if index in names:
            endpoints[names[index]] = x
    endpoints["features"] = x
    return keras.Model(inputs, endpoints, name=name)


__all__ = [
    "build_mobilenet_v2",
    "mobilenet_plan",
    "make_divisible",
    "UnitRangeInput",
    "BLOCKS",
    "ENDPOINTS",
    "VALID_OUTPUT_STRIDES",
]
