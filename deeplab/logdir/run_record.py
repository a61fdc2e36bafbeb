"""What a training run records about itself in its logdir, besides checkpoints.

* ``config.json``: the whole resolved experiment configuration (the data, model, train and
  eval sections of ``deeplab.config.experiment.ExperimentConfig``, plus the model's own Keras
  config and the class count), written at the start of every invocation, so a finished run
  keeps its recipe (learning rate, steps, crop, augmentation, ...), not only its model.
  :func:`read_config` reads it back; :func:`read_experiment` as an ExperimentConfig.
* TensorBoard: the same configuration as a text summary (``config``) and as HParams (the
  scalars and strings of it), so runs can be compared in TensorBoard's HParams dashboard.
* ``train.log`` (``train-<task>-<index>.log`` for the other tasks of a cluster): a copy of what
  the console showed (standard output and error), appended to on every invocation.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time

import tensorflow as tf

from deeplab.common import atomic_io
from deeplab.config import experiment
from deeplab.logdir import summaries

CONFIG_FILE = "config.json"


def _plain(value):
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def resolved_config(config, model_config, num_classes, class_weights=None):
    """The run's recipe as a JSON-able dict: the sections of ``config`` (an ExperimentConfig)
    plus ``"model_config"`` (the Keras model's config), ``"num_classes"`` and, when the run
    weighs classes, ``"class_weights"``: the numbers the loss used (``train.class_weights``
    keeps what was asked for, e.g. a rule's name)."""
    record = _plain(config.to_dict())
    record["model_config"] = _plain(model_config)
    record["num_classes"] = int(num_classes)
    if class_weights:
        record["class_weights"] = [float(w) for w in class_weights]
    return record


def write_config(logdir, record):
    """Writes ``record`` (from :func:`resolved_config`) to ``<logdir>/config.json`` atomically."""
    atomic_io.write_json(os.path.join(logdir, CONFIG_FILE), record)


def read_config(logdir):
    """The recorded config of a run, or None if it has none (a run from before this file)."""
    path = os.path.join(logdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_experiment(logdir):
    """The recorded :class:`~deeplab.config.experiment.ExperimentConfig` of a run (None if it
    recorded none). Configs written before the sections existed are read too."""
    record = read_config(logdir)
    return None if record is None else experiment.ExperimentConfig.from_dict(record)


# Record keys that are not settings of their own: the model's Keras config repeats the model
# section, and the resolved class count replaces the sections' "0 = the dataset's".
_NOT_HPARAMS = ("model_config", "num_classes")


def hparams(record):
    """Each setting of the run once, flattened for TensorBoard's HParams plugin:
    ``{"train/base_learning_rate": 0.007, "model/backbone": "resnet101", ...}`` from the data,
    model, train and eval sections (lists become comma-separated strings). The model's Keras
    config (a repeat of the model section) is left out, and ``data/num_classes`` is the class
    count the run resolved, not the flag's 0 ("the dataset's")."""
    flat = {}

    def visit(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}/{key}" if prefix else key, item)
        elif isinstance(value, (list, tuple)):
            flat[prefix] = ",".join(str(v) for v in value)
        elif value is None:
            flat[prefix] = ""
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    visit("", {k: v for k, v in record.items() if k not in _NOT_HPARAMS})
    if "num_classes" in record:
        flat["data/num_classes"] = int(record["num_classes"])
        flat.pop("model/num_classes", None)
    return flat


# Metrics of the HParams dashboard: the evaluation's scalars, as continuous.write_summaries
# writes them under <logdir>/eval.
EVAL_GROUP = "eval"


def hparams_metrics(class_names=()):
    """Metric tags of the HParams session: eval mIOU, pixel accuracy and per-class IoU."""
    tags = ["eval/miou", "eval/pixel_accuracy"]
    tags += [f"eval/iou/{name}" for name in class_names]
    return tags


def write_summaries(record, step, *, logdir=None, class_names=()):
    """The run's recipe in TensorBoard: a text summary (``config``) into the default summary
    writer and, with ``logdir``, one HParams session for the run in ``logdir`` itself (named
    after the run's folder; its metrics the evaluation's mIOU, pixel accuracy and per-class
    IoU from ``<logdir>/eval``), so ``tensorboard --logdir runs`` compares runs by their
    evaluation.

    HParams need the ``tensorboard`` package (installed by the cpu/gpu extras); without it only
    the text summary is written, and this returns False.
    """
    text = "```\n" + json.dumps(record, indent=2, sort_keys=True) + "\n```"
    summaries.text("config", text, step=step)
    try:  # optional dependency: the viewer
        from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    if logdir is None:
        return True
    flat = hparams(record)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in sorted(flat)],
            metrics=[
                hp.Metric(tag, group=EVAL_GROUP, display_name=tag[len("eval/") :])
                for tag in hparams_metrics(class_names)
            ],
        )
        hp.hparams(flat, trial_id=os.path.basename(os.path.normpath(logdir)))
    writer.flush()
    writer.close()
    return True


def log_file_name(task_type=None, task_index=None):
    if task_type in (None, "chief"):
        return "train.log"
    return f"train-{task_type}-{task_index}.log"


class _Tee:
    """A text stream that writes to the console stream and to a file."""

    def __init__(self, stream, handle):
        self._stream, self._handle = stream, handle

    def write(self, text):
        self._stream.write(text)
        self._handle.write(text)
        return len(text)

    def flush(self):
        self._stream.flush()
        self._handle.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def console_log(logdir, name="train.log"):
    """Copies standard output and error into ``<logdir>/<name>`` (appended) while active."""
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, name), "a", encoding="utf-8") as handle:
        handle.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(stdout, handle), _Tee(stderr, handle)
        try:
            yield os.path.join(logdir, name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = stdout, stderr
