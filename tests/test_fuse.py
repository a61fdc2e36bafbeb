"""deeplab.model.fuse (BN folding), AtrousConv2D's native dilated path, and bfloat16 inference
accuracy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.model import fuse
from deeplab.model import layers as deeplab_layers
from export_fixtures import randomize  # non-default values for every variable

TINY = dict(
    backbone="resnet14_tiny",
    num_classes=5,
    output_stride=8,
    aspp_filters=16,
    multi_grid=(1, 2, 4),
    atrous_rates=(6, 12, 18),
    image_pooling=True,
)


def _bn_layers(model):
    from deeplab.model.deeplabv3 import iter_layers  # pylint: disable=import-outside-toplevel

    return [l for l in iter_layers(model) if isinstance(l, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("kwargs", [TINY, dict(TINY, output_stride=16, num_cascaded_blocks=1)])
@pytest.mark.slow
def test_fused_model_matches_unfused_and_has_no_batch_norm(kwargs):
    model = deeplab.build_model(**kwargs)
    randomize(model, 1)
    before = [v.numpy().copy() for v in model.weights]
    images = np.random.default_rng(2).normal(0, 1, (2, 45, 37, 3)).astype("float32")
    expected = model(images, training=False).numpy()
    fused = fuse.fuse_batch_norm(model)
    got = fused(images, training=False).numpy()
    assert got.shape == expected.shape == (2, 45, 37, 5)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    # every BN of the model is folded: stem, 4 per unit with projection, 3 per other unit, ASPP 6
    assert not _bn_layers(fused)
    assert fused.batch_norm_folded == len(_bn_layers(model))
    assert fused.num_classes == 5 and fused.output_stride == kwargs["output_stride"]
    # the source model is untouched and still trains with BN
    for v, old in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), old)
    assert len(fused.weights) < len(model.weights)


@pytest.mark.slow
def test_fused_model_serves_dynamic_sizes_in_a_tf_function():
    model = deeplab.build_model(**TINY)
    randomize(model, 3)
    fused = fuse.fuse_batch_norm(model)
    fn = tf.function(
        lambda x: fused(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    for shape in ((1, 33, 33, 3), (2, 20, 28, 3)):
        images = np.random.default_rng(4).normal(0, 1, shape).astype("float32")
        np.testing.assert_allclose(
            fn(images).numpy(), model(images, training=False).numpy(), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("rate", [2, 6, 18])
def test_atrous_conv_native_path_equals_space_to_batch_path_with_gradients(rate):
    layer = deeplab_layers.AtrousConv2D(6, 3, padding="same", dilation_rate=rate)
    images = tf.constant(np.random.default_rng(rate).normal(0, 1, (2, 21, 19, 4)), tf.float32)
    layer.build(images.shape)
    kernel = tf.constant(np.random.default_rng(7).normal(0, 1, (3, 3, 4, 6)), tf.float32)
    layer.kernel.assign(kernel)

    def outputs_and_gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch(images)
            y = conv(images)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y] + tape.gradient(loss, [images, layer.kernel])

    native = outputs_and_gradients(layer)
    reference = outputs_and_gradients(
        lambda x: tf.nn.convolution(x, layer.kernel, padding="SAME", dilations=rate) + layer.bias
    )
    for got, want in zip(native, reference):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4 * np.abs(want).max())
    if deeplab_layers._tensorflow_has_native_dilated_cpu_conv():  # pylint: disable=protected-access
        graph = (
            tf.function(layer).get_concrete_function(tf.TensorSpec(images.shape, tf.float32)).graph
        )
        types = {op.type for op in graph.get_operations()}
        assert "SpaceToBatchND" not in types and "Conv2D" in types


def _conv_ops(layer, shape=(1, 21, 19, 4)):
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_native_dilation_is_an_explicit_argument_that_survives_the_config():
    spaced = deeplab_layers.AtrousConv2D(
        6, 3, padding="same", dilation_rate=2, native_dilation=False
    )
    assert "SpaceToBatchND" in _conv_ops(spaced)
    forced = deeplab_layers.AtrousConv2D(
        6, 3, padding="same", dilation_rate=2, native_dilation=True
    )
    assert "SpaceToBatchND" not in _conv_ops(forced)
    auto = deeplab_layers.AtrousConv2D(6, 3, padding="same", dilation_rate=2)
    detect = deeplab_layers._tensorflow_has_native_dilated_cpu_conv  # pylint: disable=W0212
    assert ("SpaceToBatchND" not in _conv_ops(auto)) == detect()
    for layer in (spaced, forced, auto):
        clone = keras.layers.deserialize(keras.layers.serialize(layer))
        assert clone.native_dilation is layer.native_dilation
    with pytest.raises(TypeError):
        deeplab_layers.AtrousConv2D(6, 3, native_dilation="no")


@pytest.mark.slow
def test_performance_options_reach_the_atrous_convolutions_and_the_folded_model():
    from deeplab.model.deeplabv3 import iter_layers  # pylint: disable=import-outside-toplevel
    from deeplab.model.options import PerformanceOptions  # pylint: disable=import-outside-toplevel

    model = deeplab.build_model(**TINY, performance=PerformanceOptions(native_dilation=False))
    atrous = [l for l in iter_layers(model) if isinstance(l, deeplab_layers.AtrousConv2D)]
    assert atrous and all(l.native_dilation is False for l in atrous)
    assert model.get_layer("aspp").native_dilation is False
    folded = fuse.fuse_batch_norm(model)
    folded_atrous = [l for l in iter_layers(folded) if isinstance(l, deeplab_layers.AtrousConv2D)]
    assert len(folded_atrous) == len(atrous)
    assert all(l.native_dilation is False for l in folded_atrous)
    assert folded.performance == model.performance
    images = np.random.default_rng(8).normal(0, 1, (1, 33, 33, 3)).astype("float32")
    graph = (
        tf.function(lambda x: folded(x, training=False))
        .get_concrete_function(tf.TensorSpec(images.shape, tf.float32))
        .graph
    )
    assert "SpaceToBatchND" in {op.type for op in graph.get_operations()}


def test_aspp_exposes_its_conv_bn_pairs_and_the_folded_aspp_uses_the_public_hook():
    from deeplab.model.aspp import ASPP  # pylint: disable=import-outside-toplevel

    model = deeplab.build_model(**TINY)
    aspp = model.get_layer("aspp")
    pairs = aspp.conv_bn_pairs()
    # 1x1 branch, three atrous branches, image pooling, projection
    assert [conv.name for conv, _ in pairs] == [
        "aspp0_conv",
        "aspp1_conv",
        "aspp2_conv",
        "aspp3_conv",
        "image_pooling_conv",
        "projection_conv",
    ]
    assert all(bn.name == conv.name[: -len("conv")] + "bn" for conv, bn in pairs)
    assert "make_conv_bn" in vars(fuse.FusedASPP) and "_conv_bn" not in vars(fuse.FusedASPP)
    assert not [
        name
        for name in vars(fuse.FusedASPP)
        if name.startswith("_") and hasattr(ASPP, name) and not name.startswith("__")
    ]
    folded = fuse.FusedASPP.from_config(aspp.get_config())
    assert len(folded.conv_bn_pairs()) == len(pairs)
    assert all(
        isinstance(bn, fuse.FoldedBatchNorm) and conv.use_bias
        for conv, bn in folded.conv_bn_pairs()
    )


@pytest.mark.slow
def test_bfloat16_inference_agrees_with_float32_on_99_percent_of_pixels():
    """Issue 7: bf16 only where argmax agreement with float32 stays >= 99% (same weights)."""
    model = deeplab.build_model(**TINY)
    randomize(model, 5)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = deeplab.build_model(**TINY)
    finally:
        keras.config.set_dtype_policy("float32")
    bf16.set_weights(model.get_weights())
    images = np.random.default_rng(6).normal(0, 1, (2, 65, 65, 3)).astype("float32")
    reference = model(images, training=False).numpy()
    for candidate in (bf16, fuse.fuse_batch_norm(bf16)):
        logits = candidate(images, training=False)
        assert logits.dtype == "float32"
        agreement = np.mean(np.argmax(logits.numpy(), -1) == np.argmax(reference, -1))
        assert agreement >= 0.99, agreement


def test_cast_model_stores_every_weight_once_in_bfloat16_and_agrees_with_float32():
    """The bfloat16 export's model (deeplab.model.fuse.cast_model after folding): bf16 variables, no
    float32 copy, half the bytes, and the same argmax on >= 99% of the pixels."""
    from deeplab.evaluation import inference  # pylint: disable=import-outside-toplevel

    model = deeplab.build_model(**TINY)
    randomize(model, 5)
    folded = fuse.fuse_batch_norm(model)
    bf16 = fuse.cast_model(folded, "bfloat16")
    assert {str(v.dtype) for v in bf16.weights} == {"bfloat16"}
    assert len(bf16.weights) == len(folded.weights)
    assert sum(v.numpy().nbytes for v in bf16.weights) * 2 == sum(
        v.numpy().nbytes for v in folded.weights
    )
    assert bf16.num_classes == 5 and bf16.output_stride == 8 and bf16.batch_norm_folded > 0
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    for new, old in zip(bf16.weights, folded.weights):  # rounded once, from the folded float32
        np.testing.assert_array_equal(
            new.numpy().astype(np.float32),
            old.numpy().astype(keras.backend.standardize_dtype("bfloat16")).astype(np.float32),
        )
    images = np.random.default_rng(6).normal(0, 1, (2, 65, 65, 3)).astype("float32")
    reference = np.asarray(inference.predict_probabilities(folded, images))
    probabilities = np.asarray(inference.predict_probabilities(bf16, images))
    assert probabilities.dtype == np.float32
    agreement = np.mean(np.argmax(probabilities, -1) == np.argmax(reference, -1))
    assert agreement >= 0.99, agreement
