"""deeplab.training.optimizers.SGD: the fused momentum kernel computes what Keras' SGD computes,
nothing of the update can run before its gradient, and it is Keras' SGD for checkpoints,
serialization and the cases it leaves to Keras. (MirroredStrategy and parameter-server training run
it through deeplab.train in test_distribute.py and test_parameter_server.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.training import optimizers
from deeplab.training.schedules import PolyLearningRate

SHAPES = [(3, 3, 4, 5), (5,), (2, 7)]


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    return [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=f"v{i}")
        for i, shape in enumerate(SHAPES)
    ]


def _gradients(step):
    rng = np.random.default_rng(100 + step)
    return [tf.constant(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def _train(optimizer, steps=4):
    variables = _variables()
    optimizer.build(variables)

    @tf.function
    def apply(grads):
        optimizer.apply(grads, variables)

    for step in range(steps):
        apply(_gradients(step))
    return [v.numpy() for v in variables], [m.numpy() for m in optimizer.momentums]


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_update_matches_keras_sgd(nesterov):
    schedule = lambda: PolyLearningRate(0.1, 10, power=0.9)  # noqa: E731  a tensor learning rate
    ours = _train(optimizers.SGD(schedule(), momentum=0.9, nesterov=nesterov))
    reference = _train(keras.optimizers.SGD(schedule(), momentum=0.9, nesterov=nesterov))
    initial = [v.numpy() for v in _variables()]
    for got, want, start in zip(ours[0], reference[0], initial):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert not np.allclose(got, start)  # the variables did move
    for got, want in zip(ours[1], reference[1]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def _slot_consumers(optimizer):
    """Op types that read each momentum slot in the graph of one optimizer.apply."""
    variables = _variables()
    optimizer.build(variables)
    grads = [tf.TensorSpec(shape, tf.float32) for shape in SHAPES]
    graph = tf.function(lambda g: optimizer.apply(g, variables)).get_concrete_function(grads).graph
    slot_ids = {id(m.value.handle) for m in optimizer.momentums}
    placeholders = [inner for outer, inner in graph.captures if id(outer) in slot_ids]
    assert len(placeholders) == len(SHAPES)
    return [sorted(op.type for op in p.consumers()) for p in placeholders], graph


def test_momentum_slots_are_touched_only_by_the_kernel():
    consumers, graph = _slot_consumers(optimizers.SGD(0.01, momentum=0.9))
    assert consumers == [["ResourceApplyKerasMomentum"]] * len(SHAPES)
    assert "Mul" not in {op.type for op in graph.get_operations()}
    # Keras' SGD reads the slot into a separate product (which TensorFlow may run as soon as the
    # step starts, before the gradient exists): the check above would catch it.
    consumers, _ = _slot_consumers(keras.optimizers.SGD(0.01, momentum=0.9))
    assert all("ReadVariableOp" in c for c in consumers)


@pytest.mark.parametrize("momentum, fused_update", [(0.0, True), (0.9, False)])
def test_keras_update_where_the_kernel_does_not_apply(momentum, fused_update):
    """No momentum, or ``fused_update=False`` (what DEEPLAB_FUSED_MOMENTUM=0 maps to): Keras'
    own update."""
    optimizer = optimizers.SGD(0.05, momentum=momentum, fused_update=fused_update)
    variables = _variables()
    optimizer.build(variables)
    graph = (
        tf.function(lambda g: optimizer.apply(g, variables))
        .get_concrete_function([tf.TensorSpec(s, tf.float32) for s in SHAPES])
        .graph
    )
    assert "ResourceApplyKerasMomentum" not in {op.type for op in graph.get_operations()}
    got = _train(optimizers.SGD(0.05, momentum=momentum, fused_update=fused_update))[0]
    want = _train(keras.optimizers.SGD(0.05, momentum=momentum))[0]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoints_move_between_keras_sgd_and_ours(tmp_path):
    """Same slot variables: a checkpoint of either class restores into the other."""
    for source_class, target_class in (
        (optimizers.SGD, keras.optimizers.SGD),
        (keras.optimizers.SGD, optimizers.SGD),
    ):
        source = source_class(0.01, momentum=0.9)
        _train(source, steps=2)
        prefix = tf.train.Checkpoint(optimizer=source).save(str(tmp_path / source_class.__module__))
        target = target_class(0.01, momentum=0.9)
        target.build(_variables())
        tf.train.Checkpoint(optimizer=target).restore(prefix).assert_existing_objects_matched()
        assert int(target.iterations.numpy()) == 2
        for got, want in zip(target.momentums, source.momentums):
            assert np.abs(want.numpy()).max() > 0
            np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_serialization_round_trip():
    optimizer = optimizers.SGD(0.02, momentum=0.8, nesterov=True)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(clone) is optimizers.SGD
    assert (clone.momentum, clone.nesterov, clone.fused_update) == (0.8, True, True)
    assert float(clone.learning_rate.numpy()) == pytest.approx(0.02)
    unfused = optimizers.SGD(0.02, momentum=0.8, fused_update=False)
    assert not keras.optimizers.deserialize(keras.optimizers.serialize(unfused)).fused_update
    # a config written before the argument existed
    config = keras.optimizers.serialize(unfused)
    del config["config"]["fused_update"]
    assert keras.optimizers.deserialize(config).fused_update


def test_environment_override_maps_to_fused_update(monkeypatch):
    monkeypatch.delenv("DEEPLAB_FUSED_MOMENTUM", raising=False)
    assert optimizers.fused_update_from_environment() is True
    assert optimizers.fused_update_from_environment(default=False) is False
    monkeypatch.setenv("DEEPLAB_FUSED_MOMENTUM", "0")
    assert optimizers.fused_update_from_environment() is False
    assert not optimizers.SGD(
        0.1, momentum=0.9, fused_update=optimizers.fused_update_from_environment()
    ).fused_update
    monkeypatch.setenv("DEEPLAB_FUSED_MOMENTUM", "1")
    assert optimizers.fused_update_from_environment(default=False) is True
    assert optimizers.fused_update_from_environment({"DEEPLAB_FUSED_MOMENTUM": "0"}) is False
    assert optimizers.fused_update_from_environment({}) is True
