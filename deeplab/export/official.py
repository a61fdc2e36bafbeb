"""The authors' released DeepLab v3 MobileNetV2 models read into Keras models of this project.

:func:`import_tflite` reads a .tflite file, :func:`import_tf1_checkpoint` a TF1 (slim)
checkpoint; each returns the model and a report (``python -m deeplab.import_official`` runs
them). :func:`write_imported` writes the model as a folder laid out like a training logdir
(``ckpt-0``, ``model_config.json``, ``dataset_info.json``), so ``--checkpoint`` (predict,
evaluate, visualize, export) and ``--init_checkpoint`` (fine-tuning) take it like any run of
ours; it also holds ``model.weights.h5`` (``model.load_weights`` of the same DeepLabV3) and
``import_report.json`` (the source, what was read and the conventions found in the graph).

How a file is read (CONVENTIONS.md, "The authors' released models"):

- TFLite: the flatbuffer is parsed (TensorFlow's generated schema), every convolution op is
  taken in graph order with its options (stride, dilation, padding, fused activation) and its
  weights are dequantized with their own per-tensor or per-channel scales and zero points.
  The backbone's 51 convolutions map onto ours in order; the head is found from the graph:
  the convolutions feeding the concatenation are ASPP branches (the one behind an average
  pool / mean is image pooling), the one after it the projection, the last one the logits.
  Every option must equal our layer's at the model's output stride, every shape must match,
  and every constant tensor that feeds a convolution must be placed: anything else is an
  error naming the tensor.
- BN is folded into the convolutions of these files. Our model keeps its BN layers, set to
  the identity plus the folded bias (moving mean 0, moving variance ``1 - epsilon``, gamma 1,
  beta = bias), which reproduces the folded model exactly and stays fine-tunable: gamma and
  beta train; fine-tune with ``--freeze_batch_norm`` (as the authors do with small batches)
  so the moving statistics stay the identity.
- TF1 checkpoints (slim names, BN unfolded) map variable by variable; optimizer slots and the
  global step are ignored, any other variable that has no place is an error.
- The authors concatenate the ASPP branches as [image pooling, 1x1, 3x3...]; ours are
  [1x1, 3x3..., image pooling]: the projection's input rows are permuted accordingly.
"""

import importlib
import os
import re
import shutil
import types

import keras
import numpy as np
import tensorflow as tf

from deeplab.common import atomic_io
from deeplab.common.errors import UserError
from deeplab.data import datasets_info
from deeplab.export import model_card
from deeplab.logdir import checkpoints
from deeplab.model import deeplabv3 as model_lib
from deeplab.model import mobilenet

_TFLITE_TYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    7: np.int16,
    9: np.int8,
}
_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_POOL_OPS = ("AVERAGE_POOL_2D", "MEAN")
# TFLite fused activations.
_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}
# Weight decay of the authors' MobileNetV2 DeepLab models (their train.py for mobilenet_v2).
MOBILENET_WEIGHT_DECAY = 4e-5


class TFLiteGraph:
    """The parts of a TFLite flatbuffer the importer reads.

    Attributes:
      path: the file.
      tensors: list of dicts (name, shape, type, scale, zero_point, axis, buffer index).
      ops: list of dicts (index, name, inputs, outputs, options) in execution order.
      inputs, outputs: subgraph input / output tensor indices.
    """

    def __init__(self, path):
        self.path = path
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise UserError(f"--tflite={path}: cannot read it ({error.strerror})") from error
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise UserError(f"--tflite={path}: not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            # TensorFlow's TFLite schema is only needed for .tflite files (some builds lack it).
            schema = importlib.import_module("tensorflow.lite.python.schema_py_generated")
        except ImportError as error:
            raise UserError(
                "reading TFLite files needs TensorFlow's TFLite schema (pip install tensorflow-cpu)"
            ) from error
        try:
            model = schema.ModelT.InitFromPackedBuf(data, 0)
            graph = model.subgraphs[0]
            op_names = {
                v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")
            }
            self.tensors = [self._tensor(t, model.buffers) for t in graph.tensors]
            self.ops = []
            for index, op in enumerate(graph.operators):
                code = model.operatorCodes[op.opcodeIndex]
                name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
                options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
                self.ops.append(
                    {
                        "index": index,
                        "name": name,
                        "options": dict(options),
                        "inputs": [int(i) for i in op.inputs],
                        "outputs": [int(i) for i in op.outputs],
                    }
                )
            self.inputs = [int(i) for i in graph.inputs]
            self.outputs = [int(i) for i in graph.outputs]
        except Exception as error:  # a truncated or corrupt buffer fails anywhere in parsing
            raise UserError(
                f"--tflite={path}: corrupt or truncated TFLite file "
                f"({type(error).__name__}: {error})"
            ) from error
        self.producer = {t: op["index"] for op in self.ops for t in op["outputs"]}

    @staticmethod
    def _tensor(tensor, buffers):
        quant = tensor.quantization
        scale = zero_point = None
        axis = 0
        if quant is not None and quant.scale is not None and len(quant.scale):
            scale = np.asarray(quant.scale, np.float64)
            zero_point = np.asarray(
                quant.zeroPoint if quant.zeroPoint is not None else np.zeros_like(scale), np.float64
            )
            axis = int(quant.quantizedDimension)
        data = buffers[tensor.buffer].data if tensor.buffer < len(buffers) else None
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        return {
            "name": name,
            "shape": tuple(int(d) for d in tensor.shape),
            "type": int(tensor.type),
            "scale": scale,
            "zero_point": zero_point,
            "axis": axis,
            "data": None if data is None or not len(data) else data,
        }

    def value(self, index):
        """The dequantized float32 value of constant tensor ``index`` (None if not constant)."""
        tensor = self.tensors[index]
        if tensor["data"] is None:
            return None
        if tensor["type"] not in _TFLITE_TYPES:
            raise UserError(
                f"{self.path}: tensor {tensor['name']!r} has TFLite type "
                f"{tensor['type']}, which the importer cannot read"
            )
        raw = np.frombuffer(
            bytes(np.asarray(tensor["data"], np.uint8)), _TFLITE_TYPES[tensor["type"]]
        ).reshape(tensor["shape"])
        if tensor["scale"] is None or raw.dtype in (np.float32, np.float16):
            return raw.astype(np.float32)
        shape = [1] * raw.ndim
        if tensor["scale"].size > 1:
            shape[tensor["axis"]] = tensor["scale"].size
        scale = tensor["scale"].reshape(shape)
        zero_point = tensor["zero_point"].reshape(shape)
        return ((raw.astype(np.float64) - zero_point) * scale).astype(np.float32)

    def describe(self, op):
        weights = [self.tensors[i]["name"] for i in op["inputs"][1:2] if i >= 0]
        return f"op {op['index']} {op['name']}" + (f" ({weights[0]})" if weights else "")

    def trace_to_conv(
        self,
        tensor_index,
        through=("RESIZE_BILINEAR", "QUANTIZE", "DEQUANTIZE", "BROADCAST_TO", "TILE", "RESHAPE"),
    ):
        """The conv op whose output reaches ``tensor_index`` through shape-only ops."""
        seen = 0
        while tensor_index in self.producer and seen < 16:
            op = self.ops[self.producer[tensor_index]]
            if op["name"] in _CONV_OPS:
                return op
            if op["name"] not in through:
                return None
            tensor_index = op["inputs"][0]
            seen += 1
        return None


def _conv_layers(backbone):
    return [
        layer
        for layer in backbone.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]


def _following_bn(backbone, conv):
    """The BN layer right after ``conv`` in our MobileNetV2 (names follow keras.applications)."""
    name = {"Conv1": "bn_Conv1"}.get(conv.name, conv.name + "_BN")
    return backbone.get_layer(name)


def _activation_after(conv_name):
    return "none" if conv_name.endswith("project") else "relu6"


def _set_folded(conv, bn, kernel, bias):
    """conv <- folded kernel; BN <- identity + bias (fine-tunable, exact)."""
    conv.set_weights([kernel])
    ones = np.ones_like(bias)
    bn.set_weights(
        [ones, bias.astype(np.float32), np.zeros_like(bias), (ones - bn.epsilon).astype(np.float32)]
    )


def _keras_kernel(weights):
    """TFLite kernel -> Keras layout; one permutation serves both kinds.

    CONV_2D [out, kh, kw, in] -> Conv2D [kh, kw, in, out]; DEPTHWISE_CONV_2D [1, kh, kw,
    channels] -> DepthwiseConv2D [kh, kw, channels, 1] (depth multiplier 1, as in MobileNetV2).
    """
    return np.transpose(weights, (1, 2, 3, 0))


def _check(graph, op, expected, what):
    got = {
        "stride": op["options"].get("strideH"),
        "dilation": op["options"].get("dilationHFactor", 1),
        "padding": "same" if op["options"].get("padding") == 0 else "valid",
        "activation": _ACTIVATIONS.get(op["options"].get("fusedActivationFunction"), "other"),
    }
    if graph.tensors[op["inputs"][1]]["shape"][1:3] == (1, 1):
        got["padding"] = expected.get("padding")  # "same" and "valid" agree for a 1x1 kernel
    for key, value in expected.items():
        if got[key] != value:
            raise UserError(
                f"{graph.path}: {graph.describe(op)} has {key}={got[key]} where our "
                f"{what} has {key}={value}; the file is not the authors' DeepLab v3 "
                "MobileNetV2 (or uses a convention the importer does not know)"
            )


def _weights(graph, op):
    kernel = graph.value(op["inputs"][1])
    if kernel is None:
        raise UserError(f"{graph.path}: {graph.describe(op)} has non-constant weights")
    bias = graph.value(op["inputs"][2]) if len(op["inputs"]) > 2 and op["inputs"][2] >= 0 else None
    if bias is None:
        bias = np.zeros(
            kernel.shape[0] if op["name"] == "CONV_2D" else kernel.shape[-1], np.float32
        )
    return kernel, bias


def _backbones_with_stem(channels):
    """Our MobileNetV2 backbones whose stem has ``channels`` outputs (it tells the depth)."""
    return [
        name
        for name, (alpha, rounding) in model_lib.MOBILENET_BACKBONES.items()
        if mobilenet.make_divisible(mobilenet.STEM_FILTERS * alpha, rounding) == channels
    ]


def _find_head(graph, conv_ops):
    """Logits, projection, ASPP branch ops (ordered [1x1, 3x3 by rate]) and the pool branch."""
    if len(conv_ops) < 3:
        raise UserError(f"{graph.path}: only {len(conv_ops)} convolutions; not a DeepLab v3 model")
    logits = conv_ops[-1]
    projection = graph.trace_to_conv(logits["inputs"][0])
    if projection is None:
        raise UserError(
            f"{graph.path}: cannot find the ASPP projection before {graph.describe(logits)}"
        )
    concat_index = projection["inputs"][0]
    concat = graph.ops[graph.producer[concat_index]] if concat_index in graph.producer else None
    if concat is None or concat["name"] != "CONCATENATION":
        raise UserError(
            f"{graph.path}: {graph.describe(projection)} does not read a "
            "concatenation of ASPP branches; not a DeepLab v3 head"
        )
    branches = []
    for tensor_index in concat["inputs"]:
        op = graph.trace_to_conv(tensor_index)
        if op is None:
            raise UserError(
                f"{graph.path}: input {graph.tensors[tensor_index]['name']!r} of the "
                "ASPP concatenation does not come from a convolution"
            )
        source = graph.producer.get(op["inputs"][0])
        pooled = source is not None and graph.ops[source]["name"] in _POOL_OPS
        branches.append((op, pooled))
    return logits, projection, branches


def import_tflite(path, class_names=None):
    """Reads an official DeepLab v3 MobileNetV2 TFLite file into a :class:`DeepLabV3`.

    Args:
      path: the .tflite file (the authors' int8 models, or our own export of a MobileNetV2
        DeepLabV3).
      class_names: names of the classes, or None (PASCAL VOC's for 21 classes).

    Returns:
      (model, report): the Keras model and a JSON-able dict of what was read.

    Raises:
      UserError: unreadable file, another architecture, or a tensor that has no place.
    """
    graph = TFLiteGraph(path)
    found = _tflite_architecture(graph, path)
    model = model_lib.DeepLabV3(
        backbone=found.backbone,
        num_classes=found.num_classes,
        output_stride=found.output_stride,
        multi_grid=None,
        atrous_rates=found.rates,
        image_pooling=bool(found.pool),
        aspp_filters=found.filters,
        weight_decay=MOBILENET_WEIGHT_DECAY,
    )
    placed = _place_tflite_backbone(graph, path, model, found.backbone_ops)
    placed |= _place_tflite_head(graph, model, found)
    for op in found.conv_ops:
        for tensor_index in op["inputs"][1:]:
            if (
                tensor_index >= 0
                and graph.tensors[tensor_index]["data"] is not None
                and tensor_index not in placed
            ):
                raise UserError(
                    f"{path}: weight tensor {graph.tensors[tensor_index]['name']!r} "
                    "has no place in the model"
                )
    report = _tflite_report(graph, path, found, len(placed))
    report["class_names"] = _class_names(class_names, found.num_classes, path)
    return model, report


def _tflite_architecture(graph, path):
    """What the graph's convolutions say: backbone, output stride, ASPP branches and rates,
    class count (a namespace; :func:`import_tflite`)."""
    conv_ops = [op for op in graph.ops if op["name"] in _CONV_OPS]
    logits_op, projection_op, branches = _find_head(graph, conv_ops)
    head_ids = {logits_op["index"], projection_op["index"]} | {op["index"] for op, _ in branches}
    backbone_ops = [op for op in conv_ops if op["index"] not in head_ids]

    # Depth multiplier from the stem, output stride from the strides the graph applies.
    stem_out = graph.tensors[backbone_ops[0]["inputs"][1]]["shape"][0]
    candidates = _backbones_with_stem(stem_out)
    if not candidates or len(backbone_ops) != 51:
        raise UserError(
            f"{path}: {len(backbone_ops)} backbone convolutions with a {stem_out}-channel stem; "
            "the authors' DeepLab v3 MobileNetV2 has 51 and a 32- (or 16-, depth 0.5) channel "
            "stem: this TFLite model has another architecture"
        )
    output_stride = 1
    for op in backbone_ops:
        output_stride *= op["options"].get("strideH", 1)
    pool = [op for op, pooled in branches if pooled]
    plain = sorted(
        (op for op, pooled in branches if not pooled),
        key=lambda op: (
            graph.tensors[op["inputs"][1]]["shape"][1],
            op["options"].get("dilationHFactor", 1),
        ),
    )
    if not plain or graph.tensors[plain[0]["inputs"][1]]["shape"][1] != 1 or len(pool) > 1:
        raise UserError(
            f"{path}: the ASPP branches are not one 1x1 convolution, 3x3 atrous "
            "convolutions and at most one image-pooling branch"
        )
    rates = tuple(
        int(op["options"].get("dilationHFactor", 1) * output_stride // 16) for op in plain[1:]
    )
    return types.SimpleNamespace(
        conv_ops=conv_ops,
        logits_op=logits_op,
        projection_op=projection_op,
        branches=branches,
        backbone_ops=backbone_ops,
        backbone=candidates[0],
        output_stride=output_stride,
        pool=pool,
        plain=plain,
        rates=rates,
        num_classes=graph.tensors[logits_op["inputs"][1]]["shape"][0],
        filters=graph.tensors[projection_op["inputs"][1]]["shape"][0],
    )


def _place_tflite_backbone(graph, path, model, backbone_ops):
    """Sets the backbone's weights from ``backbone_ops``; returns the tensor indices placed."""
    backbone = model.backbone_model
    placed = set()
    for op, layer in zip(backbone_ops, _conv_layers(backbone)):
        kind = "DEPTHWISE_CONV_2D" if "depthwise" in layer.name else "CONV_2D"
        if op["name"] != kind:
            raise UserError(
                f"{path}: {graph.describe(op)} where our backbone has {kind} "
                f"{layer.name}: another architecture"
            )
        source = graph.producer.get(op["inputs"][0])
        padded = source is not None and graph.ops[source]["name"] in ("PAD", "PADV2")
        # The authors' graphs: "same"; ours with symmetric padding: PAD + "valid" when strided.
        _check(
            graph,
            op,
            {
                "stride": layer.strides[0],
                "dilation": layer.dilation_rate[0],
                "padding": "valid" if padded and layer.strides[0] > 1 else "same",
                "activation": _activation_after(layer.name),
            },
            layer.name,
        )
        kernel, bias = _weights(graph, op)
        kernel = _keras_kernel(kernel)
        if kernel.shape != tuple(layer.kernel.shape):
            raise UserError(
                f"{path}: {graph.describe(op)} has shape {kernel.shape} in Keras "
                f"layout where {layer.name} has {tuple(layer.kernel.shape)}"
            )
        _set_folded(layer, _following_bn(backbone, layer), kernel, bias)
        placed.update(op["inputs"][1:3])
    return placed


def _place_tflite_head(graph, model, found):
    """Sets the ASPP branches', projection's and logits' weights; returns the tensors placed."""
    placed = set()
    aspp = model.get_layer("aspp")
    ours_branches = list(aspp.branches) + ([aspp.pool_branch] if aspp.image_pooling else [])
    theirs = found.plain + found.pool
    for op, (conv, bn) in zip(theirs, ours_branches):
        _check(
            graph,
            op,
            {
                "stride": 1,
                "activation": "relu",
                "padding": "same",
                "dilation": conv.dilation_rate[0],
            },
            f"ASPP {conv.name}",
        )
        kernel, bias = _weights(graph, op)
        _set_folded(conv, bn, _keras_kernel(kernel), bias)
        placed.update(op["inputs"][1:3])
    # Projection rows follow the file's concatenation order; ours is 1x1, 3x3..., pooling.
    projection_op, logits_op, filters = found.projection_op, found.logits_op, found.filters
    kernel, bias = _weights(graph, projection_op)
    kernel = _keras_kernel(kernel)
    order = [op["index"] for op, _ in found.branches]
    slices = {
        op_index: kernel[:, :, i * filters : (i + 1) * filters] for i, op_index in enumerate(order)
    }
    kernel = np.concatenate([slices[op["index"]] for op in theirs], axis=2)
    _check(graph, projection_op, {"stride": 1, "activation": "relu"}, "ASPP projection")
    _set_folded(*aspp.projection, kernel, bias)
    placed.update(projection_op["inputs"][1:3])
    _check(graph, logits_op, {"stride": 1, "activation": "none"}, "logits")
    kernel, bias = _weights(graph, logits_op)
    model.get_layer("logits").set_weights([_keras_kernel(kernel), bias])
    placed.update(logits_op["inputs"][1:3])
    return placed


def _tflite_report(graph, path, found, num_placed):
    """The JSON-able report of an imported TFLite file (its input range checked)."""
    resizes = [op["options"] for op in graph.ops if op["name"] == "RESIZE_BILINEAR"]
    image = graph.tensors[graph.inputs[0]]
    report = {
        "source": os.path.abspath(path),
        "format": "tflite",
        "backbone": found.backbone,
        "output_stride": found.output_stride,
        "num_classes": int(found.num_classes),
        "atrous_rates_at_os16": list(found.rates),
        "image_pooling": bool(found.pool),
        "convolutions": len(found.conv_ops),
        "weight_tensors": num_placed,
        "concat_order": [
            "image_pooling"
            if pooled
            else f"branch(kernel {graph.tensors[op['inputs'][1]]['shape'][1]})"
            for op, pooled in found.branches
        ],
        "resize_bilinear": [
            {
                "align_corners": bool(o.get("alignCorners")),
                "half_pixel_centers": bool(o.get("halfPixelCenters")),
            }
            for o in resizes
        ],
        "input": {"shape": list(image["shape"]), "type": image["type"]},
    }
    if image["scale"] is not None and image["type"] == 3:
        scale, zero = float(image["scale"][0]), float(image["zero_point"][0])
        low, high = (0 - zero) * scale, (255 - zero) * scale
        report["input"]["range"] = [low, high]
        raw_pixels = abs(low) < 1e-3 and abs(high - 255) < 0.5  # our exports normalize inside
        if not raw_pixels and (abs(low + 1) > 0.02 or abs(high - 1) > 0.02):
            raise UserError(
                f"{path}: the input maps pixels to [{low:.3f}, {high:.3f}], neither "
                "raw pixels nor the authors' MobileNetV2 range [-1, 1]"
            )
    return report


def _class_names(class_names, num_classes, source):
    if class_names is None:
        if num_classes == 21:
            return list(datasets_info.pascal_voc().class_names)
        return [f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise UserError(
            f"--labels: {len(class_names)} names but {source} has {num_classes} classes"
        )
    return list(class_names)


# ----------------------------------------------------------------------------- TF1 checkpoints

_SLIM_IGNORED = ("global_step", "/Momentum", "/ExponentialMovingAverage", "/Adam", "/RMSProp")


def slim_name(layer_name):
    """The authors' slim scope of one of our MobileNetV2 backbone conv layers."""
    if layer_name == "Conv1":
        return "MobilenetV2/Conv"
    if layer_name.startswith("expanded_conv_"):
        return "MobilenetV2/expanded_conv/" + layer_name[len("expanded_conv_") :]
    index, role = layer_name[len("block_") :].split("_", 1)
    return f"MobilenetV2/expanded_conv_{index}/{role}"


def import_tf1_checkpoint(path, *, output_stride=16, class_names=None):
    """Maps an authors' TF1 (slim) DeepLab v3 MobileNetV2 checkpoint onto a :class:`DeepLabV3`.

    Every model variable of the checkpoint must find its place (BN unfolded: gamma, beta,
    moving mean and variance are copied); optimizer slots and the global step are ignored.

    Returns:
      (model, report).
    """
    try:
        reader = tf.train.load_checkpoint(path)
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"--tf1_checkpoint={path}: not a readable checkpoint ({error})") from error
    shapes = reader.get_variable_to_shape_map()
    if "MobilenetV2/Conv/weights" not in shapes or "logits/semantic/weights" not in shapes:
        raise UserError(
            f"--tf1_checkpoint={path}: no MobilenetV2/Conv/weights or "
            "logits/semantic/weights; not an authors' DeepLab v3 MobileNetV2 "
            "checkpoint"
        )
    stem_out = shapes["MobilenetV2/Conv/weights"][-1]
    candidates = _backbones_with_stem(stem_out)
    if not candidates:
        raise UserError(
            f"--tf1_checkpoint={path}: a {stem_out}-channel stem matches no "
            "MobileNetV2 depth multiplier we build (1.0: 32, 0.5: 16)"
        )
    _check_slim_head(path, shapes)
    num_classes = shapes["logits/semantic/weights"][-1]
    model = model_lib.DeepLabV3(
        backbone=candidates[0],
        num_classes=num_classes,
        output_stride=output_stride,
        multi_grid=None,
        atrous_rates=(),
        image_pooling="image_pooling/weights" in shapes,
        aspp_filters=shapes["concat_projection/weights"][-1],
        weight_decay=MOBILENET_WEIGHT_DECAY,
    )
    variables = _SlimVariables(reader, shapes, path)
    _place_slim_weights(model, variables)
    unplaced = sorted(
        n
        for n in shapes
        if n not in variables.used and not any(part in n for part in _SLIM_IGNORED)
    )
    if unplaced:
        raise UserError(
            f"--tf1_checkpoint={path}: variable {unplaced[0]} has no place in the "
            f"model ({len(unplaced)} unplaced)"
        )
    report = {
        "source": os.path.abspath(path),
        "format": "tf1_checkpoint",
        "backbone": candidates[0],
        "output_stride": output_stride,
        "num_classes": int(num_classes),
        "variables": len(variables.used),
        "class_names": _class_names(class_names, num_classes, path),
    }
    return model, report


def _check_slim_head(path, shapes):
    """Refuses the heads this importer does not build (3x3 or separable ASPP branches)."""
    count = 0
    while (
        f"aspp{count + 1}/weights" in shapes
        or f"aspp{count + 1}_depthwise/depthwise_weights" in shapes
    ):
        if f"aspp{count + 1}/weights" not in shapes:
            raise UserError(
                f"--tf1_checkpoint={path}: separable ASPP branches (aspp1_depthwise) "
                "are a DeepLabv3+ option this importer does not build"
            )
        count += 1
    if count:
        raise UserError(
            f"--tf1_checkpoint={path}: the checkpoint has 3x3 ASPP branches "
            "(aspp1...), whose rates it does not record; only the authors' "
            "MobileNetV2 head (1x1 + image pooling) is imported"
        )


class _SlimVariables:
    """A TF1 checkpoint's variables by slim name, read into layers; ``used``: those read."""

    def __init__(self, reader, shapes, path):
        self.reader, self.shapes, self.path = reader, shapes, path
        self.used = set()

    def get(self, name):
        if name not in self.shapes:
            raise UserError(f"--tf1_checkpoint={self.path}: no variable {name}")
        self.used.add(name)
        return self.reader.get_tensor(name).astype(np.float32)

    def set_bn(self, bn, scope):
        gamma = (
            self.get(scope + "/BatchNorm/gamma")
            if scope + "/BatchNorm/gamma" in self.shapes
            else np.ones(self.shapes[scope + "/BatchNorm/beta"], np.float32)
        )
        bn.set_weights(
            [
                gamma,
                self.get(scope + "/BatchNorm/beta"),
                self.get(scope + "/BatchNorm/moving_mean"),
                self.get(scope + "/BatchNorm/moving_variance"),
            ]
        )

    def set_conv(self, layer, name):
        value = self.get(name)
        if value.shape != tuple(layer.kernel.shape):
            raise UserError(
                f"--tf1_checkpoint={self.path}: {name} has shape {value.shape}, our "
                f"{layer.name} {tuple(layer.kernel.shape)}"
            )
        layer.set_weights([value])


def _place_slim_weights(model, variables):
    """Sets every layer of ``model`` from the checkpoint's ``variables``."""
    backbone = model.backbone_model
    for layer in _conv_layers(backbone):
        scope = slim_name(layer.name)
        weight = "depthwise_weights" if "depthwise" in layer.name else "weights"
        variables.set_conv(layer, f"{scope}/{weight}")
        variables.set_bn(_following_bn(backbone, layer), scope)
    aspp = model.get_layer("aspp")
    conv, bn = aspp.branches[0]
    variables.set_conv(conv, "aspp0/weights")
    variables.set_bn(bn, "aspp0")
    order = ["aspp0"]
    if aspp.image_pooling:
        conv, bn = aspp.pool_branch
        variables.set_conv(conv, "image_pooling/weights")
        variables.set_bn(bn, "image_pooling")
        order = ["image_pooling", "aspp0"]  # the authors' concatenation order
    kernel = variables.get("concat_projection/weights")
    filters = kernel.shape[-1]
    parts = {name: kernel[:, :, i * filters : (i + 1) * filters] for i, name in enumerate(order)}
    ours_order = ["aspp0"] + (["image_pooling"] if aspp.image_pooling else [])
    conv, bn = aspp.projection
    conv.set_weights([np.concatenate([parts[n] for n in ours_order], axis=2)])
    variables.set_bn(bn, "concat_projection")
    model.get_layer("logits").set_weights(
        [variables.get("logits/semantic/weights"), variables.get("logits/semantic/biases")]
    )


# ----------------------------------------------------------------------------- output


# Files only a training run writes in its logdir (an import writes ckpt-0 and no events).
_TRAINING_RUN = re.compile(
    r"^(ckpt-[1-9]\d*\.index|train\.log|config\.json|events\.out\.tfevents.*)$"
)


def _not_replaceable(entries, overwrite):
    """Why ``--output`` (a non-empty folder with these entries) must not be replaced, or None:
    ``overwrite`` replaces an earlier import only, never a training run's logdir."""
    if not overwrite:
        return "exists and is not empty; pass --overwrite or another folder"
    run = [name for name in entries if _TRAINING_RUN.match(name)]
    if run:
        return (
            f"holds a training run ({', '.join(run[:3])}); --overwrite replaces only an earlier "
            "import (nothing was deleted): choose another folder"
        )
    if "import_report.json" not in entries:
        return (
            "is not an earlier import (no import_report.json); --overwrite replaces only those "
            "(nothing was deleted): choose another folder"
        )
    return None


def check_output(output_dir, overwrite=False):
    """Refuses, before any work, an ``--output`` that :func:`write_imported` would not write:
    a file, or a non-empty folder it must not replace (one line, ConfigError)."""
    atomic_io.check_directory_target(
        output_dir, "--output", lambda entries: _not_replaceable(entries, overwrite)
    )


def write_imported(model, report, output_dir, overwrite=False):
    """Writes the imported model as a logdir of ours (see the module docstring), atomically.

    The folder is assembled beside ``output_dir`` and renamed into place, so an interrupted
    import leaves no half-written model; an existing non-empty folder is kept unless
    ``overwrite``, which replaces an earlier import only (a training run's logdir, or a
    folder without ``import_report.json``, is refused with one line).
    """
    output_dir = os.path.abspath(output_dir)
    check_output(output_dir, overwrite)
    staging = atomic_io.staging_directory(output_dir)
    try:
        step = tf.Variable(0, dtype=tf.int64)
        manager = tf.train.CheckpointManager(
            checkpoints.make_checkpoint(model, step=step), staging, max_to_keep=1
        )
        manager.save(checkpoint_number=0)
        num_classes = report["num_classes"]
        palette = (
            datasets_info.pascal_voc().palette
            if num_classes == 21
            else datasets_info.color_map(num_classes)
        )
        checkpoints.write_run_info(
            staging,
            model,
            {
                "name": "official_" + report["backbone"],
                "num_classes": num_classes,
                "ignore_label": 255,
                "class_names": report["class_names"],
                "palette": [list(map(int, c)) for c in palette][:num_classes],
            },
        )
        model.save_weights(os.path.join(staging, "model.weights.h5"))
        atomic_io.write_json(os.path.join(staging, "import_report.json"), report)
        model_card.write_card(staging, import_card(model, report, palette, output_dir))
        atomic_io.replace_directory(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def import_card(model, report, palette, output_dir):
    """The model card of an imported model: the source file by name and SHA-256, the
    architecture read from it, and no evaluation (none is run at import)."""
    source = report.get("source") or ""
    size = (report.get("input") or {}).get("shape", [1, 513, 513, 3])[1:3]
    return model_card.make_card(
        name=os.path.basename(os.path.normpath(output_dir)),
        kind="import",
        architecture_section=model_card.architecture(model, gflops_size=size),
        classes_section=model_card.classes(
            report["class_names"], palette[: report["num_classes"]], 255
        ),
        provenance={
            "source": os.path.basename(source) or None,
            "source_path": source or None,
            "source_format": report.get("format"),
            "sha256": model_card.sha256_of(source) if source and os.path.isfile(source) else None,
            "imported_by": "python -m deeplab.import_official",
        },
        input_section={"source_input_size": list(size)},
        variants=[
            {
                "file": "ckpt-0, model.weights.h5",
                "precision": "float32 (the source's weights, dequantized)"
                if report.get("format") == "tflite"
                else "float32",
                "miou": None,
                "agreement_with_float": 1.0,
            }
        ],
        limits=[
            "The authors' training data and classes (PASCAL VOC for their released files): "
            "other scenes are labelled with the nearest of these classes.",
            "Not evaluated at import. experiments/official_agreement.py measures how often this "
            "float model and the source file's own interpreter agree (experiments/RESULTS.md).",
        ],
    )
