"""Tests for deeplab.training.schedules.PolyLearningRate: golden values of the poly policy
(Sec. 4.1)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.common.errors import ConfigError
from deeplab.training.schedules import PolyLearningRate


def _value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.007),
        (1, 0.007 * (1 - 1 / 30000) ** 0.9),
        (15000, 0.007 * 0.5**0.9),
        (27000, 0.007 * 0.1**0.9),
        (30000, 0.0),
        (45000, 0.0),
        (-5, 0.007),
    ],
)
def test_paper_schedule_golden_values(step, expected):
    schedule = PolyLearningRate(0.007, 30000)
    assert _value(schedule, step) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_step_types_give_the_same_value():
    schedule = PolyLearningRate(0.007, 30000)
    expected = 0.007 * (1 - 12345 / 30000) ** 0.9
    steps = [
        12345,
        np.int64(12345),
        tf.constant(12345, tf.int64),
        tf.Variable(12345, dtype=tf.int64),
        tf.constant(12345.0),
    ]
    for step in steps:
        assert _value(schedule, step) == pytest.approx(expected, rel=1e-6)
    assert schedule(tf.constant(1, tf.int64)).dtype == tf.float32
    as_graph = tf.function(schedule)
    assert float(as_graph(tf.constant(12345, tf.int64))) == pytest.approx(expected, rel=1e-6)


def test_end_learning_rate_clamps_past_max_steps():
    schedule = PolyLearningRate(0.007, 30000, end_learning_rate=1e-4)
    assert _value(schedule, 0) == pytest.approx(0.007, rel=1e-6)
    assert _value(schedule, 15000) == pytest.approx((0.007 - 1e-4) * 0.5**0.9 + 1e-4, rel=1e-6)
    assert _value(schedule, 30000) == pytest.approx(1e-4, rel=1e-6)
    assert _value(schedule, 90000) == pytest.approx(1e-4, rel=1e-6)


def test_warmup_is_linear_and_joins_the_poly_curve():
    schedule = PolyLearningRate(0.01, 1000, power=0.9, warmup_steps=100)
    poly = lambda s: 0.01 * (1 - s / 1000) ** 0.9  # noqa: E731
    assert _value(schedule, 0) == 0.0
    assert _value(schedule, 25) == pytest.approx(poly(25) * 0.25, rel=1e-6)
    assert _value(schedule, 100) == pytest.approx(poly(100), rel=1e-6)
    assert _value(schedule, 700) == pytest.approx(poly(700), rel=1e-6)


def test_dense_sweep_against_formula():
    schedule = PolyLearningRate(0.001, 90000, power=0.9)
    steps = np.arange(0, 100001, 977)
    got = np.array([_value(schedule, int(s)) for s in steps])
    expected = 0.001 * (1 - np.minimum(steps, 90000) / 90000) ** 0.9
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)
    assert np.all(np.diff(got) <= 0)


def test_serialization_round_trip_and_optimizer():
    schedule = PolyLearningRate(0.007, 30000, power=0.8, end_learning_rate=1e-5, warmup_steps=50)
    config = keras.saving.serialize_keras_object(schedule)
    assert "deeplab" in json.dumps(config)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert isinstance(restored, PolyLearningRate)
    assert restored.get_config() == schedule.get_config()
    for step in (0, 25, 50, 20000, 40000):
        assert _value(restored, step) == _value(schedule, step)

    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    clone = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))
    )
    assert isinstance(clone, keras.optimizers.SGD)
    # The optimizer evaluates the schedule at its iteration counter.
    assert float(clone.learning_rate) == 0.0  # warmup starts at 0
    clone.iterations.assign(20000)
    assert float(clone.learning_rate) == pytest.approx(
        (0.007 - 1e-5) * (1 - 20000 / 30000) ** 0.8 + 1e-5, rel=1e-6
    )


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="max_steps"):
        PolyLearningRate(0.007, 0)
    with pytest.raises(ConfigError, match="warmup_steps"):
        PolyLearningRate(0.007, 100, warmup_steps=100)
    with pytest.raises(ConfigError, match="end_learning_rate"):
        PolyLearningRate(0.007, 100, end_learning_rate=0.01)


# The JAX-backend run of this module is part of test_inference.py::test_jax_backend_in_subprocess
# (one subprocess for all four modules keeps the suite fast).
