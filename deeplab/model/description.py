"""A DeepLabv3 configuration described: parameters, forward GFLOPs, atrous plan, feature size.

:func:`describe` builds the model and returns the description ``python -m deeplab.describe``
prints; :func:`conv_flops` counts every convolution as 2 x k x k x Cin x Cout x Hout x Wout
(the convention of the paper's tables) from the traced TensorFlow graph, so what is counted is
exactly what runs.
"""

import keras
import tensorflow as tf

from deeplab.model import backbones
from deeplab.model import deeplabv3 as model_lib
from deeplab.model import heads
from deeplab.model import mobilenet


def conv_flops(model, height, width):
    """Forward convolution FLOPs (2*k*k*Cin*Cout*Hout*Wout summed) of ``model`` on one image.

    Args:
      model: a Keras model (TensorFlow backend) from images [N, H, W, 3].
      height, width: input size.

    Returns:
      (total FLOPs as int, list of (op name, FLOPs) for each convolution).
    """
    spec = tf.TensorSpec([1, height, width, 3], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    per_op = []
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "DepthwiseConv2dNative"):
            continue
        kh, kw, cin, cout = op.inputs[1].shape.as_list()
        output = op.outputs[0]
        # On CPUs TensorFlow runs an atrous convolution as SpaceToBatchND -> Conv2D ->
        # BatchToSpaceND; the paper's count uses the logical output, after BatchToSpaceND.
        for consumer in output.consumers():
            if consumer.type == "BatchToSpaceND":
                output = consumer.outputs[0]
        batch, out_h, out_w, out_c = output.shape.as_list()
        if op.type == "Conv2D":
            flops = 2 * kh * kw * cin * cout * out_h * out_w
        else:  # depthwise: each output channel reads one input channel
            flops = 2 * kh * kw * out_c * out_h * out_w
        per_op.append((op.name, flops * batch))
    return sum(f for _, f in per_op), per_op


def _mobilenet_table(plan):
    """Rows of the MobileNetV2 plan (``mobilenet.mobilenet_plan``): one per inverted residual
    block."""
    # Channels at depth 1.0.
    rows = [
        "block          expansion  channels  stride  output_stride  depthwise rate",
        "Conv1 (stem)   -          32        2       2              -",
    ]
    current = mobilenet.STEM_STRIDE
    for index, ((expansion, channels, _), (stride, rate)) in enumerate(zip(mobilenet.BLOCKS, plan)):
        current *= stride
        rows.append(
            f"{mobilenet.block_prefix(index).rstrip('_'):<14} {expansion:<10} "
            f"{channels:<9} {stride:<7} {current:<14} {rate}"
        )
    return rows


def describe(model_kwargs, crop):
    """Returns the description of a model configuration as a printable string.

    Args:
      model_kwargs: keyword arguments of ``deeplab.build_model``.
      crop: (height, width) of the input for GFLOPs and feature size.
    """
    model = model_lib.build_model(**model_kwargs)
    height, width = crop
    total_flops, per_op = conv_flops(model, height, width)
    backbone = model.backbone_model
    feature_shape = backbone.compute_output_spec(keras.KerasTensor((1, height, width, 3)))[
        "features"
    ].shape

    family = backbones.get(model.backbone).family
    plan = backbones.stride_plan(model.settings)
    num_params = model.count_params()
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    lines = [
        f"DeepLabv3: {model.backbone}, head={model.head}, output_stride={model.output_stride}, "
        f"multi_grid={model.multi_grid}, num_cascaded_blocks={model.num_cascaded_blocks}",
    ]
    if model.head == "aspp":
        lines.append(
            f"ASPP rates at this output stride: "
            f"{heads.scale_atrous_rates(model.atrous_rates, model.output_stride)}"
            f" (given for OS 16: {model.atrous_rates}), "
            f"image_pooling={model.image_pooling}"
        )
    lines += [
        f"num_classes: {model.num_classes}",
        f"parameters: {num_params:,} (trainable {trainable:,}; backbone "
        f"{backbone.count_params():,}; BN moving statistics counted)",
        f"forward GFLOPs at {height}x{width}: {total_flops / 1e9:.1f} "
        f"({len(per_op)} convolutions, 2*k*k*Cin*Cout*Hout*Wout)",
        f"feature map at {height}x{width}: "
        f"{feature_shape[1]}x{feature_shape[2]}x{feature_shape[3]}",
        "",
    ]
    if family == "mobilenet_v2":
        lines += _mobilenet_table(plan)
    else:
        lines += [
            "block   units  stride  output_stride  atrous rates",
            "stem    -      4       4              -",
        ]
        for block in plan:
            lines.append(
                f"{block.name:<7} {len(block.rates):<6} {block.stride:<7} "
                f"{block.output_stride:<14} {','.join(str(r) for r in block.rates)}"
            )
    return "\n".join(lines)
