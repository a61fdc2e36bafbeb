"""Atrous ResNet-v1 backbones (ResNet-50/101) with cascaded block5-7 and multi-grid.

Sec. 3.1-3.2 and Fig. 3 of the paper. The variables are laid out exactly like
``keras.applications.ResNet50/101(include_top=False)`` (same layer names, order and
shapes, a bias on every convolution, stride on the first 1x1 convolution of a
stage), so an ImageNet weight file for those loads into ours one-to-one.

Naming follows the paper: ``block1``..``block4`` are keras' ``conv2``..``conv5``
stages (so their layers keep keras' names), ``block5``..``block7`` are the extra
cascaded replicas of block4 (Sec. 3.2), named ``block5_unit1_1_conv`` etc. The paper does
not say how block5-7 start (no ImageNet weights exist for them); they start from Keras'
default random initialization, like the head, and are not copies of block4.
"""

import collections

import keras
from keras import layers

from deeplab.model import stride_plan
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.layers import AtrousConv2D
from deeplab.model.options import PerformanceOptions

# Units per block (block1..block4) for each depth. Depth 14 (one unit per block) is not in
# the paper: with a width multiplier it makes the tiny models of the tests and quick start.
BLOCK_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 14: (1, 1, 1, 1)}
# Bottleneck width of block1..block4; block5-7 replicate block4 (512 -> 2048).
BLOCK_FILTERS = (64, 128, 256, 512)
CASCADED_UNITS = 3
# Output stride after conv1 + pool1, and the nominal stride of each block.
STEM_STRIDE = 4
NOMINAL_BLOCK_STRIDE = (1, 2, 2, 2)
VALID_OUTPUT_STRIDES = (4, 8, 16, 32, 64, 128, 256)
MAX_CASCADED_BLOCKS = 3
# keras.applications ResNet BN epsilon; matching it keeps ImageNet weights exact.
BACKBONE_BN_EPSILON = 1.001e-5

BlockPlan = collections.namedtuple("BlockPlan", ["name", "stride", "rates", "output_stride"])
BlockPlan.__doc__ = """One block of the atrous plan.

name: "block1".."block7". stride: the stride its first unit applies (1 or 2).
rates: the atrous rate of the 3x3 convolution of each unit (block rate x multi-grid unit rate).
output_stride: input resolution / this block's output resolution.
"""


def atrous_plan(output_stride, num_cascaded_blocks=0, multi_grid=None, depth=50):
    """Turns a target output_stride into per-block strides and atrous rates (Eq. 1, Sec. 3.1).

    Every block halves the resolution (block1 keeps the stem's stride 4) until the target
    output_stride is reached; from then on each stride 2 becomes stride 1 and the atrous
    rate of all later 3x3 convolutions doubles instead. Multi-grid (Sec. 3.2.1) multiplies
    the block rate by unit rates (r1, r2, r3) in block4 to block7.

    This is the only place that computes the plan; the backbone, ``deeplab.describe`` and
    the tests all read it from here.

    Args:
      output_stride: one of 4, 8, ..., 256, at most 32 * 2**num_cascaded_blocks.
      num_cascaded_blocks: 0..3 extra replicas of block4 (block5, block6, block7).
      multi_grid: unit rates for the three units of block4..block7, or None for (1, 1, 1).
      depth: 50 or 101 (only the number of units of block3 depends on it).

    Returns:
      A list of BlockPlan, block1 first.

    Example:
      >>> [p.rates for p in atrous_plan(16, multi_grid=(1, 2, 4))][3]
      (2, 4, 8)
    """
    if depth not in BLOCK_UNITS:
        raise ValueError(f"depth must be one of {sorted(BLOCK_UNITS)}, got {depth}")
    if not 0 <= num_cascaded_blocks <= MAX_CASCADED_BLOCKS:
        raise ValueError(
            f"num_cascaded_blocks must be in 0..{MAX_CASCADED_BLOCKS}, got {num_cascaded_blocks}"
        )
    max_stride = STEM_STRIDE * 2 ** (len(NOMINAL_BLOCK_STRIDE) - 1 + num_cascaded_blocks)
    if output_stride not in VALID_OUTPUT_STRIDES or output_stride > max_stride:
        raise ValueError(
            f"output_stride={output_stride} is not reachable with num_cascaded_blocks="
            f"{num_cascaded_blocks}: choose a power of two in 4..{max_stride}"
        )
    multi_grid = tuple(multi_grid) if multi_grid else (1,) * CASCADED_UNITS
    if len(multi_grid) != CASCADED_UNITS or any(int(r) < 1 for r in multi_grid):
        raise ValueError(f"multi_grid needs {CASCADED_UNITS} positive unit rates, got {multi_grid}")

    units = BLOCK_UNITS[depth] + (CASCADED_UNITS,) * num_cascaded_blocks
    strides = NOMINAL_BLOCK_STRIDE + (2,) * num_cascaded_blocks
    plan = []
    # The stride sits in the 1x1 before each 3x3, so a converted block's 3x3s use the new rate.
    points = stride_plan.convert_strides(strides, output_stride, initial_stride=STEM_STRIDE)
    for index, (point, num_units) in enumerate(zip(points, units)):
        # Multi-grid covers block4..7's three units (a shallower test net takes the first ones).
        unit_rates = multi_grid[:num_units] if index >= 3 else (1,) * num_units
        plan.append(
            BlockPlan(
                f"block{index + 1}",
                point.stride,
                tuple(point.rate_after * int(u) for u in unit_rates),
                point.output_stride,
            )
        )
    return plan


def _layer_prefix(block_index, unit_index):
    """keras.applications names for block1-4 (conv2..conv5), paper names for block5-7."""
    if block_index < 4:
        return f"conv{block_index + 2}_block{unit_index + 1}"
    return f"block{block_index + 1}_unit{unit_index + 1}"


def _bottleneck(
    x, filters, *, stride, rate, shortcut_conv, prefix, conv_kwargs, bn_kwargs, native_dilation=None
):
    """ResNet-v1 bottleneck unit, variables in keras.applications order."""
    if shortcut_conv:
        shortcut = layers.Conv2D(
            4 * filters, 1, strides=stride, name=prefix + "_0_conv", **conv_kwargs
        )(x)
        shortcut = BatchNormalization(name=prefix + "_0_bn", **bn_kwargs)(shortcut)
    elif stride != 1:
        # Parameter-free subsampling keeps block5-7's variables independent of the output
        # stride, so weights trained at one output stride load at any other.
        shortcut = layers.MaxPooling2D(1, strides=stride, name=prefix + "_0_subsample")(x)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=prefix + "_1_conv", **conv_kwargs)(x)
    x = BatchNormalization(name=prefix + "_1_bn", **bn_kwargs)(x)
    x = layers.Activation("relu", name=prefix + "_1_relu")(x)
    x = AtrousConv2D(
        filters,
        3,
        padding="same",
        dilation_rate=rate,
        name=prefix + "_2_conv",
        native_dilation=native_dilation,
        **conv_kwargs,
    )(x)
    x = BatchNormalization(name=prefix + "_2_bn", **bn_kwargs)(x)
    x = layers.Activation("relu", name=prefix + "_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=prefix + "_3_conv", **conv_kwargs)(x)
    x = BatchNormalization(name=prefix + "_3_bn", **bn_kwargs)(x)
    x = layers.Add(name=prefix + "_add")([shortcut, x])
    return layers.Activation("relu", name=prefix + "_out")(x)


def build_resnet(
    *,
    depth=50,
    output_stride=16,
    multi_grid=None,
    num_cascaded_blocks=0,
    batch_norm_momentum=0.9997,
    weight_decay=0.0,
    input_shape=(None, None, 3),
    width_multiplier=1.0,
    name=None,
    performance=None,
):
    """Builds the atrous ResNet-v1 backbone as a functional keras.Model.

    Args:
      depth: 50 or 101 (14: one unit per block, for tiny test models).
      output_stride: input resolution / final feature resolution (see :func:`atrous_plan`).
      multi_grid: unit rates of block4..block7 (Sec. 3.2.1), or None.
      num_cascaded_blocks: extra blocks 5..7 appended after block4 (Sec. 3.2).
      batch_norm_momentum: moving-average decay of BN statistics (paper: 0.9997).
      weight_decay: L2 weight decay on conv kernels, as in the original DeepLab code
        (``weight_decay * sum(w**2) / 2``); 0 disables it.
      input_shape: shape of one input image; spatial dims may be None.
      width_multiplier: scales every layer's channels (1.0 = the paper's ResNet).
      name: model name (default ``resnet{depth}``).
      performance: a ``deeplab.model.options.PerformanceOptions`` (None: the defaults): which
        kernels the BN layers and atrous convolutions run. Changes no variable or result.

    Returns:
      keras.Model from a normalized image batch to a dict of endpoints: "stem" (after pool1),
      "block1" .. "blockN" (N = 4 + num_cascaded_blocks) and "features" (the last block).
    """
    plan = atrous_plan(output_stride, num_cascaded_blocks, multi_grid, depth)
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    conv_kwargs = {"kernel_regularizer": regularizer}
    performance = PerformanceOptions.coerce(performance)
    bn_kwargs = {
        "momentum": batch_norm_momentum,
        "epsilon": BACKBONE_BN_EPSILON,
        "fused": performance.fused_batch_norm,
    }

    inputs = keras.Input(shape=input_shape, name="image")
    # The explicit paddings match keras.applications exactly ("same" differs on even sizes).
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(
        max(1, int(64 * width_multiplier)), 7, strides=2, name="conv1_conv", **conv_kwargs
    )(x)
    x = BatchNormalization(name="conv1_bn", **bn_kwargs)(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    endpoints = {"stem": x}

    units = BLOCK_UNITS[depth] + (CASCADED_UNITS,) * num_cascaded_blocks
    for block_index, (block, num_units) in enumerate(zip(plan, units)):
        filters = max(1, int(BLOCK_FILTERS[min(block_index, 3)] * width_multiplier))
        for unit_index in range(num_units):
            x = _bottleneck(
                x,
                filters,
                stride=block.stride if unit_index == 0 else 1,
                rate=block.rates[unit_index],
                # Block1..4 open with a projection shortcut (keras.applications layout);
                # block5-7 replicate block4's last units: 2048 channels in and out.
                shortcut_conv=unit_index == 0 and block_index < 4,
                prefix=_layer_prefix(block_index, unit_index),
                conv_kwargs=conv_kwargs,
                bn_kwargs=bn_kwargs,
                native_dilation=performance.native_dilation,
            )
        endpoints[block.name] = x
    endpoints["features"] = x
    return keras.Model(inputs, endpoints, name=name or f"resnet{depth}")


__all__ = ["atrous_plan", "build_resnet", "BlockPlan", "BLOCK_UNITS", "VALID_OUTPUT_STRIDES"]
