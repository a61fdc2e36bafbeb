"""Quantization-aware training: the int8 TFLite export's rounding in the Keras forward pass.

A model built with ``quantize_aware=True`` (``--quantize_aware``) runs the same layers and
variables as the float model, rewired so that every tensor the int8 TFLite graph stores in int8
is fake-quantized (rounded to its 8-bit grid and back to float) where that graph rounds it:

- **Weights**: every convolution is folded with the BN after it, as the export folds it
  (``W' = W * s``, ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, frozen
  statistics), and ``W'`` is fake-quantized per output channel, symmetric, to ``n * max|W'| / k``
  with integers ``|n| <= 127``: TFLite's per-channel int8 weights. ``k`` is 127 (the finest
  grid) unless the starting weights already lie on a coarser one, as an imported int8 model's
  do, which they then keep exactly (:func:`weight_grid_steps`); chosen per channel by the
  first training batch and kept. The variables stay the
  float model's (kernel, gamma, beta, moving statistics), so a float checkpoint initializes a
  quantization-aware model and back; BN statistics must be frozen (``--freeze_batch_norm``).
- **Activations**: one per-tensor asymmetric 8-bit range after each op the int8 graph does not
  fuse into the op before it: after a convolution's activation (ReLU / ReLU6 fuse into the
  convolution or add before them), after a convolution or add without one, after global pooling,
  concatenation and the logits; not after ops that keep their input's scale (padding, max
  pooling, dropout, broadcasting). Ranges are tracked in training as an exponential moving
  average of each batch's min and max (always including 0, so zero is exact; the first batch
  sets them) and frozen at inference. The model's input (normalized images) has the fixed
  range of :func:`deeplab.model.preprocessing.normalize_image`'s outputs; MobileNetV2's input
  scaling is two ops with fixed ranges.
- **Backward**: straight-through estimators (the gradient passes where the value is inside its
  range, zero outside); ranges get no gradient.

On the TensorFlow backend the fake quantization is TensorFlow's ``FakeQuantWithMinMaxVars``
(``...PerChannel`` for weights): the TFLite converter reads the ranges from these ops, so the
int8 export of such a model needs no calibration images (``deeplab.export.tflite.convert_int8``).
The export's tail (softmax at the feature resolution, the stride-aware upsampling of the
logits and the probabilities) is fake-quantized with ranges derived from the logits' range
(:func:`quantized_stride_upsample`, :data:`SOFTMAX_RANGE`), so every op of the exported graph
is int8, as in the calibrated export. CONVENTIONS.md, "Quantization-aware training".

Keras only (keras.layers / keras.ops / keras.quantizers): TensorFlow and JAX backends.
"""

import keras
import numpy as np
from keras import layers
from keras import ops

from deeplab.common.errors import ConfigError
from deeplab.model import fuse
from deeplab.model.aspp import ASPP
from deeplab.model.layers import StrideUpsample
from deeplab.model.preprocessing import MEAN_RGB

# Range of normalize_image's output (BGR minus the ImageNet mean) over pixels in [0, 255].
NORMALIZED_RANGE = (-max(MEAN_RGB), 255.0 - min(MEAN_RGB))
PIXEL_RANGE = (0.0, 255.0)
# TFLite's int8 softmax output: scale 1/256, zero point -128, i.e. [0, 255/256].
SOFTMAX_RANGE = (0.0, 255.0 / 256.0)
# MobileNetV2's input, 2 * rgb / 255 - 1, lies half-way between the points of any int8 grid of
# step 2/255 that holds 0 exactly: every value would be a rounding tie, which TensorFlow's fake
# quantization breaks upwards and TFLite's kernels away from zero (one step apart on half the
# pixels, measured). A grid of step 2/255 * 256/255 puts every value at least 1/512 of a step
# away from a tie.
UNIT_RANGE = (-1.0, 1.0 + 2.0 / 255.0)
MEAN_RANGE = (0.0, 127.5)
DEFAULT_RANGE_DECAY = 0.99
# Smallest span of a range (a tensor that is all zeros still gets a valid scale).
_MIN_SPAN = 1e-3
# The per-channel weight grids weight_grid_steps chooses from: step max|w| / k for these k.
# Every k <= 127 has a multiple among them, so every grid of at most 127 steps is one of them.
WEIGHT_GRID_STEPS = np.arange(64, 128, dtype=np.float32)
# Mean squared rounding error (units of max|w|^2) below which weights lie on a grid: float
# noise is ~1e-14, rounding to 127 steps ~5e-6, one weight in 1,000 half a step off ~1e-8.
_ON_GRID = 1e-10


def fake_quant(x, low, high):
    """``x`` rounded to the 8-bit grid of [low, high] (per tensor; zero exactly on the grid)."""
    return keras.quantizers.fake_quant_with_min_max_vars(
        x, low, high, num_bits=8, narrow_range=False
    )


def quantized_mean(mean, dtype="float32"):
    """The mean pixel as the int8 graph holds it: the constant operand of a quantized add or
    subtraction is int8 too, here on the grid of [0, 127.5] (step 1/2: 123.68 -> 123.5). Rounded
    in the graph itself, so that the converter takes this grid and the forward pass matches it."""
    return fake_quant(ops.convert_to_tensor(mean, dtype=dtype), *MEAN_RANGE)


def fake_quant_weights(kernel, axis, steps=None):
    """``kernel`` rounded per channel along ``axis`` to int8: ``n * max|w| / k`` for integers
    ``|n| <= 127`` (TFLite's per-channel symmetric weights), with ``k = steps`` per channel
    (a float vector) or 127, the finest grid, when None. The gradient passes straight
    through."""
    reduce_axes = tuple(i for i in range(len(kernel.shape)) if i != axis)
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), 1e-8))
    if steps is not None:
        # The same grid, step bound / k, spread over [-127, 127] steps.
        bound = bound * (127.0 / ops.cast(steps, bound.dtype))
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel, -bound, bound, num_bits=8, narrow_range=True, axis=axis
    )


def weight_grid_steps(kernel, axis):
    """For each channel along ``axis``: the ``k`` of the grid ``max|w| / k`` its weights are
    rounded to. The largest ``k`` of :data:`WEIGHT_GRID_STEPS` whose grid the weights already
    lie on (no rounding error beyond float noise), else 127, the finest. A float vector.

    Weights imported from an int8 file lie on a grid (one step per tensor in the authors'
    files, so at most 127 steps in all but the channel that holds the tensor's largest
    weight): for such a channel, with ``m <= 127`` steps to its largest weight, the largest
    multiple of ``m`` up to 127 is a candidate that keeps every weight exactly, where 127 steps
    would move them all. Weights on no grid take the finest: a coarser grid that merely rounds
    them with less error at the start leaves training less resolution (measured on CamVid:
    the fine-tuned float weights moved to other classes on 1.6% of pixels instead of 0.7%, and
    the int8 model lost 0.35-0.54 mIOU instead of 0.03-0.21; experiments/RESULTS.md,
    "Issue 33")."""
    kernel = ops.cast(ops.stop_gradient(kernel), "float32")
    reduce_axes = tuple(i for i in range(len(kernel.shape)) if i != axis)
    shape = [1] * len(kernel.shape)
    shape[axis] = -1
    bound = ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), 1e-8)
    unit = ops.expand_dims(kernel / ops.reshape(bound, shape), -1)  # in [-1, 1]
    errors = []
    # 16 candidates at a time along a trailing axis (a kernel-sized temporary per candidate).
    for chunk in np.split(WEIGHT_GRID_STEPS, len(WEIGHT_GRID_STEPS) // 16):
        scaled = unit * ops.convert_to_tensor(chunk, "float32")
        errors.append(ops.mean(ops.square(scaled - ops.round(scaled)), axis=reduce_axes))
    candidates = ops.convert_to_tensor(WEIGHT_GRID_STEPS, "float32")
    # (channels, candidates), in units of max|w|^2.
    errors = ops.concatenate(errors, axis=-1) / ops.square(candidates)
    largest_exact = ops.max(ops.where(errors <= _ON_GRID, candidates, 0.0), axis=-1)
    return ops.where(largest_exact > 0, largest_exact, float(WEIGHT_GRID_STEPS[-1]))


@keras.saving.register_keras_serializable(package="deeplab")
class RangeQuantizer(layers.Layer):
    """Fake-quantizes its input per tensor to 8 bits.

    Args:
      decay: in training, the range becomes ``decay * range + (1 - decay) * batch range``
        (the first batch sets it); frozen at inference.
      fixed_range: ``(low, high)``: a constant range instead (no variables).
    """

    def __init__(self, decay=DEFAULT_RANGE_DECAY, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        self.decay = float(decay)
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)

    def build(self, input_shape):
        if self.fixed_range is None:
            self.range_min = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="range_min", autocast=False
            )
            self.range_max = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="range_max", autocast=False
            )
            # 0 until a training batch has set the range.
            self.range_set = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="range_set", autocast=False
            )
        self.built = True

    def value_range(self):
        """(low, high) the layer quantizes to now (tensors, or floats when fixed)."""
        if self.fixed_range is not None:
            return self.fixed_range
        low = ops.minimum(self.range_min, 0.0)
        return low, ops.maximum(ops.maximum(self.range_max, 0.0), low + _MIN_SPAN)

    def call(self, inputs, training=None):
        if self.fixed_range is None and training:
            values = ops.cast(inputs, "float32")
            batch_min = ops.minimum(ops.min(values), 0.0)
            batch_max = ops.maximum(ops.max(values), 0.0)
            seen = self.range_set > 0
            self.range_min.assign(
                ops.where(
                    seen, self.decay * self.range_min + (1 - self.decay) * batch_min, batch_min
                )
            )
            self.range_max.assign(
                ops.where(
                    seen, self.decay * self.range_max + (1 - self.decay) * batch_max, batch_max
                )
            )
            self.range_set.assign(ops.ones_like(self.range_set))
        low, high = self.value_range()
        return fake_quant(inputs, ops.stop_gradient(low), ops.stop_gradient(high))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "decay": self.decay, "fixed_range": self.fixed_range}


def _is_depthwise(conv):
    return isinstance(conv, layers.DepthwiseConv2D)


def _check_conv(conv):
    if conv.data_format != "channels_last":
        raise ConfigError(f"--quantize_aware: {conv.name} is not channels_last")
    if _is_depthwise(conv):
        if conv.depth_multiplier != 1:
            raise ConfigError(
                f"--quantize_aware: {conv.name} has depth multiplier {conv.depth_multiplier}; "
                "only 1 is supported"
            )
    elif not isinstance(conv, layers.Conv2D) or conv.groups != 1:
        raise ConfigError(f"--quantize_aware: {conv.name} is not a plain or depthwise Conv2D")


class QuantizedConv(layers.Layer):
    """A convolution and the frozen BN after it (if any), folded, with per-channel
    fake-quantized weights, then the convolution's activation, ``activation`` (a function,
    e.g. ASPP's ReLU) and, when ``quantize_output``, an output :class:`RangeQuantizer`. Holds
    the float layers: same variables, same paths.

    Made by :func:`quantize_aware_graph`, never from a config (the model that holds it is
    rebuilt from its settings).
    """

    def __init__(
        self,
        conv,
        batch_norm=None,
        *,
        activation=None,
        quantize_output=True,
        decay=DEFAULT_RANGE_DECAY,
    ):
        super().__init__(name=conv.name, dtype=conv.dtype_policy)
        self.activation = activation
        _check_conv(conv)
        if batch_norm is not None and not getattr(batch_norm, "freeze_statistics", False):
            raise ConfigError(
                "--quantize_aware folds BN into the convolutions as the int8 export does, so "
                f"BN statistics must be frozen ({batch_norm.name}): pass --freeze_batch_norm"
            )
        self.conv = conv
        self.batch_norm = batch_norm
        self.output_quantizer = (
            RangeQuantizer(decay, name=conv.name + "_quant", dtype=conv.dtype_policy)
            if quantize_output
            else None
        )

    def build(self, input_shape):
        # The grid of each output channel's weights, max|w| / k: k chosen by
        # weight_grid_steps on the first training batch (from the weights the run starts
        # with) and kept; 0 until then, which rounds on the finest grid (k = 127).
        self.weight_steps = self.add_weight(
            shape=(self.conv.kernel.shape[self._channel_axis],),
            initializer="zeros",
            trainable=False,
            name="weight_steps",
            autocast=False,
        )
        if self.output_quantizer is not None:
            self.output_quantizer.build(None)
        self.built = True

    @property
    def _channel_axis(self):
        return 2 if _is_depthwise(self.conv) else 3

    def grid_steps(self, kernel, training=None):
        """The per-channel ``k`` of the weights' grids (float vector; see ``build``)."""
        stored = ops.convert_to_tensor(self.weight_steps)
        if not training:
            return ops.where(stored > 0, stored, float(WEIGHT_GRID_STEPS[-1]))
        steps = ops.cond(
            ops.all(stored > 0),
            lambda: stored,
            lambda: weight_grid_steps(kernel, self._channel_axis),
        )
        self.weight_steps.assign(steps)
        return steps

    @property
    def kernel(self):
        """The float convolution's kernel (a variable; BN not folded)."""
        return self.conv.kernel

    @property
    def bias(self):
        """The float convolution's bias variable, or None."""
        return self.conv.bias if self.conv.use_bias else None

    def folded(self):
        """(kernel, bias or None) of the convolution with its BN folded in (float)."""
        conv, bn = self.conv, self.batch_norm
        kernel = conv.kernel
        bias = conv.bias if conv.use_bias else None
        if bn is None:
            return kernel, bias
        scale = ops.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.scale:
            scale = scale * bn.gamma
        shift = -bn.moving_mean * scale
        if bn.center:
            shift = shift + bn.beta
        if _is_depthwise(conv):
            kernel = kernel * ops.reshape(scale, (1, 1, -1, 1))
        else:
            kernel = kernel * scale
        bias = shift if bias is None else bias * scale + shift
        return kernel, bias

    def call(self, inputs, training=None):
        conv = self.conv
        kernel, bias = self.folded()
        kernel = fake_quant_weights(
            kernel, self._channel_axis, self.grid_steps(kernel, training=training)
        )
        if _is_depthwise(conv):
            outputs = ops.depthwise_conv(
                inputs,
                kernel,
                strides=conv.strides,
                padding=conv.padding,
                dilation_rate=conv.dilation_rate,
                data_format=conv.data_format,
            )
        else:
            outputs = conv.convolution_op(inputs, kernel)
        if bias is not None:
            outputs = outputs + bias
        if conv.activation is not None:
            outputs = conv.activation(outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        if self.output_quantizer is not None:
            outputs = self.output_quantizer(outputs, training=training)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


class QuantizedUnitRange(layers.Layer):
    """MobileNetV2's input scaling (``deeplab.model.mobilenet.UnitRangeInput``) as the int8
    graph runs it: the mean added back, ``* 2/255``, ``- 1`` (each rounded to its fixed
    range), then the BGR -> RGB flip."""

    def call(self, images):
        mean_bgr = quantized_mean(MEAN_RGB[::-1], self.compute_dtype)
        pixels = fake_quant(images + mean_bgr, *PIXEL_RANGE)
        two_over_255 = fake_quant(
            ops.convert_to_tensor(2.0 / 255.0, self.compute_dtype), 0.0, 2.0 / 255.0
        )
        scaled = fake_quant(pixels * two_over_255, 0.0, 2.0)
        one = fake_quant(ops.convert_to_tensor(1.0, self.compute_dtype), 0.0, 1.0)
        unit = fake_quant(scaled - one, *UNIT_RANGE)
        # BGR -> RGB; rounded again (a no-op on the values) so that the converter keeps the
        # flip in int8 (a flip between a range and an op with a constant stays float there).
        return fake_quant(ops.flip(unit, axis=-1), *UNIT_RANGE)

    def compute_output_shape(self, input_shape):
        return input_shape


class QuantizedASPP(layers.Layer):
    """:class:`deeplab.model.aspp.ASPP`'s forward with its convolutions folded and quantized
    and a range after the pooled features, the pooling branch, the concatenation (which
    rounds the other branches) and the projection. Holds the ASPP (same variables)."""

    def __init__(self, aspp, *, decay=DEFAULT_RANGE_DECAY):
        super().__init__(name=aspp.name, dtype=aspp.dtype_policy)
        self.aspp = aspp

        def pair(conv_bn, quantize_output=True):
            conv, bn = conv_bn
            return QuantizedConv(
                conv, bn, activation=ops.relu, quantize_output=quantize_output, decay=decay
            )

        # Each pair is conv + BN + ReLU; the int8 graph rounds after the ReLU. A branch that
        # feeds the concatenation directly is rounded once, on the concatenation's grid: TFLite
        # concatenates int8 tensors of one scale, and the converter has the convolution write
        # in that scale, ignoring a range of the branch's own (which would round it twice
        # here: one step apart from the interpreter on 56% of the values, measured on the
        # authors' model). The pooling branch keeps its range: its broadcast keeps the scale
        # and a requantization to the concatenation's follows, in both.
        self.branches = [pair(p, quantize_output=False) for p in aspp.branches]
        self.pool_branch = pair(aspp.pool_branch) if aspp.pool_branch else None
        self.pooled_quantizer = (
            RangeQuantizer(decay, name="pooled_quant") if aspp.pool_branch else None
        )
        self.concat_quantizer = RangeQuantizer(decay, name="concat_quant")
        self.projection = pair(aspp.projection)

    def build(self, input_shape):
        for layer in [*self.branches, self.pool_branch, self.projection]:
            if layer is not None:
                layer.build(None)
        for quantizer in (self.pooled_quantizer, self.concat_quantizer):
            if quantizer is not None:
                quantizer.build(None)
        self.built = True

    def call(self, features, training=None):
        outputs = [branch(features, training=training) for branch in self.branches]
        if self.pool_branch is not None:
            pooled = self.pooled_quantizer(
                ops.mean(features, axis=(1, 2), keepdims=True), training=training
            )
            pooled = self.pool_branch(pooled, training=training)
            outputs.append(ops.broadcast_to(pooled, ops.shape(outputs[0])))
        concatenated = self.concat_quantizer(ops.concatenate(outputs, axis=-1), training=training)
        projected = self.projection(concatenated, training=training)
        if self.aspp.dropout_layer is not None:
            projected = self.aspp.dropout_layer(projected, training=training)
        return projected

    def compute_output_shape(self, input_shape):
        return self.aspp.compute_output_shape(input_shape)


# Layers whose output keeps its input's quantization (no range of their own in the int8 graph).
_SAME_SCALE = (
    layers.InputLayer,
    layers.ZeroPadding2D,
    layers.MaxPooling2D,
    layers.Dropout,
    layers.Reshape,
)
# Layers followed by a range of their own unless an activation follows them.
_RANGED = (layers.Add, layers.Concatenate, layers.GlobalAveragePooling2D)


def _is_activation(layer):
    if isinstance(layer, layers.ReLU):
        return True
    if isinstance(layer, layers.Activation):
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


def _then(layer, quantizer):
    def call(*args, **kwargs):
        outputs = layer(*args, **kwargs)
        return quantizer(outputs, training=kwargs.get("training")) if quantizer else outputs

    return call


def _identity(quantizer):
    def call(inputs, *args, **kwargs):  # pylint: disable=unused-argument
        return quantizer(inputs, training=kwargs.get("training")) if quantizer else inputs

    return call


def _rewrite(model, decay, input_range=None):
    """``model``'s functional graph with quantized convolutions and ranges (a new keras.Model
    over the same layers and variables; nested functional models rewritten too)."""
    consumers = fuse.layer_consumers(model)
    pairs = fuse.batch_norm_consumers(model, consumers)  # {id(conv): its BN}
    folded = {id(bn) for bn in pairs.values()}

    def ranged(layer):
        """Whether the int8 graph rounds ``layer``'s output to a range of its own."""
        users = consumers.get(id(layer), [])
        return not (users and all(_is_activation(u) for u in users))

    def quantizer(layer):
        return RangeQuantizer(decay, name=layer.name + "_quant", dtype=layer.dtype_policy)

    def replace(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
            return _rewrite(layer, decay)
        if isinstance(layer, ASPP):
            return QuantizedASPP(layer, decay=decay)
        if id(layer) in pairs:
            bn = pairs[id(layer)]
            return QuantizedConv(layer, bn, quantize_output=ranged(bn), decay=decay)
        if id(layer) in folded:
            return _identity(None)
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D):
            return QuantizedConv(layer, None, quantize_output=ranged(layer), decay=decay)
        if type(layer).__name__ == "UnitRangeInput":
            return QuantizedUnitRange(name=layer.name, dtype=layer.dtype_policy)
        if _is_activation(layer) or isinstance(layer, _RANGED):
            return _then(layer, quantizer(layer) if ranged(layer) else None)
        if isinstance(layer, (*_SAME_SCALE, StrideUpsample)):
            return layer
        raise ConfigError(
            f"--quantize_aware does not know where the int8 graph rounds the output of "
            f"{layer.name} ({type(layer).__name__})"
        )

    inputs = keras.tree.map_structure(
        lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name), model.input
    )
    start = inputs
    if input_range is not None:
        start = RangeQuantizer(fixed_range=input_range, name="image_quant")(inputs)
    outputs = model._run_through_graph(start, operation_fn=replace)  # pylint: disable=protected-access
    return keras.Model(inputs, outputs, name=model.name)


def quantize_aware_graph(inputs, outputs, decay=DEFAULT_RANGE_DECAY):
    """(inputs, outputs) of the quantization-aware rewrite of the functional graph
    ``inputs -> outputs`` (normalized images -> logits), over the same layers and variables.

    Raises:
      ConfigError: a layer the rewrite does not know, or BN statistics that are not frozen.
    """
    rewritten = _rewrite(keras.Model(inputs, outputs), decay, input_range=NORMALIZED_RANGE)
    return rewritten.input, rewritten.output


def range_quantizers(model):
    """Every :class:`RangeQuantizer` with variables in ``model`` (nested ones included)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
        if isinstance(layer, RangeQuantizer) and layer.fixed_range is None
    ]


def weight_grid_paths(model):
    """Paths of the ``weight_steps`` variables of ``model``'s quantized convolutions."""
    return {
        layer.weight_steps.path
        for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
        if isinstance(layer, QuantizedConv)
    }


def training_state_paths(model):
    """Paths of the variables a quantization-aware model has and its float model has not (the
    activation ranges and the weights' grids), which its first training batch sets."""
    ranges = {v.path for q in range_quantizers(model) for v in q.weights}
    return ranges | weight_grid_paths(model)


def logits_range(model):
    """(low, high) of a quantization-aware model's logits range, as floats."""
    quantizer = model.get_layer("logits").output_quantizer
    low, high = quantizer.value_range()
    return float(ops.convert_to_numpy(low)), float(ops.convert_to_numpy(high))


# The ranges of the upsampling's difference and weighted difference, as multiples of the
# input's span: with exactly the span, the difference of two values of one grid would fall on
# half steps (a rounding tie for every odd difference) and so would many products with the
# weights, and ties are broken one way by TensorFlow's fake quantization and the other by
# TFLite's kernels (2 output steps apart on 8-11% of the probabilities, measured). With these
# spans no difference, product or blend of the 8-bit grids involved is a tie (strides up to
# 128), so the two round alike.
_DIFFERENCE_SPAN = 129.0 / 128.0
_PRODUCT_SPAN = (129.0 / 128.0) ** 2


def _sampling_grid(out_size, in_size, stride):
    """:func:`deeplab.model.layers.stride_sampling_grid` at static sizes, as numpy (float32
    arithmetic, as there)."""
    x = np.arange(out_size, dtype=np.float32)
    last = np.float32(max(in_size - 1, 0))
    u = np.minimum(x / np.float32(stride), last)
    i0 = np.floor(u)
    i1 = np.minimum(i0 + 1, last)
    return i0.astype(np.int32), i1.astype(np.int32), (u - i0).astype(np.float32)


def quantized_stride_upsample(x, size, stride, value_range):
    """:func:`deeplab.model.layers.stride_upsample` with each of its ops rounded as the int8
    graph rounds it, for a static ``x`` shape and ``size``: ``x`` lies on the 8-bit grid of
    ``value_range``; the difference of two neighbours and its weighted share lie within
    ``+-(high - low)`` (a little wider, see ``_DIFFERENCE_SPAN``), the blend in
    ``value_range``. The interpolation weights are
    a constant, which the converter quantizes on the grid of [0, their maximum]: they are
    rounded to that grid here (rounding them to another one first would round them twice)."""
    low, high = value_range
    for axis, out_size in ((1, int(size[0])), (2, int(size[1]))):
        i0, i1, weight = _sampling_grid(out_size, int(x.shape[axis]), stride)
        weight = weight.reshape((1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        weight = fake_quant(ops.convert_to_tensor(weight), 0.0, float(weight.max()) or 1.0)
        first, second = ops.take(x, i0, axis=axis), ops.take(x, i1, axis=axis)
        span = (high - low) * _DIFFERENCE_SPAN
        step = fake_quant(second - first, -span, span)
        span = (high - low) * _PRODUCT_SPAN
        step = fake_quant(step * weight, -span, span)
        x = fake_quant(first + step, low, high)
    return x


__all__ = [
    "DEFAULT_RANGE_DECAY",
    "NORMALIZED_RANGE",
    "PIXEL_RANGE",
    "SOFTMAX_RANGE",
    "QuantizedASPP",
    "QuantizedConv",
    "QuantizedUnitRange",
    "RangeQuantizer",
    "fake_quant",
    "fake_quant_weights",
    "logits_range",
    "quantize_aware_graph",
    "quantized_stride_upsample",
    "range_quantizers",
    "training_state_paths",
    "weight_grid_paths",
    "weight_grid_steps",
]
