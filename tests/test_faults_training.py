"""The fault suite, training / data / config half (issue 32): each case a user can cause, and
its outcome asserted: one clear line and the exit status, or the files left as they should be.

Cases: a diverged run and its rerun (diverged/), a converter re-run killed or out of space
(the dataset switches whole or not at all), one training per logdir (the lock), a corrupt
config.json, absurd crop / scale / tiling flags, the num_classes message, the warning of a
directly started cluster task."""

import os
import re
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab.logdir import checkpoints
from deeplab.training import bookkeeping
from deeplab.training import trainer as train_lib
from test_checkpoint_safety import _config  # pylint: disable=import-error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------------ item 1: divergence


def _values(loss=1.0, nonfinite=0.0):
    return {
        "cross_entropy": loss,
        "regularization": 0.0,
        "correct": 1.0,
        "valid": 2.0,
        "nonfinite": nonfinite,
        "learning_rate": 0.1,
    }


def _keeper(logdir):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="dense")])
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(
        checkpoints.make_checkpoint(model, step=step),
        logdir,
        max_to_keep=10,
        checkpoint_name="ckpt",
    )
    train = types.SimpleNamespace(
        training_steps=10,
        log_steps=100,
        image_summary_steps=0,
        save_checkpoint_steps=1,
        batch_size=2,
    )
    keeper = bookkeeping.Bookkeeper(
        model, manager, step, train, start_step=0, latest=None, end_step=10, chief=True
    )
    return model, keeper


def test_an_update_that_overflows_the_weights_sets_the_checkpoint_it_started_from_aside(
    tmp_path,
):
    """Weights that turn infinite in the update of step 3: ckpt-2 (the weights that update
    started from) goes to diverged/, and a rerun resumes from ckpt-1 (before: the run stopped
    naming ckpt-2 as the last good one, and every rerun resumed from it and stopped again)."""
    logdir = str(tmp_path)
    model, keeper = _keeper(logdir)
    keeper(1, _values())
    keeper(2, _values())
    model.layers[-1].kernel.assign(np.full((2, 2), np.inf, np.float32))
    with pytest.raises(bookkeeping.NonFiniteLossError) as caught:
        keeper(3, _values())
    message = str(caught.value)
    assert re.fullmatch(
        r"non-finite weights after the update of step 3: no checkpoint written for it, "
        r"training stopped; ckpt-2 holds the weights that gave it and was moved to "
        rf"{re.escape(logdir)}/diverged/ckpt-2-[\d-]+; a rerun resumes from "
        rf"{re.escape(logdir)}/ckpt-1\. Lower --base_learning_rate",
        message,
    ), message
    assert sorted(checkpoints.checkpoint_steps_on_disk(logdir)) == [1]
    assert checkpoints.resolve_checkpoint(logdir) == os.path.join(logdir, "ckpt-1")


def test_a_diverged_loss_stops_before_it_overflows(tmp_path):
    """A finite but absurd loss (1e8 nats per pixel) is a divergence too: the checkpoint of
    the step before is set aside at once instead of after more diverging steps."""
    logdir = str(tmp_path)
    _, keeper = _keeper(logdir)
    keeper(1, _values())
    keeper(2, _values())
    with pytest.raises(
        bookkeeping.NonFiniteLossError,
        match=r"diverged loss at step 3 \(cross-entropy 1e\+08 per pixel, above 1e\+06.*ckpt-2 "
        r"holds the weights that gave it .*a rerun resumes from .*ckpt-1\.",
    ):
        keeper(3, _values(loss=1e8))
    assert sorted(checkpoints.checkpoint_steps_on_disk(logdir)) == [1]
    # A sane loss far above the start is not a divergence.
    keeper(2, _values(loss=50.0))


def test_a_diverged_run_reruns_at_a_lower_rate(data_dir, tmp_path):
    """The issue's case: a rate of 1e6, a checkpoint every step. The run stops with one line,
    the checkpoint whose weights diverged is in diverged/, and the same command at a sane rate
    trains to the end (before: it resumed from that checkpoint and stopped again)."""
    logdir = str(tmp_path / "div")
    run = dict(save_checkpoint_steps=1, training_steps=6)
    with pytest.raises(bookkeeping.NonFiniteLossError) as caught:
        train_lib.train(_config(data_dir, logdir, base_learning_rate=1e6, **run))
    assert "was moved to" in str(caught.value), caught.value
    assert os.listdir(os.path.join(logdir, checkpoints.DIVERGED_DIR))
    for prefix in checkpoints.checkpoint_steps_on_disk(logdir).values():
        assert checkpoints.verify_checkpoint(prefix) is None
    result = train_lib.train(_config(data_dir, logdir, base_learning_rate=0.01, **run))
    assert result.step == 6
    assert all(np.isfinite(r["loss"]) and r["loss"] < 100 for r in result.history.values())
