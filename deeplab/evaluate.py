r"""Evaluates a checkpoint on a split: ``python -m deeplab.evaluate``.

    python -m deeplab.evaluate --flagfile=experiments/table4.flags
    python -m deeplab.evaluate --flagfile=experiments/table5.flags --eval_output_stride=8 \
        --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --eval_flip        # Table 6, row 4
    python -m deeplab.evaluate --flagfile=experiments/table5.flags --watch   # beside training

Prints the per-class IOU table, mIOU (one confusion matrix over the whole split, ignore label
excluded; Sec. 4) and pixel accuracy, and writes results.json, confusion_matrix.npy and
confusion_matrix.csv into --results_dir (default ``<logdir>/eval/<split>-os<N>[-ms...][-flip]``).

The checkpoint (--checkpoint, default --logdir; a logdir means its latest checkpoint) is
rebuilt from its model_config.json at --eval_output_stride (Tables 4, 6, 10: trained at 16,
evaluated at 8). With --eval_scales and --eval_flip the prediction averages the softmax
probabilities of every scale and of the flipped image at the original resolution (Sec. 4.2);
images are evaluated whole, at their own size (Appendix C).

--watch evaluates every new checkpoint of the logdir once, as training writes them, and logs
mIOU, pixel accuracy and per-class IOU to TensorBoard under ``<logdir>/eval`` at the
checkpoint's step. It stops after the checkpoint of step --training_steps, or when no new
checkpoint appeared for --watch_timeout seconds.

The work is done by :mod:`deeplab.evaluation.continuous` (``evaluate_once``, ``watch``).
"""

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.config import flags as _experiment_flags  # noqa: F401  (defines the experiment flags)

FLAGS = flags.FLAGS
# How deeplab._console.run runs main: the config sections it reads (its --help lists them).
RUN = dict(
    sections=("data", "model", "eval"), settings=("logdir", "training_steps"), recorded_config=True
)
flags.DEFINE_string(
    "results_dir",
    None,
    "Where results.json and confusion_matrix.{npy,csv} go; default "
    "<checkpoint folder>/eval/<split>-os<N>[-ms...][-flip] (with --watch, one "
    "subfolder per checkpoint).",
)
flags.DEFINE_boolean(
    "watch",
    False,
    "Evaluate every new checkpoint in the logdir as it appears and write "
    "TensorBoard scalars to <logdir>/eval.",
)
flags.DEFINE_float(
    "watch_timeout", 3600.0, "--watch stops when no new checkpoint appeared for this many seconds."
)
flags.DEFINE_float("watch_interval", 30.0, "--watch polls the logdir every this many seconds.")


def _settings(config):
    """The evaluation settings (``evaluator.EvalSettings``) of ``config``: the flags, over the
    run's recorded config.json when --logdir or a --checkpoint folder has one."""
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.evaluation import evaluator  # after the flags: fast --help

    if not config.data.dataset_dir:
        raise ConfigError(
            "--dataset_dir is required: the folder of TFRecord shards + dataset.json "
            "to evaluate on (or pass the experiment's --flagfile, or a --logdir "
            "whose run recorded its config.json)"
        )
    return evaluator.EvalSettings.from_config(config)


def main(config, args):
    del args
    # The library (TensorFlow): imported once the flags are parsed, so --help answers at once
    from deeplab.evaluation import continuous  # after the flags: fast --help

    settings = _settings(config)
    checkpoint = config.eval.checkpoint or config.train.logdir
    if not checkpoint:
        raise ConfigError(
            "pass --checkpoint (a checkpoint prefix or a training logdir) or --logdir"
        )
    if FLAGS.watch:
        continuous.watch(
            checkpoint,
            settings,
            timeout=FLAGS.watch_timeout,
            interval=FLAGS.watch_interval,
            final_step=config.train.training_steps,
            results_dir=FLAGS.results_dir,
        )
    else:
        continuous.evaluate_once(checkpoint, settings, FLAGS.results_dir)


if __name__ == "__main__":
    _console.run(main, **RUN)
