"""A dataset.json whose class count disagrees with its labels: one clear line, never a 64-line
InvalidArgumentError mid-run, and never a silent model with the wrong number of logits."""

import json
import logging
import os
import shutil

import pytest

from deeplab.common.errors import DataError
from deeplab.config.experiment import ExperimentConfig
from deeplab.data import input_pipeline
from deeplab.data import tfrecord
from deeplab.training import trainer as train_lib

MODEL = {
    "backbone": "resnet14_tiny",
    "output_stride": 16,
    "multi_grid": (1, 2, 4),
    "atrous_rates": (1, 2, 3),
    "image_pooling": True,
    "aspp_filters": 8,
}


def _edited_copy(data_dir, tmp_path, num_classes, keep_label_classes=True):
    """data_dir (3 classes) with dataset.json claiming ``num_classes``."""
    copy = str(tmp_path / f"claims{num_classes}")
    shutil.copytree(data_dir, copy)
    path = os.path.join(copy, "dataset.json")
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    names = info["class_names"] + [f"extra{i}" for i in range(8)]
    palette = info["palette"] + [[9, 9, 9]] * 8
    info.update(
        num_classes=num_classes, class_names=names[:num_classes], palette=palette[:num_classes]
    )
    if not keep_label_classes:  # as a dataset written before label_classes was recorded
        info.pop("label_classes")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    return copy


def _train(dataset_dir, logdir):
    return train_lib.train(
        ExperimentConfig.create(
            dataset_dir=dataset_dir,
            logdir=str(logdir),
            model=dict(MODEL),
            crop_size=(33, 33),
            batch_size=2,
            training_steps=2,
            min_scale_factor=1.0,
            max_scale_factor=1.0,
            shuffle_buffer=8,
            save_checkpoint_steps=2,
            log_steps=100,
            image_summary_steps=0,
            seed=0,
        )
    )


def test_the_synthetic_builder_records_the_classes_of_each_split(data_dir):
    info = tfrecord.read_dataset_info(data_dir)
    assert info["label_classes"] == {"train": [0, 1, 2], "val": [0, 1, 2]}


def test_check_label_classes_errors_and_notes():
    info = {
        "num_classes": 4,
        "ignore_label": 255,
        "class_names": ["a", "b", "c", "d"],
        "label_classes": {"train": [0, 1, 255]},
    }
    note = tfrecord.check_label_classes(info, "train", "x/dataset.json")
    assert note == (
        "x/dataset.json: no label of split 'train' holds class(es) 2 (c), 3 (d) of its "
        "num_classes=4; those logits are only ever pushed down"
    )
    assert tfrecord.check_label_classes(info, "val") is None  # nothing recorded: no claim
    info["label_classes"]["train"] = [0, 1, 2, 3, 5, 7]
    with pytest.raises(
        DataError,
        match=r"^x/dataset.json: num_classes=4, but the 'train' labels "
        r"hold class ids \[5, 7\]",
    ):
        tfrecord.check_label_classes(info, "train", "x/dataset.json")
    with pytest.raises(DataError, match="label_classes must map listed splits"):
        tfrecord.validate_dataset_info(
            {**info, "name": "n", "palette": [[0, 0, 0]] * 4, "splits": {"val": 1}}, "d.json"
        )


def test_too_few_classes_is_an_error_before_training(data_dir, tmp_path):
    claims2 = _edited_copy(data_dir, tmp_path, 2)
    with pytest.raises(
        DataError,
        match=r"claims2/dataset.json: num_classes=2, but the 'train' "
        r"labels hold class ids \[2\]",
    ):
        _train(claims2, tmp_path / "run")
    assert not os.path.exists(tmp_path / "run" / "ckpt-2.index")
    with pytest.raises(DataError, match="'val' labels hold class ids"):
        input_pipeline.make_eval_dataset(claims2, "val")


@pytest.mark.slow
def test_too_few_classes_without_a_record_fails_in_one_line_at_the_first_step(data_dir, tmp_path):
    claims2 = _edited_copy(data_dir, tmp_path, 2, keep_label_classes=False)
    with pytest.raises(DataError) as caught:
        _train(claims2, tmp_path / "run")
    assert str(caught.value) == (
        f"{claims2} split 'train': labels must be class indices in [0, 2) or the ignore label "
        "255; check num_classes and ignore_label (dataset.json) against the label files; values "
        "seen, e.g.: 2"
    )


@pytest.mark.slow
def test_too_many_classes_trains_with_a_warning_naming_them(data_dir, tmp_path, library_log):
    claims5 = _edited_copy(data_dir, tmp_path, 5)
    result = _train(claims5, tmp_path / "run")
    assert result.step == 2
    out = library_log.text(logging.WARNING)
    assert (
        f"{claims5}/dataset.json: no label of split 'train' holds class(es) 3 (extra0), "
        "4 (extra1) of its num_classes=5"
    ) in out
