"""The DeepLabv3+ decoder (Chen et al. 2018, "Encoder-Decoder with Atrous Separable
Convolution"): sharper boundaries from the backbone's stride-4 features.

    low-level features (block1, stride 4) -> 1x1 conv (48) + BN + ReLU
    ASPP output (stride s) -> resampled to the stride-4 grid (this project's geometry)
    concat -> two 3x3 (separable) conv (256) + BN + ReLU -> [logits at stride 4 -> upsample]

Choices (CONVENTIONS.md): depthwise-separable 3x3 convolutions by default, as in the paper and
the authors' code (``decoder_use_separable_conv=True``: a 3x3 depthwise conv + BN + ReLU, then a
1x1 conv + BN + ReLU; no weight decay on the depthwise kernel; their initializers, truncated
normal with stddev 0.33 (depthwise) and 0.06 (pointwise), which keep the activation scale where
BN statistics are frozen: Keras' default Glorot counts all input channels in a depthwise fan-in
and shrinks each depthwise output ~10x); ``separable=False`` gives the plain 3x3 convolutions of TF
Model Garden and most ports. 48 low-level channels and 256 decoder channels as in the paper. The
resampling from stride ``s`` to stride 4 uses :func:`deeplab.model.layers.stride_upsample` with
ratio ``s / 4``, so feature ``i`` of the ASPP output lands on decoder position ``i * s / 4``, the
same pixel ``s * i`` of the image (the authors' code resizes with ``align_corners=True``, identical
at their 513 crops).
"""

import keras
from keras import ops

from deeplab.common.errors import ConfigError
from deeplab.model.aspp import HEAD_BN_EPSILON
from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.layers import stride_upsample

# Decoder output stride -> the backbone endpoint it reads.
ENDPOINT_FOR_STRIDE = {4: "block1", 8: "block2"}


@keras.saving.register_keras_serializable(package="deeplab")
class Decoder(keras.layers.Layer):
    """``[aspp_features, low_level_features] -> decoder features`` at the low-level stride.

    Args:
      feature_stride: output stride of the ASPP features (the model's output stride).
      decoder_stride: output stride of the low-level features (4: block1; 8: block2).
      low_level_filters: channels the low-level features are projected to (paper: 48).
      filters: channels of the two 3x3 convolutions (paper: 256).
      separable: depthwise-separable 3x3 convolutions (the authors') or plain ones.
      batch_norm_momentum, weight_decay: as for the rest of the head.
      fused_batch_norm: BN layers take the fused training kernel
        (``deeplab.model.batch_norm.BatchNormalization(fused=...)``). Changes no result.
    """

    def __init__(
        self,
        feature_stride,
        decoder_stride=4,
        low_level_filters=48,
        filters=256,
        separable=True,
        batch_norm_momentum=0.9997,
        weight_decay=0.0,
        fused_batch_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fused_batch_norm = bool(fused_batch_norm)
        self.feature_stride = int(feature_stride)
        self.decoder_stride = int(decoder_stride)
        if self.feature_stride % self.decoder_stride:
            raise ValueError(
                f"decoder output stride {decoder_stride} must divide the output "
                f"stride {feature_stride}"
            )
        self.low_level_filters = int(low_level_filters)
        self.filters = int(filters)
        self.separable = bool(separable)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.weight_decay = float(weight_decay)
        self.low_level = self._conv_bn(self.low_level_filters, 1, "feature_projection")
        # Each 3x3 stage: [(conv, bn), ...] applied in order, ReLU after every BN.
        self.convs = []
        for i in range(2):
            if self.separable:
                self.convs.append(
                    [
                        self._conv_bn(None, 3, f"decoder_conv{i}_depthwise"),
                        self._conv_bn(self.filters, 1, f"decoder_conv{i}_pointwise"),
                    ]
                )
            else:
                self.convs.append([self._conv_bn(self.filters, 3, f"decoder_conv{i}")])

    def _conv_bn(self, filters, kernel_size, name):
        """A conv (depthwise when ``filters`` is None) and its BN."""
        regularizer = keras.regularizers.L2(self.weight_decay / 2.0) if self.weight_decay else None
        if filters is None:
            conv = keras.layers.DepthwiseConv2D(
                kernel_size,
                padding="same",
                use_bias=False,
                name=name + "_conv",
                depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
                dtype=self.dtype_policy,
            )
        else:
            initializer = (
                "glorot_uniform"
                if not self.separable or kernel_size != 1 or name.startswith("feature_projection")
                else keras.initializers.TruncatedNormal(stddev=0.06)
            )
            conv = keras.layers.Conv2D(
                filters,
                kernel_size,
                padding="same",
                use_bias=False,
                kernel_initializer=initializer,
                kernel_regularizer=regularizer,
                name=name + "_conv",
                dtype=self.dtype_policy,
            )
        bn = BatchNormalization(
            momentum=self.batch_norm_momentum,
            epsilon=HEAD_BN_EPSILON,
            fused=self.fused_batch_norm,
            name=name + "_bn",
            dtype=self.dtype_policy,
        )
        return conv, bn

    def build(self, input_shapes):
        feature_shape, low_shape = input_shapes
        conv, bn = self.low_level
        conv.build(low_shape)
        bn.build(tuple(low_shape[:-1]) + (self.low_level_filters,))
        channels = feature_shape[-1] + self.low_level_filters
        for stage in self.convs:
            for conv, bn in stage:
                conv.build(tuple(low_shape[:-1]) + (channels,))
                if not isinstance(conv, keras.layers.DepthwiseConv2D):
                    channels = conv.filters
                bn.build(tuple(low_shape[:-1]) + (channels,))

    def call(self, inputs, training=None):
        features, low_level = inputs
        conv, bn = self.low_level
        low = ops.relu(bn(conv(low_level), training=training))
        shape = ops.shape(low)
        features = ops.cast(features, low.dtype)
        upsampled = stride_upsample(
            features, (shape[1], shape[2]), self.feature_stride // self.decoder_stride
        )
        x = ops.concatenate([upsampled, low], axis=-1)
        for stage in self.convs:
            for conv, bn in stage:
                x = ops.relu(bn(conv(x), training=training))
        return x

    def compute_output_shape(self, input_shapes):
        _, low_shape = input_shapes
        return tuple(low_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "feature_stride": self.feature_stride,
            "decoder_stride": self.decoder_stride,
            "low_level_filters": self.low_level_filters,
            "filters": self.filters,
            "separable": self.separable,
            "batch_norm_momentum": self.batch_norm_momentum,
            "weight_decay": self.weight_decay,
            "fused_batch_norm": self.fused_batch_norm,
        }


def check_decoder(settings):
    """Raises ConfigError if ``settings`` (a ``deeplab.model.settings.ModelSettings``) ask for
    a decoder stride there is no endpoint for, or one above the output stride."""
    stride = settings.decoder_output_stride
    if stride and stride not in ENDPOINT_FOR_STRIDE:
        raise ConfigError(
            f"--decoder_output_stride={stride}: choose 0 (no "
            f"decoder) or one of {sorted(ENDPOINT_FOR_STRIDE)}"
        )
    if stride and settings.output_stride < stride:
        raise ConfigError(
            f"--decoder_output_stride={stride} is above "
            f"--output_stride={settings.output_stride}: the decoder upsamples"
        )


def build_decoder(settings, performance):
    """The decoder ``settings`` ask for (``decoder_output_stride``, ``decoder_separable``,
    the head's BN decay and weight decay), or None for DeepLabv3 (``decoder_output_stride``
    0). It reads the backbone endpoint ``ENDPOINT_FOR_STRIDE[settings.decoder_output_stride]``.
    """
    check_decoder(settings)
    if not settings.decoder_output_stride:
        return None
    return Decoder(
        settings.output_stride,
        settings.decoder_output_stride,
        separable=settings.decoder_separable,
        batch_norm_momentum=settings.batch_norm_momentum,
        weight_decay=settings.weight_decay,
        fused_batch_norm=performance.fused_batch_norm,
        name="decoder",
    )


__all__ = ["Decoder", "ENDPOINT_FOR_STRIDE", "build_decoder", "check_decoder"]
