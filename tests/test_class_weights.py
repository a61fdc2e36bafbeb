"""--class_weights=median_frequency / inverse_sqrt: the rules, the counts they start from, one
resolution at the start of a run (printed, in config.json, used by the loss); and a start that
fails leaves no logdir behind, with a missing --dataset_dir naming the datasets nearby."""

import json
import os
import shutil

import numpy as np
import pytest

import harness
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.config.experiment import ExperimentConfig
from deeplab.data import class_weights
from deeplab.data import records
from deeplab.data import tfrecord
from deeplab.training import trainer

TINY = {
    "backbone": "resnet14_tiny",
    "atrous_rates": (1, 2, 3),
    "aspp_filters": 16,
    "batch_norm_momentum": 0.9,
}


def _counts(histograms, num_classes=3, ignore=255):
    counts = class_weights.ClassCounts.empty(num_classes)
    for values in histograms:
        histogram = np.zeros(256, np.int64)
        for value, pixels in values.items():
            histogram[value] = pixels
        counts.add(histogram, ignore)
    return counts


def test_the_rules_follow_their_definitions():
    # class 0 in both images (70 + 60 of 120 + 100 pixels: ignored ones count in the
    # denominator, as SegNet's "all pixels of the images where c appears"), class 1 in image 1
    # (30 of 120), class 2 in image 2 (40 of 100)
    counts = _counts([{0: 70, 1: 30, 255: 20}, {0: 60, 2: 40}])
    freq = np.array([130 / 220, 30 / 120, 40 / 100])
    assert counts.frequencies() == pytest.approx(freq)
    median = np.median(freq)
    expected = median / freq
    got, note = class_weights.compute_weights("median_frequency", counts)
    assert got == pytest.approx(expected, abs=1e-6) and note is None
    assert got[2] == pytest.approx(1.0)  # the median class weighs 1
    milder, _ = class_weights.compute_weights("inverse_sqrt", counts)
    assert milder == pytest.approx(np.sqrt(expected), abs=1e-6)
    assert counts.ignored == 20 and counts.images.tolist() == [2, 1, 1]
    # an absent class gets 1 and is named
    absent, note = class_weights.compute_weights("median_frequency", _counts([{0: 5, 1: 5}]))
    assert absent[2] == 1.0 and "[2]" in note
    with pytest.raises(ConfigError, match="not a rule"):
        class_weights.compute_weights("median", counts)


def test_counts_of_records_are_the_decoded_labels(data_dir):
    import tensorflow as tf

    counts = class_weights.count_split(data_dir, "train", 3, 255)
    expected = np.zeros(3, np.int64)
    for path in tfrecord.list_shards(data_dir, "train"):
        for serialized in tf.data.TFRecordDataset(path):
            label = records.decode_example(serialized)["label"].numpy()
            expected += np.bincount(label[label < 3].ravel(), minlength=3)
    assert counts.pixels.tolist() == expected.tolist() and counts.num_images == 8


def test_the_flag_takes_a_rule_or_numbers():
    from deeplab.config import experiment

    config = ExperimentConfig.create(class_weights=("median_frequency",))
    assert config.train.class_weights == ("median_frequency",)
    parsed = experiment.from_flag_values({"class_weights": ["inverse_sqrt"]})
    assert parsed.train.class_weights == ("inverse_sqrt",)
    parsed = experiment.from_flag_values({"class_weights": ["1", "2.5"]})
    assert parsed.train.class_weights == (1.0, 2.5)
    # The flag's validator is the field's check on the parsed value.
    assert experiment.flag_value_passes("class_weights", ["median_frequency"])
    assert not experiment.flag_value_passes("class_weights", ["median"])
    assert not experiment.flag_value_passes("class_weights", ["median_frequency", "1"])


def _config(data_dir, logdir, **overrides):
    values = dict(
        dataset_dir=data_dir,
        logdir=str(logdir),
        model=dict(TINY),
        crop_size=(33, 33),
        batch_size=2,
        training_steps=1,
        min_scale_factor=1.0,
        max_scale_factor=1.0,
        shuffle_buffer=4,
        image_summary_steps=0,
        save_checkpoint_steps=1,
        seed=0,
    )
    values.update(overrides)
    return ExperimentConfig.create(**values)


@pytest.mark.slow
def test_a_rule_is_resolved_once_printed_recorded_and_used(data_dir, tmp_path, library_log):
    counts = class_weights.count_split(data_dir, "train", 3, 255)
    expected, _ = class_weights.compute_weights("median_frequency", counts)
    ruled = trainer.train(_config(data_dir, tmp_path / "rule", class_weights=("median_frequency",)))
    out = library_log.text()
    assert "Class weights (median_frequency, from the 8 labels of" in out
    record = json.load(open(tmp_path / "rule" / "config.json"))
    assert record["train"]["class_weights"] == ["median_frequency"]
    assert record["class_weights"] == pytest.approx(list(expected))
    listed = trainer.train(_config(data_dir, tmp_path / "list", class_weights=expected))
    assert json.load(open(tmp_path / "list" / "config.json"))["class_weights"] == pytest.approx(
        list(expected)
    )
    assert ruled.history[1]["cross_entropy"] == pytest.approx(
        listed.history[1]["cross_entropy"], rel=1e-6
    )
    with pytest.raises(ConfigError, match="one number per class or one of median_frequency"):
        trainer.resolve_class_weights(("often",), _config(data_dir, "x").data, {"num_classes": 3})


def test_a_failed_start_leaves_no_new_logdir(data_dir, tmp_path):
    new = tmp_path / "runs" / "new"
    with pytest.raises(ConfigError, match="--class_weights has 2 values"):
        trainer.train(_config(data_dir, new, class_weights=(1.0, 2.0)))
    assert not (tmp_path / "runs").exists()  # the folders it created, parents included
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        trainer.train(_config(data_dir, kept, class_weights=(1.0, 2.0)))
    assert (kept / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_missing_dataset_names_the_ones_nearby(data_dir, tmp_path):
    """The binary: a typo in --dataset_dir names the real dataset, suggests nothing at the
    typo, and the refused start leaves no logdir (no train.log) behind."""
    root = tmp_path / "work"
    shutil.copytree(data_dir, root / "data" / "camvid")
    (root / "data" / "notes").mkdir()
    with pytest.raises(DataError) as error:
        tfrecord.read_dataset_info(str(root / "data" / "camvd"))
    assert "nearby: " + str(root / "data" / "camvid") in str(error.value)
    assert "make_synthetic" not in str(error.value) and "--output_dir" not in str(error.value)
    result = harness.run(
        "deeplab.train",
        "--dataset_dir=data/camvd",
        "--logdir=runs/typo",
        "--backbone=resnet14_tiny",
        "--training_steps=1",
        cwd=root,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Folders with a dataset.json nearby: data/camvid" in result.stderr
    assert not (root / "runs").exists(), os.listdir(root / "runs")
    with pytest.raises(DataError, match="No folder next to it holds a dataset.json"):
        tfrecord.read_dataset_info(str(tmp_path / "nowhere" / "x"))
