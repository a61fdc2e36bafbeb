"""The fault suite, training / data / config half (issue 32): each case a user can cause, and
its outcome asserted: one clear line and the exit status, or the files left as they should be.

Cases: a diverged run and its rerun (diverged/), a converter re-run killed or out of space
(the dataset switches whole or not at all), one training per logdir (the lock), a corrupt
config.json, absurd crop / scale / tiling flags, the num_classes message, the warning of a
directly started cluster task."""

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from deeplab.common.inference_options import InferenceOptions
from deeplab.logdir import checkpoints
from deeplab.training import bookkeeping
from deeplab.training import trainer as train_lib
from namespaces import private_tmpfs_or_skip  # pylint: disable=import-error
from test_checkpoint_safety import _config  # pylint: disable=import-error
from test_train import _train  # pylint: disable=import-error

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


@pytest.mark.slow
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


# --------------------------------------------------------------- item 5: one run per logdir


def _tail_lines(text):
    """The lines a user reads: TensorFlow's and absl's start-up noise removed."""
    noise = re.compile(r"^(W0000|I0000|WARNING: All log)|oneDNN|cpu_feature_guard|absl::")
    return [line for line in text.splitlines() if line.strip() and not noise.search(line)]


@pytest.mark.slow
def test_a_second_training_on_a_live_logdir_is_refused_and_a_dead_ones_lock_taken_over(
    data_dir, tmp_path
):
    """Two real processes on one logdir: the second stops with one line naming the first
    (exit 1) and writes nothing; after the first is killed (-9) its lock is recognised as
    stale and a new run takes it over with a line, trains, and removes it."""
    logdir = tmp_path / "dup"
    lock_path = logdir / "train.lock"
    first = harness.start(
        # Never finishes by itself, never checkpoints: killed below.
        *_train(data_dir, logdir, "--training_steps=100000", "--save_checkpoint_steps=100000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The event: the lock file names the first process (it writes it before training).
        deadline = time.time() + 300
        holder = None
        while holder is None or holder.get("pid") != first.pid:
            assert first.poll() is None, "the first run ended early"
            assert time.time() < deadline, "no lock file within 300 s"
            time.sleep(0.05)
            try:
                holder = json.loads(lock_path.read_text())
            except (OSError, ValueError):
                holder = None
        second = harness.run(*_train(data_dir, logdir, "--training_steps=3"))
        assert first.poll() is None, "the first run must still hold the lock"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    lines = _tail_lines(second.stderr)
    assert second.returncode == 1, second.stderr[-3000:]
    assert lines == [lines[-1]] and re.fullmatch(
        rf"deeplab\.train: error: --logdir={re.escape(str(logdir))} is in use by another "
        rf"training run \(pid {first.pid} on host \S+, started [\d:\- ]+; lock file "
        rf"{re.escape(str(lock_path))}\): wait for it to end or stop it, or train into another "
        r"--logdir",
        lines[-1],
    ), second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert not [n for n in os.listdir(logdir) if n.startswith("ckpt-")]

    # kill -9 left the file behind, unlocked: the next run takes it over and says so.
    assert json.loads(lock_path.read_text())["pid"] == first.pid
    third = harness.run(*_train(data_dir, logdir, "--training_steps=1"))
    assert third.returncode == 0, third.stderr[-3000:]
    assert re.search(
        rf"Took over the lock of {re.escape(str(logdir))} left by a training run that is no "
        rf"longer running \(pid {first.pid} on host \S+, started ",
        third.stdout,
    ), third.stdout[-3000:]
    assert os.path.exists(logdir / "ckpt-1.index") and not os.path.exists(lock_path)


@pytest.mark.slow
def test_readers_of_a_logdir_do_not_take_the_lock(data_dir, tmp_path):
    """While a run holds the lock, a second training in the same process is refused, and the
    evaluator of that logdir (what --watch and a cluster's evaluator run) reads it as usual."""
    from deeplab.evaluation import evaluator  # pylint: disable=import-outside-toplevel
    from deeplab.logdir import lock  # pylint: disable=import-outside-toplevel

    logdir = str(tmp_path / "run")
    train_lib.train(_config(data_dir, logdir, training_steps=1))
    with lock.training_lock(logdir):
        with pytest.raises(lock.LogdirInUseError, match=rf"pid {os.getpid()} on host"):
            train_lib.train(_config(data_dir, logdir, training_steps=2))
        results = evaluator.evaluate_checkpoint(logdir, dataset_dir=data_dir, split="val")
        assert results["num_images"] == 4
    assert not os.path.exists(os.path.join(logdir, lock.LOCK_FILE))


# ------------------------------------------------- item 2: a converter re-run switches whole


def _raw_dataset(root, prefix, n, size, num_classes=3):
    """make_folder's tree with images named <prefix>0.., val = the last one."""
    import raw_fixtures as fx  # pylint: disable=import-error,import-outside-toplevel

    fx.make_folder(root, n=n, size=size, num_classes=num_classes)
    for i in range(n):
        for folder in ("images", "labels"):
            os.replace(root / folder / f"img{i}.png", root / folder / f"{prefix}{i}.png")
    (root / "train.txt").write_text("".join(f"{prefix}{i}\n" for i in range(n - 1)))
    (root / "val.txt").write_text(f"images/{prefix}{n - 1}.png labels/{prefix}{n - 1}.png\n")
    return root


def _read_split(out, split):
    from deeplab.data import records  # pylint: disable=import-outside-toplevel
    from deeplab.data import tfrecord  # pylint: disable=import-outside-toplevel

    return [
        records.decode_example(r)["filename"].numpy().decode()
        for r in tf.data.TFRecordDataset(tfrecord.list_shards(out, split))
    ]


def _convert(raw, out, name):
    from deeplab.data import convert  # pylint: disable=import-outside-toplevel
    from deeplab.data import raw_datasets  # pylint: disable=import-outside-toplevel
    from deeplab.data.datasets_info import DatasetSpec  # pylint: disable=import-outside-toplevel
    from deeplab.data.datasets_info import color_map  # pylint: disable=import-outside-toplevel

    specs = raw_datasets.folder_examples(raw, ["train", "val"], palette_masks=False)
    spec = DatasetSpec(name, 3, 255, ("a", "b", "c"), color_map(3))
    return convert.convert_splits(specs, out, dataset=spec, num_workers=0, progress=False)


def test_a_converter_rerun_killed_after_its_train_split_leaves_the_old_dataset_whole(
    tmp_path, monkeypatch
):
    """Dataset A, then B into the same folder, killed while B's val shards are renamed into
    place (B's train split is done): the folder still reads as A in every split, and B's
    train shards are gone (before: dataset.json named B's train shards and A's val shards)."""
    from deeplab.data import tfrecord  # pylint: disable=import-outside-toplevel

    out = tmp_path / "out"
    _convert(_raw_dataset(tmp_path / "a", "a", 5, (6, 8)), out, "A")
    before = {split: _read_split(out, split) for split in ("train", "val")}
    listing = sorted(os.listdir(out))
    b = _raw_dataset(tmp_path / "b", "b", 4, (5, 7))
    real_replace = os.replace

    def killed_at_val(src, dst):
        if os.path.basename(str(dst)).startswith("val-"):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_val)
    with pytest.raises(KeyboardInterrupt):
        _convert(b, out, "B")
    monkeypatch.undo()
    assert {split: _read_split(out, split) for split in ("train", "val")} == before
    assert tfrecord.read_dataset_info(out)["name"] == "A"
    assert sorted(os.listdir(out)) == listing  # nothing of B left behind
    _convert(b, out, "B")
    assert _read_split(out, "train") == ["b0", "b1", "b2"] and _read_split(out, "val") == ["b3"]
    assert len([n for n in os.listdir(out) if n.endswith(".tfrecord")]) == 2


@pytest.mark.slow
def test_a_converter_rerun_on_a_full_disk_is_one_line_and_leaves_the_old_dataset(tmp_path):
    """The dataset folder on a 1 MB tmpfs: A (a few KB) fits, B (1.4 MB of noise images) does
    not. The re-run stops with one line naming the folder and the reason, exit 1, no
    traceback, and the folder still holds A whole (before: a raw ResourceExhaustedError
    traceback)."""
    namespace = private_tmpfs_or_skip(tmp_path)
    a = _raw_dataset(tmp_path / "a", "a", 5, (6, 8))
    b = _raw_dataset(tmp_path / "b", "b", 4, (400, 400))
    mount = tmp_path / "small"
    mount.mkdir()
    out = mount / "out"

    def build(raw):
        return shlex.join(
            harness.command(
                "datasets/build_folder.py",
                f"--input_dir={raw}",
                f"--output_dir={out}",
                "--num_classes=3",
                "--num_workers=0",
                "--no_progress",
                f"--name={raw.name}",
            )
        )

    script = (
        f"mount -t tmpfs -o size=1m tmpfs {mount} && {build(a)} >/dev/null && "
        f'{build(b)}; echo "exit $?"; cp -r {out} {tmp_path}/after'
    )
    result = harness.run(namespace + ["sh", "-c", script])
    lines = _tail_lines(result.stderr)
    assert "exit 1" in result.stdout, (result.stdout, result.stderr[-3000:])
    assert len(lines) == 1 and re.fullmatch(
        rf"error: cannot write the 'train' shards in {re.escape(str(out))} \(.*No space left on "
        rf"device.*\); {re.escape(str(out))} holds the dataset it held before, unchanged "
        r"\(its dataset\.json and shards\)",
        lines[0],
    ), result.stderr[-3000:]
    after = tmp_path / "after"
    assert _read_split(after, "train") == ["a0", "a1", "a2", "a3"]
    assert _read_split(after, "val") == ["a4"]
    assert json.loads((after / "dataset.json").read_text())["name"] == "a"
    assert len([n for n in os.listdir(after) if n.endswith(".tfrecord")]) == 2


# ------------------------------------------------ item 4: a directly started server task


@pytest.mark.slow
def test_a_directly_started_ps_task_says_it_is_reachable_from_the_network(data_dir, tmp_path):
    """A ps task started by hand with TF_CONFIG naming 127.0.0.1 (no launcher namespace):
    its line says it is reachable from the network and how to fence it."""
    import queue  # pylint: disable=import-outside-toplevel
    import socket  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    from deeplab.orchestration import cluster  # pylint: disable=import-outside-toplevel

    ports = []
    for _ in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    tf_config = {
        "cluster": {
            "chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{ports[1]}"],
            "ps": [f"127.0.0.1:{ports[2]}"],
        },
        "task": {"type": "ps", "index": 0},
    }
    task = harness.start(
        *_train(data_dir, tmp_path / "run", "--strategy=parameter_server"),
        env={"TF_CONFIG": json.dumps(tf_config), cluster.NETNS_ENV: None},
    )
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in task.stdout], daemon=True)
    reader.start()
    seen, found = [], None
    try:
        # The event: the task's line about where it listens (it serves until killed).
        deadline = time.time() + 300
        while found is None and time.time() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            seen.append(line)
            if "gRPC server listens" in line:
                found = line.strip()
    finally:
        task.kill()
        task.wait(timeout=60)
    assert found, "".join(seen)[-3000:]
    port = ports[2]
    assert found == (
        "ps:0: TensorFlow's gRPC server listens unauthenticated on every interface of this "
        f"machine (0.0.0.0:{port}), whatever address TF_CONFIG names: this task is REACHABLE "
        "FROM THE NETWORK, and anyone who reaches the port can run code in it. Run it fenced: "
        "started by python -m deeplab.launch_local (a private network namespace), in a network "
        "namespace of its own (unshare --net, ip netns exec), or behind a firewall rule "
        "admitting only the cluster's hosts (e.g. iptables -A INPUT -p tcp --dport "
        f"{port} ! -s 10.0.0.0/24 -j DROP); WORKSPACE.md, 'Network security'"
    )


def test_a_task_inside_the_launchers_namespace_says_only_the_cluster_reaches_it():
    from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

    line = distribute.server_exposure_line("worker", 1, 2222, fenced=True)
    assert "private network namespace" in line and "REACHABLE" not in line


# ------------------------------------------------------- item 6: config.json and bad flags


@pytest.fixture(scope="module")
def one_step_run(data_dir, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("one_step") / "run"
    train_lib.train(_config(data_dir, logdir, training_steps=1))
    return logdir


@pytest.fixture()
def run_copy(one_step_run, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(one_step_run, logdir)
    return logdir


@pytest.mark.slow
def test_evaluate_with_a_corrupt_config_json_is_one_line(run_copy):
    """`deeplab.evaluate --logdir` over a truncated config.json: one line naming the file
    (before: a 34-line JSONDecodeError traceback)."""
    path = run_copy / "config.json"
    path.write_text(path.read_text()[:40])
    result = harness.run("deeplab.evaluate", f"--logdir={run_copy}")
    lines = _tail_lines(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1 and re.fullmatch(
        rf"deeplab\.evaluate: error: {re.escape(str(path))}: the run's recorded settings cannot "
        r"be read \(.+\); restore it, or delete it to use the flags alone",
        lines[0],
    ), result.stderr[-3000:]


@pytest.mark.slow
def test_a_resume_keeps_a_corrupt_config_json_aside(data_dir, run_copy, library_log):
    """A resume over an unreadable config.json does not overwrite it silently: the file is
    kept as config.json.unreadable-<time>, with a WARNING record, and a new one written."""
    from deeplab.logdir import run_record  # pylint: disable=import-outside-toplevel

    path = run_copy / "config.json"
    broken = path.read_text()[:40]
    path.write_text(broken)
    result = train_lib.train(_config(data_dir, run_copy, training_steps=2))
    assert result.resumed_from == 1 and result.step == 2
    (aside,) = [p for p in run_copy.iterdir() if p.name.startswith("config.json.unreadable-")]
    assert aside.read_text() == broken
    out = library_log.text(logging.WARNING)
    assert re.search(
        rf"{re.escape(str(path))}: the run's recorded settings cannot be read .*; kept "
        rf"it as {re.escape(str(aside))} and wrote a new config\.json",
        out,
    ), out
    assert run_record.read_experiment(str(run_copy)).train.training_steps == 2


@pytest.mark.slow
def test_a_crop_too_large_to_index_is_one_line_naming_the_flag(data_dir, tmp_path):
    """--crop_size=20000 (before: "Invalid value in tensor used for shape: -1094967296" deep
    in the first step)."""
    result = harness.run(*_train(data_dir, tmp_path / "run", "--crop_size=20000", "--batch_size=8"))
    lines = _tail_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]  # a usage error (two flags too large)
    assert lines == [
        "deeplab.train: error: --crop_size=20000,20000 with --batch_size=8: a batch of 9.6e+09 "
        "values (batch x H x W x 3) is more than TensorFlow can index (2^31); use a smaller "
        "--crop_size or --batch_size"
    ], result.stderr[-3000:]
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("flag", ["min_scale_factor", "max_scale_factor"])
@pytest.mark.parametrize("value", ["inf", "nan", "1e6"])
def test_an_infinite_scale_factor_is_refused_when_parsed(flag, value):
    from absl import flags  # pylint: disable=import-outside-toplevel
    from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel

    from deeplab.config import flags as experiment_flags  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    with flagsaver.flagsaver():
        with pytest.raises(
            flags.IllegalFlagValueError,
            match=rf"--{flag} must be positive and at most 16 \(finite\)",
        ):
            flags.FLAGS(["prog", f"--{flag}={value}"])


def test_an_infinite_scale_factor_in_a_config_is_refused(data_dir, tmp_path):
    from deeplab.common.errors import ConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError, match=r"--max_scale_factor must be positive and at most 16"):
        train_lib.train(
            _config(data_dir, tmp_path / "run", min_scale_factor=1.0, max_scale_factor=np.inf)
        )


# ------------------------------------------------- item 7: absurd tiling, num_classes wording


@pytest.mark.parametrize("tile, overlap", [(1, 0.25), (8, 0.99)])
@pytest.mark.slow
def test_an_absurd_tiling_is_refused_in_one_line(data_dir, one_step_run, tile, overlap):
    """1-pixel windows, or 8-pixel windows overlapping 99%: refused before the first window
    (before: 43 s for one 64x64 image at 29% mIOU against 80% whole, without a word)."""
    from deeplab.common.errors import ConfigError  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import evaluator  # pylint: disable=import-outside-toplevel

    with pytest.raises(
        ConfigError,
        match=rf"^--eval_tile_size={tile},{tile} with --eval_tile_overlap={overlap:g}: \d+ "
        r"windows do \d+x the work of the whole 40x40 image \(at most 16x is accepted\); use "
        r"larger windows \(at least the network's output stride, 16,",
    ):
        evaluator.evaluate_checkpoint(
            str(one_step_run),
            data_dir,
            options=InferenceOptions(tile_size=(tile, tile), tile_overlap=overlap),
        )


def test_usual_tilings_are_accepted():
    from deeplab.evaluation import inference  # pylint: disable=import-outside-toplevel

    # Cityscapes 1024x2048 in 513 windows, 25% overlap, output stride 8: under 2x.
    assert inference.tiling_work(1024, 2048, (513, 513), 0.25, 8) < 2
    assert inference.tiling_work(64, 64, (32, 32), 0.5, 8) <= 16
    assert inference.tiling_work(64, 64, (1, 1), 0.25, 8) == 64


@pytest.mark.slow
def test_a_changed_num_classes_names_the_checkpoints_value_and_the_new_one(run_copy):
    """The run has 3 classes. Asked for 7: the message gives 3 as the trained value and 7 as
    the one asked for; with model_config.json rewritten to 7 by a later run, it says the
    checkpoint's logits hold 3 (before: "was trained with num_classes=7")."""
    from deeplab.common.errors import ConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError) as caught:
        checkpoints.load_model(str(run_copy), num_classes=7)
    assert re.match(
        r".*/ckpt-1 was trained with num_classes=3, but num_classes=7 is asked for here "
        r"\(--num_classes, or the dataset's dataset\.json\)",
        str(caught.value),
    ), caught.value
    path = run_copy / checkpoints.MODEL_CONFIG_FILE
    config = json.loads(path.read_text())
    config["num_classes"] = 7
    path.write_text(json.dumps(config))
    for expected in (3, 7, None):
        with pytest.raises(ConfigError) as caught:
            checkpoints.load_model(str(run_copy), num_classes=expected)
        assert re.match(
            rf".*/ckpt-1 was trained with num_classes=3 \(its logits\), but {re.escape(str(path))} "
            r"says num_classes=7: another run rewrote it",
            str(caught.value),
        ), caught.value


def test_without_flock_a_dead_holder_on_this_host_is_taken_over(tmp_path, monkeypatch, library_log):
    """A file system that cannot flock: the holder's pid decides. A process of this host that
    no longer runs: taken over with a line; a live one (or another host's): refused."""
    import socket  # pylint: disable=import-outside-toplevel

    from deeplab.logdir import lock  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(lock, "_flock", lambda handle: None)
    gone = harness.start("-c", "pass")
    gone.communicate()
    path = tmp_path / lock.LOCK_FILE
    host = socket.gethostname()
    path.write_text(json.dumps({"host": host, "pid": gone.pid, "started": 0}))
    with lock.training_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    lines = library_log()
    assert len(lines) == 1 and f"pid {gone.pid} on host {host}" in lines[0], lines
    assert "no longer running" in lines[0] and not path.exists()
    for holder in ({"host": host, "pid": os.getppid()}, {"host": "elsewhere", "pid": gone.pid}):
        path.write_text(json.dumps(holder))
        with pytest.raises(lock.LogdirInUseError, match="if that run has ended, delete the lock"):
            with lock.training_lock(tmp_path):
                pass
        assert json.loads(path.read_text()) == holder  # left as it was


@pytest.mark.slow
def test_a_converter_rerun_killed_by_sigkill_mid_val_leaves_the_old_dataset(tmp_path):
    """The issue's case with a real kill: A (train + val), then `build_folder.py` converting B
    into the same folder, killed (-9) while it reads B's val image (a FIFO that never
    delivers: B's train shards are written by then). Every split still reads as A (before:
    dataset.json named B's train shards and A's val shards)."""
    out = tmp_path / "out"
    _convert(_raw_dataset(tmp_path / "a", "a", 5, (6, 8)), out, "A")
    before = {split: _read_split(out, split) for split in ("train", "val")}
    info = (out / "dataset.json").read_text()
    b = _raw_dataset(tmp_path / "b", "b", 4, (5, 7))
    fifo = b / "images" / "b3.png"
    fifo.unlink()
    os.mkfifo(fifo)
    converter = harness.start(
        "datasets/build_folder.py",
        f"--input_dir={b}",
        f"--output_dir={out}",
        "--num_classes=3",
        "--splits=train,val",
        "--num_workers=0",
        "--no_progress",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writer = None
    try:
        # The event: the converter has opened the FIFO for reading (a non-blocking open for
        # writing succeeds only then); train is converted by then.
        deadline = time.time() + 300
        while writer is None:
            assert converter.poll() is None, "the converter ended early"
            assert time.time() < deadline, "the converter never reached B's val image"
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        # B's train split is written by then.
        a_train = json.loads(info)["shard_runs"]["train"]
        assert [n for n in os.listdir(out) if n.startswith("train-") and a_train not in n]
        converter.send_signal(signal.SIGKILL)
        converter.wait(timeout=60)
    finally:
        if converter.poll() is None:
            converter.kill()
        if writer is not None:
            os.close(writer)
    assert (out / "dataset.json").read_text() == info
    assert {split: _read_split(out, split) for split in ("train", "val")} == before
