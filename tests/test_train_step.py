"""The training step as a unit (deeplab.training.step): built and run alone, outside
deeplab.training.trainer, it gives the first step of a whole train() run (same loss and weights)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.config.experiment import ExperimentConfig
from deeplab.data import input_pipeline
from deeplab.logdir import checkpoints
from deeplab.model.deeplabv3 import build_model
from deeplab.training import optimizers
from deeplab.training import step
from deeplab.training import trainer
from deeplab.training.schedules import PolyLearningRate

MODEL = {
    "backbone": "resnet14_tiny",
    "output_stride": 16,
    "atrous_rates": (1, 2, 3),
    "aspp_filters": 16,
    "batch_norm_momentum": 0.9,
}


def _config(data_dir, logdir):
    return ExperimentConfig.create(
        dataset_dir=data_dir,
        logdir=str(logdir),
        model=MODEL,
        crop_size=(33, 33),
        batch_size=4,
        training_steps=10,
        stop_at_step=1,
        base_learning_rate=0.01,
        shuffle_buffer=16,
        save_checkpoint_steps=1,
        image_summary_steps=0,
        seed=5,
    )


@pytest.mark.slow
def test_one_step_alone_equals_the_first_step_of_train(data_dir, tmp_path):
    config = _config(data_dir, tmp_path / "run")
    result = trainer.train(config)

    # The same step, assembled by hand from the public pieces.
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(config.train.seed)
    schedule = PolyLearningRate(
        config.train.base_learning_rate,
        config.train.training_steps,
        power=config.train.learning_power,
    )
    model = build_model(**config.model.build_kwargs(3))
    optimizer = optimizers.SGD(learning_rate=schedule, momentum=config.train.momentum)
    optimizer.build(model.trainable_variables)
    replica_step = step.build_replica_step(
        model,
        optimizer,
        schedule,
        step.LossSettings(ignore_label=255),
        recompute_through=config.train.recompute_through,
        multipliers=step.gradient_multipliers(model, config.train.logits_bias_lr_multiplier),
    )
    dataset = input_pipeline.make_train_dataset(
        data_dir,
        "train",
        batch_size=4,
        crop_size=(33, 33),
        seed=config.train.seed,
        shuffle_buffer=16,
        num_classes=3,
    )
    strategy = tf.distribute.get_strategy()
    values = step.build_train_step(strategy, replica_step)(iter(dataset))

    first = result.history[1]
    # Bit-equal on the machines measured; the tolerance only allows a kernel that reduces in
    # another order. A different batch, seed, schedule or loss moves these by percents.
    assert float(values["cross_entropy"]) == pytest.approx(first["cross_entropy"], rel=1e-6)
    total = float(values["cross_entropy"]) + float(values["regularization"])
    assert total == pytest.approx(first["loss"], rel=1e-6)
    assert int(optimizer.iterations.numpy()) == 1
    trained = checkpoints.load_model(result.checkpoint)
    assert len(trained.weights) == len(model.weights)
    for ours, theirs in zip(model.weights, trained.weights):
        np.testing.assert_allclose(
            ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7, err_msg=ours.path
        )


def test_the_logits_bias_trains_at_twice_the_rate(data_dir):
    """The authors' train_utils.py: the last layer's biases get a gradient multiplier of 2 (the
    default here); with momentum SGD from zero momentum the first update is then exactly twice
    the update without it, and every other variable's update is unchanged."""
    dataset = input_pipeline.make_train_dataset(
        data_dir,
        "train",
        batch_size=4,
        crop_size=(33, 33),
        seed=3,
        shuffle_buffer=16,
        num_classes=3,
    )
    images, labels = next(iter(dataset))
    assert ExperimentConfig().train.logits_bias_lr_multiplier == 2.0
    deltas = {}
    for factor in (1.0, 2.0):
        keras.utils.set_random_seed(1)
        model = build_model(**dict(MODEL, aspp_dropout=0.0), num_classes=3)
        before = [v.numpy().copy() for v in model.trainable_variables]
        optimizer = optimizers.SGD(learning_rate=0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        multipliers = step.gradient_multipliers(model, factor)
        assert (multipliers is None) == (factor == 1.0)
        replica_step = step.build_replica_step(
            model,
            optimizer,
            lambda _: 0.01,
            step.LossSettings(ignore_label=255),
            multipliers=multipliers,
        )
        replica_step(images, labels)
        deltas[factor] = {v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)}
    bias = "logits/bias"
    assert bias in deltas[2.0]
    assert np.abs(deltas[1.0][bias]).max() > 0
    np.testing.assert_allclose(deltas[2.0][bias], 2 * deltas[1.0][bias], rtol=1e-5, atol=1e-9)
    for path, delta in deltas[1.0].items():
        if path != bias:
            np.testing.assert_allclose(deltas[2.0][path], delta, rtol=1e-5, atol=1e-8, err_msg=path)
