"""Running a TensorFlow cluster as local processes (Appendix B / Table 11 on one machine).

:func:`cluster_spec` picks free loopback ports for chief + workers + parameter servers (or
synchronous workers only); :func:`run_cluster` starts one process per task with its own
``TF_CONFIG`` (:class:`Task`), streams each task's lines under a ``[task:index]`` prefix,
restarts workers if asked and stops every process it started when the chief ends or on
SIGINT / SIGTERM (SIGTERM to the task's process group, SIGKILL after a grace period).
:func:`reexec_isolated` runs the launcher again in a private user + network namespace whose only
interface is its loopback (:func:`loopback_up`), because TensorFlow's gRPC servers listen on
every interface. ``python -m deeplab.launch_local`` is the command line.
"""

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from deeplab.common import environment

log = logging.getLogger(__name__)

# Set in the launcher's environment once it runs inside its private network namespace (the
# training tasks read it too: deeplab.common.environment).
NETNS_ENV = environment.NETNS_ENV

# After a task is stopped, how long the launcher waits for the rest of its output (a process
# that left the task's group could hold the pipe open for ever).
DRAIN_SECONDS = 5.0


def loopback_up():
    """Brings ``lo`` up (it starts down in a new network namespace)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        current = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", current | iff_up))


def isolation_unavailable():
    """None if ``unshare --user --net`` works here, else why not (one phrase)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    unshare = shutil.which("unshare")
    if not unshare:
        return "the unshare program (util-linux) is not installed"
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return f"unshare --user --net failed ({probe.stderr.strip() or probe.returncode})"
    return None


def reexec_isolated(command):
    """Replaces this process by ``command`` (an argv list: the same launcher) inside a new user +
    network namespace, with :data:`NETNS_ENV` set to "1" in its environment.

    Returns (only) with the reason when isolation is unavailable."""
    reason = isolation_unavailable()
    if reason:
        return reason
    env = dict(os.environ, **{NETNS_ENV: "1"})
    sys.stdout.flush()
    os.execvpe("unshare", ["unshare", "--user", "--map-root-user", "--net", *command], env)
    return "exec failed"  # not reached


def free_ports(count, host="127.0.0.1"):
    """``count`` distinct free TCP ports on ``host`` (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_spec(workers, ps, host="127.0.0.1"):
    """The TF_CONFIG cluster dict: chief + workers + ps, or only workers when ``ps`` is 0."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if ps < 0:
        raise ValueError("--ps must be >= 0")
    if ps:
        ports = free_ports(1 + workers + ps, host)
        return {
            "chief": [f"{host}:{ports[0]}"],
            "worker": [f"{host}:{p}" for p in ports[1 : 1 + workers]],
            "ps": [f"{host}:{p}" for p in ports[1 + workers :]],
        }
    ports = free_ports(workers, host)
    return {"worker": [f"{host}:{p}" for p in ports]}


def task_list(cluster, evaluator):
    """(type, index) of every task to start; the chief (or worker 0) first."""
    tasks = [
        (kind, i) for kind in ("chief", "worker", "ps") for i in range(len(cluster.get(kind, [])))
    ]
    if evaluator:
        tasks.append(("evaluator", 0))
    return tasks


def is_chief(task, cluster):
    kind, index = task
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


class Task:
    """One process of the cluster, with its output streamed under a prefix."""

    def __init__(self, task, cluster, command, output_lock):
        self.task = task
        self.cluster = cluster
        self.command = command
        self.output_lock = output_lock
        self.process = None
        self.restarts = 0
        self.pids = []
        self.streams = []  # the threads streaming each started process's output

    @property
    def name(self):
        return f"{self.task[0]}:{self.task[1]}"

    def start(self):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": self.cluster, "task": {"type": self.task[0], "index": self.task[1]}}
        )
        env["PYTHONUNBUFFERED"] = "1"
        # A session of its own: stopping the task reaches the processes it spawned, and a
        # Ctrl-C in the terminal reaches only the launcher, which then stops everything.
        self.process = subprocess.Popen(
            self.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pids.append(self.process.pid)
        self.say(f"started pid={self.process.pid}")
        stream = threading.Thread(target=self._stream, args=(self.process,), daemon=True)
        stream.start()
        self.streams.append(stream)

    def say(self, text):
        """Logs ``[launch_local] <task> text`` (INFO, under the output lock)."""
        with self.output_lock:
            log.info("[launch_local] %s %s", self.name, text)

    def _stream(self, process):
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.output_lock:
                log.info("[%s] %s", self.name, line)
        process.stdout.close()

    def poll(self):
        return None if self.process is None else self.process.poll()

    def stop(self, grace_seconds, drain_seconds=DRAIN_SECONDS):
        """SIGTERM the task's process group, SIGKILL it after the grace period, then stream what
        it printed before it stopped (waiting up to ``drain_seconds`` for the pipe to close)."""
        if self.process is None:
            return
        if self.process.poll() is not None:
            self._kill_group(signal.SIGKILL)  # reap anything it left behind in its group
        else:
            self._kill_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.say("did not stop on SIGTERM: SIGKILL")
            self._kill_group(signal.SIGKILL)
            self.process.wait()
        deadline = time.time() + drain_seconds
        for stream in self.streams:
            stream.join(timeout=max(0.0, deadline - time.time()))

    def _kill_group(self, sig):
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def run_cluster(
    cluster,
    command,
    *,
    evaluator=False,
    restart_workers=False,
    max_restarts=5,
    grace_seconds=10.0,
    poll_seconds=0.2,
    evaluator_wait_seconds=600.0,
):
    """Runs every task until the chief ends; returns the chief's exit code.

    When the chief succeeded, an evaluator task gets ``evaluator_wait_seconds`` to finish (it
    stops by itself after the final checkpoint) before everything is stopped.
    """
    lock = threading.Lock()
    tasks = [Task(t, cluster, command, lock) for t in task_list(cluster, evaluator)]
    chief = next(t for t in tasks if is_chief(t.task, cluster))
    stop_requested = []

    def on_signal(signum, frame):
        del frame
        stop_requested.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for task in tasks:
            task.start()
        while not stop_requested:
            code = chief.poll()
            if code is not None:
                break
            for task in tasks:
                if task is chief or task.task[0] != "worker":
                    continue
                status = task.poll()
                if status is not None and restart_workers and task.restarts < max_restarts:
                    task.restarts += 1
                    task.say(f"exited with {status}: restart {task.restarts}/{max_restarts}")
                    task.start()
            time.sleep(poll_seconds)
        evaluators = [t for t in tasks if t.task[0] == "evaluator"]
        if not stop_requested and chief.poll() == 0 and evaluators:
            deadline = time.time() + evaluator_wait_seconds
            while (
                not stop_requested
                and time.time() < deadline
                and any(t.poll() is None for t in evaluators)
            ):
                time.sleep(poll_seconds)
        if stop_requested:
            with lock:
                log.info("[launch_local] interrupted: stopping every task")
    finally:
        for task in reversed(tasks):
            task.stop(grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = chief.poll()
    return 130 if stop_requested else (code if code is not None else 1)
