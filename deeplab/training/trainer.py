"""One training run, from an :class:`~deeplab.config.experiment.ExperimentConfig` to its
checkpoints (``python -m deeplab.train`` is this with flags).

SGD with momentum 0.9 and the "poly" learning rate ``base_lr * (1 - step / max_steps) ** 0.9``
(Sec. 4.1), L2 weight decay, BN fine-tuned or frozen; cross-entropy on logits upsampled to the
labels (or labels at the feature centres, Table 8), optional class weights, hard-pixel mining,
focal loss and hard-image bootstrapping. :func:`train` sets the run up (dataset checks,
strategy, model, optimizer, resume), then runs the synchronous loop
(``deeplab.training.loop``) or the parameter-server loop (``deeplab.training.ps_loop``) over
the same step (``deeplab.training.step``) and bookkeeping (``deeplab.training.bookkeeping``).

The run lives in ``train.logdir``: checkpoints, model_config.json + dataset_info.json, the
resolved config.json (``deeplab.logdir.run_record``) and TensorBoard events in train/ (and
eval/ with ``eval_after_training``). Running it again resumes from the newest intact
checkpoint: weights, optimizer slots, step counter and random generators.
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time

import keras
import tensorflow as tf

from deeplab import _cpu
from deeplab.common import atomic_io
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.data import class_weights as class_weights_lib
from deeplab.data import input_pipeline
from deeplab.data import tfrecord
from deeplab.evaluation import continuous
from deeplab.evaluation import evaluator
from deeplab.evaluation import metrics
from deeplab.logdir import checkpoints
from deeplab.logdir import lock
from deeplab.logdir import run_record
from deeplab.model import preprocessing
from deeplab.model.deeplabv3 import DeepLabV3
from deeplab.model.deeplabv3 import build_model
from deeplab.model.deeplabv3 import load_imagenet_backbone
from deeplab.model.options import PerformanceOptions
from deeplab.training import bookkeeping
from deeplab.training import distribute
from deeplab.training import loop
from deeplab.training import optimizers
from deeplab.training import ps_loop
from deeplab.training import step as step_lib
from deeplab.training.image_summaries import ImageSummaries
from deeplab.training.schedules import PolyLearningRate

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What a finished run reports.

    Attributes:
      step: the last training step reached.
      checkpoint: prefix of the last checkpoint written.
      history: {step: {"loss": .., "cross_entropy": .., "regularization": .., "learning_rate": ..,
        "pixel_accuracy": .., "valid_pixels": ..}} for every step run in this process
        (valid_pixels: the non-ignored labels the loss averaged over, in the global batch).
      eval: evaluation results (``miou``, ``iou_per_class``, ...) or None.
      resumed_from: step the run resumed from (0 for a fresh start).
      num_replicas: replicas the global batch was split over.
    """

    step: int
    checkpoint: str
    history: dict
    eval: dict = None
    resumed_from: int = 0
    num_replicas: int = 1


def check_config(config):
    """Refuses a config that cannot run, with one line naming the flag; then makes the logdir."""
    data, train = config.data, config.train
    if not data.dataset_dir:
        raise ConfigError(
            "--dataset_dir is required: a folder of TFRecord shards + dataset.json "
            "(made by datasets/*.py) or tfds:NAME"
        )
    if not train.logdir:
        raise ConfigError(
            "--logdir is required: the folder for checkpoints and TensorBoard events "
            "(e.g. --logdir=runs/my_run)"
        )
    config.check()  # the settings' own checks (deeplab/config/experiment.py), in case it changed
    if train.distill_from and (
        train.class_weights or train.focal_gamma or train.top_k_percent_pixels < 1.0
    ):
        raise ConfigError(
            "--distill_from trains to the teacher's softmax: drop --class_weights, "
            "--focal_gamma and --top_k_percent_pixels"
        )
    height, width = data.crop_size
    if train.batch_size * height * width * 3 >= 2**31:
        # TensorFlow computes such a batch's element count in int32 and fails mid-graph
        # ("Invalid value in tensor used for shape: -1094967296").
        raise ConfigError(
            f"--crop_size={height},{width} with --batch_size={train.batch_size}: a batch of "
            f"{train.batch_size * height * width * 3:.3g} values (batch x H x W x 3) is more "
            "than TensorFlow can index (2^31); use a smaller --crop_size or --batch_size"
        )
    # Last: a run refused for a bad value leaves no empty logdir behind.
    atomic_io.ensure_folder(train.logdir, "--logdir")


class RunProgress:
    """Steps this process has trained (``steps``), for :func:`removed_if_no_step`."""

    def __init__(self):
        self.steps = 0

    def counting(self, after_step):
        """``after_step`` (the loops' per-step callback) that also counts the steps."""

        def call(step, values):
            self.steps += 1
            return after_step(step, values)

        return call


def _new_folders_top(path):
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists or is
    remote)."""
    if not path or "://" in path:
        return None
    path = os.path.abspath(path)
    if os.path.exists(path):
        return None
    while not os.path.exists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


@contextlib.contextmanager
def removed_if_no_step(logdir, progress):
    """Removes the folders of ``logdir`` this block creates if it fails before the run's first
    step (``progress.steps`` is 0): a refused or crashed start leaves no logdir behind (a
    logdir that existed before, or a run that trained a step, is kept as it is)."""
    created = _new_folders_top(logdir)
    try:
        yield
    except BaseException:
        if created and progress.steps == 0 and os.path.isdir(created):
            shutil.rmtree(created, ignore_errors=True)
        raise


def train(config, strategy=None, progress=None):
    """Runs (or resumes) one training run; see the module docstring.

    Keras' global dtype policy is set for ``mixed_precision`` during the run and restored after.
    A run that fails before its first step removes the logdir if it created it
    (:func:`removed_if_no_step`).

    Args:
      config: an :class:`~deeplab.config.experiment.ExperimentConfig`.
      strategy: a tf.distribute.Strategy to use instead of creating ``train.strategy``. One
        process should create one multi-device strategy and reuse it: TensorFlow caches
        collective parameters by keys that a second strategy over the same devices reuses.
      progress: a :class:`RunProgress` to count the steps in (``deeplab.train`` passes the
        one its own :func:`removed_if_no_step` reads).

    Returns:
      :class:`TrainResult` (None for a task that only serves or evaluates).

    Raises:
      UserError: bad settings or data (one clear message); NonFiniteLossError when the loss
        diverges (the last checkpoint is kept).
    """
    previous_policy = keras.mixed_precision.global_policy()
    progress = progress or RunProgress()
    try:
        with removed_if_no_step(config.train.logdir, progress):
            return _train(config, strategy, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config, strategy, progress):
    check_config(config)
    data, train = config.data, config.train
    if strategy is None:
        # A task of a TF_CONFIG cluster that does not train in this process: parameter-server
        # workers and ps tasks serve the chief's ClusterCoordinator; an evaluator evaluates the
        # chief's checkpoints as they appear.
        task_type, task_index = distribute.tf_config_task()
        if task_type == "evaluator":
            return run_evaluator(config)
        if train.strategy == "parameter_server" and task_type in ("worker", "ps"):
            distribute.run_server(task_type, task_index)
            return None
    # TensorFlow's INFO lines (one per checkpoint write) drown the progress lines.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    info, num_classes, class_weights = _check_dataset(data, train)
    if strategy is None:
        strategy = distribute.create_strategy(train.strategy, tpu=train.tpu)
    chief = distribute.is_chief(strategy)
    # One training per logdir (deeplab.logdir.lock): the chief holds the logdir's lock from
    # before it reads the checkpoints until it returns; evaluators and readers never take it.
    held = lock.training_lock(train.logdir) if chief else contextlib.nullcontext()
    with held:
        return _train_holding_lock(
            config, strategy, chief, info, num_classes, class_weights, progress
        )


def _train_holding_lock(config, strategy, chief, info, num_classes, class_weights, progress):
    data, train = config.data, config.train
    num_replicas = strategy.num_replicas_in_sync
    coordinator = _coordinator(strategy, train)
    _set_precision_and_seed(train, chief)

    model, optimizer, schedule, step_var = _build(config, strategy, coordinator, num_classes)
    checkpoint = checkpoints.make_checkpoint(model, optimizer, step_var, rng=True)
    latest, manager = _find_checkpoint(train, strategy, checkpoint, chief)
    start_step = _restore_or_initialize(
        config, model, optimizer, step_var, checkpoint, latest, chief
    )
    recipe = None
    if chief:
        checkpoints.write_run_info(train.logdir, model, info)
        recipe = run_record.resolved_config(
            config, model.get_config(), num_classes, class_weights=class_weights
        )
        note = run_record.write_config(train.logdir, recipe)
        if note:
            log.warning(note)

    iterator = _make_iterator(config, strategy, coordinator, start_step, num_classes)
    train_step = _train_step(
        config,
        strategy,
        (model, optimizer, schedule, step_var),
        coordinator,
        info,
        class_weights,
        chief,
    )
    writer = (
        tf.summary.create_file_writer(os.path.join(train.logdir, bookkeeping.TRAIN_SUMMARY_DIR))
        if chief
        else tf.summary.create_noop_writer()
    )
    image_summaries = None
    if chief and train.image_summary_steps > 0 and train.summary_images > 0:
        image_summaries = ImageSummaries(
            data, config.eval.eval_split, info, num_classes, train.summary_images
        )
    # --stop_at_step ends this process early; the schedule still runs to --training_steps, and
    # the same command without it resumes from the checkpoint written at the stop.
    end_step = min(train.stop_at_step or train.training_steps, train.training_steps)
    keeper = bookkeeping.Bookkeeper(
        model,
        manager,
        step_var,
        train,
        start_step=start_step,
        latest=latest,
        end_step=end_step,
        chief=chief,
        image_summaries=image_summaries,
        averaged_rate=coordinator is not None,
    )
    _announce(config, strategy, start_step, end_step, num_classes, chief)
    if chief:
        with writer.as_default():
            run_record.write_summaries(
                recipe,
                step=start_step,
                logdir=train.logdir,
                class_names=info.get("class_names") or (),
            )
    step = _run_steps(
        config, coordinator, train_step, iterator, (start_step, end_step), keeper, writer, progress
    )
    keeper.finish(step)
    if chief and step > start_step:
        log.info(
            f"Trained steps {start_step}->{step} in "
            f"{bookkeeping.format_duration(time.time() - keeper.run_start)}; "
            f"checkpoint {keeper.last_saved}"
        )

    result = TrainResult(
        step=step,
        checkpoint=keeper.last_saved,
        history=keeper.history,
        resumed_from=start_step,
        num_replicas=num_replicas,
    )
    if config.eval.eval_after_training and chief:
        result.eval = evaluate_after_training(
            keeper.last_saved, config, num_classes=num_classes, step=step
        )
    return result


def _coordinator(strategy, train):
    """The ClusterCoordinator of a parameter-server strategy (None otherwise), after checking
    that the global batch splits over the replicas."""
    coordinator = None
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # Asynchronous replicas (Appendix B, Table 11): every scheduled step is one worker's
        # --batch_size batch, applied to the ps variables without waiting for the other workers;
        # --training_steps counts the steps of all workers together.
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    num_replicas = strategy.num_replicas_in_sync
    if train.batch_size % num_replicas:
        raise ConfigError(
            f"--batch_size={train.batch_size} does not split evenly over {num_replicas} replicas"
        )
    return coordinator


def _train_step(config, strategy, built, coordinator, info, class_weights, chief):
    """The training step function (``step.build_train_step``) of this run; ``built``: the
    (model, optimizer, schedule, step variable) of :func:`_build`."""
    train = config.train
    model, optimizer, schedule, step_var = built
    replica_step = step_lib.build_replica_step(
        model,
        optimizer,
        schedule,
        step_lib.LossSettings.from_config(
            train, ignore_label=info["ignore_label"], class_weights=class_weights
        ),
        num_replicas=strategy.num_replicas_in_sync,
        recompute_through=train.recompute_through,
        step_counter=step_var if coordinator is not None else None,
        check_gradients=train.mixed_precision != "float16",
        multipliers=step_lib.gradient_multipliers(model, train.logits_bias_lr_multiplier),
        teacher=_teacher(train, strategy, model),
    )
    if replica_step.recompute_disabled_reason and chief:
        log.info(
            f"--recompute_through={train.recompute_through} is off for this run: "
            f"{replica_step.recompute_disabled_reason}"
        )
    return step_lib.build_train_step(strategy, replica_step, jit_compile=train.jit_compile)


def _teacher(train, strategy, model):
    """The ``--distill_from`` model (inference only, BN folded, logits shaped as the student's),
    or None."""
    if not train.distill_from:
        return None
    with strategy.scope():
        teacher = checkpoints.load_model(
            train.distill_from,
            num_classes=model.num_classes,
            upsample_logits=model.upsample_logits,
            fuse_batch_norm=True,
        )
    teacher.trainable = False
    log.info(f"Distilling from {train.distill_from}: its softmax is the target, not the labels")
    return teacher


def _announce(config, strategy, start_step, end_step, num_classes, chief):
    """The run's first lines: what trains on what, and (chief) where its logs go."""
    data, train = config.data, config.train
    stopping = f" (stopping at {end_step})" if end_step < train.training_steps else ""
    log.info(
        f"Training {config.model.backbone} on {data.dataset_dir}:{data.train_split} "
        f"({num_classes} classes), {distribute.describe(strategy)}, steps {start_step}->"
        f"{train.training_steps}{stopping}, batch {train.batch_size}, "
        f"crop {tuple(data.crop_size)}"
    )
    if chief:
        log.info(
            f"Logs, checkpoints and TensorBoard events in {train.logdir}: watch with "
            f"`tensorboard --logdir {train.logdir}`"
        )


def _run_steps(config, coordinator, train_step, iterator, steps, keeper, writer, progress):
    """Runs the steps ``steps = (start, end)`` (synchronous loop or parameter-server loop);
    returns the last step run."""
    data, train = config.data, config.train
    start_step, end_step = steps
    with (
        writer.as_default(),
        input_pipeline.explain_data_errors(data.dataset_dir, data.train_split),
    ):
        if coordinator is None:
            step = loop.run(train_step, iterator, start_step, end_step, progress.counting(keeper))
        else:
            step = ps_loop.run(
                coordinator,
                train_step,
                iterator,
                start_step,
                end_step,
                save_checkpoint_steps=train.save_checkpoint_steps,
                logdir=train.logdir,
                after_step=progress.counting(keeper),
            )
        writer.flush()
    return step


def _check_dataset(data, train):
    """dataset.json against the config: (info, num_classes, class_weights).

    ``class_weights`` is the run's one resolved list (None: all 1): ``--class_weights`` as
    given, or the rule it names computed here, once, from the training split's labels
    (:func:`resolve_class_weights`)."""
    info = tfrecord.read_dataset_info(data.dataset_dir, num_classes=data.num_classes or None)
    num_classes = info["num_classes"]
    if data.train_split not in info.get("splits", {data.train_split: 1}):
        raise ConfigError(
            f"--train_split={data.train_split}: {data.dataset_dir} has splits "
            f"{sorted(info['splits'])}"
        )
    label_note = tfrecord.check_label_classes(
        info, data.train_split, os.path.join(data.dataset_dir, tfrecord.DATASET_INFO_FILE)
    )
    if label_note:
        log.warning(label_note)
    class_weights = resolve_class_weights(train.class_weights, data, info)
    return info, num_classes, class_weights


def resolve_class_weights(setting, data, info):
    """``--class_weights`` as one number per class (None when not set).

    A rule ("median_frequency", "inverse_sqrt"; ``deeplab.data.class_weights``) is computed
    from one pass over the training split's label PNGs and printed with the class names;
    explicit numbers must be one per class."""
    setting = tuple(setting or ())
    num_classes = info["num_classes"]
    if not setting:
        return None
    if not class_weights_lib.is_rule(setting):
        if any(isinstance(v, str) for v in setting):
            raise ConfigError(
                f"--class_weights={','.join(map(str, setting))}: give one number per class "
                f"or one of {', '.join(class_weights_lib.RULES)}"
            )
        if len(setting) != num_classes:
            raise ConfigError(
                f"--class_weights has {len(setting)} values but the dataset has "
                f"{num_classes} classes; give one weight per class"
            )
        return tuple(float(v) for v in setting)
    rule = setting[0]
    if str(data.dataset_dir).startswith("tfds:"):
        raise ConfigError(
            f"--class_weights={rule} counts the pixels of converted records; with a TFDS "
            "dataset give one number per class"
        )
    start = time.time()
    counts = class_weights_lib.count_split(
        data.dataset_dir, data.train_split, num_classes, info["ignore_label"]
    )
    weights, note = class_weights_lib.compute_weights(rule, counts)
    names = info["class_names"]
    log.info(
        f"Class weights ({rule}, from the {counts.num_images} labels of "
        f"{data.dataset_dir}:{data.train_split}, {time.time() - start:.1f} s): "
        + ", ".join(f"{names[c]} {w:.3f}" for c, w in enumerate(weights))
        + (f"; {note}" if note else "")
    )
    return weights


def _set_precision_and_seed(train, chief):
    if train.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{train.mixed_precision}")
        if (
            train.mixed_precision == "bfloat16"
            and chief
            and not tf.config.list_logical_devices("GPU")
            and _cpu.has_native_bfloat16() is False
        ):
            log.info(
                "--mixed_precision=bfloat16: this CPU has no AVX512_BF16 / AMX, so bfloat16 is "
                "emulated and atrous layers take a slower path; --mixed_precision=none is "
                "faster here"
            )
    else:
        keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(train.seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()


def _build(config, strategy, coordinator, num_classes):
    """(model, optimizer, schedule, step counter), built under the strategy's scope."""
    train = config.train
    schedule = PolyLearningRate(
        train.base_learning_rate,
        train.training_steps,
        power=train.learning_power,
        end_learning_rate=train.end_learning_rate,
        warmup_steps=train.warmup_steps,
    )
    learning_rate = schedule
    if coordinator is not None:
        # Asynchronous workers: the schedule follows a step counter on the ps that every step
        # increments atomically (TF1's global_step). Keras' optimizer.iterations is a
        # read-add-write, so concurrent workers lose increments of it.
        with strategy.scope():
            step_var = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        learning_rate = lambda: schedule(step_var)  # pylint: disable=unnecessary-lambda-assignment
    else:
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    performance = PerformanceOptions(fused_batch_norm=train.fused_batch_norm)
    with strategy.scope():
        model = build_model(**config.model.build_kwargs(num_classes), performance=performance)
        optimizer = optimizers.SGD(
            learning_rate=learning_rate, momentum=train.momentum, fused_update=train.fused_momentum
        )
        if train.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    if train.sync_batch_norm:
        distribute.set_sync_batch_norm(model, True)
    return model, optimizer, schedule, step_var


def _find_checkpoint(train, strategy, checkpoint, chief):
    """(the checkpoint to resume from or None, this task's CheckpointManager)."""
    os.makedirs(train.logdir, exist_ok=True)
    if chief:
        removed = checkpoints.remove_interrupted_writes(train.logdir)
        if removed:
            log.info(
                f"Removed the leftovers of interrupted checkpoint writes: {', '.join(removed)}"
            )
    # Every worker resumes from the chief's checkpoints (the others write scratch copies): the
    # newest one that reads back whole and finite; newer broken ones are skipped with a line,
    # and a logdir whose checkpoints are all broken is an error unless --fresh_start.
    try:
        latest = checkpoints.newest_intact_checkpoint(
            train.logdir,
            log_skipped=chief,
            repair_pointer=chief,
        )
    except UserError:
        if not train.fresh_start:
            raise
        latest = None
        log.info(
            f"--fresh_start: training {train.logdir} from step 0; its unreadable "
            "checkpoints will be overwritten"
        )
    manager = tf.train.CheckpointManager(
        checkpoint,
        distribute.worker_logdir(train.logdir, strategy),
        max_to_keep=train.keep_checkpoints,
        checkpoint_name=checkpoints.CHECKPOINT_NAME,
    )
    return latest, manager


def same_model_config(saved, current):
    """Whether a logdir's model_config.json describes the model built now; options the saved
    config predates count as their value when it was written (DeepLabV3.complete_config)."""
    ignore = ("name", "trainable")
    saved = json.loads(json.dumps(DeepLabV3.complete_config(saved)))
    saved = {k: v for k, v in saved.items() if k not in ignore}
    current = {k: v for k, v in json.loads(json.dumps(current)).items() if k not in ignore}
    return saved == current, sorted(
        k for k in set(saved) | set(current) if saved.get(k) != current.get(k)
    )


def _restore_or_initialize(config, model, optimizer, step_var, checkpoint, latest, chief):
    """Resumes from ``latest`` (returns its step) or initializes a fresh run (returns 0)."""
    train = config.train
    if not latest:
        if train.imagenet_weights:
            loaded = load_imagenet_backbone(model, train.imagenet_weights)
            log.debug("Loaded %d backbone layers from %s", loaded, train.imagenet_weights)
        if train.init_checkpoint:
            skipped = checkpoints.restore_for_finetuning(model, train.init_checkpoint)
            log.info(
                f"Initialized from {train.init_checkpoint}; skipped: {', '.join(skipped) or 'none'}"
            )
        return 0
    config_path = os.path.join(train.logdir, checkpoints.MODEL_CONFIG_FILE)
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            same, differing = same_model_config(json.load(f), model.get_config())
        if not same:
            raise ConfigError(
                f"--logdir={train.logdir} holds a run of another model "
                f"({', '.join(differing)} differ from {config_path}); use a new "
                "--logdir, or --init_checkpoint to start from that run"
            )
    if checkpoints.rng_states(model) and not checkpoints.checkpoint_has_rng(latest):
        # Written before the random generators were saved: restore what it has.
        checkpoints.make_checkpoint(model, optimizer, step_var).restore(
            latest
        ).assert_existing_objects_matched()
    else:
        checkpoint.restore(latest).assert_existing_objects_matched()
    start_step = int(step_var.numpy())
    if start_step > train.training_steps:
        raise ConfigError(
            f"--training_steps={train.training_steps} is below step {start_step} "
            f"that {latest} has reached: raise --training_steps to continue, or "
            "use a new --logdir to train a shorter schedule"
        )
    log.debug(
        "Resuming from %s at step %d (optimizer iterations %d)",
        latest,
        start_step,
        int(optimizer.iterations.numpy()),
    )
    if chief:
        log.info("Resuming from %s at step %d", latest, start_step)
    return start_step


def _make_iterator(config, strategy, coordinator, start_step, num_classes):
    """The training batches' iterator, continuing the data stream of a resumed run."""
    data, train = config.data, config.train
    # Resuming: with --deterministic the stream is the uninterrupted run's, continued exactly
    # (same seed; the batches already trained on are skipped as serialized records, before any
    # decoding), so kill-and-resume reproduces the uninterrupted weights (tests/test_resume.py).
    # Otherwise a resumed run draws a new (still reproducible) stream rather than repeating the
    # first images: the seed moves with the step it resumes from. Parameter-server training
    # (asynchronous) is never exact.
    exact_resume = train.deterministic and coordinator is None
    data_seed = train.seed if exact_resume else train.seed + 1_000_003 * start_step
    skip_batches = start_step if exact_resume else 0

    def dataset_fn(input_context, verify=True):
        parser = input_pipeline.Parser(
            pad_value=preprocessing.pad_pixel(config.model.backbone), **data.parser_kwargs()
        )
        return input_pipeline.read_train_dataset(
            data.dataset_dir,
            data.train_split,
            parser,
            batch_size=train.batch_size,
            seed=data_seed,
            deterministic=train.deterministic,
            input_context=input_context,
            num_classes=num_classes,
            verify=verify,
            skip_batches=skip_batches,
            **data.reader_kwargs(),
        )

    if coordinator is None:
        return iter(strategy.distribute_datasets_from_function(dataset_fn))
    return iter(
        coordinator.create_per_worker_dataset(ps_loop.per_worker_dataset_fn(strategy, dataset_fn))
    )


def run_evaluator(config):
    """TF_CONFIG task type "evaluator": evaluates each new checkpoint of the logdir once
    (``deeplab.evaluate --watch``), writing eval/ summaries, until the checkpoint of step
    ``training_steps`` or ``evaluator_timeout`` seconds without a new one."""
    data, train = config.data, config.train
    settings = evaluator.EvalSettings.from_config(config)
    os.makedirs(train.logdir, exist_ok=True)
    log.info(
        f"Evaluator: evaluating every new checkpoint of {train.logdir} on "
        f"{data.dataset_dir}:{config.eval.eval_split}"
    )
    evaluated = continuous.watch(
        train.logdir,
        settings,
        timeout=train.evaluator_timeout,
        interval=train.evaluator_interval,
        final_step=train.training_steps,
    )
    log.info("Evaluator: %d checkpoint(s) evaluated", len(evaluated))


def evaluate_after_training(checkpoint, config, *, num_classes, step):
    """Evaluates ``checkpoint`` on the eval split (scales, flip, output stride of the eval
    config), prints the per-class IOU table and mIOU, and writes eval/ summaries at ``step``.

    Uses ``deeplab.evaluation.evaluator.evaluate_checkpoint`` (what ``python -m
    deeplab.evaluate`` runs), so the number printed is the one the evaluate binary gives.
    """
    start = time.time()
    results = evaluator.EvalSettings.from_config(config, num_classes=num_classes).run(checkpoint)
    continuous.write_summaries(config.train.logdir, dict(results, step=step))
    log.info(metrics.format_iou_table(results["confusion_matrix"], results["class_names"]))
    scales = ",".join(f"{s:g}" for s in results["scales"])
    log.info(
        f"{config.eval.eval_split} mIOU {100 * results['miou']:.2f}% over "
        f"{results['num_images']} images (output stride {results['output_stride']}, scales "
        f"{scales}, flip {results['flip']}, step {step}, "
        f"{bookkeeping.format_duration(time.time() - start)})"
    )
    return results
