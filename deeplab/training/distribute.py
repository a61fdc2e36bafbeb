"""tf.distribute strategies for the training binary (--strategy, --sync_batch_norm).

    strategy = distribute.create_strategy("mirrored")
    with strategy.scope():
        model = deeplab.build_model(...)
    distribute.set_sync_batch_norm(model, True)

The paper trained synchronously on 16-image batches (Sec. 4.1, Table 9) and studied
asynchronous parameter-server replicas in Table 11. Synchronous data parallelism is
``mirrored`` (one machine, all its GPUs, or logical CPUs), ``multi_worker_mirrored`` (several
machines, TF_CONFIG) and ``tpu``. ``parameter_server`` is asynchronous (Table 11): the chief
holds the strategy and schedules steps through a ClusterCoordinator, worker and ps tasks only
serve (:func:`run_server`); the task comes from TF_CONFIG (:func:`tf_config_task`).

Library code: no flags are read here; binaries pass plain values.
"""

import json
import logging
import os

import keras
import tensorflow as tf

from deeplab.common import environment
from deeplab.common.errors import ConfigError
from deeplab.model.deeplabv3 import iter_layers

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu", "parameter_server")


def configure_logical_cpus(num_devices):
    """Splits the physical CPU into ``num_devices`` logical devices (tests and development).

    Lets ``mirrored`` run with several replicas on a machine without accelerators. Must run
    before TensorFlow initializes its devices (before any op runs).

    Args:
      num_devices: logical CPU devices wanted; <= 1 leaves the configuration alone.

    Raises:
      ConfigError: TensorFlow was already initialized.
    """
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(num_devices)
        )
    except RuntimeError as error:
        raise ConfigError(
            f"cannot split the CPU into {num_devices} logical devices: TensorFlow "
            f"is already initialized ({error})"
        ) from error


def _local_devices():
    """The devices a one-machine MirroredStrategy replicates over: all GPUs, else all logical
    CPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(f"--strategy=tpu: cannot reach a TPU (--tpu={tpu!r}): {error}") from error
    return tf.distribute.TPUStrategy(resolver)


def tf_config_task():
    """(task type, task index) of this process from TF_CONFIG, or (None, None) without it.

    Raises:
      ConfigError: TF_CONFIG is not valid JSON or has no "task".
    """
    config = _tf_config()
    if not config:
        return None, None
    task = config.get("task") or {}
    if "type" not in task:
        raise ConfigError(
            'TF_CONFIG has no "task": {"type": ..., "index": ...}; every process of '
            "a cluster needs its own task"
        )
    return task["type"], int(task.get("index", 0))


def _tf_config():
    """TF_CONFIG as a dict ({} when unset); ConfigError when it is not a JSON object."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        config = error
    if not isinstance(config, dict):
        raise ConfigError(
            f"TF_CONFIG is not valid JSON for an object ({config}); it must be "
            '{"cluster": {...}, "task": {"type": ..., "index": ...}}'
        )
    return config


def _tf_config_cluster():
    return _tf_config().get("cluster", {})


def num_tasks(task_type):
    """How many tasks of ``task_type`` ("worker", "ps", ...) the TF_CONFIG cluster has (0
    without)."""
    return len(_tf_config_cluster().get(task_type, []))


def _parameter_server_strategy():
    """ParameterServerStrategy over the cluster of TF_CONFIG (created on the chief only)."""
    if "TF_CONFIG" not in os.environ:
        raise ConfigError(
            "--strategy=parameter_server needs TF_CONFIG describing a cluster with a "
            "chief, workers and ps tasks (python -m deeplab.launch_local --workers=N "
            "--ps=M -- ... starts one on this machine; WORKSPACE.md shows a real one)"
        )
    task_type, _ = tf_config_task()
    cluster = _tf_config_cluster()
    missing = [kind for kind in ("chief", "worker", "ps") if not cluster.get(kind)]
    if missing:
        raise ConfigError(
            f"--strategy=parameter_server: the TF_CONFIG cluster has no "
            f"{' or '.join(missing)} task; it needs one chief, at least one worker "
            "and at least one ps"
        )
    if task_type != "chief":
        raise ConfigError(
            f"--strategy=parameter_server: only the chief creates the strategy; this "
            f"process is TF_CONFIG task {task_type!r} (workers and ps run "
            "distribute.run_server)"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not resolver.rpc_layer:
        resolver.rpc_layer = "grpc"
    # Variables are placed round-robin over the ps tasks, whole (no partitioning): the largest
    # variable of ResNet-101 DeepLabv3 is 9.4 MB, and whole variables restore into a plain
    # single-process model unchanged.
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    log.debug(
        "ParameterServerStrategy: %d worker(s), %d ps", len(cluster["worker"]), len(cluster["ps"])
    )
    return strategy


def run_server(task_type, task_index):
    """Starts this process's tf.distribute.Server (a worker or ps task) and serves forever.

    The chief's ClusterCoordinator sends the work; a ps task holds variables. Returns only if
    the server stops (it normally runs until the process is killed).
    """
    if task_type not in ("worker", "ps"):
        raise ConfigError(
            f"TF_CONFIG task type {task_type!r} runs no server; expected worker or ps"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=task_type,
        task_index=task_index,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    log.info("%s:%s serving at %s", task_type, task_index, server.target)
    port = server.target.rsplit(":", 1)[-1]
    fenced = os.environ.get(environment.NETNS_ENV) == "1"
    log.info(server_exposure_line(task_type, task_index, port, fenced=fenced))
    server.join()


def server_exposure_line(task_type, task_index, port, *, fenced):
    """The line a server task prints about who can reach it.

    TensorFlow's gRPC server listens on every interface (0.0.0.0) whatever host TF_CONFIG
    names, with no authentication: a task started directly is reachable from the network.
    ``fenced``: it runs inside ``deeplab.launch_local``'s private network namespace.
    """
    where = f"{task_type}:{task_index}: TensorFlow's gRPC server listens unauthenticated on every"
    if fenced:
        return (
            f"{where} interface of deeplab.launch_local's private network namespace "
            f"(0.0.0.0:{port}): only the cluster's own processes can reach it"
        )
    return (
        f"{where} interface of this machine (0.0.0.0:{port}), whatever address TF_CONFIG "
        "names: this task is REACHABLE FROM THE NETWORK, and anyone who reaches the port can "
        "run code in it. Run it fenced: started by python -m deeplab.launch_local (a private "
        "network namespace), in a network namespace of its own (unshare --net, ip netns "
        f"exec), or behind a firewall rule admitting only the cluster's hosts (e.g. iptables "
        f"-A INPUT -p tcp --dport {port} ! -s 10.0.0.0/24 -j DROP); WORKSPACE.md, 'Network "
        "security'"
    )


def create_strategy(name, *, tpu=None):
    """The tf.distribute strategy called ``name``.

    Args:
      name: "default" (no distribution; one device), "mirrored" (synchronous replicas on this
        machine's GPUs, or its logical CPUs when it has no GPU, see
        :func:`configure_logical_cpus`), "multi_worker_mirrored" (synchronous, several
        machines described by TF_CONFIG), "tpu", or "parameter_server" (asynchronous: the
        chief's ParameterServerStrategy over the TF_CONFIG cluster; drive it with a
        tf.distribute.coordinator.ClusterCoordinator).
      tpu: TPU name or grpc address for "tpu" ("" = the local / Colab TPU).

    Returns:
      tf.distribute.Strategy.

    Raises:
      ConfigError: unknown name, or a strategy that cannot be created here.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy={name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = _local_devices()
        log.debug("MirroredStrategy over %s", devices)
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            log.warning("--strategy=multi_worker_mirrored without TF_CONFIG: one worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    return _parameter_server_strategy()


def set_sync_batch_norm(model, enabled):
    """Makes every BatchNormalization layer of ``model`` compute its batch statistics over the
    global batch (all replicas) instead of each replica's share.

    With the paper's batch 16 split over 8 replicas, each replica would otherwise normalize
    with the statistics of 2 images; Table 9 shows small BN batches hurt.

    Args:
      model: a keras.Model.
      enabled: True to synchronize, False for per-replica statistics.

    Returns:
      The number of BatchNormalization layers changed.
    """
    count = 0
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(enabled)
            count += 1
    return count


def is_chief(strategy):
    """True on the worker that writes checkpoints, summaries and the console log.

    Every worker of a multi-worker strategy takes part in saving (the variables are
    synchronized collectively), but only the chief's files are kept.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return (
        task_type is None
        or task_type == "chief"
        or (
            task_type == "worker"
            and task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
    )


def worker_logdir(logdir, strategy):
    """Where this worker writes checkpoints: ``logdir`` on the chief, a scratch subfolder
    elsewhere."""
    if is_chief(strategy):
        return logdir
    resolver = strategy.cluster_resolver
    return os.path.join(logdir, f".worker_{resolver.task_type}_{resolver.task_id}")


def describe(strategy):
    """One line for the log: strategy class, replicas and, for multi-worker, the task."""
    text = f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        text += f" per worker, {num_tasks('worker')} asynchronous worker(s), {num_tasks('ps')} ps"
    if os.environ.get("TF_CONFIG") and not isinstance(strategy, type(tf.distribute.get_strategy())):
        try:
            task_type, index = tf_config_task()
            text += f", task {task_type}:{index}"
        except ConfigError:
            pass  # a log line; create_strategy reports a bad TF_CONFIG
    return text
