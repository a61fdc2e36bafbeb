r"""Trains DeepLabv3 with the protocol of Sec. 4.1: ``python -m deeplab.train``.

    python -m deeplab.train --flagfile=experiments/quickstart.flags
    python -m deeplab.train --flagfile=experiments/table6.flags --logdir=runs/t6

The flags (``deeplab/config/flags.py``, shared with every binary) fill one
``ExperimentConfig`` (``deeplab/config/experiment.py``); ``deeplab.training.trainer.train``
runs it. See that module for what a run does and writes. Starting the same command again
resumes from the latest intact checkpoint.

Several processes (TF_CONFIG; ``python -m deeplab.launch_local`` starts them on one machine,
WORKSPACE.md on a cluster): ``--strategy=multi_worker_mirrored`` trains synchronously on every
worker; ``--strategy=parameter_server`` trains asynchronously (Appendix B, Table 11); worker
and ps tasks only serve, and a task of type "evaluator" evaluates each new checkpoint.

Environment overrides, read here only: DEEPLAB_FUSED_BATCH_NORM=0 and DEEPLAB_FUSED_MOMENTUM=0
act as --nofused_batch_norm and --nofused_momentum.
"""

import contextlib
import dataclasses
import os
import sys

from absl import flags

from deeplab import _console
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(sections=("data", "model", "train", "eval"))
# A flag of this binary's own command line (process set-up, not part of the experiment).
flags.DEFINE_integer(
    "logical_cpu_devices",
    0,
    "Split the CPU into N logical devices before TensorFlow starts, so "
    "--strategy=mirrored runs N replicas without accelerators (tests, development).",
)


def with_environment(config):
    """The run's ExperimentConfig: ``config`` (the flags), with the environment's overrides
    applied."""
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.model.options import PerformanceOptions  # after the flags: fast --help
    from deeplab.training import optimizers  # after the flags: fast --help

    train = config.train
    performance = PerformanceOptions.from_environment(
        base=PerformanceOptions(fused_batch_norm=train.fused_batch_norm)
    )
    return dataclasses.replace(
        config,
        train=dataclasses.replace(
            train,
            fused_batch_norm=performance.fused_batch_norm,
            fused_momentum=optimizers.fused_update_from_environment(default=train.fused_momentum),
        ),
    )


def main(config, args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.data import synthetic  # after the flags: fast --help
    from deeplab.logdir import run_record  # after the flags: fast --help
    from deeplab.training import distribute  # after the flags: fast --help
    from deeplab.training import trainer  # after the flags: fast --help

    # (absl's INFO lines, e.g. one per checkpoint write, are hidden; --verbosity=0 shows them)
    if FLAGS.logical_cpu_devices > 1:
        distribute.configure_logical_cpus(FLAGS.logical_cpu_devices)
    config = with_environment(config)
    task = distribute.tf_config_task()
    progress = trainer.RunProgress()
    # A start that fails before the first step (a refused flag, a missing dataset) leaves
    # no new logdir behind, train.log included; the other tasks of a cluster leave the
    # chief's logdir alone.
    cleanup = (
        trainer.removed_if_no_step(config.train.logdir, progress)
        if task[0] in (None, "chief")
        else contextlib.nullcontext()
    )
    with cleanup:
        trainer.check_config(config)
        if config.data.build_synthetic_if_missing:
            synthetic.build_if_missing(config.data, seed=config.train.seed)
        with run_record.console_log(config.train.logdir, run_record.log_file_name(*task)):
            result = trainer.train(config, progress=progress)
    if config.train.strategy == "parameter_server" and result is not None:
        # The run is complete and its files are closed (checkpoints are written
        # synchronously, the summary writer flushed). After a worker was lost, the
        # ClusterCoordinator's C++ teardown at interpreter exit can abort ("terminate
        # called ... exception not rethrown"), turning a finished run into exit 134:
        # leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
    _console.run(main, **RUN)
