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
    """

    def __init__(self, rates=(6, 12, 18), image_pooling=True, filters=256,
                 batch_norm_momentum=0.9997, weight_decay=0.0, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.rates = tuple(int(r) for r in rates)
        self.image_pooling = bool(image_pooling)
        self.filters = int(filters)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.weight_decay = float(weight_decay)
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ASPP dropout must be in [0, 1), got {dropout}")
        self.dropout_layer = (keras.layers.Dropout(self.dropout, name="projection_dropout")
                              if self.dropout else None)
        conv_bn = self._conv_bn
        self.branches = [conv_bn(1, 1, "aspp0")]
        self.branches += [conv_bn(3, rate, f"aspp{i + 1}") for i, rate in enumerate(self.rates)]
        self.pool_branch = conv_bn(1, 1, "image_pooling") if self.image_pooling else None
        self.projection = conv_bn(1, 1, "projection")

    def _conv_bn(self, kernel_size, rate, name):
        """One (conv, BN) pair; ``deeplab.model.fuse.FusedASPP`` overrides it (biased conv, no BN)."""
        regularizer = (keras.regularizers.L2(self.weight_decay / 2.0) if self.weight_decay
                       else None)
        conv = AtrousConv2D(self.filters, kernel_size, padding="same", dilation_rate=rate,
                            use_bias=False, kernel_regularizer=regularizer,
                            name=name + "_conv", dtype=self.dtype_policy)
        bn = BatchNormalization(momentum=self.batch_norm_momentum, epsilon=HEAD_BN_EPSILON,
                                name=name + "_bn", dtype=self.dtype_policy)
        return conv, bn

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
        return {**super().get_config(), "rates": self.rates, "image_pooling": self.image_pooling,
                "filters": self.filters, "batch_norm_momentum": self.batch_norm_momentum,
                "weight_decay": self.weight_decay, "dropout": self.dropout}
