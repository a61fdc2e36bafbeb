"""What happens after each training step, in both loops: the non-finite stop, the history, the
progress line and scalar summaries, image summaries and checkpoints.

:class:`Bookkeeper` is called with each finished step's values, in step order, by the
synchronous loop (``deeplab.training.loop``) and by the parameter-server loop
(``deeplab.training.ps_loop``); it owns the checkpoint manager's writes, so the two loops
share one rule for when a checkpoint is written and what a non-finite step does.
"""

import logging
import os
import time

import tensorflow as tf

from deeplab.common.errors import UserError
from deeplab.logdir import checkpoints
from deeplab.logdir import summaries

log = logging.getLogger(__name__)

TRAIN_SUMMARY_DIR = "train"


# A mean cross-entropy above this many nats per pixel is a diverged run: the right class's
# probability is below e^-1e6, which only logits of that size give (a sane network's is a few
# nats at initialization and falls from there). Such a run overflows a step or a few later;
# it is stopped here, before it does, like a non-finite loss.
DIVERGED_CROSS_ENTROPY = 1e6


class NonFiniteLossError(UserError):
    """The loss or the gradients became NaN or infinite (or the loss diverged, above
    ``DIVERGED_CROSS_ENTROPY``), or the weights did; the checkpoints that led there are set
    aside, the others left as they were."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions): the earlier ones are intact."""


def format_duration(seconds):
    """'1h02m', '4m05s', '12s'."""
    seconds = int(max(0, round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def save_checkpoint(manager, step, last_saved):
    """``manager.save`` for ``step``; a write that fails (disk full, read-only folder) removes
    what it left behind and stops the run with one line naming the checkpoint, the reason and
    the intact checkpoint a rerun resumes from."""
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as error:
        folder = manager.directory
        reason = (
            (error.strerror or str(error))
            if isinstance(error, OSError)
            else error.message.strip().splitlines()[0]
        )
        try:
            checkpoints.remove_interrupted_writes(folder)
            prefix = os.path.join(folder, f"{checkpoints.CHECKPOINT_NAME}-{step}")
            if prefix not in manager.checkpoints:
                for path in tf.io.gfile.glob(prefix + ".*"):
                    tf.io.gfile.remove(path)
        except (OSError, tf.errors.OpError):
            pass
        raise CheckpointWriteError(
            f"cannot write checkpoint {checkpoints.CHECKPOINT_NAME}-{step} in {folder} ({reason}); "
            f"{last_saved or 'no earlier checkpoint'} is intact: free space there and run the same "
            f"command to resume"
        ) from error


class Bookkeeper:
    """Bookkeeping of a run's finished steps (see the module docstring).

    Args:
      model: the model (its weights are checked before each checkpoint).
      manager: the ``tf.train.CheckpointManager`` of this task.
      step_var: the checkpointed step counter (set to the step before each save).
      train: the run's ``TrainConfig`` (steps, batch size, log/summary/checkpoint periods).
      start_step: the step the run starts from; ``latest``: the checkpoint it resumed from.
      end_step: the last step this process runs (``--stop_at_step``).
      chief: whether this task prints, writes summaries and may set checkpoints aside.
      image_summaries: an ``ImageSummaries`` or None.
      averaged_rate: images/s averaged since the start (steps arrive in bursts, as in
        parameter-server training) instead of over the last logging window.
    """

    def __init__(
        self,
        model,
        manager,
        step_var,
        train,
        *,
        start_step,
        latest,
        end_step,
        chief,
        image_summaries=None,
        averaged_rate=False,
    ):
        self.model, self.manager, self.step_var, self.train = model, manager, step_var, train
        self.start_step, self.end_step, self.chief = start_step, end_step, chief
        self.image_summaries, self.averaged_rate = image_summaries, averaged_rate
        self.history = {}
        self.last_saved = latest
        self.last_saved_step = start_step if latest else None
        self.window_start, self.window_steps = time.time(), 0
        self.run_start = time.time()

    def __call__(self, step, values):
        """Bookkeeping of one finished step: NaN check, history, logs, summaries, checkpoint."""
        self.window_steps += 1
        if values["nonfinite"] > 0 or values["cross_entropy"] > DIVERGED_CROSS_ENTROPY:
            self._stop_non_finite(step, values)
        record = {
            "loss": values["cross_entropy"] + values["regularization"],
            "cross_entropy": values["cross_entropy"],
            "regularization": values["regularization"],
            "learning_rate": values["learning_rate"],
            "pixel_accuracy": values["correct"] / max(values["valid"], 1.0),
            "valid_pixels": values["valid"],
        }
        self.history[step] = record
        train = self.train
        last = step == train.training_steps
        if step % train.log_steps == 0 or last:
            self._log(step, record)
        if self.image_summaries and (step % train.image_summary_steps == 0 or last):
            self.image_summaries.write(self.model, step)
        if step % train.save_checkpoint_steps == 0 or last:
            self.save(step)

    def _stop_non_finite(self, step, values):
        loss = values["cross_entropy"] + values["regularization"]
        if values["nonfinite"] > 0:
            what = f"non-finite loss or gradients at step {step} (loss {loss:.4g}"
        else:
            what = (
                f"diverged loss at step {step} (cross-entropy {values['cross_entropy']:.4g} "
                f"per pixel, above {DIVERGED_CROSS_ENTROPY:.0e}"
            )
        what += f", learning rate {values['learning_rate']:.3g})"
        raise NonFiniteLossError(
            f"{what}: training stopped{self._set_aside_or_keep(step, what)}. Lower "
            "--base_learning_rate, check the labels against --num_classes, or try "
            "--mixed_precision=none"
        )

    def _set_aside_or_keep(self, step, what):
        """The end of the stop line: where a rerun resumes from.

        The step that went wrong started from the weights of step ``step - 1``. When those are
        the last checkpoint (written by this run, or the one it resumed from), that checkpoint
        is finite but diverged: its first step gave a non-finite loss, gradients or weights,
        and resuming from it would stop at the same step again at any rate. It is moved to
        diverged/ (the chief does it) and a rerun resumes from the one before. A checkpoint
        written earlier is kept: steps since then ran from it without a fault, so a lower rate
        from it is the remedy.
        """
        last_saved = self.last_saved
        if not last_saved:
            return "; no checkpoint was written"
        if self.last_saved_step != step - 1 or not self.chief:
            return f"; the last good checkpoint is {last_saved}"
        try:
            folder, resume_from = checkpoints.set_aside_checkpoint(
                self.manager.directory, last_saved, f"{what}: the first step from these weights"
            )
        except (OSError, tf.errors.OpError) as error:  # the stop message must survive
            return (
                f"; {last_saved} holds the weights that gave it, but could not be "
                f"moved aside ({error}): delete or move it before rerunning"
            )
        self.last_saved = resume_from
        self.last_saved_step = None
        return (
            f"; {os.path.basename(last_saved)} holds the weights that gave it and "
            f"was moved to {folder}; a rerun resumes from "
            f"{resume_from or 'step 0 (no earlier checkpoint is left)'}"
        )

    def _log(self, step, record):
        now = time.time()
        batch = self.train.batch_size
        if not self.averaged_rate:
            images_per_second = self.window_steps * batch / max(now - self.window_start, 1e-9)
            eta = (self.end_step - step) * (now - self.window_start) / self.window_steps
        else:  # results arrive in bursts (at every checkpoint's join): average since the start
            done = step - self.start_step
            images_per_second = done * batch / max(now - self.run_start, 1e-9)
            eta = (self.end_step - step) * (now - self.run_start) / done
        summaries.scalar("loss/total", record["loss"], step=step)
        summaries.scalar("loss/cross_entropy", record["cross_entropy"], step=step)
        summaries.scalar("loss/regularization", record["regularization"], step=step)
        summaries.scalar("learning_rate", record["learning_rate"], step=step)
        summaries.scalar("train/pixel_accuracy", record["pixel_accuracy"], step=step)
        summaries.scalar("perf/images_per_second", images_per_second, step=step)
        if self.chief:
            log.info(
                f"step {step:>6d}/{self.train.training_steps}  loss {record['loss']:.4f} "
                f"(ce {record['cross_entropy']:.4f} reg {record['regularization']:.4f})  "
                f"lr {record['learning_rate']:.4g}  acc {record['pixel_accuracy']:.3f}  "
                f"{images_per_second:.1f} img/s  ETA {format_duration(eta)}"
            )
        self.window_start, self.window_steps = now, 0

    def save(self, step):
        """Writes the checkpoint of ``step`` (refusing non-finite weights)."""
        self.step_var.assign(step)
        if not checkpoints.weights_are_finite(self.model):
            # The update of this step (or of an earlier one since the last checkpoint)
            # overflowed the weights; with a checkpoint of the step before, that update
            # started from it (see _set_aside_or_keep).
            what = f"non-finite weights after the update of step {step}"
            raise NonFiniteLossError(
                f"{what}: no checkpoint written for it, training stopped"
                f"{self._set_aside_or_keep(step, what)}. Lower --base_learning_rate"
            )
        self.last_saved = save_checkpoint(self.manager, step, self.last_saved)
        self.last_saved_step = step
        log.debug("Saved %s", self.last_saved)

    def finish(self, step):
        """After the loop: the checkpoint of the last step, if the loop did not write it."""
        if self.last_saved_step != step:
            self.save(step)
