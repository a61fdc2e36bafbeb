"""The package layout of issue 16 changed no number: a checkpoint written by the code before it
restores with the same logits and resumes, and the quick start trains with the same losses.
Splitting the model into parts (issue 28) changed none either: the checkpoints,
model_config.json files and ``.keras`` files of the monolithic model load with the same logits.

The fixtures in tests/fixtures/pre_refactor were written by
``tests/fixtures/pre_refactor/make.py`` at commit e6143c2, the last commit before the layout,
and (``parts_*``) by ``tests/fixtures/pre_refactor/make_parts.py`` at commit 8a13d62, the last
commit before the model was built from parts.
"""

import json
import os
import tarfile

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from deeplab.config import flags as experiment_flags
from deeplab.data import synthetic
from deeplab.logdir import checkpoints
from deeplab.model import preprocessing
from deeplab.model.deeplabv3 import DeepLabV3
from deeplab.model.settings import ModelSettings
from deeplab.training import trainer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pre_refactor")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Step-by-step losses are compared to this relative tolerance: equal on the machine that wrote
# them; another CPU's kernels round differently, and 20 steps keep that well below it, while a
# changed seed, data order, schedule or loss moves the losses by percents.
LOSS_RTOL = 2e-3


def _tiny_run(folder):
    """The pre-refactor training run (tiny_run.tar.xz, see make.py), unpacked into ``folder``."""
    with tarfile.open(os.path.join(FIXTURES, "tiny_run.tar.xz")) as archive:
        archive.extractall(folder, filter="data")
    return folder / "tiny_run"


def test_a_pre_refactor_checkpoint_restores_with_the_same_logits(tmp_path):
    model = checkpoints.load_model(str(_tiny_run(tmp_path) / "ckpt-2"))
    images = np.load(os.path.join(FIXTURES, "tiny_images.npy"))
    logits = np.asarray(model(preprocessing.normalize_image(images), training=False))
    expected = np.load(os.path.join(FIXTURES, "tiny_logits.npy"))
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# The models of make_parts.py: every backbone family, both heads, ASPP-lite, the decoder.
PARTS_MODELS = ("resnet_aspp_decoder", "resnet_cascade", "mobilenet_lite")


@pytest.fixture(scope="module", name="parts")
def _parts(tmp_path_factory):
    """The folder of the pre-change model files (parts_models.tar.xz) and their logits."""
    folder = tmp_path_factory.mktemp("parts")
    with tarfile.open(os.path.join(FIXTURES, "parts_models.tar.xz")) as archive:
        archive.extractall(folder, filter="data")
    return folder / "parts_models", dict(np.load(os.path.join(FIXTURES, "parts_logits.npz")))


def _assert_same_logits(model, expected, images):
    logits = np.asarray(model(images, training=False))
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", PARTS_MODELS)
def test_pre_parts_checkpoints_and_configs_load_with_the_same_logits(parts, name):
    folder, logits = parts
    recorded = json.load(open(folder / name / "model_config.json", encoding="utf-8"))
    model = checkpoints.load_model(str(folder / name))
    config = json.loads(json.dumps(model.get_config()))
    # Settings added since the fixture was written take their defaults.
    added = {key: config.pop(key) for key in set(config) - set(recorded)}
    assert config == recorded
    assert added == {key: ModelSettings.defaults()[key] for key in added}
    _assert_same_logits(model, logits[name], logits["images"])


@pytest.mark.parametrize("name", PARTS_MODELS)
def test_pre_parts_keras_files_load_with_the_same_logits(parts, name):
    folder, logits = parts
    model = keras.saving.load_model(str(folder / name / "model.keras"))
    assert isinstance(model, DeepLabV3)
    _assert_same_logits(model, logits[name], logits["images"])


@pytest.mark.slow
def test_a_pre_refactor_training_run_resumes(tmp_path):
    """The whole training checkpoint (optimizer slots, step, random generators) and the
    config.json of that time are read: the run continues from step 2."""
    data_dir = tmp_path / "data"
    synthetic.build_synthetic_dataset(
        str(data_dir), image_size=(40, 40), num_train=4, num_val=2, num_classes=5, seed=0
    )
    logdir = _tiny_run(tmp_path)
    recorded = json.load(open(logdir / "config.json", encoding="utf-8"))
    config = experiment_flags.experiment.ExperimentConfig.from_dict(recorded).replace(
        dataset_dir=str(data_dir),
        logdir=str(logdir),
        training_steps=3,
        image_summary_steps=0,
        summary_images=0,
    )
    assert config.model.aspp_filters == 8 and config.data.crop_size == (33, 33)
    result = trainer.train(config)
    assert result.resumed_from == 2 and result.step == 3
    assert np.isfinite(result.history[3]["loss"])


@pytest.mark.slow
def test_the_quick_start_trains_with_the_same_losses(tmp_path):
    with open(os.path.join(FIXTURES, "quickstart_losses.json"), encoding="utf-8") as f:
        expected = json.load(f)
    data = tmp_path / "synthetic"
    synthetic.build_synthetic_dataset(
        str(data), image_size=(96, 96), num_train=400, num_val=100, num_classes=5, seed=0
    )
    steps = 20
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(
            [
                "train",
                f"--flagfile={REPO_ROOT}/experiments/quickstart.flags",
                f"--dataset_dir={data}",
                f"--logdir={tmp_path / 'run'}",
                f"--stop_at_step={steps}",
                "--noeval_after_training",
                # The fixture predates the authors' logits conventions (issue 34): the old ones
                # must still give the same losses.
                "--logits_init_stddev=0",
                "--logits_bias_lr_multiplier=1",
            ]
        )
        config = experiment_flags.experiment_config()
    result = trainer.train(config)
    assert sorted(result.history) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        for key in ("loss", "cross_entropy", "learning_rate"):
            assert result.history[step][key] == pytest.approx(
                expected[str(step)][key], rel=LOSS_RTOL
            ), (step, key)
