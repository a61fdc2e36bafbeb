"""Which runs a paper table needs: each row as a config, and the training runs rows share.

A row (``deeplab.config.paper_tables``: a flagfile and overrides of its settings) is an
:class:`~deeplab.config.experiment.ExperimentConfig`: the flagfile's config, which the binary
reads (``deeplab.config.flags.config_of_args``) and hands to the :class:`Planner`, with the row's
overrides, the command line's and those of --smoke applied (:func:`apply_settings`); nothing
here reads a flag or a flagfile. The command line that trains or evaluates a row is the
flagfile and the same settings written as flags (:func:`command_args`). Rows whose training
settings agree share one run (:func:`training_key`, from the config's structure: every setting
outside the eval section that can change the weights); a row whose --init_checkpoint names
another flagfile's --logdir trains that earlier stage first (:func:`prerequisite`).
``deeplab.orchestration.reproduction`` runs the plan.
"""

import hashlib
import json
import os

from deeplab.common.errors import ConfigError
from deeplab.config import experiment
from deeplab.config import paper_tables

# Settings that never make two training runs differ, and those of evaluation: from the
# experiment config's structure (its eval section, and the training settings it marks as not
# changing the weights), so a new setting is classified where its field is defined.
NON_TRAINING_SETTINGS = frozenset(experiment.non_training_settings())
EVAL_SETTINGS = frozenset(experiment.setting_names("eval"))
# A run's identity hashes each setting as its flag is written (the key of runs recorded before
# rows became configs): a square size of these settings as one number ("--crop_size=513", as
# every flagfile writes it), every other sequence element by element.
SQUARE_AS_ONE_NUMBER = frozenset({"crop_size"})

# --smoke: a tiny model (its data: deeplab.orchestration.reproduction.build_smoke_dataset).
SMOKE_BACKBONE = "resnet14_tiny"
SMOKE_ASPP_FILTERS = 16


# ------------------------------------------------------------------------------------------------
# A row as a config, and the identity of its training run.
# ------------------------------------------------------------------------------------------------


def flagfile_arg(flagfile, root=None):
    """``--flagfile=<flagfile>``, made absolute against ``root`` when given and relative."""
    if root is not None and not os.path.isabs(flagfile):
        flagfile = os.path.join(root, flagfile)
    return f"--flagfile={flagfile}"


def command_args(flagfile, settings, *, without=(), root=None):
    """The command-line flags of a flagfile and settings (later flags win in absl), less the
    settings named in ``without``; the flagfile made absolute against ``root``."""
    return [flagfile_arg(flagfile, root)] + [
        paper_tables.flag_arg(name, value) for name, value in settings if name not in without
    ]


def apply_settings(config, settings):
    """``config`` with ``settings`` (``((name, value), ...)``) applied.

    Raises:
      ConfigError: no experiment setting has one of the names.
    """
    try:
        return experiment.with_overrides(config, settings)
    except KeyError as error:
        raise ConfigError(
            f"{error.args[0]} (the settings are the fields of deeplab/config/experiment.py)"
        ) from None


def spelled(name, value):
    """A setting's value as its flag is written: a square size of :data:`SQUARE_AS_ONE_NUMBER`
    as one number, ``(513, 513)`` -> ``(513,)``."""
    if name in SQUARE_AS_ONE_NUMBER and len(value) == 2 and value[0] == value[1]:
        return tuple(value[:1])
    return value


def _canonical(value):
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def training_key(config, init_key=None, launch=()):
    """A short hash of the settings of ``config`` that determine the trained weights.

    Args:
      config: the run's :class:`~deeplab.config.experiment.ExperimentConfig`.
      init_key: the key of the run --init_checkpoint names, when it is another experiment's
        run (the path then does not matter, the run does).
      launch: the ``deeplab.launch_local`` flags of a row trained by a cluster (Table 11).
    """
    # Sequences of numbers written differently ("1.0" vs "1") are the same setting.
    relevant = {
        name: (
            [str(_canonical(_number(x))) for x in spelled(name, value)]
            if isinstance(value, tuple)
            else _canonical(value)
        )
        for name, value in experiment.setting_values(config).items()
        if name not in NON_TRAINING_SETTINGS
    }
    if init_key:
        relevant["init_checkpoint"] = f"run:{init_key}"
    if launch:
        relevant["launch_local"] = list(launch)
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def logdirs_of_flagfiles(flagfile_configs):
    """{normalized --logdir: flagfile} of ``{flagfile: config}``."""
    result = {}
    for flagfile, config in flagfile_configs.items():
        if config.train.logdir:
            result[os.path.normpath(config.train.logdir)] = flagfile
    return result


def prerequisite(config, logdirs):
    """The flagfile whose run ``config``'s --init_checkpoint names (an earlier stage), or None.

    Args:
      config: an :class:`~deeplab.config.experiment.ExperimentConfig`.
      logdirs: :func:`logdirs_of_flagfiles`.
    """
    init = config.train.init_checkpoint
    if not init:
        return None
    return logdirs.get(os.path.normpath(init))


# ------------------------------------------------------------------------------------------------
# Smoke mode.
# ------------------------------------------------------------------------------------------------


def smoke_crop(size):
    """513 -> 33, 321 -> 21, 769 -> 49: about 1/16 of a crop, kept of the form 8k + 1."""
    return max(9, int(round((int(size) - 1) / 16.0)) + 1)


def smoke_settings(config, dataset_dir, steps, *, keep_strategy=False):
    """The settings --smoke applies after a row's (see deeplab/reproduce.py), as
    ``((name, value), ...)``; ``keep_strategy``: a cluster row (launched by launch_local) keeps
    its --strategy."""
    crop = tuple(smoke_crop(c) for c in spelled("crop_size", config.data.crop_size))
    settings = paper_tables.settings(
        backbone=SMOKE_BACKBONE,
        imagenet_weights="",
        aspp_filters=SMOKE_ASPP_FILTERS,
        crop_size=crop,
        training_steps=steps,
        save_checkpoint_steps=steps,
        log_steps=1,
        image_summary_steps=0,
        dataset_dir=dataset_dir,
        train_split="train",
        eval_split="val",
        num_classes=0,
        shuffle_buffer=16,
        eval_after_training=False,
        mixed_precision="none",
    )
    if not keep_strategy:
        settings += paper_tables.settings(strategy="default")
    if config.data.bootstrap_classes:
        settings += paper_tables.settings(bootstrap_classes="shape_1")
    return settings


def smoke_launch(launch, max_workers):
    """A row's launch_local flags under --smoke: at most ``max_workers`` workers, one ps."""
    out = []
    for arg in launch:
        if arg.startswith("--workers="):
            arg = f"--workers={min(int(arg.split('=', 1)[1]), max(1, int(max_workers)))}"
        elif arg.startswith("--ps="):
            arg = "--ps=1"
        out.append(arg)
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# The plan: which runs train (in which order) and how each row is evaluated.
# ------------------------------------------------------------------------------------------------


class Run:
    """One training run: its flagfile and settings (as applied to the flagfile's config), its
    config, its key and the run it is initialized from."""

    def __init__(self, flagfile, settings, config, key, init=None, launch=()):
        self.flagfile = flagfile
        self.settings = tuple(settings)
        self.config = config
        self.key = key
        self.init = init
        self.launch = tuple(launch)
        self.run_dir = None
        self.trained = False

    @property
    def args(self):
        """The run's flags as a row writes them (recorded in its run.json)."""
        return command_args(self.flagfile, self.settings)

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.config.train.logdir or "run"))


class Planner:
    """Resolves rows into configs and training runs, sharing identical runs.

    Args:
      flagfile_configs: ``{flagfile: ExperimentConfig}`` of every flagfile the rows and their
        earlier stages name (``paper_tables.all_flagfiles()``), read by the binary.
      overrides: settings applied to every row after its own (this command line's experiment
        flags), as ``{name: value}`` or ``((name, value), ...)``.
      smoke_dataset: under --smoke, the synthetic dataset folder (else None).
      smoke_steps: training steps under --smoke.
      smoke_max_workers: under --smoke, the most workers of a row's cluster (Table 11).
    """

    def __init__(
        self,
        flagfile_configs,
        overrides=(),
        smoke_dataset=None,
        smoke_steps=3,
        smoke_max_workers=2,
    ):
        self.flagfile_configs = dict(flagfile_configs)
        self.overrides = tuple(overrides.items() if isinstance(overrides, dict) else overrides)
        self.smoke_dataset = smoke_dataset
        self.smoke_steps = smoke_steps
        self.smoke_max_workers = smoke_max_workers
        self.runs = {}  # key -> Run, in the order they must train
        self.logdirs = logdirs_of_flagfiles(self.flagfile_configs)

    def flagfile_config(self, flagfile):
        """The config of ``flagfile`` as the binary read it."""
        try:
            return self.flagfile_configs[flagfile]
        except KeyError:
            raise ConfigError(
                f"{flagfile}: no config was read for this flagfile (the planner has "
                f"{sorted(self.flagfile_configs)})"
            ) from None

    def resolve(self, flagfile, overrides=(), launch=()):
        """(settings, config) of a row: its overrides, this command line's and --smoke's, in
        the order they apply, and the config they make of the flagfile's."""
        settings = tuple(overrides) + self.overrides
        config = apply_settings(self.flagfile_config(flagfile), settings)
        if self.smoke_dataset:
            smoke = smoke_settings(
                config, self.smoke_dataset, self.smoke_steps, keep_strategy=bool(launch)
            )
            settings += smoke
            config = apply_settings(config, smoke)
        return settings, config

    def row_config(self, row):
        """The :class:`~deeplab.config.experiment.ExperimentConfig` of a paper-table row."""
        return self.resolve(row.flagfile, row.overrides, row.launch)[1]

    def launch_args(self, launch):
        """A row's launch_local flags (capped under --smoke)."""
        if launch and self.smoke_dataset:
            return smoke_launch(launch, self.smoke_max_workers)
        return tuple(launch)

    def run_for(self, flagfile, overrides=(), launch=()):
        """The (shared) :class:`Run` that trains the model of a flagfile with overrides;
        earlier stages first."""
        settings, config = self.resolve(flagfile, overrides, launch)
        launch = self.launch_args(launch)
        init = None
        stage = prerequisite(config, self.logdirs)
        if stage is not None:
            init = self.run_for(stage)
        key = training_key(config, init.key if init else None, launch)
        if key not in self.runs:
            self.runs[key] = Run(flagfile, settings, config, key, init, launch)
        return self.runs[key]

    def row_run(self, row):
        """The (shared) :class:`Run` of a paper-table row."""
        return self.run_for(row.flagfile, row.overrides, row.launch)


def plan_table(table, planner):
    """[(row, Run or None, config of the row)] for every row of ``table``."""
    planned = []
    for row in table.rows:
        if not row.reproducible:
            planned.append((row, None, None))
            continue
        planned.append((row, planner.row_run(row), planner.row_config(row)))
    return planned
