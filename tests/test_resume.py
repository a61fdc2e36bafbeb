"""Exact resume (--deterministic): a run killed with SIGKILL and resumed reproduces the
uninterrupted run's weights. The data stream continues where it stopped (same seed, the batches
already trained on skipped as records, every later example augmented as before)."""

import os
import signal
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import harness
from deeplab.data import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Random scale, crop and flip, and ASPP dropout: every source of randomness a step has.
EXACT = dict(
    deterministic=True,
    training_steps=6,
    save_checkpoint_steps=1,
    min_scale_factor=0.5,
    max_scale_factor=1.5,
    random_flip=True,
)

# The killed run, in its own process: SIGKILL itself at a chosen point of the checkpoint
# sequence (the process cannot react; nothing is flushed).
KILLED_RUN = textwrap.dedent(r"""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from deeplab.training import trainer as train_lib  # first: it chooses TensorFlow's CPU kernels
    from deeplab.training import bookkeeping
    from deeplab.common import log
    from deeplab.config.experiment import ExperimentConfig
    import tensorflow as tf
    from test_checkpoint_safety import _config
    from test_resume import EXACT
    data_dir, logdir, mode = sys.argv[2:5]
    original = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kwargs):
        if mode == "before_save_4" and checkpoint_number == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # step 4 trained, not saved
        path = original(self, checkpoint_number=checkpoint_number, **kwargs)
        if mode == "after_save_3" and checkpoint_number == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    tf.train.CheckpointManager.save = save
    with log.console_output():  # the run's lines printed, as deeplab.train prints them
        train_lib.train(_config(data_dir, logdir, **EXACT))
    sys.exit(7)  # not killed
""")


def _weights(logdir):
    reader = tf.train.load_checkpoint(logdir)
    # Every saved value: weights, BN statistics, the optimizer's momentum, the step.
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(logdir)
        if name.split("/")[0] in ("weights", "optimizer", "step")
    }


def _run(tmp_path, data_dir, logdir, mode):
    """KILLED_RUN in a fresh process (mode "none": not killed). Every run of the comparison runs
    in a process of its own: two fresh processes train bitwise alike, while a run inside the
    test process may differ from them in the last bits (what else it imported and set)."""
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    tests = os.path.join(REPO, "tests")
    return harness.run(script, tests, data_dir, logdir, mode, pythonpath=[tests])


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("uninterrupted")
    result = _run(logdir, data_dir, logdir / "run", "none")
    assert result.returncode == 7, result.stderr[-3000:]
    return _weights(str(logdir / "run"))


@pytest.mark.parametrize("mode,resumed_from", [("after_save_3", 3), ("before_save_4", 3)])
@pytest.mark.slow
def test_kill_9_and_resume_reproduces_the_uninterrupted_weights(
    data_dir, tmp_path, uninterrupted, mode, resumed_from
):
    logdir = str(tmp_path / "killed")
    child = _run(tmp_path, data_dir, logdir, mode)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert tf.train.latest_checkpoint(logdir).endswith(f"ckpt-{resumed_from}")
    resume = _run(tmp_path, data_dir, logdir, "none")
    assert resume.returncode == 7, resume.stderr[-3000:]
    assert f"steps {resumed_from}->6" in resume.stdout, resume.stdout[-2000:]
    resumed = _weights(logdir)
    assert sorted(resumed) == sorted(uninterrupted) and len(resumed) > 100
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_without_deterministic_a_resumed_stream_is_a_new_one(data_dir):
    """What --deterministic changes: skip_batches continues the stream; the default reseeds."""

    def batches(seed, skip, count):
        ds = input_pipeline.make_train_dataset(
            data_dir,
            "train",
            batch_size=2,
            crop_size=33,
            min_scale=0.5,
            max_scale=1.5,
            seed=seed,
            deterministic=True,
            skip_batches=skip,
            shuffle_buffer=8,
        )
        return [images.numpy() for images, _ in ds.take(count)]

    whole = batches(0, 0, 5)
    continued = batches(0, 3, 2)
    for a, b in zip(whole[3:], continued):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batches(0 + 1_000_003 * 3, 0, 1)[0], whole[3])


@pytest.mark.slow
def test_a_checkpoint_written_without_generator_states_still_resumes(
    data_dir, tmp_path, monkeypatch, library_log
):
    """Runs checkpointed before the random generators' states were saved resume as before."""
    from deeplab.logdir import checkpoints
    from deeplab.training import trainer as train_lib
    from test_checkpoint_safety import _config  # pylint: disable=import-error,import-outside-toplevel

    original = checkpoints.make_checkpoint
    monkeypatch.setattr(
        checkpoints,
        "make_checkpoint",
        lambda model, optimizer=None, step=None, rng=False: original(
            model, optimizer, step, rng=False
        ),
    )
    logdir = tmp_path / "old"
    train_lib.train(_config(data_dir, logdir, training_steps=4, stop_at_step=2))
    assert not checkpoints.checkpoint_has_rng(tf.train.latest_checkpoint(str(logdir)))
    monkeypatch.undo()
    result = train_lib.train(_config(data_dir, logdir, training_steps=4))
    assert "steps 2->4" in library_log.text() and 4 in result.history
    assert checkpoints.checkpoint_has_rng(tf.train.latest_checkpoint(str(logdir)))


@pytest.mark.slow
def test_a_run_written_before_a_model_option_existed_resumes(data_dir, tmp_path, library_log):
    """model_config.json of an older version lacks the options added since: they count as
    the values it was built with, so the same command resumes; a real difference still stops."""
    import json

    from deeplab.common.errors import ConfigError
    from deeplab.training import trainer as train_lib
    from test_checkpoint_safety import _config  # pylint: disable=import-error,import-outside-toplevel

    logdir = tmp_path / "older"
    train_lib.train(_config(data_dir, logdir, training_steps=3, stop_at_step=1))
    path = logdir / "model_config.json"
    saved = json.loads(path.read_text())
    for option in ("decoder_separable", "decoder_output_stride", "backbone_padding"):
        del saved[option]
    path.write_text(json.dumps(saved))
    train_lib.train(_config(data_dir, logdir, training_steps=3, stop_at_step=2))
    assert "steps 1->3" in library_log.text()
    saved["aspp_filters"] = 99
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"holds a run of another model \(aspp_filters differ"):
        train_lib.train(_config(data_dir, logdir, training_steps=3))
