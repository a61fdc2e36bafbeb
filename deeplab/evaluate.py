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
"""

from deeplab import _console  # noqa: E402  (first: before anything imports TensorFlow)

_console.quiet_tensorflow()

import math
import os
import sys
import time

from absl import app, flags, logging

from deeplab.config import flags as experiment_flags
from deeplab.common.errors import UserError

FLAGS = flags.FLAGS
# --help lists the shared experiment flags this binary reads, not only its own.
flags.adopt_module_key_flags(experiment_flags)
flags.DEFINE_string("results_dir", None,
                    "Where results.json and confusion_matrix.{npy,csv} go; default "
                    "<checkpoint folder>/eval/<split>-os<N>[-ms...][-flip] (with --watch, one "
                    "subfolder per checkpoint).")
flags.DEFINE_boolean("watch", False,
                     "Evaluate every new checkpoint in the logdir as it appears and write "
                     "TensorBoard scalars to <logdir>/eval.")
flags.DEFINE_float("watch_timeout", 3600.0,
                   "--watch stops when no new checkpoint appeared for this many seconds.")
flags.DEFINE_float("watch_interval", 30.0, "--watch polls the logdir every this many seconds.")

EVAL_SUMMARY_DIR = "eval"  # the same folder and tags as deeplab.train --eval_after_training


def _settings():
    """The evaluation settings from the flags, as keyword arguments of evaluate_checkpoint."""
    if not FLAGS.dataset_dir:
        raise UserError("--dataset_dir is required: the folder of TFRecord shards + dataset.json "
                        "to evaluate on (or pass the experiment's --flagfile)")
    return {
        "dataset_dir": FLAGS.dataset_dir,
        "split": FLAGS.eval_split,
        "num_classes": FLAGS.num_classes or None,
        "output_stride": FLAGS.eval_output_stride or None,
        "scales": experiment_flags.eval_scales(),
        "flip": FLAGS.eval_flip,
        "limit": FLAGS.eval_limit or None,
        "tile_size": experiment_flags.eval_tile_size(),
        "tile_overlap": FLAGS.eval_tile_overlap,
    }


def _default_results_dir(results):
    from deeplab.evaluation import evaluator as evaluation  # pylint: disable=import-outside-toplevel

    logdir = os.path.dirname(results["checkpoint"])
    return os.path.join(logdir, EVAL_SUMMARY_DIR, evaluation.results_tag(
        results["split"], results["output_stride"], results["scales"], results["flip"],
        results.get("tile_size")))


def evaluate_once(checkpoint, settings, results_dir=None, subfolder=None):
    """Evaluates one checkpoint, prints the table and writes the result files.

    Args:
      checkpoint: checkpoint prefix or training logdir.
      settings: keyword arguments of ``evaluation.evaluate_checkpoint``.
      results_dir: where the files go (default ``<logdir>/eval/<tag>``).
      subfolder: a folder inside ``results_dir`` to write into instead (``--watch``: one per
        checkpoint).

    Returns:
      (results dict, results_dir written to).
    """
    from deeplab.evaluation import evaluator as evaluation  # pylint: disable=import-outside-toplevel

    start = time.time()

    def progress(count):
        if count % 100 == 0:
            logging.info("%d images evaluated (%.0f s)", count, time.time() - start)

    results = evaluation.evaluate_checkpoint(checkpoint, progress=progress, **settings)
    results_dir = results_dir or _default_results_dir(results)
    if subfolder:
        results_dir = os.path.join(results_dir, subfolder)
    evaluation.write_results(results_dir, results)
    print(evaluation.format_results(results), flush=True)
    print(f"{results['split']} mIOU {100 * results['miou']:.2f}% over {results['num_images']} "
          f"images (output stride {results['output_stride']}, scales "
          f"{','.join(f'{s:g}' for s in results['scales'])}, flip {results['flip']}, step "
          f"{results['step']}, {time.time() - start:.0f} s); results in {results_dir}", flush=True)
    return results, results_dir


def write_summaries(logdir, results):
    """Writes mIOU, pixel accuracy, per-class IOU and the confusion matrix (an image, rows
    normalized, class names on the axes) at the checkpoint's step to <logdir>/eval."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.training import summaries  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import visualization

    step = int(results["step"] or 0)
    writer = tf.summary.create_file_writer(os.path.join(logdir, EVAL_SUMMARY_DIR))
    with writer.as_default():
        summaries.scalar("eval/miou", results["miou"], step=step)
        summaries.scalar("eval/pixel_accuracy", results["pixel_accuracy"], step=step)
        for name, iou in results["per_class_iou"].items():
            if not math.isnan(iou):
                summaries.scalar(f"eval/iou/{name}", iou, step=step)
        if results.get("confusion_matrix") is not None:
            picture = visualization.confusion_matrix_image(results["confusion_matrix"],
                                                     results["class_names"])
            summaries.image("eval/confusion_matrix", picture[None], step=step, max_outputs=1)
    writer.flush()
    writer.close()


def _checkpoint_prefixes(logdir):
    """The checkpoints the logdir's 'checkpoint' file lists, oldest first (existing ones only)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    state = tf.train.get_checkpoint_state(logdir)
    if state is None:
        return []
    # get_checkpoint_state already puts the logdir (relative or not) in front of relative
    # entries ("runs/x/ckpt-5"): the paths are usable as they are.
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [p for p in paths if os.path.exists(p + ".index")]


def watch(logdir, settings, *, timeout, interval, final_step=None, results_dir=None,
          sleep=time.sleep, clock=time.monotonic):
    """Continuous evaluation: each new checkpoint of ``logdir`` once, in step order.

    Args:
      logdir: the training run's folder.
      settings: keyword arguments of ``evaluation.evaluate_checkpoint`` (not the checkpoint).
      timeout: stop when no new checkpoint appeared for this many seconds.
      interval: seconds between polls.
      final_step: stop after evaluating a checkpoint of at least this step.
      results_dir: parent of the per-checkpoint result folders ``ckpt-N`` (default
        ``<logdir>/eval/<tag>``).
      sleep, clock: injectable for tests.

    Returns:
      list of the evaluated checkpoint prefixes.
    """
    if not os.path.isdir(logdir):
        raise UserError(f"--watch needs a training logdir, got --checkpoint={logdir} (not a folder)")
    evaluated = []
    last_new = clock()
    while True:
        new = [p for p in _checkpoint_prefixes(logdir) if p not in evaluated]
        for prefix in new:
            try:
                results, _ = evaluate_once(prefix, settings, results_dir,
                                           subfolder=os.path.basename(prefix))
            except UserError:
                if os.path.exists(prefix + ".index"):
                    raise
                # The trainer's CheckpointManager deleted it before we could read it.
                logging.warning("%s was deleted before it could be evaluated; skipped", prefix)
                evaluated.append(prefix)
                continue
            write_summaries(logdir, results)
            evaluated.append(prefix)
            last_new = clock()
            if final_step and results["step"] is not None and results["step"] >= final_step:
                print(f"Evaluated the final checkpoint (step {results['step']}); stopping.", flush=True)
                return evaluated
        if clock() - last_new > timeout:
            print(f"No new checkpoint in {logdir} for {timeout:.0f} s; stopping.", flush=True)
            return evaluated
        sleep(interval)


def main(argv):
    _console.quiet_absl()
    if len(argv) > 1:
        print(f"deeplab.evaluate: error: unexpected arguments {argv[1:]} (flags need --name=value)",
              file=sys.stderr)
        sys.exit(1)
    try:
        settings = _settings()
        checkpoint = FLAGS.checkpoint or FLAGS.logdir
        if not checkpoint:
            raise UserError("pass --checkpoint (a checkpoint prefix or a training logdir) or "
                            "--logdir")
        if FLAGS.watch:
            watch(checkpoint, settings, timeout=FLAGS.watch_timeout, interval=FLAGS.watch_interval,
                  final_step=FLAGS.training_steps, results_dir=FLAGS.results_dir)
        else:
            evaluate_once(checkpoint, settings, FLAGS.results_dir)
    except (UserError, flags.ValidationError) as error:
        print(f"deeplab.evaluate: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
