"""The flags an experiment flagfile may hold, defined once for every binary.

train, evaluate, visualize, export_saved_model, predict and reproduce all import this
module, so one ``experiments/*.flags`` file serves every one of them (absl rejects a
flagfile that names a flag the binary does not define). Flags that only make sense on a
binary's own command line (an output folder, input images) are defined by that binary.

Each flag sets the field of the same name of ``deeplab.config.experiment.ExperimentConfig``;
:func:`experiment_config` reads them all in one place. Library code never reads flags:
binaries pass the config (or plain values from it) on.
"""

import copy

from absl import flags

from deeplab.config import experiment

# ---------------------------------------------------------------- data
flags.DEFINE_string(
    "dataset_dir",
    None,
    "Folder of TFRecord shards + dataset.json (datasets/*.py write it), or "
    "'tfds:NAME' for a TensorFlow Datasets dataset.",
)
flags.DEFINE_string("train_split", "train", "Split to train on (e.g. train, trainaug, trainval).")
flags.DEFINE_string("eval_split", "val", "Split to evaluate / visualize.")
flags.DEFINE_integer(
    "num_classes",
    0,
    "Number of classes; 0 takes it from dataset.json. A value that disagrees "
    "with dataset.json is an error.",
)
flags.DEFINE_list("crop_size", ["513"], "Training crop: 'S' or 'H,W' (paper: 513; Cityscapes 769).")
flags.DEFINE_float("min_scale_factor", 0.5, "Smallest random scale of a training image (Sec. 4.1).")
flags.DEFINE_float("max_scale_factor", 2.0, "Largest random scale of a training image (Sec. 4.1).")
flags.DEFINE_float("scale_factor_step", 0.25, "Step between random scales; 0 = continuous.")
flags.DEFINE_boolean("random_flip", True, "Random left-right flip of training crops (Sec. 4.1).")
flags.DEFINE_list(
    "bootstrap_classes",
    [],
    "Hard-image bootstrapping (Sec. 4.3): class names or ids whose images are "
    "repeated in the training stream (paper: bicycle,chair,diningtable,"
    "pottedplant,sofa).",
)
flags.DEFINE_integer("bootstrap_repeat", 1, "How many times a bootstrapped image appears.")
flags.DEFINE_integer("shuffle_buffer", 1024, "Shuffle buffer of the training stream.")
flags.DEFINE_boolean(
    "build_synthetic_if_missing",
    False,
    "Write the synthetic dataset to --dataset_dir if it has no dataset.json (the quick start).",
)
flags.DEFINE_list("synthetic_image_size", ["96", "96"], "H,W of synthetic images.")
flags.DEFINE_integer("synthetic_num_train", 400, "Synthetic training images.")
flags.DEFINE_integer("synthetic_num_val", 100, "Synthetic validation images.")
flags.DEFINE_integer("synthetic_num_classes", 5, "Synthetic classes (background included).")

# ---------------------------------------------------------------- model (deeplab.build_model)
flags.DEFINE_enum(
    "backbone",
    "resnet101",
    ["resnet50", "resnet101", "resnet14_tiny", "mobilenet_v2", "mobilenet_v2_dm05"],
    "ResNet-v1 depth (resnet14_tiny: not in the paper; tests and quick start), or "
    "the atrous MobileNetV2 of the authors' mobile models (depth 1.0 / 0.5; "
    "deeplab.import_official).",
)
flags.DEFINE_integer("output_stride", 16, "Training output stride, 4..256 (Sec. 3.1).")
flags.DEFINE_list("multi_grid", ["1", "2", "4"], "Unit rates of block4..block7 (Sec. 3.2.1).")
flags.DEFINE_list(
    "atrous_rates",
    ["6", "12", "18"],
    "ASPP rates at output stride 16; scaled by 16/output_stride (Sec. 3.3).",
)
flags.DEFINE_boolean("image_pooling", True, "ASPP image-level features (Sec. 3.3).")
flags.DEFINE_enum("head", "aspp", ["aspp", "cascade"], "aspp (Sec. 3.3) or cascade (Sec. 3.2).")
flags.DEFINE_integer("num_cascaded_blocks", 0, "Extra blocks 5..7 after block4 (Sec. 3.2).")
flags.DEFINE_boolean(
    "upsample_logits",
    True,
    "Upsample logits to the label size; False takes the loss against the labels "
    "at the feature centres instead (Table 8 ablation).",
)
flags.DEFINE_float(
    "batch_norm_momentum",
    0.9997,
    "BN statistics decay of the head (ASPP, decoder) and of a ResNet backbone: the paper's "
    "and the authors' ASPP value, 0.9997.",
)
flags.DEFINE_float(
    "backbone_batch_norm_momentum",
    0.0,
    "The backbone's BN decay; 0: the authors' per backbone, 0.997 for MobileNetV2, "
    "--batch_norm_momentum for ResNet (their public code uses 0.95 there; CONVENTIONS.md).",
)
flags.DEFINE_boolean(
    "freeze_batch_norm",
    False,
    "BN normalizes with its moving statistics and never updates them; gamma "
    "and beta still train, as in the authors' code (second stage, Sec. 4.3).",
)
flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay on conv kernels.")
flags.DEFINE_integer("aspp_filters", 256, "Channels of every ASPP branch.")
flags.DEFINE_enum(
    "backbone_padding",
    "symmetric",
    ["symmetric", "same"],
    "MobileNetV2's stride-2 layers: symmetric (this project's geometry at every "
    "size) or same (TensorFlow's, as the authors' graphs; equal at odd sizes).",
)
flags.DEFINE_integer(
    "decoder_output_stride",
    0,
    "0: DeepLabv3. 4 (or 8): the DeepLabv3+ decoder (Chen et al. 2018) fuses "
    "block1 (block2) features with the ASPP output; not in this paper.",
)
flags.DEFINE_boolean(
    "decoder_separable_conv",
    True,
    "The decoder's 3x3 convolutions are depthwise-separable (the authors' "
    "DeepLabv3+) or, with --nodecoder_separable_conv, plain.",
)
flags.DEFINE_float(
    "aspp_dropout",
    0.1,
    "Dropout rate after the ASPP projection, training only (the authors' code: "
    "0.1; 0 turns it off).",
)

flags.DEFINE_float(
    "logits_init_stddev",
    0.01,
    "The new logits kernel starts from a truncated normal of this stddev (the authors' "
    "0.01); 0: Glorot uniform.",
)

# ---------------------------------------------------------------- training
flags.DEFINE_string("logdir", None, "Checkpoints and TensorBoard events of a training run.")
flags.DEFINE_integer("training_steps", 30000, "Training iterations (Sec. 4.1: 30K on VOC).")
flags.DEFINE_integer(
    "stop_at_step",
    0,
    "Stop this process after this step and checkpoint it (0: at --training_steps). "
    "The learning-rate schedule still spans --training_steps; the same command "
    "without it resumes.",
)
flags.DEFINE_integer("batch_size", 16, "Global batch size (Sec. 4.1 / Table 9: 16).")
flags.DEFINE_float(
    "base_learning_rate", 0.007, "Poly schedule base (Sec. 4.1: 0.007; stage 2: 0.001)."
)
flags.DEFINE_float("learning_power", 0.9, "Poly schedule power (Sec. 4.1).")
flags.DEFINE_float("end_learning_rate", 0.0, "Learning rate reached at --training_steps.")
flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps before the poly decay.")
flags.DEFINE_float(
    "logits_bias_lr_multiplier",
    2.0,
    "The logits' bias trains at this multiple of the learning rate (the authors' "
    "train_utils.py: 2; 1 turns it off).",
)
flags.DEFINE_float("momentum", 0.9, "SGD momentum (Sec. 4.1).")
flags.DEFINE_list(
    "class_weights",
    [],
    "Per-class loss weights: num_classes numbers, or a rule computed at the start of the run "
    "from the training split's labels: median_frequency (SegNet: median(freq) / freq(c)) or "
    "inverse_sqrt (its square root, milder); deeplab/data/class_weights.py. Empty: all 1.",
)
flags.DEFINE_float(
    "top_k_percent_pixels",
    1.0,
    "Hard-pixel mining (the authors' code): only this share of the batch's "
    "pixels, those with the largest loss, enters the loss; 1.0: every pixel.",
)
flags.DEFINE_integer(
    "hard_example_mining_step",
    0,
    "Warm-up of hard-pixel mining: the kept share falls linearly from 1.0 to "
    "--top_k_percent_pixels over this many steps (0: from the start).",
)
flags.DEFINE_float(
    "focal_gamma",
    0.0,
    "Focal loss (Lin et al. 2017): scale each pixel's cross-entropy by "
    "(1 - p_true) ** gamma; 0: plain cross-entropy. Class weights still apply.",
)
flags.DEFINE_string(
    "imagenet_weights",
    None,
    "keras.applications ResNet50/101 ImageNet weight file (*_notop.h5 or "
    ".weights.h5) to initialize the backbone.",
)
flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Checkpoint (file prefix or logdir) to initialize from (stage 2, COCO -> VOC); "
    "the logits layer is skipped when num_classes differs.",
)
flags.DEFINE_integer("save_checkpoint_steps", 1000, "Checkpoint every N steps (and at the end).")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept in --logdir.")
flags.DEFINE_integer("log_steps", 20, "Console progress line and scalar summaries every N steps.")
flags.DEFINE_integer("image_summary_steps", 500, "Image summaries every N steps (0 = never).")
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    ["none", "bfloat16", "float16"],
    "Compute dtype; loss and softmax stay float32.",
)
flags.DEFINE_enum(
    "recompute_through",
    "block2",
    ["none", "stem", "block1", "block2"],
    "Recompute the backbone up to this endpoint in the backward pass instead of "
    "keeping its activations (deeplab/training/recompute.py). block2 (default) cut peak "
    "training memory from 4.1-5.2 to 3.1 GiB at batch 8, 321x321 (ResNet-101, 2 "
    "cores) for 4-8% more time per step; none keeps every activation.",
)
flags.DEFINE_boolean(
    "jit_compile",
    False,
    "XLA-compile the train step. Off by default: on this project's 2-core CPU the "
    "quick start trained at 3.8 img/s with it vs 62 without (16x slower).",
)
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "multi_worker_mirrored", "tpu", "parameter_server"],
    "tf.distribute strategy.",
)
flags.DEFINE_boolean("sync_batch_norm", False, "Synchronize BN statistics across replicas.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("seed", 0, "Random seed (initialization, data order, augmentation).")
flags.DEFINE_boolean(
    "deterministic",
    False,
    "Deterministic data order and ops; a resumed run then continues the "
    "uninterrupted run's data stream exactly (kill and resume reproduces its "
    "weights on one machine). Slower input pipeline.",
)
flags.DEFINE_boolean(
    "fused_batch_norm",
    True,
    "Batch norm trains with TensorFlow's fused kernel (deeplab/model/batch_norm.py); "
    "--nofused_batch_norm (or DEEPLAB_FUSED_BATCH_NORM=0) takes Keras' own.",
)
flags.DEFINE_boolean(
    "fused_momentum",
    True,
    "The momentum update is one fused kernel per variable "
    "(deeplab/training/optimizers.py); --nofused_momentum (or "
    "DEEPLAB_FUSED_MOMENTUM=0) takes Keras' own update.",
)
flags.DEFINE_integer(
    "summary_images", 3, "Images shown in the TensorBoard image summaries.", lower_bound=0
)
flags.DEFINE_boolean(
    "fresh_start",
    False,
    "Train from step 0 even though --logdir holds checkpoints that cannot be read "
    "(without it such a logdir is an error; intact checkpoints are always resumed).",
)
flags.DEFINE_float(
    "evaluator_interval",
    10.0,
    "TF_CONFIG task 'evaluator': seconds between looks for a new checkpoint.",
)
flags.DEFINE_float(
    "evaluator_timeout",
    3600.0,
    "TF_CONFIG task 'evaluator': stop when no new checkpoint appeared for this long.",
)
flags.DEFINE_boolean(
    "eval_after_training",
    False,
    "Evaluate --eval_split with the final weights and print mIOU (quick start).",
)

# ---------------------------------------------------------------- evaluation
flags.DEFINE_string(
    "checkpoint",
    None,
    "Checkpoint to read: a checkpoint file prefix or a logdir (its latest); defaults to --logdir.",
)
flags.DEFINE_integer(
    "eval_output_stride", 0, "Output stride at evaluation; 0 = the training one (Tables 4, 6, 10)."
)
flags.DEFINE_list(
    "eval_scales",
    ["1.0"],
    "Input scales averaged at evaluation (Sec. 4.2: 0.5,0.75,1.0,1.25,1.5,1.75).",
)
flags.DEFINE_boolean("eval_flip", False, "Also average the left-right flipped input (Sec. 4.2).")
flags.DEFINE_integer("eval_limit", 0, "Evaluate only the first N images (0 = all).")
flags.DEFINE_list(
    "eval_tile_size",
    [],
    "Sliding-window inference: images (at each scale) larger than this size, "
    "'H,W' or one number, are segmented in overlapping windows whose "
    "probabilities are averaged; empty: whole images. In evaluate, predict, "
    "visualize and the exported SavedModel.",
)
flags.DEFINE_float(
    "eval_tile_overlap", 0.25, "Share of a window that its neighbour overlaps, in [0, 1)."
)
flags.DEFINE_list(
    "eval_pad_to",
    [],
    "The authors' whole-image evaluation: pad each image at the bottom and right to at "
    "least 'H,W' (their eval_crop_size, 513 on VOC) with the backbone's pad pixel before "
    "inference, and crop the prediction back; empty: the image as it is (CONVENTIONS.md, "
    "'Evaluation size').",
)

FLAGS = flags.FLAGS


# ---- validation at parse time: a bad value is one line naming the flag, before anything runs.
def _validate(name, check, message):
    flags.register_validator(name, check, message=f"--{name} {message}")


_validate("top_k_percent_pixels", lambda v: 0.0 < v <= 1.0, "must be in (0, 1]")
_validate("hard_example_mining_step", lambda v: v >= 0, "must be >= 0")
_validate("focal_gamma", lambda v: v >= 0.0, "must be >= 0")


def _positive_ints(values, minimum=1):
    try:
        return bool(values) and all(int(v) >= minimum for v in values)
    except (TypeError, ValueError):
        return False


_validate(
    "min_scale_factor",
    lambda v: 0 < v <= experiment.MAX_SCALE_FACTOR,
    f"must be positive and at most {experiment.MAX_SCALE_FACTOR:g} (finite)",
)
_validate(
    "max_scale_factor",
    lambda v: 0 < v <= experiment.MAX_SCALE_FACTOR,
    f"must be positive and at most {experiment.MAX_SCALE_FACTOR:g} (finite)",
)
_validate("scale_factor_step", lambda v: v >= 0, "must be >= 0 (0: continuous scales)")
flags.register_multi_flags_validator(
    ["min_scale_factor", "max_scale_factor"],
    lambda f: f["min_scale_factor"] <= f["max_scale_factor"],
    message="--min_scale_factor must not exceed --max_scale_factor",
)
_validate(
    "crop_size",
    lambda v: _positive_ints(v) and len(v) in (1, 2),
    "takes S or H,W with positive sizes",
)
_validate("shuffle_buffer", lambda v: v >= 1, "must be at least 1")
_validate("bootstrap_repeat", lambda v: v >= 1, "must be at least 1")
_validate(
    "multi_grid",
    lambda v: _positive_ints(v) and len(v) == 3,
    "takes three positive unit rates, e.g. 1,2,4",
)
_validate(
    "atrous_rates",
    lambda v: not v or _positive_ints(v),
    "takes positive rates, e.g. 6,12,18 (empty: the 1x1 branch and image pooling only, "
    "the head of the authors' MobileNetV2 models)",
)
_validate("num_cascaded_blocks", lambda v: 0 <= v <= 3, "must be in 0..3")
_validate("batch_norm_momentum", lambda v: 0 <= v < 1, "must be in [0, 1)")
_validate("backbone_batch_norm_momentum", lambda v: 0 <= v < 1, "must be in [0, 1)")
_validate("weight_decay", lambda v: v >= 0, "must be >= 0")
_validate("aspp_filters", lambda v: v >= 1, "must be at least 1")
_validate("aspp_dropout", lambda v: 0 <= v < 1, "must be in [0, 1)")
_validate("logits_init_stddev", lambda v: v >= 0, "must be >= 0 (0: Glorot uniform)")
_validate("logits_bias_lr_multiplier", lambda v: v > 0, "must be positive (1: off)")
_validate("training_steps", lambda v: v >= 1, "must be at least 1")
_validate("stop_at_step", lambda v: v >= 0, "must be >= 0 (0: run the whole schedule)")
_validate("batch_size", lambda v: v >= 1, "must be at least 1")
_validate("base_learning_rate", lambda v: v > 0, "must be positive")
_validate("learning_power", lambda v: v >= 0, "must be >= 0")
_validate("end_learning_rate", lambda v: v >= 0, "must be >= 0")
_validate("warmup_steps", lambda v: v >= 0, "must be >= 0")
_validate("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)")
_validate("save_checkpoint_steps", lambda v: v >= 1, "must be at least 1")
_validate("keep_checkpoints", lambda v: v >= 1, "must be at least 1")
_validate("log_steps", lambda v: v >= 1, "must be at least 1")
_validate("image_summary_steps", lambda v: v >= 0, "must be >= 0 (0: never)")
_validate("eval_limit", lambda v: v >= 0, "must be >= 0 (0: all)")
_validate(
    "eval_tile_size",
    lambda v: (
        not [x for x in v if x.strip()]
        or (_positive_ints([x for x in v if x.strip()]) and len(v) in (1, 2))
    ),
    "takes 'H,W' or one positive size, e.g. 513 (empty: whole images)",
)
_validate("eval_tile_overlap", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
_validate(
    "eval_pad_to",
    lambda v: (
        not [x for x in v if x.strip()]
        or (_positive_ints([x for x in v if x.strip()]) and len(v) in (1, 2))
    ),
    "takes 'H,W' or one positive size, e.g. 513 (empty: no padding)",
)
_validate("num_classes", lambda v: v >= 0, "must be >= 0 (0: from dataset.json)")
_validate("seed", lambda v: 0 <= v < 2**32, "must be in [0, 2**32)")


CLASS_WEIGHT_RULES = ("median_frequency", "inverse_sqrt")  # deeplab/data/class_weights.py


def _class_weights_ok(values):
    return (len(values) == 1 and values[0] in CLASS_WEIGHT_RULES) or _non_negative_numbers(values)


def _non_negative_numbers(values):
    try:
        return all(float(v) >= 0 and float(v) != float("inf") for v in values)
    except (TypeError, ValueError):
        return False


_validate(
    "class_weights",
    _class_weights_ok,
    "takes non-negative finite numbers, one per class (empty: all 1), or one of "
    + ", ".join(CLASS_WEIGHT_RULES),
)


def _positive_numbers(values):
    try:
        return bool(values) and all(float(v) > 0 for v in values)
    except (TypeError, ValueError):
        return False


_validate("eval_scales", _positive_numbers, "takes positive scales, e.g. 0.5,1.0,1.5")


def experiment_config(recorded=None):
    """The :class:`~deeplab.config.experiment.ExperimentConfig` of the parsed flags (with
    ``recorded``, a run's recorded config, where the command line names no flag)."""
    return experiment.from_flags(FLAGS, recorded)


def experiment_flag_objects():
    """The absl Flag objects this module defines, in the order it defines them."""
    return FLAGS.flags_by_module_dict()[__name__]


def parse_experiment_args(args):
    """``{flag name: value}`` of every experiment flag after parsing ``args`` (a flagfile, then
    overrides; later flags win) as the binaries parse them, validators included.

    A private copy of these flags, at their defaults, parses ``args``: the result neither
    depends on nor changes this process's own flags (``deeplab.reproduce`` reads the paper's
    flagfiles with it). Relative ``--flagfile`` paths are relative to the working directory.

    Raises:
      ValueError: a flag these flags do not define, a bad value, an unreadable flagfile.
    """
    values = flags.FlagValues()
    for flag in experiment_flag_objects():
        copied = copy.deepcopy(flag)
        copied.unparse()
        values[flag.name] = copied
    try:
        values(["parse"] + list(args))
    except (flags.Error, OSError) as error:
        raise ValueError(f"{' '.join(args)}: {error}") from error
    return {name: values[name].value for name in values}


def config_of_args(args):
    """The :class:`~deeplab.config.experiment.ExperimentConfig` of ``args`` (e.g.
    ``["--flagfile=experiments/table5.flags"]``), parsed by :func:`parse_experiment_args`."""
    return experiment.from_flag_values(parse_experiment_args(args))


def crop_size():
    """--crop_size as (height, width)."""
    return experiment_config().data.crop_size


# The flags of the model (deeplab.describe's --help lists these, and --crop_size).
MODEL_FLAGS = ("num_classes",) + experiment.setting_names("model")


def model_kwargs(num_classes, *, output_stride=None):
    """Keyword arguments of ``deeplab.build_model`` from the flags."""
    return experiment_config().model.build_kwargs(num_classes, output_stride=output_stride)


def inference_options():
    """The ``InferenceOptions`` of the eval flags (--eval_output_stride, --eval_scales,
    --eval_flip, --eval_tile_size, --eval_tile_overlap, --eval_pad_to)."""
    return experiment_config().eval.inference_options()


def eval_scales():
    """--eval_scales as floats."""
    return experiment_config().eval.eval_scales
