r"""Starts a whole TensorFlow cluster as local processes (Appendix B / Table 11 on one machine).

    python -m deeplab.launch_local --workers=2 --ps=1 --evaluator -- \
        --flagfile=experiments/table11.flags --logdir=runs/table11_2workers

Every task runs the same command (``python -m deeplab.train`` plus the flags after ``--``)
with its own ``TF_CONFIG``, exactly as on a real cluster; the training binary reads its role
from ``TF_CONFIG``. Ports are free loopback ports chosen at start. With ``--ps`` > 0 the
cluster is chief + workers + parameter servers (``--strategy=parameter_server``); with
``--ps=0`` it is ``--workers`` synchronous workers (``--strategy=multi_worker_mirrored``),
worker 0 acting as chief.

Each line a task prints is streamed with a ``[task:index]`` prefix. When the chief ends (or
the launcher gets Ctrl-C / SIGTERM) every process the launcher started is stopped (an evaluator
is first given --evaluator_wait_seconds to evaluate the last checkpoint): SIGTERM to
the process group it created for that task, then SIGKILL after ``--grace_seconds``; every
line a task printed before it stopped is streamed before the launcher exits. Nothing
else is touched. With ``--restart_workers`` a worker that dies while the chief runs is
started again with the same address (the coordinator reschedules its steps). The exit code is
the chief's.

Network: TensorFlow's gRPC servers (parameter servers, workers) listen on *every* interface
(0.0.0.0:PORT) whatever address TF_CONFIG names; TensorFlow has no option to bind one address,
and the endpoints are unauthenticated (anyone who reaches them can run graphs). So by default
(``--isolate_network``) the launcher runs the whole cluster in a private network namespace of
its own (``unshare --user --net``, Linux, no privileges needed where unprivileged user
namespaces are enabled) whose only interface is its loopback: the tasks reach each other, nothing
outside the launcher's processes can reach them. Where that is unavailable it says so in one line
and runs unisolated. On a real cluster, keep the tasks on a private network or behind a firewall
that admits only the cluster's machines (README, "Distributed training").

The supervision is :mod:`deeplab.orchestration.cluster`; this module parses the flags.
"""

import json
import os
import sys

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.orchestration import cluster as cluster_lib

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Worker tasks (besides the chief, with --ps > 0).")
flags.DEFINE_integer("ps", 1, "Parameter-server tasks; 0 = synchronous multi-worker mirrored.")
flags.DEFINE_boolean("evaluator", False, "Also start an evaluator task.")
flags.DEFINE_boolean("restart_workers", False, "Restart a worker that dies while the chief runs.")
flags.DEFINE_integer("max_restarts", 5, "Restarts allowed per worker.")
flags.DEFINE_string("module", "deeplab.train", "Python module every task runs (python -m ...).")
flags.DEFINE_float("grace_seconds", 10.0, "SIGTERM -> SIGKILL delay when stopping tasks.")
flags.DEFINE_float(
    "evaluator_wait_seconds",
    600.0,
    "After the chief succeeds, how long the evaluator may take to evaluate the last "
    "checkpoint and exit before it is stopped.",
)
flags.DEFINE_string("host", "127.0.0.1", "Address the tasks listen on (loopback only).")
flags.DEFINE_boolean(
    "isolate_network",
    True,
    "Run the cluster in a private network namespace (only its own loopback), so "
    "TensorFlow's gRPC servers, which listen on every interface, are unreachable "
    "from outside. --noisolate_network: the machine's network.",
)


def main(args):
    if FLAGS.isolate_network and os.environ.get(cluster_lib.NETNS_ENV) != "1":
        reason = cluster_lib.reexec_isolated(
            [sys.executable, "-m", "deeplab.launch_local", *sys.argv[1:]]
        )
        print(
            f"[launch_local] network not isolated: {reason}. TensorFlow's gRPC servers listen "
            f"unauthenticated on every interface of this machine; --noisolate_network silences "
            f"this",
            file=sys.stderr,
            flush=True,
        )
    elif os.environ.get(cluster_lib.NETNS_ENV) == "1":
        cluster_lib.loopback_up()
        print(
            "[launch_local] cluster in a private network namespace: reachable only from its "
            "own tasks",
            flush=True,
        )
    train_flags = list(args)
    if "--" in train_flags:
        train_flags.remove("--")
    try:
        cluster = cluster_lib.cluster_spec(FLAGS.workers, FLAGS.ps, FLAGS.host)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    strategy = "parameter_server" if FLAGS.ps else "multi_worker_mirrored"
    command = [sys.executable, "-m", FLAGS.module, *train_flags]
    if not any(f.startswith("--strategy") for f in train_flags) and FLAGS.module == "deeplab.train":
        command.append(f"--strategy={strategy}")
    print(f"[launch_local] cluster {json.dumps(cluster)}", flush=True)
    return cluster_lib.run_cluster(
        cluster,
        command,
        evaluator=FLAGS.evaluator,
        restart_workers=FLAGS.restart_workers,
        max_restarts=FLAGS.max_restarts,
        grace_seconds=FLAGS.grace_seconds,
        evaluator_wait_seconds=FLAGS.evaluator_wait_seconds,
    )


if __name__ == "__main__":
    # The arguments after the flags (after "--") are the command every task runs.
    _console.run(main, arguments=True, tensorflow=False)
