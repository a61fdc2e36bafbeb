"""Every folder a binary writes into: a path that is a file, or cannot be created, is one line
naming the flag before anything is computed or written (it used to be a FileExistsError
traceback from os.makedirs deep in the run)."""

import os

import numpy as np
import pytest

import export_fixtures as efx
import harness
import raw_fixtures as fx
from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.config.experiment import ExperimentConfig
from deeplab.data import convert
from deeplab.data import raw_datasets
from deeplab.data.datasets_info import DatasetSpec
from deeplab.data.datasets_info import color_map
from deeplab.evaluation import vis_export
from deeplab.export import predictor
from deeplab.export import saved_model
from deeplab.training import trainer as train_lib


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return str(path)


def test_ensure_folder(tmp_path, a_file):
    atomic_io.ensure_folder(str(tmp_path / "new" / "deeper"), "--x")
    assert os.path.isdir(tmp_path / "new" / "deeper")
    with pytest.raises(
        ConfigError, match=r"^--x=.*afile is a file, not a folder; choose a folder$"
    ):
        atomic_io.ensure_folder(a_file, "--x")
    with pytest.raises(
        ConfigError, match=r"^--x=.*afile/sub: cannot create the folder \(Not a directory\)$"
    ):
        atomic_io.ensure_folder(os.path.join(a_file, "sub"), "--x")
    atomic_io.ensure_folder("gs://bucket/run", "--x")  # remote: TensorFlow's to check


def test_train_logdir(data_dir, a_file):
    config = ExperimentConfig.create(
        dataset_dir=data_dir, logdir=a_file, model={"backbone": "resnet14_tiny"}, training_steps=1
    )
    with pytest.raises(ConfigError, match="--logdir=.*afile is a file"):
        train_lib.train(config)
    with open(a_file, encoding="utf-8") as handle:
        assert handle.read() == "not a folder"


def test_export_predict_visualize(tmp_path_factory, a_file, tmp_path):
    run_dir = efx.shared_tiny_run(tmp_path_factory)["run_dir"]
    with pytest.raises(ConfigError, match="--export_dir=.*afile is a file"):
        saved_model.run_export(run_dir, a_file)
    image = efx.structured_images(1, (20, 20))[0]
    fx.save(tmp_path / "in.png", image)
    segmenter = predictor.make_segmenter(checkpoint=run_dir)
    with pytest.raises(ConfigError, match="--output_dir=.*afile is a file"):
        predictor.predict_files(segmenter, [str(tmp_path / "in.png")], a_file)
    with pytest.raises(ConfigError, match="--vis_dir=.*afile is a file"):
        vis_export.visualize(run_dir, vis_dir=a_file, input_images=str(tmp_path / "in.png"))


def test_converter_and_synthetic_output_dir(tmp_path, a_file):
    root = fx.make_folder(tmp_path / "raw")
    specs = raw_datasets.folder_examples(root, ["train"])
    spec = DatasetSpec("toy", 3, 255, ("a", "b", "c"), color_map(3))
    with pytest.raises(ConfigError, match="--output_dir=.*afile is a file"):
        convert.convert_splits(specs, a_file, dataset=spec, num_workers=0, progress=False)
    result = harness.run(
        "datasets/make_synthetic.py", f"--output_dir={tmp_path / 'syn'}", "--num_classes=0"
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1] == "error: --num_classes must be at least 2, got 0"
    )
    assert not os.path.exists(tmp_path / "syn")
    np.testing.assert_equal(os.path.exists(a_file), True)
