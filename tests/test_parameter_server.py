"""Multi-process training through deeplab.launch_local on loopback ports (Appendix B, Table 11).

Parameter-server training (chief + 2 workers + 1 ps, asynchronous) finishes its steps with a
falling loss and a checkpoint that restores into a plain single-process model; a worker killed
with SIGKILL is rescheduled around and restarted; a restarted chief resumes; an evaluator task
evaluates the checkpoints as they appear; multi-worker mirrored over 2 processes follows a
single-process run with the same global batch. Every cluster is stopped and checked for
leftover processes. Tiny model (resnet14_tiny), 40x40 synthetic images, 33 px crops.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf

import harness
from deeplab.common.errors import ConfigError
from deeplab.config.experiment import ExperimentConfig
from deeplab.data import synthetic
from deeplab.evaluation import continuous
from deeplab.logdir import checkpoints
from deeplab.logdir import summaries
from deeplab.orchestration import cluster as cluster_lib
from deeplab.training import bookkeeping
from deeplab.training import distribute
from deeplab.training import trainer as train_lib
from test_launch_local import _assert_all_gone  # pylint: disable=import-error
from test_launch_local import _pids  # pylint: disable=import-error
from test_train import TINY_FLAGS as TRAIN_TINY_FLAGS  # pylint: disable=import-error

TINY_FLAGS = [
    *TRAIN_TINY_FLAGS,
    "--shuffle_buffer=16",
    "--base_learning_rate=0.01",
    "--log_steps=1",
]
STEP_LINE = re.compile(r"^\[chief:0\] step\s+(\d+)/(\d+)\s+loss (\S+) .* lr (\S+) ", re.M)
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"


def _launch_args(launch_args, train_args):
    """deeplab.launch_local's arguments (the test environment has no TF_CONFIG: each task gets
    its own from the launcher)."""
    return ["--grace_seconds=3", *launch_args, "--", *TINY_FLAGS, *train_args]


def _run(launch_args, train_args, timeout=150):
    proc = harness.run(
        "deeplab.launch_local", *_launch_args(launch_args, train_args), timeout=timeout
    )
    output = proc.stdout + proc.stderr
    _assert_all_gone(_pids(output), output)
    return proc.returncode, output


class _Streamed:
    """A launcher whose output is read line by line while it runs."""

    def __init__(self, args):
        self.process = harness.start("deeplab.launch_local", *args)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_for(self, pattern, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(pattern, self.output, re.M)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.output[-4000:]}")

    def finish(self, timeout):
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        self.reader.join(timeout=10)
        return self.process.returncode, self.output

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the launcher stops its tasks
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _steps(output):
    """{step: (loss, lr)} from the chief's progress lines (each step once)."""
    found = {}
    for step, _, loss, lr in STEP_LINE.findall(output):
        assert int(step) not in found, f"step {step} reported twice"
        found[int(step)] = (float(loss), float(lr))
    return found


def _checkpoint_is_valid(prefix, step):
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor(STEP_KEY) == step
    for name, _ in tf.train.list_variables(prefix):
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------


def test_parameter_server_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--strategy=parameter_server needs TF_CONFIG"):
        distribute.create_strategy("parameter_server")
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    )
    with pytest.raises(
        ConfigError, match="--strategy=parameter_server: the TF_CONFIG cluster has no ps"
    ):
        distribute.create_strategy("parameter_server")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config_task()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster}))
    with pytest.raises(ConfigError, match='TF_CONFIG has no "task"'):
        distribute.tf_config_task()


@pytest.mark.slow
def test_parameter_server_binary_without_tf_config_is_one_line(data_dir, tmp_path):
    proc = harness.run(
        "deeplab.train",
        f"--dataset_dir={data_dir}",
        f"--logdir={tmp_path}",
        *TINY_FLAGS,
        "--training_steps=1",
        "--strategy=parameter_server",
        timeout=120,
    )
    assert proc.returncode == 2  # a usage error: the flag needs TF_CONFIG
    assert "deeplab.train: error: --strategy=parameter_server needs TF_CONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Parameter-server training.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ps_run(data_dir, tmp_path_factory):
    """chief + 2 workers + 1 ps + evaluator, 20 asynchronous steps, checkpoints at 10 and 20."""
    logdir = str(tmp_path_factory.mktemp("ps_run") / "run")
    code, output = _run(
        ["--workers=2", "--ps=1", "--evaluator"],
        [
            f"--dataset_dir={data_dir}",
            f"--logdir={logdir}",
            "--training_steps=20",
            "--save_checkpoint_steps=10",
            "--evaluator_interval=0.5",
        ],
    )
    return code, output, logdir


@pytest.mark.slow
def test_ps_two_workers_finish_the_steps_and_the_loss_falls(ps_run):
    code, output, logdir = ps_run
    assert code == 0, output[-4000:]
    assert (
        "ParameterServerStrategyV2 with 1 replica(s) per worker, 2 asynchronous worker(s), 1 ps"
    ) in output
    assert "[ps:0] ps:0 serving at grpc://127.0.0.1:" in output
    for worker in ("worker:0", "worker:1"):
        assert f"[{worker}] {worker} serving at grpc://127.0.0.1:" in output
    steps = _steps(output)
    assert sorted(steps) == list(range(1, 21))
    losses = [steps[s][0] for s in range(1, 21)]
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
    # The poly schedule follows the ps step counter (all workers' steps): at the last steps it
    # is close to 0, as in a single-process run (0.01 * (1 - 19/20) ** 0.9 = 0.00067).
    # The first step to finish read the counter at 0; the others may read it a step or two late.
    assert max(lr for _, lr in steps.values()) == pytest.approx(0.01, rel=1e-6)
    assert all(lr <= 0.01 + 1e-9 for _, lr in steps.values())
    assert steps[20][1] < 0.0025, steps[20]
    scalars = summaries.read_scalars(os.path.join(logdir, bookkeeping.TRAIN_SUMMARY_DIR))
    assert [s for s, _ in scalars["loss/total"]] == list(range(1, 21))
    assert scalars["loss/total"][-1][1] == pytest.approx(steps[20][0], abs=1e-4)


@pytest.mark.slow
def test_ps_checkpoint_restores_into_a_single_process_model(ps_run):
    code, output, logdir = ps_run
    assert code == 0, output[-4000:]
    assert sorted(f for f in os.listdir(logdir) if f.endswith(".index")) == [
        "ckpt-10.index",
        "ckpt-20.index",
    ]
    prefix = checkpoints.resolve_checkpoint(logdir)
    assert prefix == os.path.join(logdir, "ckpt-20")
    _checkpoint_is_valid(prefix, 20)
    assert checkpoints.read_run_info(logdir)["step"] == 20
    model = checkpoints.load_model(logdir)
    reader = tf.train.load_checkpoint(prefix)
    values = checkpoints._checkpoint_values(prefix)  # pylint: disable=protected-access
    for variable in model.weights:
        np.testing.assert_array_equal(
            np.asarray(variable.numpy()), reader.get_tensor(values.weights[variable.path])
        )
    image = np.random.default_rng(0).uniform(-100, 100, (1, 33, 33, 3)).astype(np.float32)
    logits = np.asarray(model(image, training=False))
    assert logits.shape == (1, 33, 33, 3) and np.all(np.isfinite(logits))


@pytest.mark.slow
def test_ps_evaluator_task_evaluates_each_checkpoint(ps_run):
    code, output, logdir = ps_run
    assert code == 0, output[-4000:]
    assert "[evaluator:0] Evaluated the final checkpoint (step 20); stopping." in output
    evals = summaries.read_scalars(os.path.join(logdir, continuous.EVAL_SUMMARY_DIR))
    assert [s for s, _ in evals["eval/miou"]] == [10, 20]
    assert all(0.0 <= v <= 1.0 for _, v in evals["eval/miou"])


@pytest.mark.slow
def test_restarted_chief_resumes_from_the_last_checkpoint(ps_run, data_dir, tmp_path):
    """The same command with a later --training_steps (a restarted cluster) continues at 20."""
    code, output, logdir = ps_run
    assert code == 0, output[-4000:]
    resumed = str(tmp_path / "run")
    shutil.copytree(logdir, resumed, ignore=shutil.ignore_patterns("eval", "train"))
    code, output = _run(
        ["--workers=1", "--ps=1"],
        [f"--dataset_dir={data_dir}", f"--logdir={resumed}", "--training_steps=24"],
    )
    assert code == 0, output[-4000:]
    assert f"Resuming from {resumed}/ckpt-20 at step 20" in output
    steps = _steps(output)
    assert sorted(steps) == [21, 22, 23, 24]
    # The schedule continues where it stopped: 0.01 * (1 - 20/24) ** 0.9 at step 21.
    assert steps[21][1] == pytest.approx(0.01 * (1 - 20 / 24) ** 0.9, rel=1e-3)
    _checkpoint_is_valid(os.path.join(resumed, "ckpt-24"), 24)


@pytest.mark.slow
def test_worker_killed_mid_run_the_run_completes(data_dir, tmp_path):
    """SIGKILL worker 1 after step 6: the coordinator runs its steps on worker 0, the launcher
    restarts it at its address, the run finishes all 30 steps and the final checkpoint is
    valid."""
    logdir = str(tmp_path / "run")
    total = 30
    launcher = _Streamed(
        _launch_args(
            ["--workers=2", "--ps=1", "--restart_workers"],
            [
                f"--dataset_dir={data_dir}",
                f"--logdir={logdir}",
                f"--training_steps={total}",
                "--save_checkpoint_steps=10",
            ],
        )
    )
    pid = int(launcher.wait_for(r"worker:1 started pid=(\d+)", 300).group(1))
    launcher.wait_for(r"^\[chief:0\] step\s+6/", 300)  # a deadline against hangs, not a timing
    os.kill(pid, signal.SIGKILL)
    code, output = launcher.finish(timeout=400)
    assert code == 0, output[-4000:]
    assert "worker:1 exited with -9: restart 1/5" in output
    steps = _steps(output)
    assert sorted(steps) == list(range(1, total + 1))
    assert all(math.isfinite(loss) for loss, _ in steps.values())
    _checkpoint_is_valid(os.path.join(logdir, f"ckpt-{total}"), total)
    model = checkpoints.load_model(logdir)
    assert np.all(np.isfinite(np.asarray(model(np.zeros((1, 33, 33, 3), np.float32)))))
    _assert_all_gone(_pids(output), output)


def _listening_ports(pid):
    """{port: local address hex} of the TCP sockets listening in ``pid``'s network namespace."""
    ports = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}", encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                local, _, state = line.split()[1:4]
                if state == "0A":  # LISTEN
                    address, port = local.split(":")
                    ports.setdefault(int(port, 16), set()).add(address)
    return ports


def _assert_servers_unreachable_from_outside(output):
    """While the cluster trains: its gRPC servers listen inside the launcher's namespace (on
    0.0.0.0, TensorFlow's only choice), and no address of this machine reaches them."""
    if cluster_lib.isolation_unavailable():
        pytest.skip(f"no network namespace here: {cluster_lib.isolation_unavailable()}")
    assert "cluster in a private network namespace" in output, output[-3000:]
    cluster = json.loads(re.search(r"^\[launch_local\] cluster (\{.*\})$", output, re.M).group(1))
    ports = [int(a.rsplit(":", 1)[1]) for job in ("ps", "worker") for a in cluster[job]]
    inside = _listening_ports(_pids(output)[0])
    wildcard = {"0" * 8, "0" * 32}  # 0.0.0.0 or [::]
    assert all(inside.get(port, set()) & wildcard for port in ports), (ports, inside)
    addresses = {"127.0.0.1"} | {
        a.address
        for nic in psutil.net_if_addrs().values()
        for a in nic
        if a.family == socket.AF_INET
    }
    for address in sorted(addresses):
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                assert sock.connect_ex((address, port)) != 0, f"{address}:{port} is reachable"


@pytest.mark.slow
def test_interrupted_ps_cluster_leaves_no_process(data_dir, tmp_path):
    launcher = _Streamed(
        _launch_args(
            ["--workers=2", "--ps=1", "--evaluator"],
            [f"--dataset_dir={data_dir}", f"--logdir={tmp_path / 'run'}", "--training_steps=1000"],
        )
    )
    launcher.wait_for(r"^\[chief:0\] step\s+2/", 300)
    try:
        _assert_servers_unreachable_from_outside(launcher.output)
    except BaseException:
        launcher.stop()  # never leave the cluster running behind a failed check
        raise
    launcher.process.send_signal(signal.SIGINT)
    code, output = launcher.finish(timeout=300)
    assert code == 130, output[-3000:]
    pids = _pids(output)
    assert len(pids) == 5
    _assert_all_gone(pids, output)


@pytest.mark.slow
def test_failing_chief_stops_the_serving_tasks(data_dir, tmp_path):
    code, output = _run(
        ["--workers=2", "--ps=1"],
        [
            f"--dataset_dir={data_dir}",
            f"--logdir={tmp_path / 'run'}",
            "--training_steps=5",
            "--num_classes=5",
        ],
    )
    assert code == 2, output[-3000:]  # the chief's: a usage error (a flag disagrees with the data)
    assert re.search(r"^\[chief:0\] deeplab.train: error: .*num_classes=5", output, re.M), output
    assert len(_pids(output)) == 4


# ------------------------------------------------------------------------------------------------
# Multi-worker mirrored.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_match_one_process(tmp_path):
    """Two workers of batch 2 against one process of batch 4, on two 33x33 images in one shard:
    each worker reads its own record (sharding by record), the single process sees both twice
    per batch (two epochs), so both global batches hold the same four images. With BN frozen
    (per-worker BN would normalize 2 images instead of 4), no flips and crops the size of the
    images, the losses agree step after step."""
    data = str(tmp_path / "two")
    synthetic.build_synthetic_dataset(
        data, num_train=2, num_val=1, image_size=(33, 33), num_classes=3, seed=2, num_shards=1
    )
    # No ASPP dropout either: each worker would draw its own masks.
    common = [
        f"--dataset_dir={data}",
        "--training_steps=4",
        "--norandom_flip",
        "--freeze_batch_norm",
        "--deterministic",
        "--shuffle_buffer=4",
        "--aspp_dropout=0",
    ]
    code, output = _run(["--workers=2", "--ps=0"], common + [f"--logdir={tmp_path / 'mwms'}"])
    assert code == 0, output[-4000:]
    assert "CollectiveAllReduceStrategy with 2 replica(s), task worker:0" in output
    assert "task worker:1" in output
    steps = {
        int(s): float(l)
        for s, l in re.findall(r"^\[worker:0\] step\s+(\d+)/\d+\s+loss (\S+)", output, re.M)
    }
    config = ExperimentConfig.create(
        dataset_dir=data,
        logdir=str(tmp_path / "single"),
        model={
            "backbone": "resnet14_tiny",
            "atrous_rates": (1, 2, 3),
            "aspp_filters": 16,
            "batch_norm_momentum": 0.9,
            "freeze_batch_norm": True,
            "aspp_dropout": 0.0,
            "logits_init_stddev": 0.0,  # as TINY_FLAGS
        },
        crop_size=(33, 33),
        batch_size=4,
        training_steps=4,
        base_learning_rate=0.01,
        min_scale_factor=1.0,
        max_scale_factor=1.0,
        random_flip=False,
        shuffle_buffer=4,
        deterministic=True,
        image_summary_steps=0,
        log_steps=1,
    )
    single = train_lib.train(config, distribute.create_strategy("default"))
    expected = [single.history[s]["loss"] for s in range(1, 5)]
    assert [steps[s] for s in range(1, 5)] == pytest.approx(expected, rel=2e-4)
    assert max(expected) - min(expected) > 0.05  # the losses move
