"""The parameter-server training loop (asynchronous, Appendix B, Table 11): the chief schedules
steps through a ClusterCoordinator on whichever worker is free and hands each finished step to
the same bookkeeping as the synchronous loop."""

import collections

import tensorflow as tf

from deeplab.common.errors import UserError
from deeplab.training import distribute


def per_worker_dataset_fn(strategy, dataset_fn):
    """The function ``ClusterCoordinator.create_per_worker_dataset`` runs on every worker.

    Worker i of N reads input pipeline i of N (its own shards, its own seed), as the workers of
    MultiWorkerMirroredStrategy do. The function is traced once on the chief; the worker's
    index is a value TensorFlow fills in on each worker
    (``tf.distribute.coordinator.experimental_get_current_worker_index``), so the N pipelines
    are built and each worker picks its own.
    """
    num_workers = distribute.num_tasks("worker")
    replicas = strategy.num_replicas_in_sync

    def worker_dataset(input_context):
        del input_context  # ParameterServerStrategy's: one pipeline per worker, no index
        if num_workers == 1:
            return dataset_fn(tf.distribute.InputContext(1, 0, replicas))
        index = tf.distribute.coordinator.experimental_get_current_worker_index()
        pipelines = [
            dataset_fn(tf.distribute.InputContext(num_workers, i, replicas), verify=i == 0)
            for i in range(num_workers)
        ]
        return tf.data.Dataset.choose_from_datasets(
            pipelines, tf.data.Dataset.from_tensors(tf.cast(index, tf.int64)).repeat()
        )

    def per_worker_dataset():
        return strategy.distribute_datasets_from_function(worker_dataset)

    return per_worker_dataset


def run(
    coordinator,
    train_step,
    iterator,
    start_step,
    end_step,
    *,
    save_checkpoint_steps,
    logdir,
    after_step,
):
    """Schedules steps start_step+1..end_step on whichever worker is free, and hands each
    finished step's values to ``after_step`` in step order.

    The workers run ahead of the bookkeeping by at most a few steps per worker. Before every
    checkpoint the coordinator waits for every scheduled step (``join``), so a checkpoint of
    step N holds exactly N applied updates. A worker that fails is the coordinator's business:
    its steps run again on the other workers, and it rejoins when restarted at its address.

    Returns:
      the last step.
    """
    window = 2 * distribute.num_tasks("worker") + 2
    pending = collections.deque()
    step = start_step
    try:
        while step < end_step:
            step += 1
            pending.append((step, coordinator.schedule(train_step, args=(iterator,))))
            boundary = step % save_checkpoint_steps == 0 or step == end_step
            if boundary:
                coordinator.join()
            while pending and (boundary or len(pending) > window):
                done, remote = pending.popleft()
                after_step(done, {k: float(v) for k, v in remote.fetch().items()})
    except tf.errors.UnavailableError as error:
        latest = tf.train.latest_checkpoint(logdir)
        raise UserError(
            f"--strategy=parameter_server: a parameter server became unreachable at step {step} "
            f"({error.message.splitlines()[0][:200]}); restart the whole cluster with the same "
            f"command: the chief resumes from {latest or 'the start (no checkpoint yet)'}"
        ) from error
    return step
