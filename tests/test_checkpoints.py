"""deeplab.logdir.checkpoints: run info, checkpoint resolution, reload at another output stride,
fine-tuning."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.logdir import checkpoints
from deeplab.model.deeplabv3 import DeepLabV3
from deeplab.model.deeplabv3 import build_model
from export_fixtures import randomize  # non-default values for every variable

TINY = {"backbone": "resnet14_tiny", "aspp_filters": 8, "atrous_rates": (1, 2, 3)}
DATASET_INFO = {
    "name": "toy",
    "num_classes": 3,
    "ignore_label": 255,
    "class_names": ["a", "b", "c"],
    "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
    "splits": {"train": 4},
}


def _save_run(logdir, num_classes=3, output_stride=16, step=7):
    model = build_model(num_classes=num_classes, output_stride=output_stride, **TINY)
    randomize(model)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step_var = tf.Variable(step, dtype=tf.int64)
    checkpoints.write_run_info(logdir, model, {**DATASET_INFO, "num_classes": num_classes})
    manager = tf.train.CheckpointManager(
        checkpoints.make_checkpoint(model, optimizer, step_var),
        logdir,
        max_to_keep=2,
        checkpoint_name=checkpoints.CHECKPOINT_NAME,
    )
    prefix = manager.save(checkpoint_number=step)
    return model, prefix


def _image(size=41, seed=1):
    return np.random.RandomState(seed).normal(0, 50, (1, size, size, 3)).astype("float32")


def test_resolve_checkpoint_from_logdir_prefix_and_files(tmp_path):
    _, prefix = _save_run(str(tmp_path))
    assert prefix == os.path.join(str(tmp_path), "ckpt-7")
    assert checkpoints.resolve_checkpoint(str(tmp_path)) == prefix
    assert checkpoints.resolve_checkpoint(prefix) == prefix
    assert checkpoints.resolve_checkpoint(prefix + ".index") == prefix
    assert checkpoints.resolve_checkpoint(prefix + ".data-00000-of-00001") == prefix


def test_resolve_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoint"):
        checkpoints.resolve_checkpoint(str(tmp_path))
    with pytest.raises(UserError, match="not a checkpoint prefix"):
        checkpoints.resolve_checkpoint(str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="--checkpoint"):
        checkpoints.resolve_checkpoint(None)


def test_run_info_round_trip(tmp_path):
    model, prefix = _save_run(str(tmp_path))
    info = checkpoints.read_run_info(str(tmp_path))
    assert info["checkpoint"] == prefix
    assert info["step"] == 7
    assert info["model_config"]["num_classes"] == 3
    assert info["model_config"] == json.loads(json.dumps(model.get_config()))
    assert info["dataset_info"]["palette"][1] == [255, 0, 0]
    assert "splits" not in info["dataset_info"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.slow
def test_load_model_at_another_output_stride_equals_rebuild(tmp_path):
    """Variables restored by path into a model built from scratch at output stride 8 give
    exactly the outputs of the trained model switched to stride 8 in memory."""
    model, _ = _save_run(str(tmp_path), output_stride=16)
    same = checkpoints.load_model(str(tmp_path))
    np.testing.assert_array_equal(np.asarray(same(_image())), np.asarray(model(_image())))
    at_8 = checkpoints.load_model(str(tmp_path), output_stride=8, input_shape=(41, 41, 3))
    assert isinstance(at_8, DeepLabV3) and at_8.output_stride == 8
    assert at_8.model_input_shape == (41, 41, 3)
    reference = build_model(num_classes=3, output_stride=8, **TINY)
    reference.set_weights(model.get_weights())
    expected = np.asarray(reference(_image()))
    np.testing.assert_allclose(np.asarray(at_8(_image())), expected, rtol=1e-5, atol=1e-5)
    # and the stride actually matters: stride 8 output differs from stride 16 output
    assert np.abs(expected - np.asarray(model(_image()))).max() > 1e-3


def test_load_model_rejects_other_num_classes_and_missing_config(tmp_path):
    _save_run(str(tmp_path))
    with pytest.raises(
        ConfigError, match="was trained with num_classes=3, but num_classes=5 is asked for"
    ):
        checkpoints.load_model(str(tmp_path), num_classes=5)
    os.remove(tmp_path / checkpoints.MODEL_CONFIG_FILE)
    with pytest.raises(UserError, match="model_config.json is missing"):
        checkpoints.load_model(str(tmp_path))


def test_restore_for_finetuning_with_other_num_classes_skips_only_logits(tmp_path):
    source, _ = _save_run(str(tmp_path), num_classes=5)
    target = build_model(num_classes=3, **TINY)
    logits_before = np.asarray(target.get_layer("logits").kernel).copy()
    skipped = checkpoints.restore_for_finetuning(target, str(tmp_path))
    assert skipped == ["logits/bias", "logits/kernel"]
    source_values = {v.path: np.asarray(v) for v in source.weights}
    for variable in target.weights:
        if variable.path.startswith("logits/"):
            continue
        np.testing.assert_array_equal(np.asarray(variable), source_values[variable.path])
    np.testing.assert_array_equal(np.asarray(target.get_layer("logits").kernel), logits_before)


def test_restore_for_finetuning_same_classes_restores_everything(tmp_path):
    source, _ = _save_run(str(tmp_path), num_classes=3)
    target = build_model(num_classes=3, output_stride=8, **TINY)
    assert checkpoints.restore_for_finetuning(target, str(tmp_path)) == []
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_weights_reports_mismatch(tmp_path):
    _save_run(str(tmp_path), num_classes=5)
    target = build_model(num_classes=3, **TINY)
    with pytest.raises(UserError, match="logits/kernel: checkpoint"):
        checkpoints.restore_weights(target, str(tmp_path))
