"""The heads: what turns the backbone's features into the features the logits are made from.

:data:`HEADS` is the registry (the values of ``ModelSettings.head``):

- "aspp": Atrous Spatial Pyramid Pooling (Sec. 3.3, ``deeplab.model.aspp.ASPP``): a 1x1 branch,
  3x3 atrous branches at ``atrous_rates`` (stated for output stride 16, scaled to the model's),
  optionally image pooling, projected to ``aspp_filters`` channels. With ``atrous_rates=()`` it
  is the authors' ASPP-lite of their MobileNetV2 models: the 1x1 branch and image pooling.
- "cascade": no layer; the logits are made on the last block (Sec. 3.2, Tables 1-3), whose
  depth the backbone's ``num_cascaded_blocks`` sets.

A new head: a function ``settings, performance -> layer`` (or None), registered here with the
names of the model layers it adds; a layer of conv + BN pairs exposes ``make_conv_bn`` /
``conv_bn_pairs`` so ``deeplab.model.fuse`` folds it (as ``ASPP`` does). The logits layer is
made here too (:func:`build_logits`), after the head and the optional decoder.
"""

import dataclasses
from collections.abc import Callable

import keras
from keras import layers

from deeplab.common.errors import ConfigError
from deeplab.model.aspp import ASPP

# The paper states the ASPP rates for output_stride 16 (Sec. 3.3).
ASPP_REFERENCE_STRIDE = 16


def scale_atrous_rates(atrous_rates, output_stride):
    """ASPP rates given for output_stride 16, scaled to ``output_stride`` (doubled at 8, Sec. 3.3).

    Rates are rounded half up and kept >= 1 (only output strides > 32 need rounding).
    """
    return tuple(max(1, int(r * ASPP_REFERENCE_STRIDE / output_stride + 0.5)) for r in atrous_rates)


def _build_aspp(settings, performance):
    return ASPP(
        rates=scale_atrous_rates(settings.atrous_rates, settings.output_stride),
        image_pooling=settings.image_pooling,
        filters=settings.aspp_filters,
        batch_norm_momentum=settings.batch_norm_momentum,
        weight_decay=settings.weight_decay,
        dropout=settings.aspp_dropout,
        fused_batch_norm=performance.fused_batch_norm,
        native_dilation=performance.native_dilation,
        name="aspp",
    )


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One head of the registry.

    build: ``build(settings, performance) -> keras layer or None`` (None: the features pass
      unchanged to the logits).
    layer_names: the names of the model layers ``build`` makes, in the order they run
      (``DeepLabV3.recompute_segments`` runs them).
    """

    build: Callable
    layer_names: tuple = ()


HEADS = {
    "aspp": HeadSpec(_build_aspp, ("aspp",)),
    "cascade": HeadSpec(lambda settings, performance: None),
}
HEAD_NAMES = tuple(HEADS)


def get(name):
    """The registry entry of head ``name``.

    Raises:
      ConfigError: no head has that name.
    """
    if name not in HEADS:
        raise ConfigError(f"--head={name!r}: choose one of {HEAD_NAMES}")
    return HEADS[name]


def check_head(settings):
    """Raises ConfigError if ``settings`` name no head, or settings of the heads or the logits
    are out of range."""
    get(settings.head)
    if settings.num_classes < 1:
        raise ConfigError(f"--num_classes must be positive, got {settings.num_classes}")
    if not 0.0 <= settings.aspp_dropout < 1.0:
        raise ConfigError(f"--aspp_dropout must be in [0, 1), got {settings.aspp_dropout}")
    if settings.logits_init_stddev < 0:
        raise ConfigError(f"--logits_init_stddev must be >= 0, got {settings.logits_init_stddev}")


def build_head(settings, performance):
    """The head layer ``settings.head`` names, or None (the cascade: no layer)."""
    return get(settings.head).build(settings, performance)


def build_logits(settings):
    """The 1x1 convolution to ``num_classes`` logits ("logits").

    It stays float32 under mixed precision (cheap, and the loss and softmax need the range);
    its kernel starts from a truncated normal of ``logits_init_stddev`` (0: Glorot uniform).
    """
    regularizer = (
        keras.regularizers.L2(settings.weight_decay / 2.0) if settings.weight_decay else None
    )
    return layers.Conv2D(
        settings.num_classes,
        1,
        kernel_initializer=(
            keras.initializers.TruncatedNormal(stddev=settings.logits_init_stddev)
            if settings.logits_init_stddev
            else "glorot_uniform"
        ),
        kernel_regularizer=regularizer,
        name="logits",
        dtype="float32",
    )


__all__ = [
    "ASPP_REFERENCE_STRIDE",
    "HEADS",
    "HEAD_NAMES",
    "HeadSpec",
    "build_head",
    "build_logits",
    "check_head",
    "get",
    "scale_atrous_rates",
]
