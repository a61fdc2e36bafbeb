"""Fault injection on a run's checkpoints: a restart never starts from step 0 over intact
checkpoints, skips broken ones with a line naming them, and keeps only finite weights."""

import os
import re
import shlex
import shutil

import numpy as np
import pytest

import harness
from deeplab.common.errors import UserError
from deeplab.config.experiment import ExperimentConfig
from deeplab.logdir import checkpoints
from deeplab.training import bookkeeping
from deeplab.training import trainer as train_lib
from namespaces import private_tmpfs_or_skip  # pylint: disable=import-error
from namespaces import run_in_namespace  # pylint: disable=import-error

MODEL = {
    "backbone": "resnet14_tiny",
    "num_classes": 3,
    "output_stride": 16,
    "multi_grid": (1, 2, 4),
    "atrous_rates": (1, 2, 3),
    "image_pooling": True,
    "batch_norm_momentum": 0.9,
    "aspp_filters": 8,
}


def _config(data_dir, logdir, **overrides):
    model = dict(MODEL)
    model.pop("num_classes")
    values = dict(
        dataset_dir=data_dir,
        logdir=str(logdir),
        model=model,
        crop_size=(33, 33),
        batch_size=2,
        training_steps=6,
        base_learning_rate=0.01,
        min_scale_factor=1.0,
        max_scale_factor=1.0,
        shuffle_buffer=8,
        save_checkpoint_steps=2,
        log_steps=100,
        image_summary_steps=0,
        keep_checkpoints=10,
        seed=0,
    )
    values.update(overrides)
    return ExperimentConfig.create(**values)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A 6-step run with ckpt-2, -4, -6, copied fresh for each test."""
    logdir = tmp_path_factory.mktemp("finished")
    train_lib.train(_config(data_dir, logdir))
    return str(logdir)


@pytest.fixture()
def run(finished_run, tmp_path):
    logdir = str(tmp_path / "run")
    shutil.copytree(finished_run, logdir)
    return logdir


def _resume(data_dir, logdir, library_log, **overrides):
    result = train_lib.train(_config(data_dir, logdir, training_steps=8, **overrides))
    return result, library_log.text()


def _truncate(prefix):
    data = [
        p
        for p in os.listdir(os.path.dirname(prefix))
        if p.startswith(os.path.basename(prefix) + ".data")
    ]
    path = os.path.join(os.path.dirname(prefix), data[0])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _flip_a_byte(prefix):
    data = [
        p
        for p in os.listdir(os.path.dirname(prefix))
        if p.startswith(os.path.basename(prefix) + ".data")
    ]
    path = os.path.join(os.path.dirname(prefix), data[0])
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 3)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte])
@pytest.mark.slow
def test_a_broken_latest_checkpoint_is_skipped_with_a_line(data_dir, run, library_log, damage):
    damage(os.path.join(run, "ckpt-6"))
    result, out = _resume(data_dir, run, library_log)
    assert "Skipped 1 newer checkpoint(s) that cannot be resumed from: ckpt-6: " in out
    assert f"Resuming from {run}/ckpt-4 at step 4" in out
    assert result.resumed_from == 4 and result.step == 8
    # The intact older ones were never touched.
    assert checkpoints.verify_checkpoint(os.path.join(run, "ckpt-2")) is None


@pytest.mark.slow
def test_a_deleted_latest_checkpoint_resumes_from_the_previous(data_dir, run, library_log):
    for name in os.listdir(run):
        if name.startswith("ckpt-6."):
            os.remove(os.path.join(run, name))
    result, out = _resume(data_dir, run, library_log)
    assert result.resumed_from == 4, out
    assert "steps 4->8" in out


@pytest.mark.parametrize("pointer", ["garbage {{{ not a proto", ""])
@pytest.mark.slow
def test_a_garbage_or_empty_pointer_file_resumes_from_the_newest_on_disk(
    data_dir, run, library_log, pointer
):
    with open(os.path.join(run, "checkpoint"), "w", encoding="utf-8") as handle:
        handle.write(pointer)
    result, out = _resume(data_dir, run, library_log)
    assert result.resumed_from == 6, out


@pytest.mark.slow
def test_all_checkpoints_broken_is_an_error_unless_fresh_start(data_dir, run, library_log):
    for step in (2, 4, 6):
        _truncate(os.path.join(run, f"ckpt-{step}"))
    with pytest.raises(
        UserError,
        match=r"none can be resumed from: ckpt-6 .*ckpt-4 .*ckpt-2 .*"
        r"--fresh_start",
    ):
        _resume(data_dir, run, library_log)
    result, out = _resume(data_dir, run, library_log, fresh_start=True)
    assert result.resumed_from == 0 and result.step == 8
    assert "--fresh_start: training" in out


@pytest.mark.slow
def test_leftovers_of_interrupted_writes_are_removed(data_dir, run, library_log):
    os.makedirs(os.path.join(run, "ckpt-8_temp", "part"))
    with open(os.path.join(run, "checkpoint.tmp1234"), "w", encoding="utf-8") as handle:
        handle.write("half")
    result, out = _resume(data_dir, run, library_log)
    assert (
        "Removed the leftovers of interrupted checkpoint writes: checkpoint.tmp1234, ckpt-8_temp"
        in out
    )
    assert not os.path.exists(os.path.join(run, "ckpt-8_temp"))
    assert result.step == 8


@pytest.mark.slow
def test_non_finite_weights_are_never_checkpointed(data_dir, tmp_path):
    """A rate that overflows the weights: the run stops, and every checkpoint it left is finite."""
    logdir = str(tmp_path / "diverged")
    # At this rate the loss of step 2 is already ~1e10 per pixel (a diverged loss): the run
    # stops there and sets ckpt-1 aside.
    with pytest.raises(
        bookkeeping.NonFiniteLossError, match="non-finite weights after the update|diverged loss"
    ):
        train_lib.train(
            _config(
                data_dir, logdir, base_learning_rate=1e6, save_checkpoint_steps=1, training_steps=6
            )
        )
    kept = list(checkpoints.checkpoint_steps_on_disk(logdir).values())
    aside = os.path.join(logdir, checkpoints.DIVERGED_DIR)
    for folder in os.listdir(aside):
        kept += checkpoints.checkpoint_steps_on_disk(os.path.join(aside, folder)).values()
    assert kept, "the run should have checkpointed its first, finite steps"
    for prefix in kept:
        assert checkpoints.verify_checkpoint(prefix) is None, prefix


@pytest.mark.slow
def test_diverged_checkpoint_is_set_aside_and_the_rerun_resumes_before_it(data_dir, tmp_path):
    """Finite but diverged weights: the step that starts from them has a non-finite loss or
    gradients, so that checkpoint moves to diverged/ and a rerun with a sane rate goes on from
    the one before instead of stopping at the same step again (and never starts at step 0)."""
    logdir = str(tmp_path / "run")
    huge = dict(
        base_learning_rate=1e5, save_checkpoint_steps=1, training_steps=8, deterministic=True
    )
    # Two sane steps first (ckpt-1, ckpt-2), then the huge rate: the update of step 3 gives
    # diverged weights (ckpt-3), and the first step from them diverges.
    train_lib.train(
        _config(data_dir, logdir, **dict(huge, base_learning_rate=0.01, stop_at_step=2))
    )
    with pytest.raises(bookkeeping.NonFiniteLossError) as caught:
        train_lib.train(_config(data_dir, logdir, **huge))
    message = str(caught.value)
    match = re.search(
        r"(?:non-finite loss or gradients|diverged loss) at step (\d+) .*ckpt-(\d+) holds the "
        r"weights that gave it and was moved to .*diverged/ckpt-\d+-[\d-]+; a rerun resumes from "
        r"(.*ckpt-\d+)\.",
        message,
    )
    assert match, message
    stopped, bad = int(match.group(1)), int(match.group(2))
    assert bad == stopped - 1 and bad >= 2, message
    (aside,) = [
        os.path.join(logdir, checkpoints.DIVERGED_DIR, d)
        for d in os.listdir(os.path.join(logdir, checkpoints.DIVERGED_DIR))
    ]
    assert os.path.basename(aside).startswith(f"ckpt-{bad}-") and aside in message
    assert os.path.exists(os.path.join(aside, f"ckpt-{bad}.index"))
    with open(os.path.join(aside, "why.txt"), encoding="utf-8") as handle:
        assert f"step {stopped}" in handle.read()
    assert checkpoints.verify_checkpoint(os.path.join(aside, f"ckpt-{bad}")) is None  # finite
    assert sorted(checkpoints.checkpoint_steps_on_disk(logdir)) == list(range(1, bad))
    assert match.group(3) == os.path.join(logdir, f"ckpt-{bad - 1}")
    assert checkpoints.resolve_checkpoint(logdir) == match.group(3)

    # The old behaviour kept that checkpoint as "last good": put it back and resume with a sane
    # rate. The first step from it stops again, and sets it aside again.
    for name in os.listdir(aside):
        if name.startswith(f"ckpt-{bad}."):
            shutil.copy(os.path.join(aside, name), os.path.join(logdir, name))
    sane = dict(huge, base_learning_rate=0.01)
    with pytest.raises(
        bookkeeping.NonFiniteLossError, match=rf"at step {bad + 1} .*ckpt-{bad} holds the weights"
    ):
        train_lib.train(_config(data_dir, logdir, **sane))
    # Set aside twice, kept twice: the second move went to a folder of its own.
    assert len(os.listdir(os.path.join(logdir, checkpoints.DIVERGED_DIR))) == 2
    result = train_lib.train(_config(data_dir, logdir, **sane))
    assert result.resumed_from == bad - 1 and result.step == 8


@pytest.mark.slow
def test_set_aside_works_in_a_logdir_with_glob_characters(run):
    """The files are found by name: [ ] in the path must not make the move a silent no-op."""
    odd = run + "[1]*"
    os.rename(run, odd)
    folder, resume_from = checkpoints.set_aside_checkpoint(odd, os.path.join(odd, "ckpt-6"), "test")
    assert sorted(os.listdir(folder)) == ["ckpt-6.data-00000-of-00001", "ckpt-6.index", "why.txt"]
    assert resume_from == os.path.join(odd, "ckpt-4")
    assert sorted(checkpoints.checkpoint_steps_on_disk(odd)) == [2, 4]


def test_verify_checkpoint_names_non_finite_values(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    bad = tf.train.Checkpoint(v=tf.Variable(np.array([1.0, np.inf], np.float32)))
    prefix = bad.write(str(tmp_path / "bad"))
    assert "non-finite values in v/" in checkpoints.verify_checkpoint(prefix)


@pytest.mark.slow
def test_a_schedule_shorter_than_the_run_so_far_is_an_error(data_dir, run):
    from deeplab.common.errors import ConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError, match=r"--training_steps=3 is below step 6 .*ckpt-6"):
        train_lib.train(_config(data_dir, run, training_steps=3))


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_rerun_resumes(data_dir, tmp_path):
    """The logdir on a 13 MB tmpfs (5 MB checkpoints): the third checkpoint cannot be written.
    The run stops with one line naming it and the intact one, leaves no partial files; with
    more space the same command resumes from the intact checkpoint. Needs a private mount
    namespace (unshare --user --mount); skipped where there is none."""
    from test_train import TINY_FLAGS  # pylint: disable=import-error,import-outside-toplevel

    namespace = private_tmpfs_or_skip(tmp_path)
    mount = tmp_path / "small"
    mount.mkdir()
    train = shlex.join(
        harness.command(
            "deeplab.train",
            f"--dataset_dir={data_dir}",
            f"--logdir={mount}/run",
            "--training_steps=5",
            "--save_checkpoint_steps=1",
            "--keep_checkpoints=10",
            *TINY_FLAGS,
        )
    )
    script = (
        f'mount -t tmpfs -o size=13m tmpfs {mount} && {train}; echo "first exit $?"; '
        f'ls {mount}/run; mount -o remount,size=64m {mount} && {train}; echo "second exit $?"'
    )
    result = run_in_namespace(namespace, script)
    out = result.stdout
    first, second = out.split("first exit")
    assert "Traceback" not in first, first[-3000:]
    match = re.search(
        r"error: cannot write checkpoint ckpt-(\d) in \S+/run \(([^)]*)\); "
        r"(\S+/ckpt-(\d)) is intact: free space there and run the same command",
        first,
    )
    assert match, first[-3000:]
    failed, kept = int(match.group(1)), int(match.group(4))
    assert kept == failed - 1 >= 1 and "space" in match.group(2).lower(), match.group(0)
    assert re.match(r" [1-9]", second), second[:200]
    listing = second.split("\n", 1)[1].split("second exit")[0]
    assert f"ckpt-{kept}.index" in listing and f"ckpt-{failed}" not in listing, listing
    assert "_temp" not in listing and "checkpoint.tmp" not in listing, listing
    assert f"steps {kept}->5" in second and "second exit 0" in second, second[-3000:]
