r"""Trains DeepLabv3 with the protocol of Sec. 4.1: ``python -m deeplab.train``.

    python -m deeplab.train --flagfile=experiments/quickstart.flags
    python -m deeplab.train --flagfile=experiments/table6.flags --logdir=runs/t6

SGD with momentum 0.9 and the "poly" learning rate ``base_lr * (1 - step / max_steps) ** 0.9``
(base 0.007, 30K steps, batch 16, crop 513, output stride 16), L2 weight decay, BN fine-tuned
with decay 0.9997 or frozen (stage two: trainval, output stride 8, base 0.001). Cross-entropy
on logits upsampled to the labels, ignore label excluded, or labels downsampled to the logits
(Table 8 ablation, --noupsample_logits). Optional class weights and hard-image bootstrapping
(Sec. 4.3).

The run lives in --logdir: checkpoints every --save_checkpoint_steps and at the end,
model_config.json + dataset_info.json (so evaluate / visualize / export need only the
checkpoint), TensorBoard events in train/ (and eval/ with --eval_after_training). Starting
the same command again resumes from the latest checkpoint: weights, optimizer slots and
iteration counter, so the learning-rate schedule continues where it stopped. A run killed at
any moment loses at most the steps since its last checkpoint.

Several processes (TF_CONFIG; ``python -m deeplab.launch_local`` starts them on one machine,
WORKSPACE.md on a cluster): ``--strategy=multi_worker_mirrored`` trains synchronously on every
worker; ``--strategy=parameter_server`` trains asynchronously (Appendix B, Table 11): the chief
schedules steps through a ClusterCoordinator on whichever worker is free, each step one
worker's --batch_size batch applied to the variables on the ps tasks, --training_steps counting
all workers' steps; worker and ps tasks only serve. A task of type "evaluator" evaluates each
new checkpoint of --logdir (``deeplab.evaluate --watch``) with any strategy.

The training loop is written out (tf.function step, ``strategy.run``, ``optimizer.apply``)
rather than ``model.fit``: it controls exactly what is checkpointed, stops on a non-finite loss
before writing a bad checkpoint, and computes the loss over the global batch's valid pixels
under any number of replicas. Memory: the momentum update is one fused kernel per variable
(deeplab.training.optimizers) and the backbone through block2 is recomputed in the backward pass rather
than kept (deeplab.training.recompute, --recompute_through).
"""

from deeplab import _console  # noqa: E402  (first: before anything imports TensorFlow)

_console.quiet_tensorflow()

import dataclasses
import json
import os
import sys
import time

# TensorFlow's C++ INFO lines (oneDNN notices, tf.data defaults) are noise on the console;
# warnings and errors still show. Set before TensorFlow is imported; an explicit value wins.

from absl import app, flags, logging

from deeplab import _cpu
from deeplab.common import atomic_io
from deeplab.config import flags as experiment_flags
from deeplab.training import run_record
from deeplab.common.errors import ConfigError, UserError

FLAGS = flags.FLAGS
# --help lists the shared experiment flags this binary reads, not only its own.
flags.adopt_module_key_flags(experiment_flags)
# Flags for this binary's own command line only (experiment flagfiles stay shared).
flags.DEFINE_integer("logical_cpu_devices", 0,
                     "Split the CPU into N logical devices before TensorFlow starts, so "
                     "--strategy=mirrored runs N replicas without accelerators (tests, development).")
flags.DEFINE_integer("summary_images", 3, "Images shown in the TensorBoard image summaries.",
                     lower_bound=0)
flags.DEFINE_float("evaluator_interval", 10.0,
                   "TF_CONFIG task 'evaluator': seconds between looks for a new checkpoint.")
flags.DEFINE_boolean("fresh_start", False,
                     "Train from step 0 even though --logdir holds checkpoints that cannot be read "
                     "(without it such a logdir is an error; intact checkpoints are always resumed).")
flags.DEFINE_float("evaluator_timeout", 3600.0,
                   "TF_CONFIG task 'evaluator': stop when no new checkpoint appeared for this long.")

TRAIN_SUMMARY_DIR = "train"
# eval/ summaries are written by deeplab.evaluate.write_summaries (evaluate.EVAL_SUMMARY_DIR).


class NonFiniteLossError(UserError):
    """The loss or the gradients became NaN or infinite; the last checkpoint is left as it was."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs, as plain values (the binary fills it from flags).

    Field names are the flag names; see ``deeplab/config/flags.py`` for their help.
    ``model`` holds the keyword arguments of ``deeplab.build_model`` except num_classes.
    """

    dataset_dir: str
    logdir: str
    model: dict
    train_split: str = "train"
    eval_split: str = "val"
    num_classes: int = 0
    crop_size: tuple = (513, 513)
    batch_size: int = 16
    training_steps: int = 30000
    stop_at_step: int = 0
    base_learning_rate: float = 0.007
    learning_power: float = 0.9
    end_learning_rate: float = 0.0
    warmup_steps: int = 0
    momentum: float = 0.9
    class_weights: tuple = ()
    top_k_percent_pixels: float = 1.0
    hard_example_mining_step: int = 0
    focal_gamma: float = 0.0
    min_scale_factor: float = 0.5
    max_scale_factor: float = 2.0
    scale_factor_step: float = 0.25
    random_flip: bool = True
    bootstrap_classes: tuple = ()
    bootstrap_repeat: int = 1
    shuffle_buffer: int = 1024
    imagenet_weights: str = None
    init_checkpoint: str = None
    save_checkpoint_steps: int = 1000
    keep_checkpoints: int = 5
    log_steps: int = 20
    image_summary_steps: int = 500
    summary_images: int = 3
    mixed_precision: str = "none"
    recompute_through: str = "block2"
    jit_compile: bool = False
    strategy: str = "default"
    sync_batch_norm: bool = False
    tpu: str = None
    seed: int = 0
    deterministic: bool = False
    eval_after_training: bool = False
    eval_limit: int = 0
    eval_output_stride: int = 0
    eval_scales: tuple = (1.0,)
    eval_flip: bool = False
    evaluator_interval: float = 10.0
    evaluator_timeout: float = 3600.0
    fresh_start: bool = False


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


def config_from_flags():
    """A :class:`TrainConfig` from the parsed flags."""
    model = experiment_flags.model_kwargs(1)
    del model["num_classes"]
    return TrainConfig(
        dataset_dir=FLAGS.dataset_dir, logdir=FLAGS.logdir, model=model,
        train_split=FLAGS.train_split, eval_split=FLAGS.eval_split, num_classes=FLAGS.num_classes,
        crop_size=experiment_flags.crop_size(), batch_size=FLAGS.batch_size,
        training_steps=FLAGS.training_steps, stop_at_step=FLAGS.stop_at_step,
        base_learning_rate=FLAGS.base_learning_rate, learning_power=FLAGS.learning_power,
        end_learning_rate=FLAGS.end_learning_rate,
        warmup_steps=FLAGS.warmup_steps, momentum=FLAGS.momentum,
        class_weights=tuple(float(w) for w in FLAGS.class_weights),
        top_k_percent_pixels=FLAGS.top_k_percent_pixels,
        hard_example_mining_step=FLAGS.hard_example_mining_step, focal_gamma=FLAGS.focal_gamma,
        min_scale_factor=FLAGS.min_scale_factor, max_scale_factor=FLAGS.max_scale_factor,
        scale_factor_step=FLAGS.scale_factor_step, random_flip=FLAGS.random_flip,
        bootstrap_classes=tuple(FLAGS.bootstrap_classes), bootstrap_repeat=FLAGS.bootstrap_repeat,
        shuffle_buffer=FLAGS.shuffle_buffer, imagenet_weights=FLAGS.imagenet_weights,
        init_checkpoint=FLAGS.init_checkpoint, save_checkpoint_steps=FLAGS.save_checkpoint_steps,
        keep_checkpoints=FLAGS.keep_checkpoints, log_steps=FLAGS.log_steps,
        image_summary_steps=FLAGS.image_summary_steps, summary_images=FLAGS.summary_images,
        mixed_precision=FLAGS.mixed_precision, recompute_through=FLAGS.recompute_through,
        jit_compile=FLAGS.jit_compile,
        strategy=FLAGS.strategy, sync_batch_norm=FLAGS.sync_batch_norm, tpu=FLAGS.tpu,
        seed=FLAGS.seed, deterministic=FLAGS.deterministic,
        eval_after_training=FLAGS.eval_after_training, eval_limit=FLAGS.eval_limit,
        eval_output_stride=FLAGS.eval_output_stride, eval_scales=experiment_flags.eval_scales(),
        eval_flip=FLAGS.eval_flip, evaluator_interval=FLAGS.evaluator_interval,
        evaluator_timeout=FLAGS.evaluator_timeout, fresh_start=FLAGS.fresh_start)


def _check_config(config):
    if not config.dataset_dir:
        raise ConfigError("--dataset_dir is required: a folder of TFRecord shards + dataset.json "
                          "(made by datasets/*.py) or tfds:NAME")
    if not config.logdir:
        raise ConfigError("--logdir is required: the folder for checkpoints and TensorBoard events "
                          "(e.g. --logdir=runs/my_run)")
    for name in ("training_steps", "batch_size", "save_checkpoint_steps", "log_steps"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}")
    if config.base_learning_rate <= 0:
        raise ConfigError(f"--base_learning_rate must be positive, got {config.base_learning_rate}")
    if config.stop_at_step < 0:
        raise ConfigError(f"--stop_at_step must be 0 (run to --training_steps) or a step, got "
                          f"{config.stop_at_step}")
    # Last: a run refused for a bad value leaves no empty logdir behind.
    atomic_io.ensure_folder(config.logdir, "--logdir")


def format_duration(seconds):
    """'1h02m', '4m05s', '12s'."""
    seconds = int(max(0, round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _padded_batch(arrays, fill):
    """Stacks arrays [H_i, W_i, ...] into one batch, padding to the largest size with ``fill``."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    out = np.full((len(arrays), height, width) + arrays[0].shape[2:], fill, arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


class _ImageSummaries:
    """Input, ground truth and prediction of a few fixed images, colorized with the palette."""

    def __init__(self, config, info, num_classes):
        from deeplab.data import input_pipeline  # pylint: disable=import-outside-toplevel

        self.palette = info["palette"]
        self.ignore_label = info["ignore_label"]
        split = config.eval_split if config.eval_split in info.get("splits", {}) else config.train_split
        dataset = input_pipeline.make_eval_dataset(config.dataset_dir, split, num_classes=num_classes,
                                                   limit=config.summary_images, verify=False)
        self.examples = [{k: v.numpy() for k, v in ex.items() if k != "filename"} for ex in dataset]
        self.split = split

    def write(self, model, step):
        import numpy as np  # pylint: disable=import-outside-toplevel

        from deeplab.training import summaries  # pylint: disable=import-outside-toplevel
        from deeplab.evaluation.visualization import colorize_labels  # pylint: disable=import-outside-toplevel

        if not self.examples:
            return
        predictions = []
        for example in self.examples:
            logits = model(example["image"][np.newaxis], training=False)
            predictions.append(np.argmax(np.asarray(logits)[0], axis=-1))
        images = _padded_batch([e["raw_image"] for e in self.examples], 0)
        labels = _padded_batch([e["label"] for e in self.examples], self.ignore_label)
        predictions = _padded_batch(predictions, self.ignore_label)
        n = len(self.examples)
        summaries.image(f"images/{self.split}_input", images, step=step, max_outputs=n)
        summaries.image(f"images/{self.split}_ground_truth",
                         colorize_labels(labels, self.palette, self.ignore_label), step=step, max_outputs=n)
        summaries.image(f"images/{self.split}_prediction",
                         colorize_labels(predictions, self.palette, self.ignore_label), step=step,
                         max_outputs=n)


def _same_model_config(saved, current):
    """Whether a logdir's model_config.json describes the model built now; options the saved
    config predates count as their value when it was written (DeepLabV3.complete_config)."""
    from deeplab.model.deeplabv3 import DeepLabV3  # pylint: disable=import-outside-toplevel

    ignore = ("name", "trainable")
    saved = json.loads(json.dumps(DeepLabV3.complete_config(saved)))
    saved = {k: v for k, v in saved.items() if k not in ignore}
    current = {k: v for k, v in json.loads(json.dumps(current)).items() if k not in ignore}
    return saved == current, sorted(k for k in set(saved) | set(current)
                                    if saved.get(k) != current.get(k))


def train(config, strategy=None):
    """Runs (or resumes) one training run; see the module docstring.

    Keras' global dtype policy is set for --mixed_precision during the run and restored after.

    Args:
      config: a :class:`TrainConfig`.
      strategy: a tf.distribute.Strategy to use instead of creating ``config.strategy``. One
        process should create one multi-device strategy and reuse it: TensorFlow caches
        collective parameters by keys that a second strategy over the same devices reuses.

    Returns:
      :class:`TrainResult`.

    Raises:
      UserError: bad flags or data (one clear message); NonFiniteLossError when the loss
        diverges (the last checkpoint is kept).
    """
    import keras  # pylint: disable=import-outside-toplevel

    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(config, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config, strategy):
    _check_config(config)
    if strategy is None:
        # A task of a TF_CONFIG cluster that does not train in this process: parameter-server
        # workers and ps tasks serve the chief's ClusterCoordinator; an evaluator evaluates the
        # chief's checkpoints as they appear.
        from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

        task_type, task_index = distribute.tf_config_task()
        if task_type == "evaluator":
            return _run_evaluator(config)
        if config.strategy == "parameter_server" and task_type in ("worker", "ps"):
            distribute.run_server(task_type, task_index)
            return None
    import logging as python_logging  # pylint: disable=import-outside-toplevel

    # TensorFlow's INFO lines (one per checkpoint write) drown the progress lines.
    python_logging.getLogger("tensorflow").setLevel(python_logging.WARNING)
    # TensorFlow and Keras are imported here, after flags and logical devices are settled.
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.training import checkpoints  # pylint: disable=import-outside-toplevel
    from deeplab.training import distribute
    from deeplab.data import input_pipeline
    from deeplab.training import losses
    from deeplab.training import summaries
    from deeplab.data import tfrecord
    from deeplab.training import optimizers  # pylint: disable=import-outside-toplevel
    from deeplab.training import recompute
    from deeplab.training import weight_decay
    from deeplab.model.deeplabv3 import build_model, load_imagenet_backbone  # pylint: disable=import-outside-toplevel
    from deeplab.training.schedules import PolyLearningRate  # pylint: disable=import-outside-toplevel

    info = tfrecord.read_dataset_info(config.dataset_dir, num_classes=config.num_classes or None)
    num_classes = info["num_classes"]
    ignore_label = info["ignore_label"]
    class_weights = tuple(config.class_weights) or None
    if class_weights and len(class_weights) != num_classes:
        raise ConfigError(f"--class_weights has {len(class_weights)} values but the dataset has "
                          f"{num_classes} classes; give one weight per class")
    if config.train_split not in info.get("splits", {config.train_split: 1}):
        raise ConfigError(f"--train_split={config.train_split}: {config.dataset_dir} has splits "
                          f"{sorted(info['splits'])}")
    label_note = tfrecord.check_label_classes(
        info, config.train_split, os.path.join(config.dataset_dir, tfrecord.DATASET_INFO_FILE))
    if label_note:
        print(f"WARNING: {label_note}", flush=True)

    if strategy is None:
        strategy = distribute.create_strategy(config.strategy, tpu=config.tpu)
    chief = distribute.is_chief(strategy)
    num_replicas = strategy.num_replicas_in_sync
    coordinator = None
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # Asynchronous replicas (Appendix B, Table 11): every scheduled step is one worker's
        # --batch_size batch, applied to the ps variables without waiting for the other workers;
        # --training_steps counts the steps of all workers together.
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    if config.batch_size % num_replicas:
        raise ConfigError(f"--batch_size={config.batch_size} does not split evenly over "
                          f"{num_replicas} replicas")
    if config.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
        if (config.mixed_precision == "bfloat16" and chief and not tf.config.list_logical_devices("GPU")
                and _cpu.has_native_bfloat16() is False):
            print("--mixed_precision=bfloat16: this CPU has no AVX512_BF16 / AMX, so bfloat16 is "
                  "emulated and atrous layers take a slower path; --mixed_precision=none is "
                  "faster here", flush=True)
    else:
        keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    # ------------------------------------------------------------------ model, optimizer, state
    schedule = PolyLearningRate(config.base_learning_rate, config.training_steps,
                                power=config.learning_power,
                                end_learning_rate=config.end_learning_rate,
                                warmup_steps=config.warmup_steps)
    learning_rate = schedule
    if coordinator is not None:
        # Asynchronous workers: the schedule follows a step counter on the ps that every step
        # increments atomically (TF1's global_step). Keras' optimizer.iterations is a
        # read-add-write, so concurrent workers lose increments of it.
        with strategy.scope():
            step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        learning_rate = lambda: schedule(step_var)  # pylint: disable=unnecessary-lambda-assignment
    else:
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    with strategy.scope():
        model = build_model(num_classes=num_classes, **config.model)
        optimizer = optimizers.SGD(learning_rate=learning_rate, momentum=config.momentum)
        if config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    if config.sync_batch_norm:
        distribute.set_sync_batch_norm(model, True)
    checkpoint = checkpoints.make_checkpoint(model, optimizer, step_var, rng=True)
    os.makedirs(config.logdir, exist_ok=True)
    if chief:
        removed = checkpoints.remove_interrupted_writes(config.logdir)
        if removed:
            print(f"Removed the leftovers of interrupted checkpoint writes: {', '.join(removed)}",
                  flush=True)
    # Every worker resumes from the chief's checkpoints (the others write scratch copies): the
    # newest one that reads back whole and finite; newer broken ones are skipped with a line,
    # and a logdir whose checkpoints are all broken is an error unless --fresh_start.
    try:
        latest = checkpoints.newest_intact_checkpoint(
            config.logdir, report=(lambda line: print(line, flush=True)) if chief else
            (lambda line: None), repair_pointer=chief)
    except UserError:
        if not config.fresh_start:
            raise
        latest = None
        print(f"--fresh_start: training {config.logdir} from step 0; its unreadable "
              "checkpoints will be overwritten", flush=True)
    manager = tf.train.CheckpointManager(
        checkpoint, distribute.worker_logdir(config.logdir, strategy),
        max_to_keep=config.keep_checkpoints, checkpoint_name=checkpoints.CHECKPOINT_NAME)

    start_step = 0
    if latest:
        config_path = os.path.join(config.logdir, checkpoints.MODEL_CONFIG_FILE)
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                same, differing = _same_model_config(json.load(f), model.get_config())
            if not same:
                raise ConfigError(f"--logdir={config.logdir} holds a run of another model "
                                  f"({', '.join(differing)} differ from {config_path}); use a new "
                                  "--logdir, or --init_checkpoint to start from that run")
        if checkpoints.rng_states(model) and not checkpoints.checkpoint_has_rng(latest):
            # Written before the random generators were saved: restore what it has.
            checkpoints.make_checkpoint(model, optimizer, step_var).restore(
                latest).assert_existing_objects_matched()
        else:
            checkpoint.restore(latest).assert_existing_objects_matched()
        start_step = int(step_var.numpy())
        if start_step > config.training_steps:
            raise ConfigError(f"--training_steps={config.training_steps} is below step {start_step} "
                              f"that {latest} has reached: raise --training_steps to continue, or "
                              "use a new --logdir to train a shorter schedule")
        logging.info("Resuming from %s at step %d (optimizer iterations %d)",
                     latest, start_step, int(optimizer.iterations.numpy()))
        if chief:
            print(f"Resuming from {latest} at step {start_step}", flush=True)
    else:
        if config.imagenet_weights:
            loaded = load_imagenet_backbone(model, config.imagenet_weights)
            logging.info("Loaded %d backbone layers from %s", loaded, config.imagenet_weights)
        if config.init_checkpoint:
            skipped = checkpoints.restore_for_finetuning(model, config.init_checkpoint)
            print(f"Initialized from {config.init_checkpoint}; skipped: {', '.join(skipped) or 'none'}",
                  flush=True)
    if chief:
        checkpoints.write_run_info(config.logdir, model, info)
        recipe = run_record.resolved_config(config, model.get_config(), num_classes)
        run_record.write_config(config.logdir, recipe)

    # ------------------------------------------------------------------ data
    # Resuming: with --deterministic the stream is the uninterrupted run's, continued exactly
    # (same seed; the batches already trained on are skipped as serialized records, before any
    # decoding), so kill-and-resume reproduces the uninterrupted weights (tests/test_resume.py).
    # Otherwise a resumed run draws a new (still reproducible) stream rather than repeating the
    # first images: the seed moves with the step it resumes from. Parameter-server training
    # (asynchronous) is never exact.
    exact_resume = config.deterministic and coordinator is None
    data_seed = config.seed if exact_resume else config.seed + 1_000_003 * start_step
    skip_batches = start_step if exact_resume else 0

    def dataset_fn(input_context, verify=True):
        return input_pipeline.make_train_dataset(
            config.dataset_dir, config.train_split, batch_size=config.batch_size,
            crop_size=tuple(config.crop_size), min_scale=config.min_scale_factor,
            max_scale=config.max_scale_factor, scale_step=config.scale_factor_step,
            flip=config.random_flip, bootstrap_classes=tuple(config.bootstrap_classes),
            bootstrap_repeat=config.bootstrap_repeat, shuffle_buffer=config.shuffle_buffer,
            seed=data_seed, deterministic=config.deterministic, input_context=input_context,
            num_classes=num_classes, verify=verify, skip_batches=skip_batches)

    if coordinator is None:
        dataset = strategy.distribute_datasets_from_function(dataset_fn)
        iterator = iter(dataset)
    else:
        iterator = iter(coordinator.create_per_worker_dataset(
            _per_worker_dataset_fn(strategy, dataset_fn)))

    # ------------------------------------------------------------------ the step
    upsample_logits = model.upsample_logits
    check_gradients = config.mixed_precision != "float16"  # the loss scaler skips those steps
    # L2 decay terms: gradients added per variable after the backward pass (less memory).
    decay = weight_decay.decay_coefficients(model)
    forward = recompute.training_forward(model, config.recompute_through)
    if forward.recompute_disabled_reason and chief:
        print(f"--recompute_through={config.recompute_through} is off for this run: "
              f"{forward.recompute_disabled_reason}", flush=True)

    def replica_step(images, labels):
        context = tf.distribute.get_replica_context()
        learning_rate = schedule(optimizer.iterations if coordinator is None else step_var)
        with tf.GradientTape() as tape:
            logits = forward(images)
            targets = labels
            if not upsample_logits:  # Table 8: the labels at the logits' centres instead
                targets = losses.labels_at_feature_centres(labels, model.logits_stride)
            if config.focal_gamma:
                pixel_losses, valid = losses.focal_pixel_losses(
                    targets, logits, gamma=config.focal_gamma, ignore_label=ignore_label,
                    class_weights=class_weights)
            else:
                pixel_losses, valid = losses.pixel_cross_entropy(
                    targets, logits, ignore_label=ignore_label, class_weights=class_weights)
            if config.top_k_percent_pixels < 1.0:  # hard-pixel mining, per replica
                fraction = losses.hard_pixel_fraction(
                    optimizer.iterations if coordinator is None else step_var,
                    config.top_k_percent_pixels, config.hard_example_mining_step)
                loss_sum, loss_count = losses.hard_pixel_selection(pixel_losses, valid, fraction)
            else:
                loss_sum, loss_count = tf.reduce_sum(pixel_losses), tf.reduce_sum(valid)
            # The mean over the counted pixels of the *global* batch: each replica divides its
            # sum by the all-reduced count, and the optimizer sums the replicas' gradients.
            global_valid = context.all_reduce(tf.distribute.ReduceOp.SUM, loss_count)
            cross_entropy = loss_sum / tf.maximum(global_valid, 1.0)
            # The L2 decay terms' gradients are added after the backward pass, one variable at
            # a time (deeplab.training.weight_decay: less memory); their value is only reported.
            call_loss, decay_loss = weight_decay.split_losses(model, decay)
            regularization = (call_loss + decay_loss) / num_replicas
            total = cross_entropy + regularization
            scaled = optimizer.scale_loss(cross_entropy + call_loss / num_replicas)
        gradients = tape.gradient(scaled, model.trainable_variables)
        gradients = weight_decay.add_decay_gradients(
            gradients, model.trainable_variables, decay,
            scale=optimizer.scale_loss(tf.constant(1.0)) / num_replicas)
        optimizer.apply(gradients, model.trainable_variables)
        if coordinator is not None:
            step_var.assign_add(1)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predictions, targets), tf.float32) * valid)
        finite = tf.reduce_all(tf.math.is_finite(total))
        if check_gradients:
            finite = tf.logical_and(finite, tf.math.is_finite(tf.linalg.global_norm(gradients)))
        return {"cross_entropy": cross_entropy, "regularization": regularization,
                "correct": correct, "valid": tf.reduce_sum(valid),
                "nonfinite": 1.0 - tf.cast(finite, tf.float32),
                "learning_rate": learning_rate / num_replicas}

    # XLA compiles the per-replica computation; reading the iterator cannot be compiled.
    compiled_step = tf.function(replica_step, jit_compile=True) if config.jit_compile else replica_step

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        per_replica = strategy.run(compiled_step, args=(images, labels))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    # ------------------------------------------------------------------ the loop
    writer = tf.summary.create_file_writer(os.path.join(config.logdir, TRAIN_SUMMARY_DIR)) \
        if chief else tf.summary.create_noop_writer()
    image_summaries = None
    if chief and config.image_summary_steps > 0 and config.summary_images > 0:
        image_summaries = _ImageSummaries(config, info, num_classes)
    history = {}
    last_saved = latest
    last_saved_step = start_step if last_saved else None
    window_start, window_steps = time.time(), 0
    run_start = time.time()
    step = start_step
    # --stop_at_step ends this process early; the schedule still runs to --training_steps, and
    # the same command without it resumes from the checkpoint written at the stop.
    end_step = min(config.stop_at_step or config.training_steps, config.training_steps)
    stopping = f" (stopping at {end_step})" if end_step < config.training_steps else ""
    print(f"Training {config.model.get('backbone')} on {config.dataset_dir}:{config.train_split} "
          f"({num_classes} classes), {distribute.describe(strategy)}, steps {start_step}->"
          f"{config.training_steps}{stopping}, batch {config.batch_size}, "
          f"crop {tuple(config.crop_size)}", flush=True)
    if chief:
        print(f"Logs, checkpoints and TensorBoard events in {config.logdir}: watch with "
              f"`tensorboard --logdir {config.logdir}`", flush=True)
        with writer.as_default():
            run_record.write_summaries(recipe, step=start_step)
    def after_step(step, values):
        """Bookkeeping of one finished step: NaN check, history, logs, summaries, checkpoint."""
        nonlocal window_start, window_steps, last_saved, last_saved_step
        window_steps += 1
        if values["nonfinite"] > 0:
            where = f"; the last good checkpoint is {last_saved}" if last_saved else \
                "; no checkpoint was written"
            what = (f"non-finite loss or gradients at step {step} (loss "
                    f"{values['cross_entropy'] + values['regularization']:.4g}, learning rate "
                    f"{values['learning_rate']:.3g})")
            if last_saved and last_saved_step == step - 1 and chief:
                # The checkpoint holds the very weights this step started from: finite, but
                # diverged. Resuming from it would stop here again whatever the rate.
                try:
                    folder, resume_from = checkpoints.set_aside_checkpoint(
                        manager.directory, last_saved, f"{what}: the first step from these weights")
                    where = (f"; {os.path.basename(last_saved)} holds the weights that gave it and "
                             f"was moved to {folder}; a rerun resumes from "
                             f"{resume_from or 'step 0 (no earlier checkpoint is left)'}")
                except (OSError, tf.errors.OpError) as error:  # the NaN message must survive
                    where = (f"; {last_saved} holds the weights that gave it, but could not be "
                             f"moved aside ({error}): delete or move it before rerunning")
            raise NonFiniteLossError(
                f"{what}: training stopped{where}. Lower "
                "--base_learning_rate, check the labels against --num_classes, or try "
                "--mixed_precision=none")
        record = {
            "loss": values["cross_entropy"] + values["regularization"],
            "cross_entropy": values["cross_entropy"],
            "regularization": values["regularization"],
            "learning_rate": values["learning_rate"],
            "pixel_accuracy": values["correct"] / max(values["valid"], 1.0),
            "valid_pixels": values["valid"],
        }
        history[step] = record
        if step % config.log_steps == 0 or step == config.training_steps:
            now = time.time()
            if coordinator is None:
                images_per_second = window_steps * config.batch_size / max(now - window_start, 1e-9)
                eta = (end_step - step) * (now - window_start) / window_steps
            else:  # results arrive in bursts (at every checkpoint's join): average since the start
                images_per_second = (step - start_step) * config.batch_size / max(now - run_start, 1e-9)
                eta = (end_step - step) * (now - run_start) / (step - start_step)
            summaries.scalar("loss/total", record["loss"], step=step)
            summaries.scalar("loss/cross_entropy", record["cross_entropy"], step=step)
            summaries.scalar("loss/regularization", record["regularization"], step=step)
            summaries.scalar("learning_rate", record["learning_rate"], step=step)
            summaries.scalar("train/pixel_accuracy", record["pixel_accuracy"], step=step)
            summaries.scalar("perf/images_per_second", images_per_second, step=step)
            if chief:
                print(f"step {step:>6d}/{config.training_steps}  loss {record['loss']:.4f} "
                      f"(ce {record['cross_entropy']:.4f} reg {record['regularization']:.4f})  "
                      f"lr {record['learning_rate']:.4g}  acc {record['pixel_accuracy']:.3f}  "
                      f"{images_per_second:.1f} img/s  ETA {format_duration(eta)}", flush=True)
            window_start, window_steps = now, 0
        if image_summaries and (step % config.image_summary_steps == 0 or step == config.training_steps):
            image_summaries.write(model, step)
        if step % config.save_checkpoint_steps == 0 or step == config.training_steps:
            step_var.assign(step)
            if not checkpoints.weights_are_finite(model):
                raise NonFiniteLossError(
                    f"non-finite weights at step {step}: no checkpoint written for it; the last "
                    f"good checkpoint is {last_saved}. Lower --base_learning_rate")
            last_saved = _save_checkpoint(manager, step, last_saved)
            last_saved_step = step
            logging.info("Saved %s", last_saved)

    with writer.as_default(), input_pipeline.explain_data_errors(config.dataset_dir, config.train_split):
        if coordinator is None:
            while step < end_step:
                values = {k: float(v) for k, v in train_step(iterator).items()}
                step += 1
                after_step(step, values)
        else:
            step = _run_scheduled_steps(coordinator, train_step, iterator, start_step, end_step,
                                        config, after_step)
        writer.flush()
    if last_saved_step != step:
        step_var.assign(step)
        if not checkpoints.weights_are_finite(model):
            raise NonFiniteLossError(f"non-finite weights at step {step}: no checkpoint written "
                                     f"for it; the last good checkpoint is {last_saved}")
        last_saved = _save_checkpoint(manager, step, last_saved)
    if chief and step > start_step:
        print(f"Trained steps {start_step}->{step} in {format_duration(time.time() - run_start)}; "
              f"checkpoint {last_saved}", flush=True)

    result = TrainResult(step=step, checkpoint=last_saved, history=history, resumed_from=start_step,
                         num_replicas=num_replicas)
    if config.eval_after_training and chief:
        result.eval = evaluate_after_training(last_saved, config, num_classes=num_classes,
                                              step=step)
    return result


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions): the earlier ones are intact."""


def _save_checkpoint(manager, step, last_saved):
    """``manager.save`` for ``step``; a write that fails (disk full, read-only folder) removes
    what it left behind and stops the run with one line naming the checkpoint, the reason and
    the intact checkpoint a rerun resumes from."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.training import checkpoints  # pylint: disable=import-outside-toplevel

    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as error:
        folder = manager.directory
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else \
            error.message.strip().splitlines()[0]
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
            f"command to resume") from error


def _per_worker_dataset_fn(strategy, dataset_fn):
    """The function ``ClusterCoordinator.create_per_worker_dataset`` runs on every worker.

    Worker i of N reads input pipeline i of N (its own shards, its own seed), as the workers of
    MultiWorkerMirroredStrategy do. The function is traced once on the chief; the worker's
    index is a value TensorFlow fills in on each worker
    (``tf.distribute.coordinator.experimental_get_current_worker_index``), so the N pipelines
    are built and each worker picks its own.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

    num_workers = distribute.num_tasks("worker")
    replicas = strategy.num_replicas_in_sync

    def worker_dataset(input_context):
        del input_context  # ParameterServerStrategy's: one pipeline per worker, no index
        if num_workers == 1:
            return dataset_fn(tf.distribute.InputContext(1, 0, replicas))
        index = tf.distribute.coordinator.experimental_get_current_worker_index()
        pipelines = [dataset_fn(tf.distribute.InputContext(num_workers, i, replicas), verify=i == 0)
                     for i in range(num_workers)]
        return tf.data.Dataset.choose_from_datasets(
            pipelines, tf.data.Dataset.from_tensors(tf.cast(index, tf.int64)).repeat())

    def per_worker_dataset_fn():
        return strategy.distribute_datasets_from_function(worker_dataset)

    return per_worker_dataset_fn


def _run_scheduled_steps(coordinator, train_step, iterator, start_step, end_step, config,
                         after_step):
    """Parameter-server training loop: schedules steps start_step+1..end_step on
    whichever worker is free, and hands each finished step's values to ``after_step`` in step
    order.

    The workers run ahead of the bookkeeping by at most a few steps per worker. Before every
    checkpoint the coordinator waits for every scheduled step (``join``), so a checkpoint of
    step N holds exactly N applied updates. A worker that fails is the coordinator's business:
    its steps run again on the other workers, and it rejoins when restarted at its address.

    Returns:
      the last step.
    """
    import collections  # pylint: disable=import-outside-toplevel

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

    window = 2 * distribute.num_tasks("worker") + 2
    pending = collections.deque()
    step = start_step
    try:
        while step < end_step:
            step += 1
            pending.append((step, coordinator.schedule(train_step, args=(iterator,))))
            boundary = step % config.save_checkpoint_steps == 0 or step == end_step
            if boundary:
                coordinator.join()
            while pending and (boundary or len(pending) > window):
                done, remote = pending.popleft()
                after_step(done, {k: float(v) for k, v in remote.fetch().items()})
    except tf.errors.UnavailableError as error:
        latest = tf.train.latest_checkpoint(config.logdir)
        raise UserError(
            f"--strategy=parameter_server: a parameter server became unreachable at step {step} "
            f"({error.message.splitlines()[0][:200]}); restart the whole cluster with the same "
            f"command: the chief resumes from {latest or 'the start (no checkpoint yet)'}") from error
    return step


def _run_evaluator(config):
    """TF_CONFIG task type "evaluator": evaluates each new checkpoint of --logdir once
    (``deeplab.evaluate --watch``), writing eval/ summaries, until the checkpoint of step
    --training_steps or --evaluator_timeout seconds without a new one."""
    from deeplab import evaluate  # pylint: disable=import-outside-toplevel

    settings = {"dataset_dir": config.dataset_dir, "split": config.eval_split,
                "num_classes": config.num_classes or None,
                "output_stride": config.eval_output_stride or None,
                "scales": tuple(config.eval_scales), "flip": config.eval_flip,
                "limit": config.eval_limit or None}
    os.makedirs(config.logdir, exist_ok=True)
    print(f"Evaluator: evaluating every new checkpoint of {config.logdir} on "
          f"{config.dataset_dir}:{config.eval_split}", flush=True)
    evaluated = evaluate.watch(config.logdir, settings, timeout=config.evaluator_timeout,
                               interval=config.evaluator_interval,
                               final_step=config.training_steps)
    print(f"Evaluator: {len(evaluated)} checkpoint(s) evaluated", flush=True)
    return None


def evaluate_after_training(checkpoint, config, *, num_classes, step):
    """Evaluates ``checkpoint`` on --eval_split (--eval_scales, --eval_flip, --eval_output_stride),
    prints the per-class IOU table and mIOU, and writes eval/ summaries at ``step``.

    Uses ``deeplab.evaluation.evaluator.evaluate_checkpoint`` (what ``python -m deeplab.evaluate`` runs),
    so the number printed is the one the evaluate binary gives for the same checkpoint.
    """
    from deeplab import evaluate  # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import evaluator as evaluation
    from deeplab.evaluation import metrics

    start = time.time()
    results = evaluation.evaluate_checkpoint(
        checkpoint, config.dataset_dir, split=config.eval_split, num_classes=num_classes,
        output_stride=config.eval_output_stride or None, scales=tuple(config.eval_scales),
        flip=config.eval_flip, limit=config.eval_limit or None)
    evaluate.write_summaries(config.logdir, dict(results, step=step))
    print(metrics.format_iou_table(results["confusion_matrix"], results["class_names"]), flush=True)
    scales = ",".join(f"{s:g}" for s in results["scales"])
    print(f"{config.eval_split} mIOU {100 * results['miou']:.2f}% over {results['num_images']} images "
          f"(output stride {results['output_stride']}, scales {scales}, flip {results['flip']}, "
          f"step {step}, {format_duration(time.time() - start)})", flush=True)
    return results


def _build_synthetic_if_missing():
    """--build_synthetic_if_missing: writes the synthetic dataset into --dataset_dir once.

    An existing dataset is used as it is; if it was built with other --synthetic_* values a
    warning says so (delete the folder to rebuild it).
    """
    from deeplab.data import synthetic  # pylint: disable=import-outside-toplevel
    from deeplab.data import tfrecord

    size = tuple(int(v) for v in FLAGS.synthetic_image_size)
    if len(size) == 1:
        size *= 2
    wanted = {"num_classes": FLAGS.synthetic_num_classes,
              "splits": {"train": FLAGS.synthetic_num_train, "val": FLAGS.synthetic_num_val}}
    info_path = os.path.join(FLAGS.dataset_dir, tfrecord.DATASET_INFO_FILE)
    if os.path.exists(info_path):
        try:
            with open(info_path, encoding="utf-8") as f:
                existing = json.load(f)
        except (OSError, ValueError):
            return  # the training run reports an unreadable dataset.json
        found = {"num_classes": existing.get("num_classes"), "splits": existing.get("splits")}
        source = str(existing.get("source", ""))
        if found != wanted or (source and f"image_size={size[0]}x{size[1]}" not in source):
            print(f"warning: {FLAGS.dataset_dir} already holds a dataset ({found}, {source or 'no source'}) "
                  f"that differs from the --synthetic_* flags ({wanted}, {size[0]}x{size[1]}); using it "
                  "as it is. Delete the folder to rebuild it.", flush=True)
        return
    start = time.time()
    print(f"Building the synthetic dataset in {FLAGS.dataset_dir} ({FLAGS.synthetic_num_train} train + "
          f"{FLAGS.synthetic_num_val} val images, {size[0]}x{size[1]}, "
          f"{FLAGS.synthetic_num_classes} classes)", flush=True)
    synthetic.build_synthetic_dataset(FLAGS.dataset_dir, num_train=FLAGS.synthetic_num_train,
                                      num_val=FLAGS.synthetic_num_val, image_size=size,
                                      num_classes=FLAGS.synthetic_num_classes, seed=FLAGS.seed)
    print(f"  done in {format_duration(time.time() - start)}", flush=True)


def main(argv):
    if len(argv) > 1:
        print(f"deeplab.train: error: unexpected arguments {argv[1:]} (flags need --name=value)",
              file=sys.stderr)
        sys.exit(1)
    _console.quiet_absl()  # e.g. an INFO line per checkpoint write; --verbosity=0 shows them
    try:
        if FLAGS.logical_cpu_devices > 1:
            from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

            distribute.configure_logical_cpus(FLAGS.logical_cpu_devices)
        config = config_from_flags()
        _check_config(config)
        if FLAGS.build_synthetic_if_missing:
            _build_synthetic_if_missing()
        from deeplab.training import distribute  # pylint: disable=import-outside-toplevel

        log_name = run_record.log_file_name(*distribute.tf_config_task())
        with run_record.console_log(config.logdir, log_name):
            result = train(config)
        if config.strategy == "parameter_server" and result is not None:
            # The run is complete and its files are closed (checkpoints are written
            # synchronously, the summary writer flushed). After a worker was lost, the
            # ClusterCoordinator's C++ teardown at interpreter exit can abort ("terminate
            # called ... exception not rethrown"), turning a finished run into exit 134:
            # leave without it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # pylint: disable=protected-access
    except UserError as error:
        print(f"deeplab.train: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except flags.ValidationError as error:
        print(f"deeplab.train: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
