"""Batch-norm folding for inference and export: an equivalent model without BN layers.

At inference a BatchNormalization layer is an affine map per channel,
``y = gamma * (z - mean) / sqrt(var + eps) + beta``. When it directly follows a convolution
``z = conv(x, W) + b``, it folds into that convolution:

    W' = W * s,  b' = (b - mean) * s + beta,  with s = gamma / sqrt(var + eps)

(per output channel), so the folded model runs one convolution with a bias and no BN: two
fewer elementwise passes over every activation, and on TensorFlow the remaining
Conv2D + BiasAdd (+ Add) + ReLU chains are fused into single oneDNN kernels by Grappler.

    from deeplab.model import fuse
    inference_model = fuse.fuse_batch_norm(model)      # model is untouched

The folded model is for inference only (``training=True`` would no longer normalize with batch
statistics) and has other variables (a bias on every folded convolution, no BN variables), so
checkpoints are always written and read with the unfolded model; fold after loading.
Everything here is Keras (keras.layers / keras.ops): it works under the TensorFlow and JAX
backends.
"""

import keras
import numpy as np
from keras import layers

from deeplab.common.errors import ConfigError
from deeplab.model.aspp import ASPP
from deeplab.model.settings import attribute_names


def _folded_conv_weights(conv, bn):
    """(kernel, bias) of ``conv`` followed by inference-mode ``bn``, as float32 numpy arrays."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
    bias = (
        keras.ops.convert_to_numpy(conv.bias).astype(np.float64)
        if conv.use_bias
        else np.zeros(kernel.shape[-1], np.float64)
    )
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    variance = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    gamma = (
        keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale else np.ones_like(mean)
    )
    beta = (
        keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else np.zeros_like(mean)
    )
    scale = gamma / np.sqrt(variance + bn.epsilon)
    folded_bias = ((bias - mean) * scale + beta).astype(np.float32)
    if isinstance(conv, layers.DepthwiseConv2D):
        # [kh, kw, in, multiplier]: output channel c * multiplier + m.
        return (kernel * scale.reshape(1, 1, *kernel.shape[2:])).astype(np.float32), folded_bias
    # Conv2D kernels are [kh, kw, in, out]: the output channel is the last axis.
    return (kernel * scale).astype(np.float32), folded_bias


def _foldable(conv, bn):
    if not (isinstance(bn, layers.BatchNormalization) and bn.axis in (-1, [-1], [3], 3)):
        return False
    if isinstance(conv, layers.DepthwiseConv2D):
        return conv.data_format == "channels_last"
    return (
        isinstance(conv, layers.Conv2D) and conv.groups == 1 and conv.data_format == "channels_last"
    )


def _biased_conv(conv):
    """A new Conv2D with ``conv``'s configuration and a bias (weights set later)."""
    config = conv.get_config()
    kernel = "depthwise" if isinstance(conv, layers.DepthwiseConv2D) else "kernel"
    config.update(
        use_bias=True,
        bias_regularizer=None,
        activity_regularizer=None,
        bias_constraint=None,
        **{f"{kernel}_regularizer": None, f"{kernel}_constraint": None},
    )
    return conv.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="deeplab")
class FoldedBatchNorm(layers.Layer):
    """Stands where a folded BatchNormalization was: returns its input (keeps the layer name)."""

    def call(self, inputs, training=None, mask=None):  # pylint: disable=unused-argument
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _identity_for(bn):
    return FoldedBatchNorm(name=bn.name, dtype=bn.dtype_policy)


@keras.saving.register_keras_serializable(package="deeplab")
class FusedASPP(ASPP):
    """:class:`deeplab.model.aspp.ASPP` with every conv + BN pair folded into one biased conv.

    Built from an ASPP's config; :meth:`fold_from` copies the folded weights of that ASPP.
    ``call`` is the ASPP's own (each BN is replaced by an identity), so the two cannot drift:
    only the public hook :meth:`ASPP.make_conv_bn` is overridden.
    """

    def make_conv_bn(self, kernel_size, rate, name):
        conv, _ = super().make_conv_bn(kernel_size, rate, name)
        return _biased_conv(conv), FoldedBatchNorm(name=name + "_bn", dtype=self.dtype_policy)

    def fold_from(self, aspp):
        """Sets this layer's weights to ``aspp``'s, BN folded (both must be built)."""
        pairs, source_pairs = self.conv_bn_pairs(), aspp.conv_bn_pairs()
        if len(pairs) != len(source_pairs):
            raise ValueError(
                f"{aspp.name} has {len(source_pairs)} conv + BN pairs, {self.name} {len(pairs)}"
            )
        for (conv, _), (src_conv, src_bn) in zip(pairs, source_pairs):
            conv.set_weights(list(_folded_conv_weights(src_conv, src_bn)))


def layer_consumers(model):
    """{id(layer): [the layers that read its output]} over the functional graph of ``model``
    (not nested models)."""
    consumers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:  # pylint: disable=protected-access
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation  # pylint: disable=protected-access
                consumers.setdefault(id(producer), []).append(layer)
    return consumers


def batch_norm_consumers(model, consumers=None):
    """{id(conv): bn} for every BN whose only input is a Conv2D feeding nothing else.

    Walks the functional graph of ``model`` (not nested models; the caller recurses);
    ``consumers``: its :func:`layer_consumers`, when the caller has them.
    """
    consumers = layer_consumers(model) if consumers is None else consumers
    folds = {}
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
            continue
        inputs = layer._inbound_nodes[0].input_tensors  # pylint: disable=protected-access
        producer = inputs[0]._keras_history.operation  # pylint: disable=protected-access
        if (
            len(inputs) == 1
            and _foldable(producer, layer)
            and len(producer._inbound_nodes) == 1  # pylint: disable=protected-access
            and [id(c) for c in consumers.get(id(producer), [])] == [id(layer)]
        ):
            folds[id(producer)] = layer
    return folds


def _rebuild(model, clone):
    """A new functional model: ``model``'s graph with every layer replaced by ``clone(layer)``."""
    inputs = keras.tree.map_structure(
        lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name), model.input
    )
    outputs = model._run_through_graph(inputs, operation_fn=clone)  # pylint: disable=protected-access
    return keras.Model(inputs, outputs, name=model.name)


def _fuse_functional(model):
    """A clone of a functional ``model`` with its conv + BN pairs (and nested ones) folded.

    Returns:
      (new model, number of BN layers folded).
    """
    folds = batch_norm_consumers(model)
    folded_bns = {id(bn) for bn in folds.values()}
    # (new layer, function that sets its weights from the old model)
    copies = []
    count = [0]

    def clone(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
            new, nested = _fuse_functional(layer)
            count[0] += nested
            return new
        if isinstance(layer, ASPP) and not isinstance(layer, FusedASPP):
            config = layer.get_config()
            new = FusedASPP.from_config(config)
            copies.append((new, lambda n, old=layer: n.fold_from(old)))
            count[0] += len(layer.conv_bn_pairs())
            return new
        if id(layer) in folded_bns:
            return _identity_for(layer)
        if id(layer) in folds:
            new = _biased_conv(layer)
            bn = folds[id(layer)]
            copies.append(
                (new, lambda n, old=layer, b=bn: n.set_weights(list(_folded_conv_weights(old, b))))
            )
            count[0] += 1
            return new
        new = layer.__class__.from_config(layer.get_config())
        if layer.weights:
            copies.append((new, lambda n, old=layer: n.set_weights(old.get_weights())))
        return new

    new_model = _rebuild(model, clone)
    for new, set_weights in copies:
        set_weights(new)
    return new_model, count[0]


# Attributes of deeplab.model.deeplabv3.DeepLabV3 that evaluation, serving and export read: its
# settings (deeplab.model.settings) and its performance options.
_MODEL_ATTRIBUTES = attribute_names() + ("performance",)


def fuse_batch_norm(model):
    """An inference model equivalent to ``model`` with every conv + BN pair folded.

    Args:
      model: a functional Keras model, normally a :class:`deeplab.model.deeplabv3.DeepLabV3` (its
        nested ResNet and its ASPP are folded too). It is not modified.

    Returns:
      A new functional keras.Model with the same inputs and outputs (logits agree with
      ``model(x, training=False)`` to float32 round-off, ~1e-5 relative), no
      BatchNormalization layers where a convolution precedes them, and DeepLabV3's
      descriptive attributes (``num_classes``, ``output_stride``, ...) copied, plus
      ``batch_norm_folded`` (the number of BN layers folded). Inference only. A
      quantization-aware model (``quantize_aware``) is returned as it is: its forward folds
      every pair already.
    """
    if getattr(model, "quantize_aware", False):
        # Its forward folds every conv + BN pair already (deeplab.model.quantize), with the
        # rounding of the int8 graph; folding it again would lose that.
        return model
    new_model, count = _fuse_functional(model)
    for name in _MODEL_ATTRIBUTES:
        if hasattr(model, name):
            setattr(new_model, name, getattr(model, name))
    new_model.batch_norm_folded = count
    return new_model


def _cast_functional(model, policy):
    copies = []

    def clone(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
            return _cast_functional(layer, policy)
        if isinstance(layer, FoldedBatchNorm):  # no variables, no config of its own
            return FoldedBatchNorm(name=layer.name, dtype=policy)
        config = dict(layer.get_config())
        config["dtype"] = policy
        new = layer.__class__.from_config(config)
        if layer.weights:
            copies.append((new, layer))
        return new

    new_model = _rebuild(model, clone)
    for new, old in copies:
        values = []
        for variable, value in zip(new.weights, old.get_weights()):
            values.append(
                np.asarray(value).astype(keras.backend.standardize_dtype(variable.dtype))
                if np.issubdtype(np.asarray(value).dtype, np.floating)
                else value
            )
        new.set_weights(values)
    return new_model


def cast_model(model, dtype="bfloat16"):
    """A copy of an inference model whose variables are stored and computed in ``dtype``.

    Unlike Keras' ``mixed_bfloat16`` policy (float32 variables cast at every call, so serving
    holds both copies), every weight is stored once, in ``dtype``: half the memory of float32
    for bfloat16. Meant for a model whose BN is folded (:func:`fuse_batch_norm`): the folding
    is done in float32 and rounded once. Callers cast the logits to float32 before the softmax
    (``deeplab.evaluation.inference`` does).

    Args:
      model: a functional Keras model (e.g. the result of :func:`fuse_batch_norm`).
      dtype: a floating dtype policy name, "bfloat16" or "float16" (or "float32": a copy).

    Returns:
      A new functional keras.Model with the descriptive attributes of ``model`` copied.
    """
    if getattr(model, "quantize_aware", False):
        raise ConfigError(
            "a --quantize_aware model computes in float32 with int8 rounding: serve it "
            "--serving_dtype=float32, or export it --tflite --quantize=int8"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)  # sub-layers a layer builds in __init__ follow it
    try:
        new_model = _cast_functional(model, dtype)
    finally:
        keras.config.set_dtype_policy(previous)
    for name in _MODEL_ATTRIBUTES + ("batch_norm_folded",):
        if hasattr(model, name):
            setattr(new_model, name, getattr(model, name))
    return new_model


__all__ = ["FoldedBatchNorm", "FusedASPP", "cast_model", "fuse_batch_norm"]
