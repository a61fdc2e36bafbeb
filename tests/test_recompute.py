"""deeplab.training.recompute: the recomputing training forward pass gives the plain pass's logits,
gradients and BN statistics, keeps none of the recomputed part's activations for the backward
pass, and falls back to the plain pass where it cannot apply. (deeplab.train runs it in
tests/test_train.py; its measured memory and time are in benchmarks/RESULTS.md.)"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.common.errors import ConfigError
from deeplab.model import batch_norm
from deeplab.model.deeplabv3 import UnsplittableModelError
from deeplab.model.options import PerformanceOptions
from deeplab.training import distribute
from deeplab.training import recompute

# Names of the layers in the recomputed part, by endpoint (deeplab.model.resnet's layer names).
EARLY_LAYERS = {
    "stem": r"(conv1|pool1)_",
    "block1": r"(conv1|pool1|conv2)_",
    "block2": r"(conv1|pool1|conv2|conv3)_",
}
SEGMENT_OUTPUT = {"stem": "pool1_pool", "block1": "conv2_block1_out", "block2": "conv3_block1_out"}


def _tiny(**overrides):
    keras.utils.set_random_seed(7)
    # No ASPP dropout: the plain and the recomputing step would draw different masks.
    config = dict(
        backbone="resnet14_tiny",
        num_classes=3,
        aspp_filters=8,
        atrous_rates=(1, 2, 3),
        batch_norm_momentum=0.5,
        aspp_dropout=0.0,
    )
    config.update(overrides)
    return deeplab.build_model(**config)


def _copy(model):
    clone = deeplab.model.deeplabv3.DeepLabV3.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _images(batch=2, size=49):
    values = np.random.default_rng(3).normal(size=(batch, size, size, 3))
    return tf.constant(values.astype("float32"))


def _step(model, forward, images):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = forward(images)
            upstream = tf.random.stateless_normal(tf.shape(logits), seed=[1, 2])
            loss = tf.reduce_sum(logits * upstream)
        return logits, tape.gradient(loss, model.trainable_variables)

    return step()


@pytest.mark.parametrize(
    "through, overrides",
    [
        ("stem", {}),
        ("block1", {}),
        ("block2", {}),
        ("block2", {"head": "cascade", "upsample_logits": False, "image_pooling": False}),
    ],
)
@pytest.mark.slow
def test_logits_gradients_and_statistics_match_the_plain_step(through, overrides):
    plain_model = _tiny(**overrides)
    model = _copy(plain_model)
    images = _images()
    forward = recompute.training_forward(model, through)
    assert forward.recompute_through == through and forward.recompute_disabled_reason is None
    want_logits, want_grads = _step(plain_model, lambda x: plain_model(x, training=True), images)
    got_logits, got_grads = _step(model, forward, images)
    np.testing.assert_allclose(got_logits.numpy(), want_logits.numpy(), rtol=1e-5, atol=1e-5)
    assert len(got_grads) == len(want_grads) == len(model.trainable_variables)
    for got, want, variable in zip(got_grads, want_grads, model.trainable_variables):
        assert got is not None, variable.path
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5, err_msg=variable.path
        )
    # The moving statistics moved once (momentum 0.5: a second update would be far off).
    for got, want in zip(model.non_trainable_variables, plain_model.non_trainable_variables):
        assert got.path == want.path
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=got.path
        )
    moved = [v for v in model.non_trainable_variables if "moving_mean" in v.path]
    assert any(np.abs(v.numpy()).max() > 1e-3 for v in moved)


def _kept_activations(model, mode, through):
    """Forward-pass tensors of the layers up to ``through`` that the backward pass reads, in
    the training step of ``training_forward(model, mode)``."""
    forward = recompute.training_forward(model, mode)

    def step(images):
        with tf.GradientTape() as tape:
            logits = forward(images)
            loss = tf.reduce_sum(logits)
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        return logits, grads

    graph = tf.function(step).get_concrete_function(tf.TensorSpec([2, 49, 49, 3])).graph
    forward_ops, stack = set(), [graph.outputs[0].op]
    while stack:  # the forward pass: everything the logits are computed from
        op = stack.pop()
        if op.name not in forward_ops:
            forward_ops.add(op.name)
            stack.extend(t.op for t in op.inputs)
    early = re.compile(r"(^|/)" + EARLY_LAYERS[through])
    kept = set()
    for name in forward_ops:
        if not early.search(name) or SEGMENT_OUTPUT[through] in name:
            continue  # not in the recomputed part, or its output (which the rest reads)
        for tensor in graph.get_operation_by_name(name).outputs:
            if any(c.name.startswith("gradient_tape/") for c in tensor.consumers()):
                kept.add(tensor.name)
    return kept


@pytest.mark.parametrize("through", ["stem", "block2"])
@pytest.mark.slow
def test_the_backward_pass_keeps_no_activation_of_the_recomputed_part(through):
    model = _tiny()
    assert _kept_activations(model, through, through) == set()
    # the same walk over the plain step finds them (so the check above can fail)
    assert len(_kept_activations(model, "none", through)) >= (3 if through == "stem" else 20)


@pytest.mark.slow
def test_falls_back_to_the_plain_step_where_it_cannot_apply():
    model = _tiny()
    with pytest.raises(ConfigError, match="--recompute_through='block9'"):
        recompute.training_forward(model, "block9")
    distribute.set_sync_batch_norm(model, True)
    forward = recompute.training_forward(model, "block2")
    assert forward.recompute_through == "none"
    assert "synchronized" in forward.recompute_disabled_reason
    distribute.set_sync_batch_norm(model, False)
    assert recompute.training_forward(model, "block2").recompute_through == "block2"
    # a model built without the fused BN kernel (what DEEPLAB_FUSED_BATCH_NORM=0 maps to)
    unfused = _tiny(performance=PerformanceOptions(fused_batch_norm=False))
    forward = recompute.training_forward(unfused, "block2")
    assert forward.recompute_through == "none"
    assert "fused training kernel" in forward.recompute_disabled_reason
    # and the BN layer refuses to run Keras' kernel (a second statistics update) when recomputed
    layer = unfused.backbone_model.get_layer("conv1_bn")
    assert not layer.fused and not layer.recomputing
    with batch_norm.recomputing([layer]), pytest.raises(RuntimeError, match="cannot be recomputed"):
        layer(tf.ones([1, 5, 5, layer.gamma.shape[0]]), training=True)
    assert not layer.recomputing  # restored on exit
    # the decoder reads backbone features from inside the recomputed part
    decoder = _tiny(decoder_output_stride=4)
    with pytest.raises(UnsplittableModelError, match="decoder"):
        decoder.recompute_segments("block2")
    forward = recompute.training_forward(decoder, "block2")
    assert forward.recompute_through == "none" and "decoder" in forward.recompute_disabled_reason


def test_recomputing_marks_only_the_given_layers_and_skips_their_statistics_update():
    model = _tiny()
    front, _ = model.recompute_segments("stem")
    inside = model.backbone_model.get_layer("conv1_bn")
    outside = model.backbone_model.get_layer("conv2_block1_1_bn")
    assert inside in front.layers and outside not in front.layers
    before = inside.moving_mean.numpy().copy()
    with batch_norm.recomputing(front.layers) as marked:
        assert marked == [inside]
        assert inside.recomputing and not outside.recomputing
        inside(tf.ones([1, 5, 5, inside.gamma.shape[0]]) * 3.0, training=True)
    assert not inside.recomputing
    np.testing.assert_array_equal(inside.moving_mean.numpy(), before)


@pytest.mark.parametrize("through", ["stem", "block1", "block2"])
@pytest.mark.slow
def test_the_model_exposes_its_segments(through):
    """``rest(front(x), x)`` is the model (layers shared, so no variable is added)."""
    model = _tiny(head="cascade") if through == "block1" else _tiny()
    front, rest = model.recompute_segments(through)
    assert front.layers[-1].name == SEGMENT_OUTPUT[through]
    images = _images(batch=1, size=33)
    np.testing.assert_allclose(
        rest(front(images), images).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-5
    )
    assert {v.path for v in front.weights} <= {v.path for v in model.weights}
    with pytest.raises(ValueError, match="not an endpoint"):
        model.recompute_segments("features")


@pytest.mark.slow
def test_frozen_batch_norm_is_recomputed_too():
    plain_model = _tiny(freeze_batch_norm=True)
    model = _copy(plain_model)
    forward = recompute.training_forward(model, "block2")
    assert forward.recompute_through == "block2"
    images = _images()
    want = _step(plain_model, lambda x: plain_model(x, training=True), images)
    got = _step(model, forward, images)
    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
