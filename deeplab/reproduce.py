r"""Reproduces a table of the paper row by row: ``python -m deeplab.reproduce --table=N``.

    python -m deeplab.reproduce --table=4                 # train once, evaluate the 4 rows
    python -m deeplab.reproduce --table=4 --smoke         # the same pipeline in about a minute
    python -m deeplab.reproduce --table=7 --dry_run       # print the commands only
    python -m deeplab.reproduce --table=11 --smoke        # parameter-server clusters, tiny
    python -m deeplab.reproduce --update_readme           # regenerate experiments/README.md's rows

For every row of the table (``deeplab.config.paper_tables``: flagfile + overrides + the paper's
mIOU) it trains (``python -m deeplab.train`` in a subprocess) and evaluates
(``deeplab.evaluation.evaluator``), then prints the table side by side (row, paper mIOU, ours) and
writes it to ``<reproduce_dir>/table<N>.{json,md}``.

Each row is an experiment config: its flagfile's, which this binary reads as ``deeplab.train``
would (``deeplab.config.flags.config_of_args``), with the row's overrides applied
(``deeplab.orchestration.plan``, which is handed the configs and reads no flag).
Training runs are shared: two rows whose training settings resolve to the same values (every
setting of the config outside its eval section, except those marked as not changing the
weights: logging, folders) train once, in this table and
across tables and invocations (a finished run is recorded in ``<reproduce_dir>/<run>/run.json``,
one folder per run named after its flagfile's --logdir, e.g. ``runs/reproduce/table6``; --noreuse
retrains). Rows that need an earlier stage (``--init_checkpoint`` naming another
flagfile's ``--logdir``: COCO pretraining -> Table 6 -> Table 7) train that stage first.
Test-set rows (Tables 7, 13) write the evaluation server's files with ``deeplab.visualize``'s
library function instead of an mIOU. Table 11's rows train on a cluster of local processes
(``python -m deeplab.launch_local --workers=N --ps=M -- <train flags>``, asynchronous
parameter-server training); their training time is reported beside the mIOU, and under --smoke
their clusters have at most --smoke_max_workers workers.

Any experiment flag given on this command line is appended to every row (e.g.
``--training_steps=3000`` for a shorter schedule, ``--dataset_dir=...``), except --logdir and
--checkpoint: this binary picks every run's folder (under --reproduce_dir) and each training
and evaluation command names it once. --smoke replaces the
model by resnet14_tiny with 16-filter ASPP branches, crops by ~1/16 of their size (513 -> 33,
321 -> 21, 769 -> 49), the schedule by --smoke_steps steps and every dataset by a small
synthetic one, keeping everything else of each row (output strides, multi-grid, ASPP rates,
batch sizes, evaluation scales and flips).
"""

import os
import sys
import time

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.config import flags as experiment_flags
from deeplab.config import paper_tables
from deeplab.orchestration import plan
from deeplab.orchestration import reproduction
from deeplab.orchestration.plan import Planner
from deeplab.orchestration.reproduction import README
from deeplab.orchestration.reproduction import RUN_DIR_SETTINGS
from deeplab.orchestration.reproduction import SMOKE_NOTE
from deeplab.orchestration.reproduction import build_smoke_dataset
from deeplab.orchestration.reproduction import format_side_by_side
from deeplab.orchestration.reproduction import reproduce
from deeplab.orchestration.reproduction import update_readme
from deeplab.orchestration.reproduction import write_outputs

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(sections=("data", "model", "train", "eval"))
flags.DEFINE_integer("table", None, "Paper table to reproduce: 1-13.")
flags.DEFINE_string(
    "reproduce_dir",
    None,
    "Training runs (one folder each), evaluations and the side-by-side tables; "
    "default runs/reproduce (runs/reproduce_smoke with --smoke).",
)
flags.DEFINE_boolean(
    "smoke",
    False,
    "Tiny model, tiny crops, --smoke_steps steps, synthetic data: a whole table "
    "end to end in about a minute per training run.",
)
flags.DEFINE_integer("smoke_steps", 3, "Training steps of every run under --smoke.")
flags.DEFINE_integer(
    "smoke_max_workers",
    2,
    "Under --smoke, Table 11's clusters have at most this many workers (rows "
    "with more share the capped run).",
)
flags.DEFINE_boolean("dry_run", False, "Print the training and evaluation commands; run nothing.")
flags.DEFINE_boolean(
    "reuse", True, "Reuse finished training runs and evaluations found in --reproduce_dir."
)
flags.DEFINE_boolean(
    "update_readme", False, "Rewrite the generated rows section of experiments/README.md and exit."
)


def command_line_overrides():
    """The experiment flags given on this command line, as ``{setting: parsed value}`` in the
    order the flags are defined (the order they are appended to every row's commands)."""
    overrides = {}
    for flag in experiment_flags.experiment_flag_objects():
        if flag.present and flag.name in RUN_DIR_SETTINGS:
            print(
                f"deeplab.reproduce: ignoring --{flag.name}: every run's folder is "
                "<reproduce_dir>/<run> (set --reproduce_dir)",
                file=sys.stderr,
                flush=True,
            )
        elif flag.present:
            overrides[flag.name] = flag.value
    return overrides


def flagfile_configs():
    """``{flagfile: ExperimentConfig}`` of every flagfile of the paper's tables and the stages
    they start from, each read as ``deeplab.train --flagfile=<it>`` reads it (the library is
    handed configs; it reads no flagfile)."""
    return {
        flagfile: experiment_flags.config_of_args(
            [plan.flagfile_arg(flagfile, reproduction.REPO_ROOT)]
        )
        for flagfile in paper_tables.all_flagfiles()
    }


def main(config, args):
    """Plans and runs ``--table`` (``config``, the flags', is not used as a whole: the flags
    given here override every row's own config, :func:`command_line_overrides`)."""
    del config, args
    try:
        _reproduce()
    except ValueError as error:
        if isinstance(error, UserError):
            raise
        raise UserError(str(error)) from error  # a flagfile of the paper's tables unreadable


def _reproduce():
    if FLAGS.update_readme:
        changed = update_readme(flagfile_configs())
        print(f"{README}: {'updated' if changed else 'already up to date'}")
        return
    if FLAGS.table is None:
        raise ConfigError("pass --table=N (1-13), or --update_readme")
    try:
        table = paper_tables.get_table(FLAGS.table)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if FLAGS.smoke:  # first, before any command or number
        print(f"# {SMOKE_NOTE}", flush=True)
    output_dir = os.path.abspath(
        FLAGS.reproduce_dir
        or os.path.join("runs", "reproduce_smoke" if FLAGS.smoke else "reproduce")
    )
    smoke_dataset = None
    if FLAGS.smoke:
        smoke_dataset = os.path.join(output_dir, "synthetic")
        if not FLAGS.dry_run:
            build_smoke_dataset(smoke_dataset)
    planner = Planner(
        flagfile_configs(),
        command_line_overrides(),
        smoke_dataset,
        FLAGS.smoke_steps,
        FLAGS.smoke_max_workers,
    )
    start = time.time()
    results = reproduce(
        table, output_dir=output_dir, planner=planner, reuse=FLAGS.reuse, dry_run=FLAGS.dry_run
    )
    if FLAGS.dry_run:
        return
    path = write_outputs(table, results, output_dir, FLAGS.smoke)
    print()
    print(format_side_by_side(table, results, FLAGS.smoke))
    print(
        f"\n{len(planner.runs)} training run(s), {time.time() - start:.0f} s; wrote {path}"
        + (f" ({SMOKE_NOTE})" if FLAGS.smoke else ""),
        flush=True,
    )


if __name__ == "__main__":
    _console.run(main, **RUN)
