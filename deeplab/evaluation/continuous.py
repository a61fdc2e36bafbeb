"""Evaluating checkpoints as a run writes them, with TensorBoard summaries.

:func:`evaluate_once` evaluates one checkpoint on a split, logs the per-class IOU table and
writes results.json / confusion_matrix.{npy,csv}; :func:`watch` does it for every new
checkpoint of a training logdir and writes mIOU, pixel accuracy, per-class IOU and the
confusion matrix at the checkpoint's step under ``<logdir>/eval`` (:func:`write_summaries`).
``python -m deeplab.evaluate`` (``--watch``), the evaluator task of a cluster and
``deeplab.train --eval_after_training`` run these.
"""

import logging
import math
import os
import time

import tensorflow as tf

from deeplab.common.errors import UserError
from deeplab.common.progress import Progress
from deeplab.data import tfrecord
from deeplab.evaluation import evaluator
from deeplab.evaluation import visualization
from deeplab.logdir import summaries

# The folder under a logdir that evaluation summaries and results go to (deeplab.evaluate
# --watch, the evaluator task and deeplab.train --eval_after_training share it and its tags).
EVAL_SUMMARY_DIR = "eval"

log = logging.getLogger(__name__)


def default_results_dir(results):
    """``<checkpoint folder>/eval/<split>-os<N>[-ms...][-flip][-tile...]`` for ``results``."""
    logdir = os.path.dirname(results["checkpoint"])
    return os.path.join(
        logdir,
        EVAL_SUMMARY_DIR,
        evaluator.results_tag(results["split"], evaluator.results_options(results)),
    )


def _split_size(settings):
    """Images the evaluation will see (dataset.json's split size, capped by the limit), or
    None when unknown (a tfds: spec, an older dataset.json)."""
    try:
        info = tfrecord.read_dataset_info(settings.dataset_dir)
        size = int(info.get("splits", {})[settings.split])
    except (UserError, KeyError, TypeError, ValueError, OSError):
        return None
    return min(size, int(settings.limit)) if settings.limit else size


def evaluate_once(checkpoint, settings, results_dir=None, subfolder=None):
    """Evaluates one checkpoint, logs the table and a summary line (INFO) and writes the result
    files.

    Args:
      checkpoint: checkpoint prefix or training logdir.
      settings: an ``evaluator.EvalSettings`` (data, split, inference options).
      results_dir: where the files go (default :func:`default_results_dir`).
      subfolder: a folder inside ``results_dir`` to write into instead (``--watch``: one per
        checkpoint).

    Returns:
      (results dict, results_dir written to).
    """
    start = time.time()
    with Progress(_split_size(settings), f"evaluate {settings.split}", unit="img") as bar:
        results = settings.run(checkpoint, progress=lambda count: bar.update())
    results_dir = results_dir or default_results_dir(results)
    if subfolder:
        results_dir = os.path.join(results_dir, subfolder)
    evaluator.write_results(results_dir, results)
    log.info(evaluator.format_results(results))
    log.info(
        f"{results['split']} mIOU {100 * results['miou']:.2f}% over {results['num_images']} "
        f"images (output stride {results['output_stride']}, scales "
        f"{','.join(f'{s:g}' for s in results['scales'])}, flip {results['flip']}, "
        + (
            f"padded to {results['pad_to'][0]}x{results['pad_to'][1]}, "
            if results.get("pad_to")
            else ""
        )
        + f"step {results['step']}, {time.time() - start:.0f} s); results in {results_dir}"
    )
    return results, results_dir


def write_summaries(logdir, results):
    """Writes mIOU, pixel accuracy, per-class IOU and the confusion matrix (an image, rows
    normalized, class names on the axes) at the checkpoint's step to <logdir>/eval."""
    step = int(results["step"] or 0)
    writer = tf.summary.create_file_writer(os.path.join(logdir, EVAL_SUMMARY_DIR))
    with writer.as_default():
        summaries.scalar("eval/miou", results["miou"], step=step)
        summaries.scalar("eval/pixel_accuracy", results["pixel_accuracy"], step=step)
        for name, iou in results["per_class_iou"].items():
            if not math.isnan(iou):
                summaries.scalar(f"eval/iou/{name}", iou, step=step)
        if results.get("confusion_matrix") is not None:
            picture = visualization.confusion_matrix_image(
                results["confusion_matrix"], results["class_names"]
            )
            summaries.image("eval/confusion_matrix", picture[None], step=step, max_outputs=1)
    writer.flush()
    writer.close()


def checkpoint_prefixes(logdir):
    """The checkpoints the logdir's 'checkpoint' file lists, oldest first (existing ones only)."""
    state = tf.train.get_checkpoint_state(logdir)
    if state is None:
        return []
    # get_checkpoint_state already puts the logdir (relative or not) in front of relative
    # entries ("runs/x/ckpt-5"): the paths are usable as they are.
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [p for p in paths if os.path.exists(p + ".index")]


def watch(
    logdir,
    settings,
    *,
    timeout,
    interval,
    final_step=None,
    results_dir=None,
    sleep=time.sleep,
    clock=time.monotonic,
):
    """Continuous evaluation: each new checkpoint of ``logdir`` once, in step order.

    Args:
      logdir: the training run's folder.
      settings: an ``evaluator.EvalSettings``.
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
        raise UserError(
            f"--watch needs a training logdir, got --checkpoint={logdir} (not a folder)"
        )
    evaluated = []
    last_new = clock()
    while True:
        new = [p for p in checkpoint_prefixes(logdir) if p not in evaluated]
        for prefix in new:
            try:
                results, _ = evaluate_once(
                    prefix, settings, results_dir, subfolder=os.path.basename(prefix)
                )
            except UserError:
                if os.path.exists(prefix + ".index"):
                    raise
                # The trainer's CheckpointManager deleted it before we could read it.
                log.warning("%s was deleted before it could be evaluated; skipped", prefix)
                evaluated.append(prefix)
                continue
            write_summaries(logdir, results)
            evaluated.append(prefix)
            last_new = clock()
            if final_step and results["step"] is not None and results["step"] >= final_step:
                log.info(f"Evaluated the final checkpoint (step {results['step']}); stopping.")
                return evaluated
        if clock() - last_new > timeout:
            log.info(f"No new checkpoint in {logdir} for {timeout:.0f} s; stopping.")
            return evaluated
        sleep(interval)
