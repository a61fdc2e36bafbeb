"""The synchronous training loop (one process, Mirrored, MultiWorkerMirrored, TPU): run the step,
hand its values to the bookkeeping, until the last step of this process."""


def run(train_step, iterator, start_step, end_step, after_step):
    """Runs steps ``start_step + 1 .. end_step``; returns the last step.

    Args:
      train_step: ``deeplab.training.step.build_train_step``'s function.
      iterator: the distributed dataset's iterator.
      after_step: called as ``after_step(step, {name: float})`` after each step
        (``deeplab.training.bookkeeping.Bookkeeper``).
    """
    step = start_step
    while step < end_step:
        values = {k: float(v) for k, v in train_step(iterator).items()}
        step += 1
        after_step(step, values)
    return step
