"""Atrous Spatial Pyramid Pooling with image-level features (Sec. 3.3, Fig. 5)."""

import keras
from keras import ops

from deeplab.model.batch_norm import BatchNormalization
from deeplab.model.layers import AtrousConv2D

HEAD_BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="deeplab")
class ASPP(keras.layers.Layer):
    """ASPP: a 1x1 conv, 3x3 atrous convs at ``rates``, and optionally image pooling.

    Every branch is conv (no bias) + BN + ReLU with ``filters`` channels; the branches are
    concatenated and projected by a 1x1 conv (no bias) + BN + ReLU (Sec. 3.3). The image
    branch is global average pooling -> 1x1 conv -> BN -> ReLU -> bilinear upsampling to
    the feature size; bilinear upsampling of a 1x1 map is a constant map, so it is done
    as a broadcast, which works for inputs of any size on every backend.

    Args:
      rates: atrous rates of the 3x3 branches at the feature map's resolution (the caller
        scales the paper's output-stride-16 rates, see ``deeplab.model.deeplabv3``).
      image_pooling: add the image-level branch.
      filters: channels of every branch and of the projection (paper: 256).
      batch_norm_momentum: BN moving-average decay.
      weight_decay: L2 weight decay on conv kernels (``weight_decay * sum(w**2) / 2``).
      dropout: dropout rate after the projection, in training only (the authors' code keeps
        0.9 of the activations there: 0.1; the paper does not mention it). No variables.
      fused_batch_norm: BN layers take the fused training kernel
        (``deeplab.model.batch_norm.BatchNormalization(fused=...)``). Changes no result.
      native_dilation: the atrous convolutions' ``AtrousConv2D(native_dilation=...)``.
        Changes no result.

    Subclasses change how each (conv, BN) pair is made by overriding :meth:`make_conv_bn`
    (``deeplab.model.fuse.FusedASPP`` makes biased convolutions without BN); every pair, in
    a fixed order, is :meth:`conv_bn_pairs`.
    """

    def __init__(
        self,
        rates=(6, 12, 18),
        image_pooling=True,
        filters=256,
        batch_norm_momentum=0.9997,
        weight_decay=0.0,
        dropout=0.0,
        fused_batch_norm=True,
        native_dilation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fused_batch_norm = bool(fused_batch_norm)
        self.native_dilation = native_dilation
        self.rates = tuple(int(r) for r in rates)
        self.image_pooling = bool(image_pooling)
        self.filters = int(filters)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.weight_decay = float(weight_decay)
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ASPP dropout must be in [0, 1), got {dropout}")
        self.dropout_layer = (
            keras.layers.Dropout(self.dropout, name="projection_dropout") if self.dropout else None
        )
        make = self.make_conv_bn
        self.branches = [make(1, 1, "aspp0")]
        self.branches += [make(3, rate, f"aspp{i + 1}") for i, rate in enumerate(self.rates)]
        self.pool_branch = make(1, 1, "image_pooling") if self.image_pooling else None
        self.projection = make(1, 1, "projection")

    def make_conv_bn(self, kernel_size, rate, name):
        """Makes one (conv, BN) pair of the layer; called by the constructor for each pair.

        The extension point for subclasses: ``call`` applies ``relu(bn(conv(x)))`` for every
        pair, so a subclass may return any conv-like and BN-like layers (e.g. a biased conv and
        an identity for a folded BN, ``deeplab.model.fuse.FusedASPP``). The conv must accept
        ``build(input_shape)`` and so must the BN.

        Args:
          kernel_size: 1 or 3.
          rate: the atrous rate (1 for the 1x1 convolutions).
          name: the pair's prefix ("aspp0", "aspp1", ..., "image_pooling", "projection"); the
            layers are named ``name + "_conv"`` and ``name + "_bn"``.

        Returns:
          ``(conv, bn)``: an ``AtrousConv2D`` without bias and a ``BatchNormalization``.
        """
        regularizer = keras.regularizers.L2(self.weight_decay / 2.0) if self.weight_decay else None
        conv = AtrousConv2D(
            self.filters,
            kernel_size,
            padding="same",
            dilation_rate=rate,
            use_bias=False,
            kernel_regularizer=regularizer,
            native_dilation=self.native_dilation,
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

    def conv_bn_pairs(self):
        """Every (conv, BN) pair: the branches, the image-pooling branch, the projection."""
        pairs = list(self.branches)
        if self.pool_branch:
            pairs.append(self.pool_branch)
        return pairs + [self.projection]

    def build(self, input_shape):
        branch_shape = tuple(input_shape[:-1]) + (self.filters,)
        for conv, bn in self.branches:
            conv.build(input_shape)
            bn.build(branch_shape)
        num_branches = len(self.branches)
        if self.pool_branch:
            conv, bn = self.pool_branch
            conv.build((input_shape[0], 1, 1, input_shape[-1]))
            bn.build((input_shape[0], 1, 1, self.filters))
            num_branches += 1
        conv, bn = self.projection
        conv.build(tuple(input_shape[:-1]) + (self.filters * num_branches,))
        bn.build(branch_shape)

    def call(self, features, training=None):
        outputs = [ops.relu(bn(conv(features), training=training)) for conv, bn in self.branches]
        if self.pool_branch:
            conv, bn = self.pool_branch
            pooled = ops.mean(features, axis=(1, 2), keepdims=True)
            pooled = ops.relu(bn(conv(pooled), training=training))
            outputs.append(ops.broadcast_to(pooled, ops.shape(outputs[0])))
        conv, bn = self.projection
        projected = ops.relu(bn(conv(ops.concatenate(outputs, axis=-1)), training=training))
        if self.dropout_layer is not None:
            projected = self.dropout_layer(projected, training=training)
        return projected

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "rates": self.rates,
            "image_pooling": self.image_pooling,
            "filters": self.filters,
            "batch_norm_momentum": self.batch_norm_momentum,
            "weight_decay": self.weight_decay,
            "dropout": self.dropout,
            "fused_batch_norm": self.fused_batch_norm,
            "native_dilation": self.native_dilation,
        }
