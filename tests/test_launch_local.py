"""deeplab.launch_local (deeplab.orchestration.cluster): TF_CONFIG per task, prefixed logs,
restarts, and no process left behind."""

import os
import re
import signal
import textwrap
import time

import pytest

import harness
from deeplab.orchestration import cluster as cluster_lib

FAKE_TASK = textwrap.dedent(r"""
    import json, os, signal, sys, time
    config = json.loads(os.environ["TF_CONFIG"])
    kind, index = config["task"]["type"], config["task"]["index"]
    mode = sys.argv[1]
    workdir = sys.argv[2]
    chief = kind == "chief" or (kind == "worker" and index == 0
                                and "chief" not in config["cluster"])
    if mode == "fail" and not chief:
        time.sleep(1.5)  # a slow start, as on a loaded machine
    print(f"role {kind} {index} cluster {sorted(config['cluster'])}", flush=True)
    # Readiness marker, written once the role line is out.
    open(os.path.join(workdir, f"started.{kind}.{index}"), "w").close()
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if chief:
        if mode == "fail":
            # Fail only once every task has reported its role (the test checks their lines).
            names = [f"started.{k}.{i}" for k in config["cluster"]
                     for i in range(len(config["cluster"][k]))]
            deadline = time.time() + 90
            while not all(os.path.exists(os.path.join(workdir, n)) for n in names):
                if time.time() > deadline:
                    print("not every task started in 90 s", flush=True)
                    sys.exit(5)
                time.sleep(0.05)
            sys.exit(3)
        if mode == "restart":
            deadline = time.time() + 60
            while not os.path.exists(os.path.join(workdir, "worker0.second")):
                if time.time() > deadline:
                    sys.exit(4)
                time.sleep(0.1)
            print("saw the restarted worker", flush=True)
        if mode in ("hang", "ignore_term"):
            time.sleep(600)
        time.sleep(0.5)
        sys.exit(0)
    if kind == "evaluator" and mode == "ok":
        time.sleep(2)  # still evaluating the last checkpoint when the chief ends
        print("evaluator finished", flush=True)
        sys.exit(0)
    if mode == "restart" and kind == "worker" and index == 0:
        marker = os.path.join(workdir, "worker0.first")
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(1)
        open(os.path.join(workdir, "worker0.second"), "w").close()
    # A child of the task, to check that the whole process group is stopped.
    import subprocess
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(600)
""")


def _launch(tmp_path, mode, *extra, wait=True):
    (tmp_path / "fake_task.py").write_text(FAKE_TASK)
    process = harness.start(
        "deeplab.launch_local",
        "--module=fake_task",
        "--grace_seconds=2",
        *extra,
        "--",
        mode,
        tmp_path,
        pythonpath=[tmp_path],
    )
    if not wait:
        return process
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def _pids(output):
    return [int(p) for p in re.findall(r"started pid=(\d+)", output)]


def _living(pid):
    """True if ``pid`` exists and is not a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _group_members(pgid):
    """Processes still in process group ``pgid`` (the tasks' own children included)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def _assert_all_gone(pids, output):
    deadline = time.time() + 15
    while True:
        alive = [p for p in pids if _living(p)] + [m for p in pids for m in _group_members(p)]
        if not alive or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes left behind: {alive}\n{output}"


def test_cluster_spec_layouts():
    ps = cluster_lib.cluster_spec(2, 1)
    assert sorted(ps) == ["chief", "ps", "worker"]
    assert len(ps["worker"]) == 2 and len(ps["ps"]) == 1
    addresses = ps["chief"] + ps["worker"] + ps["ps"]
    assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
    mwms = cluster_lib.cluster_spec(3, 0)
    assert list(mwms) == ["worker"] and len(mwms["worker"]) == 3
    assert cluster_lib.task_list(ps, evaluator=True) == [
        ("chief", 0),
        ("worker", 0),
        ("worker", 1),
        ("ps", 0),
        ("evaluator", 0),
    ]
    assert cluster_lib.is_chief(("worker", 0), mwms)
    assert not cluster_lib.is_chief(("worker", 0), ps)
    with pytest.raises(ValueError):
        cluster_lib.cluster_spec(0, 1)


def test_success_streams_prefixed_logs_and_leaves_nothing(tmp_path):
    code, output = _launch(tmp_path, "ok", "--workers=2", "--ps=1", "--evaluator")
    assert code == 0, output
    # The evaluator was given time to finish after the chief ended.
    assert "[evaluator:0] evaluator finished" in output
    for name in ("chief:0", "worker:0", "worker:1", "ps:0", "evaluator:0"):
        kind, index = name.split(":")
        assert f"[{name}] role {kind} {index} cluster ['chief', 'ps', 'worker']" in output
    pids = _pids(output)
    assert len(pids) == 5
    _assert_all_gone(pids, output)


def test_an_evaluator_that_does_not_finish_is_stopped_after_its_wait(tmp_path):
    start = time.time()
    code, output = _launch(
        tmp_path, "eval_hangs", "--workers=1", "--ps=1", "--evaluator", "--evaluator_wait_seconds=1"
    )
    assert code == 0, output
    assert time.time() - start < 60
    assert "evaluator finished" not in output
    _assert_all_gone(_pids(output), output)


def test_chief_failure_is_the_exit_code_and_stops_everything(tmp_path):
    """Worker 1 starts slowly; the chief fails once both have reported (readiness markers), so
    worker 1 is stopped while it runs, and the line it printed still reaches the output."""
    code, output = _launch(tmp_path, "fail", "--workers=2", "--ps=0")
    assert code == 3, output
    assert sorted(os.listdir(tmp_path)) == ["fake_task.py", "started.worker.0", "started.worker.1"]
    assert "[worker:0] role worker 0 cluster ['worker']" in output
    assert "[worker:1] role worker 1 cluster ['worker']" in output
    pids = _pids(output)
    assert len(pids) == 2
    _assert_all_gone(pids, output)


@pytest.mark.slow
def test_interrupt_stops_every_task_even_one_ignoring_sigterm(tmp_path):
    process = _launch(tmp_path, "ignore_term", "--workers=1", "--ps=1", wait=False)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output
    _assert_all_gone(_pids(output), output)


def test_a_dead_worker_is_restarted(tmp_path):
    code, output = _launch(tmp_path, "restart", "--workers=2", "--ps=1", "--restart_workers")
    assert code == 0, output
    assert "worker:0 exited with 1: restart 1/5" in output
    assert "saw the restarted worker" in output
    pids = _pids(output)
    assert len(pids) == 5  # chief, 2 workers, ps, and the restarted worker
    _assert_all_gone(pids, output)
